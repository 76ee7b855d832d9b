"""Answer scoring and the results table: the pure-text half of `training.evaluate`, without its model or judge,
so that packaging scripts can score and render saved evaluation JSON."""

from __future__ import annotations

import re

from processing.numbers import number_to_words

TARGETS = {"s2t_accuracy": (">=", 0.90), "s2s_accuracy": (">=", 0.80), "generated_speech_asr_wer": ("<=", 0.15),
           "transcription_wer": ("<=", 0.10), "modality_gap_ratio": (">=", 0.95),
           "s2s_floor_ratio": (">=", 0.95)}  # fmt: skip


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


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _fraction(scores: list[int] | None) -> str:
    return "" if scores is None else f"{scores[0]}/{scores[1]} ({100 * scores[0] / max(scores[1], 1):.0f} %)"


def markdown_table(results: dict) -> str:
    """The metrics (with targets), each judge's judged metrics side by side, and the per-kind breakdown."""
    lines = ["| metric | value | examples | target |", "|---|---:|---:|---|"]
    for name, value in results["metrics"].items():
        target = ""
        if name in TARGETS and value is not None:
            op, bound = TARGETS[name]
            met = value >= bound if op == ">=" else value <= bound
            target = f"{op} {100 * bound:.0f} % ({'met' if met else 'missed'})"
        lines.append(f"| {name} | {_percent(value)} | {results['counts'][name]} | {target} |")
    by_judge = results.get("by_judge") or {}
    if len(by_judge) > 1:
        names = list(by_judge)
        lines += ["", "| judged metric | " + " | ".join(f"Whisper {n}" for n in names) + " |",
                  "|---|" + "---:|" * len(names)]
        for metric in by_judge[names[0]]["metrics"]:
            lines.append(f"| {metric} | " + " | ".join(_percent(by_judge[n]["metrics"].get(metric)) for n in names) + " |")
    if results.get("by_kind"):
        typed = any("typed_accuracy" in s for s in results["by_kind"].values())
        header = "| question kind | S2T correct | S2S correct (judged on speech) |"
        lines += ["", header + (" typed correct | spoken correct | spoken / typed |" if typed else ""),
                  "|---|---:|---:|" + ("---:|---:|---:|" if typed else "")]
        for kind, scores in results["by_kind"].items():
            cells = [_fraction(scores["s2t_accuracy"]), _fraction(scores["s2s_accuracy"])]
            if typed:
                cells += [_fraction(scores.get("typed_accuracy")), _fraction(scores.get("spoken_accuracy")),
                          _percent(scores.get("modality_gap_ratio"))]
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["TARGETS", "answer_key", "is_correct", "markdown_table", "normalize", "word_errors"]
