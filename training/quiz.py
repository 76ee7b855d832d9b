"""Answer accuracy only: each question spoken and typed, text answers, no speech generated and no judge.

    python -m training.quiz --model checkpoints/omnidrca-smollm2 --corpus data/corpus-smollm2-qa --split test \
        --output runs/eval/smollm2-qa.json

`training.evaluate` asks every question four ways and judges the speech, about 12 s a question on one CPU thread
(the SmolLM2 demo). A quiz asks the question-answer rows (s2t, s2s) spoken and typed in text mode only, about
1.2 s a question, so a few hundred questions measure what the model knows: `spoken_accuracy`, `typed_accuracy` and
`modality_gap_ratio` (spoken / typed), per kind of question ("arithmetic", "capital_of", ...), and arithmetic
split by operation and by answers over twenty (the sums the SmolLM2 demo misses). The same public path and
scoring as `training.evaluate` (`ask`, `is_correct`): its spoken figure there is `s2t_accuracy`.
"""

from __future__ import annotations

import argparse
import re
import time

from tqdm.auto import tqdm

from processing.numbers import number_to_words
from processing.schema import to_float

from .evaluate import (
    QA_TASKS,
    add_model_arguments,
    ask,
    load_for_evaluation,
    question_kind,
    ratio,
    select,
    write_results,
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


def quiz(model, processor, dataset, per_task: int | None = None, progress: bool = True) -> dict:
    """Spoken and typed text answers to every s2t / s2s row of `dataset`: tallies and one record per question."""
    rows = select(dataset, QA_TASKS, per_task)
    if len(rows) == 0:
        raise ValueError(f"No question rows (tasks {QA_TASKS}) in the split, so nothing to quiz; its tasks are "
                         f"{sorted(set(dataset['task']))}. Build a corpus with s2t or s2s rows.")
    tallies, records = {}, []
    for row in tqdm(rows, desc="quiz", disable=not progress):
        expected = row["answer_text"]
        spoken = ask(model, processor, to_float(row["question_audio"]), "text").text
        typed = ask(model, processor, row["question_text"], "text").text
        ok = {"spoken": is_correct(expected, spoken), "typed": is_correct(expected, typed)}
        for name in groups(row):
            tally = tallies.setdefault(name, {"spoken": 0, "typed": 0, "questions": 0})
            tally["spoken"] += ok["spoken"]
            tally["typed"] += ok["typed"]
            tally["questions"] += 1
        records.append({"id": row["id"], "task": row["task"], "voice": row["voice"], "template": row.get("template", ""),
                        "expected": expected, "spoken_answer": spoken, "typed_answer": typed})
    by_group = {}
    for name, tally in tallies.items():
        n = tally["questions"]
        scores = {"spoken_accuracy": tally["spoken"] / n, "typed_accuracy": tally["typed"] / n}
        by_group[name] = {**scores, "modality_gap_ratio": ratio(scores, "spoken_accuracy", "typed_accuracy"),
                          "correct": [tally["spoken"], tally["typed"]], "questions": n}
    return {"metrics": by_group.pop("all"), "by_group": dict(sorted(by_group.items())), "examples": records}


def markdown(results: dict) -> str:
    lines = ["| questions | n | spoken | typed | spoken / typed |", "|---|---:|---:|---:|---:|"]
    for name, g in [("all", results["metrics"]), *results["by_group"].items()]:
        gap = "" if g["modality_gap_ratio"] is None else f"{g['modality_gap_ratio']:.0%}"
        lines.append(f"| {name} | {g['questions']} | {g['correct'][0]} ({g['spoken_accuracy']:.1%}) | "
                     f"{g['correct'][1]} ({g['typed_accuracy']:.1%}) | {gap} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    args = parser.parse_args(argv)

    from datasets import load_from_disk

    model, processor = load_for_evaluation(args.model, args.adapter, args.threads)
    start = time.perf_counter()
    results = quiz(model, processor, load_from_disk(args.corpus)[args.split], args.per_task, not args.no_progress)
    results.update(model=args.model, adapter=args.adapter, corpus=args.corpus, split=args.split,
                   seconds=round(time.perf_counter() - start, 1))
    write_results(results, markdown(results), args.output)
    return results


if __name__ == "__main__":
    main()
