"""Every arithmetic fact as a typed question: a text-only drill corpus, built in seconds (no speech to synthesise).

    python -m processing.typed_drill --output data/corpus-smollm2-typed --max-operand 20 --repeats-over-20 2

A spoken corpus samples its questions, so each of the 793 facts with operands 0..20 comes up a few times in
thousands of rows, and each costs the trainer its audio. Here every fact is asked once under every training
phrasing, as the user typed it (`question_audio` empty; the s2t system prompt; a text answer), and the facts whose
answer is over twenty, the ones a small backbone misses, `--repeats-over-20` times. Mix it into a run beside a
spoken corpus (`mix_dataset_paths` in a training config, listed after the corpus that has the evaluation split):
the rows have the corpus schema (`processing.schema.FEATURES`). Validation and test phrasings are never used,
so the held-out evaluation still asks in words the model was not drilled on.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from datasets import DatasetDict

from processing.corpus import ANSWER_FORMATS, ARITHMETIC_OPS, QUESTION_TEMPLATES, allowed_templates, arithmetic_limits
from processing.numbers import number_to_words
from processing.schema import SYSTEM_PROMPTS, rows_to_dataset

SOURCE = "typed_drill"


def arithmetic_facts(limits: dict[str, int]) -> list[tuple[int, str, int, int]]:
    """Every (a, op, b, result) with operands 0..limits[op]; minus only where the result is not negative, as in
    the spoken corpus (`processing.corpus.sample_arithmetic`)."""
    facts = []
    for op, (fn, _) in sorted(ARITHMETIC_OPS.items()):
        for a in range(limits[op] + 1):
            for b in range(a + 1 if op == "minus" else limits[op] + 1):
                facts.append((a, op, b, fn(a, b)))
    return facts


def typed_rows(limits: dict[str, int], repeats_over_20: int = 1, seed: int = 0) -> list[dict]:
    """Schema rows: each fact under each training phrasing, `repeats_over_20` times if its result is over 20;
    shuffled by `seed`."""
    if repeats_over_20 < 1 or int(repeats_over_20) != repeats_over_20:
        raise ValueError(f"repeats_over_20 must be a whole number >= 1 (1: every fact once per phrasing), "
                         f"got {repeats_over_20!r}.")
    templates = allowed_templates(QUESTION_TEMPLATES["arithmetic"], "train")
    rows = []
    for a, op, b, result in arithmetic_facts(limits):
        fields = {"a": number_to_words(a), "op": op, "b": number_to_words(b), "c": number_to_words(result)}
        for template in templates * (repeats_over_20 if result > 20 else 1):
            rows.append({"task": "s2t", "system_prompt": SYSTEM_PROMPTS["s2t"],
                         "question_text": template.text.format(**fields), "question_audio": [],
                         "answer_text": ANSWER_FORMATS["arithmetic"].format(**fields), "answer_audio": [],
                         "voice": "", "rate": 0, "pitch": -1, "template": template.id, "source": SOURCE})
    random.Random(seed).shuffle(rows)
    return [{"id": f"typed-{i:06d}", **row} for i, row in enumerate(rows)]


def build_typed_drill(output_dir: str | Path, max_operand: int | None = None, max_times_operand: int | None = None,
                      repeats_over_20: int = 1, seed: int = 0) -> DatasetDict:
    """Save the drill as a `DatasetDict` with one `train` split, plus `corpus_info.json`, under `output_dir`."""
    limits = arithmetic_limits(max_operand, max_times_operand)
    rows = typed_rows(limits, repeats_over_20, seed)
    corpus = DatasetDict({"train": rows_to_dataset(rows)})
    corpus.save_to_disk(str(output_dir))
    # the keys `processing.corpus.corpus_info` writes, where they apply: model cards summarise every corpus alike
    split = {"rows": len(rows), "tasks": {"s2t": len(rows)}, "templates": len({r["template"] for r in rows}),
             "audio_hours": 0.0}
    info = {"source": SOURCE, "seed": seed, "tasks": ["s2t"], "splits": {"train": split},
            "facts": len({r["answer_text"] for r in rows}), "arithmetic": {"max_operand": limits},
            "repeats_over_20": repeats_over_20}
    (Path(output_dir) / "corpus_info.json").write_text(json.dumps(info, indent=2))
    return corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder to save the corpus to")
    parser.add_argument("--max-operand", type=int, default=None, help="largest operand (default: the corpus's 12)")
    parser.add_argument("--max-times-operand", type=int, default=None, help="largest times operand (default 10)")
    parser.add_argument("--repeats-over-20", type=int, default=1, help="how often facts with results over 20 come")
    parser.add_argument("--seed", type=int, default=0, help="row order")
    args = parser.parse_args(argv)
    corpus = build_typed_drill(args.output, args.max_operand, args.max_times_operand, args.repeats_over_20, args.seed)
    print(f"{len(corpus['train'])} typed rows written to {args.output}")


if __name__ == "__main__":
    main()
