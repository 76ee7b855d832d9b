"""Every arithmetic fact as a typed question: a drill corpus answered in text (s2t, built in seconds) or in speech.

    python -m processing.typed_drill --output data/corpus-smollm2-typed --max-operand 20 --repeats-over-20 2
    python -m processing.typed_drill --output data/corpus-smollm2-typed-s2s --task s2s --assistant-voice festival-slt \
        --max-operand 20 --repeats-over-20 2 --num-workers 2

A spoken corpus samples its questions, so each of the 793 facts with operands 0..20 comes up a few times in
thousands of rows, and each costs the trainer its audio. Here every fact is asked once under every training
phrasing, as the user typed it (`question_audio` empty; the s2t system prompt; a text answer), and the facts whose
answer is over twenty, the ones a small backbone misses, `--repeats-over-20` times. Mix it into a run beside a
spoken corpus (`mix_dataset_paths` in a training config, listed after the corpus that has the evaluation split):
the rows have the corpus schema (`processing.schema.FEATURES`). Validation and test phrasings are never used,
so the held-out evaluation still asks in words the model was not drilled on.

`--task s2s` asks the same questions under the s2s system prompt and answers in speech as well: the text stream of a
text-and-speech answer is trained only by s2s rows, so an s2t drill teaches the facts in text mode alone. Each
distinct answer is spoken once by the assistant voice (793 clips for operands 0..20) and shared by its rows.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from processing.corpus import ANSWER_FORMATS, ARITHMETIC_OPS, QUESTION_TEMPLATES, allowed_templates, arithmetic_limits
from processing.numbers import number_to_words
from processing.schema import SAMPLING_RATE, SYSTEM_PROMPTS, rows_to_dataset
from processing.synthesis import ASSISTANT_VOICES, assistant_voice, festival_version, synthesize_all

SOURCE = "typed_drill"
TASKS = ("s2t", "s2s")


def arithmetic_facts(limits: dict[str, int]) -> list[tuple[int, str, int, int]]:
    """Every (a, op, b, result) with operands 0..limits[op]; minus only where the result is not negative, as in
    the spoken corpus (`processing.corpus.sample_arithmetic`)."""
    facts = []
    for op, (fn, _) in sorted(ARITHMETIC_OPS.items()):
        for a in range(limits[op] + 1):
            for b in range(a + 1 if op == "minus" else limits[op] + 1):
                facts.append((a, op, b, fn(a, b)))
    return facts


def fact_fields(a: int, op: str, b: int, result: int) -> dict[str, str]:
    """The template fields of one fact, in words (`QUESTION_TEMPLATES["arithmetic"]`, `ANSWER_FORMATS`)."""
    return {"a": number_to_words(a), "op": op, "b": number_to_words(b), "c": number_to_words(result)}


def typed_rows(limits: dict[str, int], repeats_over_20: int = 1, seed: int = 0, task: str = "s2t",
               answer_clips: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Schema rows of `task`: each fact under each training phrasing, `repeats_over_20` times if its result is over
    20; shuffled by `seed`. An s2s row's answer audio is `answer_clips[answer_text]` (int16, 16 kHz)."""
    if repeats_over_20 < 1 or int(repeats_over_20) != repeats_over_20:
        raise ValueError(f"repeats_over_20 must be a whole number >= 1 (1: every fact once per phrasing), "
                         f"got {repeats_over_20!r}.")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} (s2t: answers in text, s2s: in text and speech), got {task!r}.")
    if task == "s2s" and answer_clips is None:
        raise ValueError("An s2s drill answers in speech: pass `answer_clips` (answer text -> int16 clip), "
                         "e.g. from `answer_clips(limits, 'festival-slt')`.")
    templates = allowed_templates(QUESTION_TEMPLATES["arithmetic"], "train")
    rows = []
    for a, op, b, result in arithmetic_facts(limits):
        fields = fact_fields(a, op, b, result)
        answer = ANSWER_FORMATS["arithmetic"].format(**fields)
        audio = answer_clips[answer] if task == "s2s" else []
        for template in templates * (repeats_over_20 if result > 20 else 1):
            rows.append({"task": task, "system_prompt": SYSTEM_PROMPTS[task],
                         "question_text": template.text.format(**fields), "question_audio": [],
                         "answer_text": answer, "answer_audio": audio,
                         "voice": "", "rate": 0, "pitch": -1, "template": template.id, "source": SOURCE})
    random.Random(seed).shuffle(rows)
    return [{"id": f"typed-{i:06d}", **row} for i, row in enumerate(rows)]


def answer_clips(limits: dict[str, int], assistant: str = "festival-slt", num_workers: int = 1,
                 progress: bool = True) -> dict[str, np.ndarray]:
    """Answer text -> its int16 clip in the `assistant` voice (a key of `processing.synthesis.ASSISTANT_VOICES`),
    one per distinct answer of the facts within `limits`."""
    voice = assistant_voice(assistant)
    answers = dict.fromkeys(ANSWER_FORMATS["arithmetic"].format(**fact_fields(*fact)) for fact in arithmetic_facts(limits))
    jobs = [(text, voice.job_voice, voice.rate, voice.pitch) for text in answers]
    clips = synthesize_all(jobs, num_workers, progress, desc=f"{voice.name} answers")
    return {job[0]: clips[job] for job in jobs}


def build_typed_drill(output_dir: str | Path, max_operand: int | None = None, max_times_operand: int | None = None,
                      repeats_over_20: int = 1, seed: int = 0, task: str = "s2t", assistant: str = "festival-slt",
                      num_workers: int = 1, progress: bool = True) -> DatasetDict:
    """Save the drill as a `DatasetDict` with one `train` split, plus `corpus_info.json`, under `output_dir`.
    `assistant` and `num_workers` apply to an s2s drill: its answers' voice and parallel synthesis processes."""
    limits = arithmetic_limits(max_operand, max_times_operand)
    clips = answer_clips(limits, assistant, num_workers, progress) if task == "s2s" else None
    rows = typed_rows(limits, repeats_over_20, seed, task, clips)
    corpus = DatasetDict({"train": rows_to_dataset(rows)})
    corpus.save_to_disk(str(output_dir))
    # the keys `processing.corpus.corpus_info` writes, where they apply: model cards summarise every corpus alike
    samples = sum(len(r["answer_audio"]) for r in rows)
    split = {"rows": len(rows), "tasks": {task: len(rows)}, "templates": len({r["template"] for r in rows}),
             "audio_hours": round(samples / SAMPLING_RATE / 3600, 4)}
    info = {"source": SOURCE, "seed": seed, "tasks": [task], "splits": {"train": split},
            "facts": len({r["answer_text"] for r in rows}), "arithmetic": {"max_operand": limits},
            "repeats_over_20": repeats_over_20}
    if clips is not None:
        voice = assistant_voice(assistant)
        info["sampling_rate"] = SAMPLING_RATE
        info["assistant"] = {"name": voice.name, "engine": voice.engine, "voice": voice.voice, "rate": voice.rate,
                             "pitch": voice.pitch, "sampling_rate": SAMPLING_RATE}
        if voice.engine == "festival":
            info["assistant"]["festival_version"] = festival_version()
    (Path(output_dir) / "corpus_info.json").write_text(json.dumps(info, indent=2))
    return corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder to save the corpus to")
    parser.add_argument("--max-operand", type=int, default=None, help="largest operand (default: the corpus's 12)")
    parser.add_argument("--max-times-operand", type=int, default=None, help="largest times operand (default 10)")
    parser.add_argument("--repeats-over-20", type=int, default=1, help="how often facts with results over 20 come")
    parser.add_argument("--seed", type=int, default=0, help="row order")
    parser.add_argument("--task", choices=TASKS, default="s2t", help="answer in text (s2t) or text and speech (s2s)")
    parser.add_argument("--assistant-voice", choices=sorted(ASSISTANT_VOICES), default="festival-slt",
                        help="the voice of an s2s drill's answers (the assistant voice of the corpora it joins)")
    parser.add_argument("--num-workers", type=int, default=1, help="parallel synthesis processes (s2s)")
    args = parser.parse_args(argv)
    corpus = build_typed_drill(args.output, args.max_operand, args.max_times_operand, args.repeats_over_20, args.seed,
                               args.task, args.assistant_voice, args.num_workers)
    print(f"{len(corpus['train'])} typed {args.task} rows written to {args.output}")


if __name__ == "__main__":
    main()
