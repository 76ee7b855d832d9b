"""The typed arithmetic drill: every fact under every training phrasing, typed, in the corpus schema."""

import json
import re
from collections import Counter

import pytest
from datasets import load_from_disk

from processing.corpus import QUESTION_TEMPLATES, arithmetic_limits
from processing.numbers import number_to_words
from processing.schema import FEATURES, SYSTEM_PROMPTS
from processing.typed_drill import build_typed_drill, main, typed_rows

WORDS = {number_to_words(n): n for n in range(1000)}
ANSWER = re.compile(r"^(.+) (plus|minus|times) (.+) is (.+)$")
TRAIN_PHRASINGS = [t for t in QUESTION_TEMPLATES["arithmetic"] if not t.held_out]


def solve(text: str) -> tuple[int, str, int, int]:
    a, op, b, c = ANSWER.match(text).groups()
    return WORDS[a], op, WORDS[b], WORDS[c]


def test_every_fact_comes_once_per_training_phrasing_and_is_right():
    rows = typed_rows(arithmetic_limits(20), repeats_over_20=1)
    # operands 0..20: 21 * 21 sums, 21 * 22 / 2 differences that are not negative, 11 * 11 products (times <= 10)
    facts = Counter(solve(r["answer_text"]) for r in rows)
    assert len(facts) == 441 + 231 + 121 and set(facts.values()) == {len(TRAIN_PHRASINGS)} == {4}
    for a, op, b, c in facts:
        assert c == {"plus": a + b, "minus": a - b, "times": a * b}[op] and c >= 0
    assert {r["template"] for r in rows} == {t.id for t in TRAIN_PHRASINGS}  # no held-out phrasing
    for row in rows[:50]:
        a, op, b, _ = solve(row["answer_text"])
        phrasing = next(t.text for t in TRAIN_PHRASINGS if t.id == row["template"])
        assert row["question_text"] == phrasing.format(a=number_to_words(a), op=op, b=number_to_words(b))
        assert row["task"] == "s2t" and row["system_prompt"] == SYSTEM_PROMPTS["s2t"]
        assert len(row["question_audio"]) == 0 and len(row["answer_audio"]) == 0


def test_results_over_twenty_repeat_and_bad_repeats_are_refused():
    once, twice = (typed_rows(arithmetic_limits(20), repeats_over_20=n) for n in (1, 2))
    over = sum(solve(r["answer_text"])[3] > 20 for r in once)
    # sums over 20 with operands 0..20: 210 pairs; products over 20 with operands 0..10: 54 pairs (a = 3: b = 7..10, ...); 4 phrasings each
    assert over == (210 + 54) * 4 and len(twice) == len(once) + over
    assert [r["id"] for r in twice[:2]] == ["typed-000000", "typed-000001"]
    with pytest.raises(ValueError, match="repeats_over_20 must be a whole number >= 1"):
        typed_rows(arithmetic_limits(20), repeats_over_20=0)


def test_the_saved_drill_has_the_corpus_schema_and_its_info(tmp_path, capsys):
    main(["--output", str(tmp_path / "drill"), "--max-operand", "3", "--seed", "1"])
    assert "typed rows written to" in capsys.readouterr().out
    corpus = load_from_disk(str(tmp_path / "drill"))
    assert list(corpus) == ["train"] and corpus["train"].features == FEATURES
    info = json.loads((tmp_path / "drill" / "corpus_info.json").read_text())
    # operands 0..3: 16 sums, 10 differences, 16 products
    assert info["facts"] == 42 and info["splits"]["train"]["rows"] == len(corpus["train"]) == 42 * 4
    assert info["splits"]["train"]["audio_hours"] == 0.0 and info["splits"]["train"]["templates"] == 4
    again = build_typed_drill(tmp_path / "again", max_operand=3, seed=1)
    assert again["train"]["question_text"] == corpus["train"]["question_text"]  # the seed fixes the order
