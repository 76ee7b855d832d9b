"""Corpus options for the SmolLM2 demo (issue #16): --max-operand, --assistant-voice, --sentences.

The defaults must keep making the shipped demo's corpus exactly: the expected hashes below were recorded with
`processing/corpus.py` as it was before these options existed. Real espeak-ng / festival audio, tiny sizes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest
from datasets import load_from_disk

from processing import build_corpus as cli
from processing import corpus as C
from processing import sentences as S
from processing.schema import FEATURES, SAMPLING_RATE

# sha256 of repr(plan_split(split, n, seed=7)) and the first rows of seed 0, recorded before the options existed.
EXPECTED_PLAN_SHA = {
    ("train", 400): "5b0f439ab99f1293be99ff4f27daf74b7912742d056652ba108af9fd8c3e618e",
    ("validation", 100): "e11372a38cd83b69cdf55aa3b68ca486e0296c672c8778ac94f79f5bcf6d4835",
    ("test", 100): "d90092867cd0f8c81d9272761fc08bca21d408f1f73d545eb53b4d9b90f3125e",
}
EXPECTED_FIRST_ROWS = [
    ("repeat", "remember that three times one is three", "en-gb-x-rp+m5", 140, 50, "sentence/4"),
    ("s2t", "can you work out eleven minus one", "en-gb-scotland+m1", 180, 50, "arithmetic/3"),
    ("s2s", "what is the capital of norway", "en-gb-x-gbclan+m2", 190, 40, "capital_of/0"),
    ("t2s", "everyone knows nine minus seven is two", "", 0, -1, "sentence/2"),
    ("asr", "i think the opposite of inside is outside", "en-gb-scotland+f1", 170, 30, "sentence/1"),
]
# sha256 of repr(synthesis_jobs(plan_split("train", 200, seed=0))), recorded the same way.
EXPECTED_JOBS_SHA = "12cf6cade2435b0a860d7991352bc17d79543f6e3c130d4fc4366a9e87e41d0f"

needs_festival = pytest.mark.skipif(shutil.which("text2wave") is None, reason="festival is not installed")
needs_wordnet = pytest.mark.skipif(not (S.WORDNET_DIR / "data.noun").is_file(), reason="wordnet-base not installed")

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = dict(zip("twenty thirty forty fifty sixty seventy eighty ninety".split(), range(20, 100, 10)))


def words_to_int(words: str) -> int:
    """Independent of the corpus code: number words (0..999) back to an int."""
    total = 0
    for word in words.split():
        total = total * 100 if word == "hundred" else total + (_TENS[word] if word in _TENS else _ONES.index(word))
    return total


ARITHMETIC = re.compile(r"(?:^| )([a-z ]+?) (plus|minus|times) ([a-z ]+?) is ([a-z ]+)$")
NUMBER_WORDS = set(_ONES) | set(_TENS) | {"hundred"}


def arithmetic_of(plans) -> list[tuple[int, str, int, int]]:
    out = []
    for p in plans:
        m = ARITHMETIC.search(p.answer_text)
        if m:
            a_words, op, b_words, c_words = m.groups()
            a = words_to_int(" ".join(w for w in a_words.split() if w in NUMBER_WORDS))
            out.append((a, op, words_to_int(b_words), words_to_int(c_words)))
    return out


# ---- defaults: exactly what the code made before the options -------------------------------------------------


def test_default_plans_and_jobs_are_unchanged():
    for (split, n), sha in EXPECTED_PLAN_SHA.items():
        assert hashlib.sha256(repr(C.plan_split(split, n, seed=7)).encode()).hexdigest() == sha, split
    first = [(p.task, p.question_text, p.voice, p.rate, p.pitch, p.template) for p in C.plan_split("train", 5)]
    assert first == EXPECTED_FIRST_ROWS
    jobs = C.synthesis_jobs(C.plan_split("train", 200, seed=0))
    assert hashlib.sha256(repr(jobs).encode()).hexdigest() == EXPECTED_JOBS_SHA
    answers = {job[1:] for job in jobs} - {(p.voice, p.rate, p.pitch) for p in C.plan_split("train", 200, seed=0)}
    assert answers == {("en-us", 150, 50)}  # the espeak assistant voice, as before
    ops = arithmetic_of(C.plan_split("train", 2000, seed=0))
    assert max(a for a, op, b, c in ops if op != "times") == 12 and max(a for a, op, b, c in ops if op == "times") == 10


def test_cli_defaults_are_the_demo_defaults():
    args = cli.parse_args(["--output", "x"])
    assert (args.max_operand, args.max_times_operand, args.assistant_voice, args.sentences) == (None, None, "espeak",
                                                                                                 None)
    args = cli.parse_args(["--output", "x", "--max-operand", "20", "--assistant-voice", "festival-slt",
                           "--sentences", "wordnet", "--sentence-fraction", "0.4"])
    assert (args.max_operand, args.assistant_voice, args.sentences, args.sentence_fraction) == (
        20, "festival-slt", "wordnet", 0.4)


# ---- --max-operand ------------------------------------------------------------------------------------------


def test_max_operand_20_reaches_past_12_with_correct_answers():
    plans = C.plan_split("train", 600, seed=1, max_operand=20) + C.plan_split("test", 200, seed=1, max_operand=20)
    ops = arithmetic_of(plans)
    assert len(ops) > 150
    fns = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
    for a, op, b, c in ops:
        assert c == fns[op](a, b) >= 0
        assert max(a, b) <= (20 if op != "times" else 10)
    assert max(max(a, b) for a, op, b, c in ops if op != "times") == 20
    assert sum(max(a, b) > 12 for a, op, b, c in ops) > 20
    # The same limits as the defaults give the default plans.
    assert C.plan_split("train", 100, seed=1, max_operand=12) == C.plan_split("train", 100, seed=1)


def test_arithmetic_limits():
    assert C.arithmetic_limits() == {"plus": 12, "minus": 12, "times": 10}
    assert C.arithmetic_limits(20) == {"plus": 20, "minus": 20, "times": 10}
    assert C.arithmetic_limits(5) == {"plus": 5, "minus": 5, "times": 5}  # "up to N" holds for times too
    assert C.arithmetic_limits(20, 20) == {"plus": 20, "minus": 20, "times": 20}
    assert C.arithmetic_limits(499, 31)  # 998 and 961: still within number_to_words' 0..999
    for bad in ({"max_operand": 500}, {"max_operand": 0}, {"max_times_operand": 32}, {"max_operand": 2.5}):
        with pytest.raises(ValueError, match="999"):
            C.arithmetic_limits(**bad)
    ops = arithmetic_of(C.plan_split("train", 300, seed=2, tasks=("s2t",), max_operand=499, max_times_operand=31))
    assert max(c for *_, c in ops) <= 999 and max(a for a, op, b, c in ops if op == "times") > 10


# ---- open-vocabulary sentences ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, clean",
    [("He was 3 years old.", "he was three years old"),
     ("I have 12, 13 and 200 apples", "i have twelve thirteen and two hundred apples"),
     ("Café au lait is nice!", "cafe au lait is nice"),
     ("well-known rock-and-roll singer", "well known rock and roll singer"),
     ("'yes' she said to him", "yes she said to him"),
     ("don't do that again", "don't do that again"),
     ("a prissy creature...settles into a mold", "a prissy creature settles into a mold"),
     ("in 1990 it rained", None), ("it cost 3.5 dollars today", None), ("the 1st day of spring", None),
     ("a crowd of 1,000 people", None), ("pay $5 now please", None), ("the U.S. army is big", None),
     ("he said (loudly) no", None), ("and/or something else", None), ("two words", None),
     (" ".join(["word"] * 21), None), (" ".join(["word"] * 20), " ".join(["word"] * 20))],
)  # fmt: skip
def test_clean_sentence(raw, clean):
    assert S.clean_sentence(raw) == clean
    if clean is not None:
        assert re.fullmatch(r"[a-z']+( [a-z']+){2,19}", clean)


def synthetic_sentences(n: int) -> list[str]:
    adjectives = "small red quiet old bright heavy".split()
    nouns = "dog river teacher window garden engine".split()
    verbs = "watches follows paints remembers".split()
    return [f"the {adjectives[i % 6]} {nouns[i // 6 % 6]} {verbs[i // 36 % 4]} {i % 20} {nouns[i % 5]}s"
            for i in range(n)]


@pytest.fixture()
def sentence_file(tmp_path):
    path = tmp_path / "sentences.txt"
    lines = ["# a comment line, skipped", "", "Too short.", *synthetic_sentences(140)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sentence_split_is_by_hash_deterministic_and_disjoint(sentence_file):
    pool = S.load_sentences(sentence_file)
    assert pool.raw == 141 and pool.source == "sentences.txt"
    splits = {name: set(pool.split(name)) for name in ("train", "validation", "test")}
    assert sum(map(len, splits.values())) == 140  # "too short" dropped, the rest distinct
    assert splits["validation"] and splits["test"] and len(splits["train"]) > 100
    assert not (splits["train"] & splits["validation"] or splits["train"] & splits["test"]
                or splits["validation"] & splits["test"])  # fmt: skip
    # Order, duplicates and the other sentences never move a sentence to another split.
    shuffled = S.split_sentences(list(reversed(synthetic_sentences(140))) * 2 + ["brand new sentence here"])
    for name in splits:
        assert set(shuffled.split(name)) - {"brand new sentence here"} == splits[name]
    assert all(S.sentence_split(s) == name for name, group in splits.items() for s in group)


@needs_wordnet
def test_wordnet_source():
    pool = S.load_sentences("wordnet")
    info = pool.info()
    assert info["raw"] > 40_000 and info["train"] > 30_000 and info["validation"] > 1_000 and info["test"] > 1_000
    assert not set(pool.train) & (set(pool.validation) | set(pool.test))
    assert not set(pool.validation) & set(pool.test)
    assert all(S.clean_sentence(s) == s for s in pool.train[:2000])  # clean and stable under cleaning


def test_wordnet_words_order_counts_and_compounds(tmp_path):
    # boy: 203 + 10 over two senses; "tv" (no vowel) would be spelled out by a voice, so it is left out.
    (tmp_path / S.WORDNET_COUNTS).write_text("road%1:06:00:: 1 96\nboy%1:18:00:: 1 203\ntv%1:06:00:: 1 500\n"
                                             "palm_tree%1:20:00:: 1 5\nboy%1:18:01:: 2 10\nape%1:05:00:: 1 5\n")
    assert list(S.read_wordnet_words(tmp_path)) == ["boy", "road", "ape", "palm tree"]
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        list(S.read_wordnet_words(tmp_path / "nowhere"))


def test_clean_sentence_word_limits():
    assert S.clean_sentence("Palm-tree") is None  # sentences keep 3-20 words
    assert S.clean_sentence("Palm-tree", *S.WORD_LIMITS) == "palm tree"
    assert S.clean_sentence("look it up now", *S.WORD_LIMITS) is None


@needs_wordnet
def test_wordnet_words_source():
    pool = S.load_sentences(S.WORDS_SOURCE)
    assert pool.source == S.WORDS_SOURCE and len(pool.train) > 15_000 and pool.validation and pool.test
    assert not set(pool.train) & (set(pool.validation) | set(pool.test))
    every = pool.train + pool.validation + pool.test
    assert all(1 <= len(w.split()) <= 3 and S.clean_sentence(w, *S.WORD_LIMITS) == w for w in every)
    assert sum(len(w.split()) == 1 for w in pool.train) > len(pool.train) / 2
    assert pool.train.index("man") < 20  # most frequent first, within each split


def test_missing_sources_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither"):
        S.load_sentences(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        S.load_sentences(tmp_path)  # a folder without WordNet's data files
    empty = tmp_path / "empty.txt"
    empty.write_text("1990\nok\n")
    with pytest.raises(ValueError, match="no usable sentence"):
        S.load_sentences(empty)


def test_sentence_rows_in_plans(sentence_file):
    pool = S.load_sentences(sentence_file)
    for split, n in (("train", 40), ("test", 12)):
        plans = C.plan_split(split, n, seed=3, sentences=pool, sentence_fraction=0.25)
        assert len(plans) == n and [p.id for p in plans] == [f"{split}-{i:06d}" for i in range(n)]
        open_rows = [p for p in plans if p.template == C.OPEN_SENTENCE_TEMPLATE]
        assert len(open_rows) == round(0.25 * n)
        assert {p.task for p in open_rows} == {"asr", "t2s"}
        assert all(p.question_text == p.answer_text and p.question_text in pool.split(split) for p in open_rows)
        voices, _, _ = C.voice_pool(split)
        assert all(p.voice in voices for p in open_rows if p.task == "asr")
        assert all((p.voice, p.rate, p.pitch) == ("", 0, -1) for p in open_rows if p.task == "t2s")
        # The demo-domain rows are the ones plan_split makes for the remaining count, in the same order.
        rest = [p for p in plans if p.template != C.OPEN_SENTENCE_TEMPLATE]
        strip = [(p.task, p.question_text, p.answer_text, p.voice, p.template) for p in rest]
        assert strip == [(p.task, p.question_text, p.answer_text, p.voice, p.template)
                         for p in C.plan_split(split, n - len(open_rows), seed=3)]
    assert C.plan_split("train", 30, seed=3, sentences=pool) == C.plan_split("train", 30, seed=3, sentences=pool)
    only_asr = C.plan_split("train", 20, seed=3, tasks=("asr", "s2t"), sentences=pool, sentence_fraction=0.5)
    assert {p.task for p in only_asr if p.template == C.OPEN_SENTENCE_TEMPLATE} == {"asr"}
    with pytest.raises(ValueError, match="neither"):
        C.plan_split("train", 10, tasks=("s2t", "s2s"), sentences=pool)
    with pytest.raises(ValueError, match="0..1"):
        C.plan_split("train", 10, sentences=pool, sentence_fraction=1.5)


# ---- the assistant voice and an end-to-end build ------------------------------------------------------------


def test_assistant_voices():
    assert C.assistant_voice() == C.assistant_voice("espeak")
    espeak = C.assistant_voice("espeak")
    assert (espeak.job_voice, espeak.rate, espeak.pitch) == (C.ASSISTANT_VOICE, C.ASSISTANT_RATE, C.ASSISTANT_PITCH)
    assert C.assistant_voice("festival-slt").job_voice == "festival:cmu_us_slt_arctic_hts"
    with pytest.raises(ValueError, match="festival-slt"):
        C.assistant_voice("nobody")


@needs_festival
def test_build_with_festival_voice_sentences_and_max_operand(tmp_path, sentence_file):
    options = dict(seed=4, tasks=("asr", "s2s", "t2s"), max_operand=20, assistant="festival-slt",
                   sentences=sentence_file, sentence_fraction=0.34, progress=False)
    built = C.build_corpus(tmp_path / "a", 6, 3, 3, num_workers=2, **options)
    again = C.build_corpus(tmp_path / "b", 6, 3, 3, num_workers=1, **options)
    for split in ("train", "validation", "test"):
        assert built[split].features == FEATURES
        assert built[split].to_dict() == again[split].to_dict()  # deterministic, whatever the worker count
    reloaded = load_from_disk(str(tmp_path / "a"))
    rows = [r for ds in reloaded.values() for r in ds]
    assert any(r["template"] == C.OPEN_SENTENCE_TEMPLATE for r in rows)
    spoken = [r for r in rows if r["task"] in ("s2s", "t2s")]
    assert spoken
    for r in spoken[:3]:  # answers are festival's voice: not the espeak assistant's clip of the same text
        answer = np.asarray(r["answer_audio"], dtype=np.int16)
        assert 0.3 <= answer.size / SAMPLING_RATE <= 10 and np.abs(answer).max() > 2000
        job = (r["answer_text"], C.ASSISTANT_VOICE, C.ASSISTANT_RATE, C.ASSISTANT_PITCH)
        espeak = C.synthesize_all([job], progress=False)[job]
        assert answer.size != espeak.size or not np.array_equal(answer, espeak)
    for r in rows:
        if r["task"] != "t2s":  # users still speak with espeak's pools
            assert r["voice"] in C.TRAIN_VOICES + C.HELD_OUT_VOICES
    info = json.loads((tmp_path / "a" / "corpus_info.json").read_text())
    assert info["assistant"]["name"] == "festival-slt" and info["assistant"]["voice"] == "cmu_us_slt_arctic_hts"
    assert info["assistant"]["engine"] == "festival" and "Festival" in info["assistant"]["festival_version"]
    assert info["arithmetic"] == {"max_operand": {"plus": 20, "minus": 20, "times": 10}}
    assert info["sentences"]["source"] == "sentences.txt" and info["sentences"]["fraction"] == 0.34
