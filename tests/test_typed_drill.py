"""The typed arithmetic drill: every fact under every training phrasing, typed, in the corpus schema."""

import json
import re
from collections import Counter

import numpy as np
import pytest
from datasets import load_from_disk

from processing.corpus import QUESTION_TEMPLATES, arithmetic_limits
from processing.numbers import number_to_words
from processing.schema import FEATURES, SAMPLING_RATE, SYSTEM_PROMPTS, to_float, to_int16
from processing.synthesis import ASSISTANT_VOICES, synthesize
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
    assert "typed s2t rows written to" in capsys.readouterr().out
    corpus = load_from_disk(str(tmp_path / "drill"))
    assert list(corpus) == ["train"] and corpus["train"].features == FEATURES
    info = json.loads((tmp_path / "drill" / "corpus_info.json").read_text())
    # operands 0..3: 16 sums, 10 differences, 16 products
    assert info["facts"] == 42 and info["splits"]["train"]["rows"] == len(corpus["train"]) == 42 * 4
    assert info["splits"]["train"]["audio_hours"] == 0.0 and info["splits"]["train"]["templates"] == 4
    again = build_typed_drill(tmp_path / "again", max_operand=3, seed=1)
    assert again["train"]["question_text"] == corpus["train"]["question_text"]  # the seed fixes the order


def test_an_s2s_drill_speaks_each_answer_once_in_the_assistant_voice(tmp_path):
    corpus = build_typed_drill(tmp_path / "s2s", max_operand=2, max_times_operand=1, task="s2s", assistant="espeak",
                               progress=False)["train"]
    info = json.loads((tmp_path / "s2s" / "corpus_info.json").read_text())
    # operands 0..2: 9 sums, 6 differences; times operands 0..1: 4 products
    assert info["facts"] == 19 and len(corpus) == 19 * 4 and info["tasks"] == ["s2s"]
    assert info["assistant"]["name"] == "espeak" and info["splits"]["train"]["audio_hours"] > 0
    clips = {}
    for row in corpus:
        assert row["task"] == "s2s" and row["system_prompt"] == SYSTEM_PROMPTS["s2s"] and not row["question_audio"]
        wave = to_float(row["answer_audio"])
        assert 0.5 * SAMPLING_RATE < len(wave) < 5 * SAMPLING_RATE and np.abs(wave).max() > 0.05  # a spoken sentence
        assert clips.setdefault(row["answer_text"], row["answer_audio"]) == row["answer_audio"]  # one clip per answer
    # the clip is the assistant voice saying that answer (espeak-ng is deterministic)
    voice = ASSISTANT_VOICES["espeak"]
    said = to_int16(synthesize("two plus two is four", voice.voice, voice.rate, voice.pitch))
    assert np.array_equal(np.asarray(clips["two plus two is four"], dtype=np.int16), said)


def test_bad_tasks_and_an_s2s_drill_without_clips_are_refused():
    with pytest.raises(ValueError, match="task must be one of"):
        typed_rows(arithmetic_limits(2), task="asr")
    with pytest.raises(ValueError, match="pass `answer_clips`"):
        typed_rows(arithmetic_limits(2), task="s2s")
