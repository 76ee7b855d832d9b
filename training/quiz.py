"""Answer accuracy only: each question spoken and typed, text answers, no speech generated and no judge.

    python -m training.quiz --model checkpoints/omnidrca-smollm2 --corpus data/corpus-smollm2-qa --split test \
        --output runs/eval/smollm2-qa.json

`training.evaluate` asks every question four ways and judges the speech, about 12 s a question on one CPU thread
(the SmolLM2 demo). A quiz asks the question-answer rows (s2t, s2s) spoken and typed in text mode only, about
1.2 s a question, so a few hundred questions measure what the model knows: `spoken_accuracy`, `typed_accuracy` and
`modality_gap_ratio` (spoken / typed), per kind of question ("arithmetic", "capital_of", ...), and arithmetic
split by operation and by answers over twenty (the sums the SmolLM2 demo misses). The same public path and
scoring as `training.evaluate` (`ask`, `is_correct`): its spoken figure there is `s2t_accuracy`.

`--speech-mode` also asks each spoken question in text-and-speech mode, the Space's default, and scores the text
stream of that answer (`speech_mode_accuracy`; about 2.5 s more a question): a model can know a fact in text mode
and still say another while it speaks, because only s2s rows train the text stream beside speech.
"""

from __future__ import annotations

import argparse
import re

from tqdm.auto import tqdm

from processing.numbers import number_to_words
from processing.schema import to_float

from .evaluate import (
    QA_TASKS,
    add_model_arguments,
    ask,
    question_kind,
    ratio,
    run_on_corpus,
    select,
)
from .scoring import is_correct

# "seventeen minus seven is ten" -> op "minus", answer "ten"; the corpus's arithmetic answer format.
ARITHMETIC = re.compile(r"^.+ (plus|minus|times) .+ is (.+)$")
NUMBERS = {number_to_words(n): n for n in range(1000)}


def groups(row: dict) -> list[str]:
    """The tallies a question counts in: "all", its kind, and for arithmetic its operation and answer size."""
    kind = question_kind(row)
    names = ["all", kind]
    match = ARITHMETIC.match(row["answer_text"]) if kind == "arithmetic" else None
    if match and match.group(2) in NUMBERS:
        names += [f"arithmetic {match.group(1)}",
                  "arithmetic, answer over 20" if NUMBERS[match.group(2)] > 20 else "arithmetic, answer 0-20"]
    return names


# how a question is asked: (its input, the answer mode); "speech_mode" scores the text stream of a spoken answer
WAYS = {"spoken": ("audio", "text"), "typed": ("text", "text"), "speech_mode": ("audio", "audio")}


def quiz(model, processor, dataset, per_task: int | None = None, progress: bool = True,
         speech_mode: bool = False) -> dict:
    """Spoken and typed text answers (and with `speech_mode` the text of spoken text-and-speech answers) to every
    s2t / s2s row of `dataset`: tallies and one record per question."""
    rows = select(dataset, QA_TASKS, per_task)
    if len(rows) == 0:
        raise ValueError(f"No question rows (tasks {QA_TASKS}) in the split, so nothing to quiz; its tasks are "
                         f"{sorted(set(dataset['task']))}. Build a corpus with s2t or s2s rows.")
    ways = [w for w in WAYS if speech_mode or w != "speech_mode"]
    tallies, records = {}, []
    for row in tqdm(rows, desc="quiz", disable=not progress):
        expected = row["answer_text"]
        inputs = {"audio": to_float(row["question_audio"]), "text": row["question_text"]}
        answers = {w: ask(model, processor, inputs[WAYS[w][0]], WAYS[w][1]).text for w in ways}
        for name in groups(row):
            tally = tallies.setdefault(name, dict.fromkeys([*ways, "questions"], 0))
            for w in ways:
                tally[w] += is_correct(expected, answers[w])
            tally["questions"] += 1
        records.append({"id": row["id"], "task": row["task"], "voice": row["voice"], "template": row.get("template", ""),
                        "expected": expected, **{f"{w}_answer": answers[w] for w in ways}})
    by_group = {}
    for name, tally in tallies.items():
        n = tally["questions"]
        scores = {f"{w}_accuracy": tally[w] / n for w in ways}
        by_group[name] = {**scores, "modality_gap_ratio": ratio(scores, "spoken_accuracy", "typed_accuracy"),
                          "correct": [tally[w] for w in ways], "questions": n}
    return {"metrics": by_group.pop("all"), "by_group": dict(sorted(by_group.items())), "examples": records}


def markdown(results: dict) -> str:
    speech = "speech_mode_accuracy" in results["metrics"]
    lines = ["| questions | n | spoken | typed | spoken / typed |" + (" spoken, text-and-speech mode |" if speech else ""),
             "|---|---:|---:|---:|---:|" + ("---:|" if speech else "")]
    for name, g in [("all", results["metrics"]), *results["by_group"].items()]:
        gap = "" if g["modality_gap_ratio"] is None else f"{g['modality_gap_ratio']:.0%}"
        line = (f"| {name} | {g['questions']} | {g['correct'][0]} ({g['spoken_accuracy']:.1%}) | "
                f"{g['correct'][1]} ({g['typed_accuracy']:.1%}) | {gap} |")
        lines.append(line + (f" {g['correct'][2]} ({g['speech_mode_accuracy']:.1%}) |" if speech else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--speech-mode", action="store_true",
                        help="also score the text of text-and-speech answers to the spoken questions")
    args = parser.parse_args(argv)
    return run_on_corpus(args, lambda model, processor, dataset: quiz(
        model, processor, dataset, args.per_task, not args.no_progress, args.speech_mode), markdown)


if __name__ == "__main__":
    main()
