"""Answer scoring and the results table: the pure-text half of `training.evaluate`, without its model or judge,
so that packaging scripts can score and render saved evaluation JSON."""

from __future__ import annotations

import re

from processing.numbers import number_to_words

TARGETS = {"s2t_accuracy": (">=", 0.90), "s2s_accuracy": (">=", 0.80), "generated_speech_asr_wer": ("<=", 0.15),
           "transcription_wer": ("<=", 0.10)}  # fmt: skip


def normalize(text: str) -> str:
    """Lower case, digits spelled out as the corpus spells them, punctuation and hyphens to spaces."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"\d+", lambda m: number_to_words(int(m.group())) if int(m.group()) <= 999 else m.group(), text)
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text).split())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edit distance, reference length) after `normalize`."""
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1], len(ref)


def answer_key(text: str) -> str | None:
    """The answer words of a demo-domain statement: what follows the last " is " or " says "."""
    words = normalize(text).split()
    for i in range(len(words) - 1, -1, -1):
        if words[i] in ("is", "says"):
            return " ".join(words[i + 1 :]) or None
    return None


def is_correct(expected_answer: str, output: str) -> bool:
    key = answer_key(expected_answer)
    return key is not None and answer_key(output) == key


def markdown_table(results: dict) -> str:
    lines = ["| metric | value | examples | target |", "|---|---:|---:|---|"]
    for name, value in results["metrics"].items():
        percent = f"{100 * value:.1f} %"
        target = ""
        if name in TARGETS:
            op, bound = TARGETS[name]
            met = value >= bound if op == ">=" else value <= bound
            target = f"{op} {100 * bound:.0f} % ({'met' if met else 'missed'})"
        lines.append(f"| {name} | {percent} | {results['counts'][name]} | {target} |")
    if results.get("by_kind"):
        lines += ["", "| question kind | S2T correct | S2S correct (judged on speech) |", "|---|---:|---:|"]
        for kind, scores in results["by_kind"].items():
            cells = [f"{ok}/{n} ({100 * ok / max(n, 1):.0f} %)" for ok, n in (scores["s2t_accuracy"], scores["s2s_accuracy"])]
            lines.append(f"| {kind} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


__all__ = ["TARGETS", "answer_key", "is_correct", "markdown_table", "normalize", "word_errors"]
