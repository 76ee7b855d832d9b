"""The synthetic espeak-ng corpus: tasks, schema, audio, held-out splits, determinism, demo-domain answers.

Builds a few tiny corpora with the real espeak-ng (no mocks: the tests are about the audio it makes).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re

import numpy as np
import pytest
from datasets import load_from_disk

from processing import corpus as C
from processing.schema import FEATURES, SAMPLING_RATE, SPEECH_ANSWER_TASKS, SYSTEM_PROMPTS, TASKS

SIZES = {"train": 12, "validation": 6, "test": 6}


def build(path, seed=0, workers=1):
    return C.build_corpus(path, SIZES["train"], SIZES["validation"], SIZES["test"], seed=seed,
                          num_workers=workers, progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus")
    build(path, seed=0, workers=2)
    return path


@pytest.fixture(scope="module")
def corpus(corpus_dir):
    return load_from_disk(str(corpus_dir))


def rows(corpus):
    return [row for ds in corpus.values() for row in ds]


# ---- independent reference helpers (not the module's own code) ------------------------------------------

_WORD_VALUES = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}  # fmt: skip
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUES.update({w: 10 * i for i, w in enumerate(_TENS, start=2)})


def words_to_int(words: str) -> int:
    total = 0
    for word in words.split():
        total = total * 100 if word == "hundred" else total + _WORD_VALUES[word]
    return total


def read_facts() -> dict[tuple[str, str], str]:
    with open(C.FACTS_PATH, newline="") as f:
        return {(r["relation"], r["subject"]): r["answer"] for r in csv.DictReader(f, delimiter="\t")}


# ---- content ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, words",
    [(0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (40, "forty"), (99, "ninety nine"),
     (100, "one hundred"), (115, "one hundred fifteen"), (144, "one hundred forty four"),
     (999, "nine hundred ninety nine")],
)  # fmt: skip
def test_number_to_words(n, words):
    assert C.number_to_words(n) == words


def test_number_to_words_round_trips_and_rejects_out_of_range():
    assert all(words_to_int(C.number_to_words(n)) == n for n in range(1000))
    for bad in (-1, 1000, 2.5):
        with pytest.raises(ValueError, match="0..999"):
            C.number_to_words(bad)


# ---- the built corpus -------------------------------------------------------------------------------------


def test_splits_sizes_and_all_tasks(corpus):
    assert set(corpus) == set(SIZES)
    for split, ds in corpus.items():
        assert len(ds) == SIZES[split]
        assert set(ds["task"]) == set(TASKS), split  # balanced mix: 6 rows already cover the 5 tasks


def test_schema_columns_and_metadata(corpus):
    for ds in corpus.values():
        assert ds.features == FEATURES
    all_rows = rows(corpus)
    assert len({r["id"] for r in all_rows}) == len(all_rows)
    for r in all_rows:
        assert r["system_prompt"] == SYSTEM_PROMPTS[r["task"]]
        assert r["source"] == "espeak"
        assert r["template"] in C.ALL_TEMPLATES
        assert r["question_text"] and r["answer_text"]
        if r["task"] in ("asr", "repeat", "t2s"):  # transcript / echo / read aloud: same words both sides
            assert r["answer_text"] == r["question_text"]
        if r["task"] == "t2s":  # typed question: no user voice
            assert (r["voice"], r["rate"], r["pitch"]) == ("", 0, -1)


def test_audio_where_required_and_speech_length(corpus):
    for r in rows(corpus):
        q, a = np.asarray(r["question_audio"]), np.asarray(r["answer_audio"])
        assert (q.size == 0) == (r["task"] == "t2s"), r["id"]
        assert (a.size > 0) == (r["task"] in SPEECH_ANSWER_TASKS), r["id"]
        for clip in (q, a):
            if clip.size:
                assert 0.3 <= clip.size / SAMPLING_RATE <= 8.0, (r["id"], clip.size)
                assert np.abs(clip).max() > 3000  # real speech, not near-silence
                assert np.sqrt(np.mean(clip.astype(np.float64) ** 2)) > 300


def test_audio_is_int16_at_16khz_on_disk(corpus_dir, corpus):
    info = json.loads((corpus_dir / "corpus_info.json").read_text())
    assert info["sampling_rate"] == SAMPLING_RATE == 16_000
    assert FEATURES["question_audio"].feature.dtype == "int16"
    arrow = corpus["train"].data.table
    assert str(arrow.schema.field("question_audio").type.value_type) == "int16"


def test_held_out_axes_never_in_train(corpus):
    assert not set(C.TRAIN_VOICES) & set(C.HELD_OUT_VOICES)
    assert not set(C.TRAIN_RATES) & set(C.HELD_OUT_RATES)
    assert not set(C.TRAIN_PITCHES) & set(C.HELD_OUT_PITCHES)
    assert C.ASSISTANT_VOICE not in C.TRAIN_VOICES + C.HELD_OUT_VOICES
    for split, ds in corpus.items():
        spoken = [r for r in ds if r["task"] != "t2s"]
        voices, rates, pitches = {r["voice"] for r in spoken}, {r["rate"] for r in spoken}, {r["pitch"] for r in spoken}
        held_out = {C.ALL_TEMPLATES[t].held_out for t in ds["template"]}
        if split == "train":
            assert voices <= set(C.TRAIN_VOICES) and rates <= set(C.TRAIN_RATES)
            assert pitches <= set(C.TRAIN_PITCHES) and held_out == {False}
        else:
            assert voices <= set(C.HELD_OUT_VOICES) and rates <= set(C.HELD_OUT_RATES)
            assert pitches <= set(C.HELD_OUT_PITCHES) and held_out == {True}


def test_held_out_phrasings_unseen_at_scale():
    # Plans only (no audio): a full-size train split uses every train voice/template and no held-out one,
    # and no held-out question wording ever occurs verbatim in train.
    train = C.plan_split("train", 2000, seed=0)
    held = C.plan_split("validation", 300, seed=0) + C.plan_split("test", 300, seed=0)
    # The demo's kinds of question (relations outside its fact list, like the LoRA ones, are never asked).
    kinds = {"arithmetic", "sentence", *C.load_facts()}
    train_templates = {t.id for t in C.ALL_TEMPLATES.values() if not t.held_out and t.id.split("/")[0] in kinds}
    assert {p.template for p in train} == train_templates
    assert {p.voice for p in train if p.task != "t2s"} == set(C.TRAIN_VOICES)
    assert {p.template for p in held} == {t for t in C.HELD_OUT_TEMPLATES if t.split("/")[0] in kinds}
    assert {p.voice for p in held if p.task != "t2s"} == set(C.HELD_OUT_VOICES)
    assert not {p.question_text for p in train} & {p.question_text for p in held if p.task in ("s2t", "s2s")}


def test_arithmetic_answers_are_correct(corpus):
    ops = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
    plans = C.plan_split("train", 400, seed=3) + C.plan_split("test", 100, seed=3)
    checked = [(r["question_text"], r["answer_text"], r["task"]) for r in rows(corpus)]
    checked += [(p.question_text, p.answer_text, p.task) for p in plans]
    n = 0
    for question, answer, task in checked:
        m = re.search(r"([a-z ]+?) (plus|minus|times) ([a-z ]+?) is ([a-z ]+)$", answer)
        if m is None:
            continue
        a_words, op, b_words, c_words = m.groups()
        # Operands are the number words right before/after the operator (a carrier may precede them).
        a = words_to_int(" ".join(w for w in a_words.split() if w in _WORD_VALUES or w == "hundred"))
        b, c = words_to_int(b_words), words_to_int(c_words)
        assert c == ops[op](a, b) and c >= 0, answer
        if task in ("s2t", "s2s"):
            assert f"{a_words} {op} {b_words}" in question
        n += 1
    assert n > 50


def test_fact_answers_match_the_tsv(corpus):
    facts = read_facts()
    patterns = {
        "capital_of": r"the capital of (.+) is (.+)",
        "color_of": r"(.+) is (.+)",
        "sound_of": r"(.+) says (.+)",
        "opposite_of": r"the opposite of (.+) is (.+)",
    }
    plans = C.plan_split("train", 300, seed=5)
    qa = [(r["template"], r["question_text"], r["answer_text"]) for r in rows(corpus) if r["task"] in ("s2t", "s2s")]
    qa += [(p.template, p.question_text, p.answer_text) for p in plans if p.task in ("s2t", "s2s")]
    n = 0
    for template, question, answer in qa:
        relation = template.split("/")[0]
        if relation == "arithmetic":
            continue
        subject, value = re.fullmatch(patterns[relation], answer).groups()
        assert facts[(relation, subject)] == value, answer
        assert subject in question and value not in question.replace(subject, "")
        n += 1
    assert n > 20


# ---- determinism, saving ----------------------------------------------------------------------------------


def test_deterministic_given_seed_and_independent_of_workers(tmp_path, corpus):
    same = build(tmp_path / "same", seed=0, workers=1)  # the fixture used 2 workers
    other = build(tmp_path / "other", seed=1, workers=1)
    for split in SIZES:
        assert same[split].to_dict() == corpus[split].to_dict()
        assert other[split]["question_text"] != corpus[split]["question_text"]
        assert other[split]["question_audio"] != corpus[split]["question_audio"]


def test_reloads_from_disk_with_corpus_info(corpus_dir, corpus):
    info = json.loads((corpus_dir / "corpus_info.json").read_text())
    assert info["seed"] == 0
    for split, ds in corpus.items():
        assert info["splits"][split]["rows"] == len(ds)
        assert info["splits"][split]["tasks"] == {t: ds["task"].count(t) for t in sorted(set(ds["task"]))}
    assert info["held_out"]["voices"] == list(C.HELD_OUT_VOICES)
    assert set(info["held_out"]["templates"]) == set(C.HELD_OUT_TEMPLATES)
    # The defaults: the espeak assistant voice, and none of the options' records (tests/test_corpus_options.py).
    assert info["assistant"] == {"voice": "en-us", "rate": 150, "pitch": 50}
    assert not {"arithmetic", "sentences"} & set(info)


def test_empty_split_and_task_subset(tmp_path):
    built = C.build_corpus(tmp_path / "c", 4, 0, 2, seed=0, tasks=("asr", "s2t"), progress=False)
    reloaded = load_from_disk(str(tmp_path / "c"))
    assert len(reloaded["validation"]) == 0  # datasets cannot reload a 0-shard split unless we avoid it
    assert set(reloaded["train"]["task"]) == {"asr", "s2t"} == set(built["test"]["task"])
    with pytest.raises(ValueError, match="subset"):
        C.plan_split("train", 3, tasks=("asr", "chat"))


# ---- synthesis --------------------------------------------------------------------------------------------


def test_synthesis_duration_tracks_words_and_rate():
    short = C.synthesize("seven plus two", "en-us", 160, 50)
    long = C.synthesize("i think the capital of south korea is seoul and seven plus two is nine", "en-us", 160, 50)
    assert short.dtype == np.float32 and np.abs(short).max() <= 1.0
    assert 2.5 < long.size / short.size < 6  # 15 words vs 3 words: length grows with the words
    slow, fast = (C.synthesize("the opposite of hot is cold", "en-us", r, 50).size for r in (125, 200))
    assert 1.3 < slow / fast < 2.0  # 200 / 125 = 1.6 (pauses scale less than words)


def test_every_voice_and_pitch_is_distinct():
    # espeak-ng ignores some spellings silently ("en-gb+m2" == "en-gb"): each configured voice must differ.
    voices = C.TRAIN_VOICES + C.HELD_OUT_VOICES + (C.ASSISTANT_VOICE,)
    digests = {hashlib.sha1(C.synthesize("what color is grass", v, 160, 50).tobytes()).hexdigest() for v in voices}
    assert len(digests) == len(voices)
    low, high = (C.synthesize("what color is grass", "en-us", 160, p) for p in (30, 70))
    assert low.shape != high.shape or not np.array_equal(low, high)


def test_trim_silence_keeps_a_short_pad():
    sr = 1000
    wave = np.concatenate([np.zeros(500), np.ones(200) * 0.5, np.zeros(400)]).astype(np.float32)
    trimmed = C.trim_silence(wave, sr, pad_s=0.05)
    assert trimmed.size == 200 + 2 * 50 and trimmed[50] == 0.5 and trimmed[49] == 0


def test_text_is_one_argument_never_an_option():
    # A text that looks like flags is spoken as words (about as long as the same words), not parsed.
    flags, words = (C.synthesize(t, "en-us", 160, 50).size for t in ("-v xx --help", "v x x help"))
    assert 0.5 < flags / words < 2.0


def test_unknown_voice_is_a_clear_error():
    # (espeak-ng matches voice names by prefix: "no-such-voice" would quietly speak Norwegian.)
    with pytest.raises(RuntimeError, match="espeak-ng failed.*xx-yy.*does not exist"):
        C.synthesize("hello", "xx-yy", 160, 50)


def test_missing_espeak_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no espeak-ng anywhere
    with pytest.raises(FileNotFoundError, match="apt-get install espeak-ng"):
        C.synthesize("hello", "en-us", 160, 50)
    with pytest.raises(FileNotFoundError, match="espeak-ng"):
        C.build_corpus(tmp_path / "never", 2, 2, 2, progress=False)
    assert not (tmp_path / "never").exists()  # failed before doing any work


def test_arrow_assembly_matches_from_dict(corpus):
    # rows_to_dataset builds Arrow batches from numpy; it must equal the plain (slow) datasets route.
    from datasets import Dataset

    rows_ = [dict(r) for r in corpus["train"]]
    for r in rows_:
        r["question_audio"], r["answer_audio"] = (np.asarray(r[c], dtype=np.int16) for c in C.AUDIO_COLUMNS)
    fast = C.rows_to_dataset(rows_, batch_rows=5)  # several batches, the last one partial
    slow = Dataset.from_dict({n: [r[n] for r in rows_] for n in FEATURES}, features=FEATURES)
    assert fast.features == FEATURES and fast.to_dict() == slow.to_dict() == corpus["train"].to_dict()


def test_arrow_assembly_bounds_the_samples_per_batch(corpus, monkeypatch):
    # Real corpora have long clips: a batch also ends before its audio would pass the (int32-offset) sample bound.
    import processing.schema as S

    rows_ = [dict(r) for r in corpus["train"]]
    for r in rows_:
        r["question_audio"], r["answer_audio"] = (np.asarray(r[c], dtype=np.int16) for c in C.AUDIO_COLUMNS)
    longest = max(sum(len(r[c]) for c in C.AUDIO_COLUMNS) for r in rows_)
    monkeypatch.setattr(S, "_BATCH_SAMPLES", longest)
    built = C.rows_to_dataset(rows_)
    table = built.data.table
    batches = range(table.column("id").num_chunks)
    per_batch = [sum(len(table.column(c).chunk(i).values) for c in C.AUDIO_COLUMNS) for i in batches]
    assert len(per_batch) > 1 and max(per_batch) <= longest
    assert built.to_dict() == corpus["train"].to_dict()


def test_a_new_fact_list_replaces_the_demo_facts(tmp_path):
    facts = tmp_path / "new_facts.tsv"
    facts.write_text("relation\tsubject\tanswer\ncapital_of\tlatvia\triga\ncapital_of\tnepal\tkathmandu\n")
    plans = C.plan_split("train", 60, seed=5, tasks=("s2t",), facts_path=facts)
    statements = {p.answer_text for p in plans if " plus " not in p.answer_text and " minus " not in p.answer_text
                  and " times " not in p.answer_text}
    assert statements == {"the capital of latvia is riga", "the capital of nepal is kathmandu"}
    # The shipped LoRA fact list shares no subject with the demo's: it is new to the demo model.
    demo = {s for pairs in C.load_facts().values() for s, _ in pairs}
    lora = {s for pairs in C.load_facts(C.FACTS_PATH.parent / "lora_capitals.tsv").values() for s, _ in pairs}
    assert lora and not lora & demo


def _words_to_int(words: str) -> int:
    """Independent of the corpus code: English number words (0..100) back to an int."""
    ones = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
           "seventeen eighteen nineteen".split()
    tens = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
    if words == "one hundred":
        return 100
    parts = words.split()
    return tens[parts[0]] + (ones.index(parts[1]) if len(parts) > 1 else 0) if parts[0] in tens else ones.index(words)


def test_lora_number_relations_are_new_questions_with_known_answer_words():
    facts = C.load_facts(C.FACTS_PATH.parent / "lora_numbers.tsv")
    assert set(facts) == {"double_of", "square_of"} and not set(facts) & set(C.load_facts())
    for subject, answer in facts["double_of"]:
        assert _words_to_int(answer) == 2 * _words_to_int(subject)
    for subject, answer in facts["square_of"]:
        assert _words_to_int(answer) == _words_to_int(subject) ** 2
    plans = C.plan_split("test", 200, seed=1, tasks=("s2t", "s2s"), facts_path=C.FACTS_PATH.parent / "lora_numbers.tsv")
    new = [p for p in plans if p.template.split("/")[0] in facts]
    assert new and all(C.ALL_TEMPLATES[p.template].held_out for p in new)
    # The answer restates the sum/product, so every answer word is one the demo model already says.
    for p in new:
        statement, answer = p.answer_text.split(" is ")
        a, op, b = statement.split(" ", 2)
        assert a == b and op == ("plus" if p.template.startswith("double_of") else "times")
        n = _words_to_int(a)
        assert _words_to_int(answer) == (2 * n if op == "plus" else n * n)
        assert a in p.question_text.split()


def test_fact_lists_merge_for_replay():
    new, demo = C.FACTS_PATH.parent / "lora_numbers.tsv", C.FACTS_PATH
    merged = C.load_facts([new, demo])
    assert merged == {**C.load_facts(new), **C.load_facts(demo)}  # relations are disjoint: a plain union
    plans = C.plan_split("train", 300, seed=2, tasks=("s2t",), facts_path=[new, demo])
    kinds = {p.template.split("/")[0] for p in plans}
    assert {"double_of", "square_of", "capital_of", "arithmetic"} <= kinds
    with pytest.raises(ValueError, match="at least one"):
        C.load_facts([])
