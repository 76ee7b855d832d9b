"""Synthetic demo-domain corpus: espeak-ng speech for every task family, with held-out voices and phrasings.

Reads top to bottom in the order the data is made:

    text content   number_to_words, demo facts, phrasing templates      -> (question, answer, template id)
    row plans      plan_split: task, texts, voice / rate / pitch per row -> RowPlan (no audio yet)
    audio          synthesize: espeak-ng 22.05 kHz -> 16 kHz, silence trimmed (each distinct clip once)
    dataset        build_corpus: plans + audio -> `processing.schema.FEATURES` rows, saved with save_to_disk

Generalisation (DESIGN.md §5) is measured on what training never saw: the train split uses only
`TRAIN_VOICES`, `TRAIN_RATES`, `TRAIN_PITCHES` and templates with `held_out=False`; validation and test
use only the held-out voices, rates, pitches and templates, all three at once. The facts and the
arithmetic operands are shared by every split: the demo model is meant to *know* them, the held-out
axes are how they are asked. Answers are spoken by one fixed assistant voice in every split (it is the
model's own voice, not the user's): espeak's by default, festival's HTS voice with `assistant="festival-slt"`.
Optional open-vocabulary asr / t2s rows come from `processing.sentences` (`sentences=`), split by a hash of
the sentence, so held-out sentences are never trained on.

Everything is a pure function of the seed: each split draws from its own `random.Random`, and audio is
synthesised from the finished plans (each distinct clip once), so the worker count never changes a row.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict

from processing.numbers import number_to_words
from processing.schema import (
    AUDIO_COLUMNS,
    SAMPLING_RATE,
    SPEECH_ANSWER_TASKS,
    SYSTEM_PROMPTS,
    TASKS,
    rows_to_dataset,
)
from processing.synthesis import (  # re-exported: the corpus's interface has always had them
    ASSISTANT_PITCH,
    ASSISTANT_RATE,
    ASSISTANT_VOICE,
    ASSISTANT_VOICES,
    DEFAULT_ASSISTANT_VOICE,
    ESPEAK_EXECUTABLE,
    AssistantVoice,
    SynthesisJob,
    answer_job,
    assistant_voice,
    espeak_path,
    espeak_version,
    festival_version,
    synthesis_jobs,
    synthesize,
    synthesize_all,
    trim_silence,
)
from processing.user_voices import assign_user_voices, augment_rows, extras_info
from processing.user_voices import check_options as check_user_options

# ----------------------------------------------------------------------------------------------------------
# Voices, rates, pitches

# "accent+variant": espeak-ng's English accents times its voice variants (m* male, f* female timbres).
# The mbrola voices (mb-*) are left out: they need the separate mbrola binary and data packages.
# British English is spelled "en" here: espeak-ng 1.51 silently drops the variant of "en-gb+m2" (it
# speaks plain "en-gb"), while "en+m2" applies it. tests/test_corpus.py checks every voice is distinct.
TRAIN_VOICES = (
    "en-us+m2", "en-us+m1", "en-us+f1", "en-us+m4",
    "en", "en+m2", "en+f3", "en-gb-x-rp",
    "en-gb-x-rp+m5", "en-gb-x-rp+f4", "en-gb-scotland+m1", "en-gb-scotland+f1",
    "en-gb-x-gbclan+m2", "en-gb-x-gbclan+f3", "en-us-nyc+m5", "en-us-nyc+f4",
)  # fmt: skip
# Unseen timbres (variants m6, m7, f2, f5 never occur in train) and unseen accents (Caribbean, West Midlands).
HELD_OUT_VOICES = ("en-029+m6", "en-gb-x-gbcwmd+f2", "en-us+m7", "en-gb-scotland+f5")
# Words per minute. Held-out rates fall between the trained ones and outside their range on both sides.
TRAIN_RATES = (140, 150, 160, 170, 180, 190)
HELD_OUT_RATES = (125, 155, 185, 200)
# espeak pitch, 0-99 (50 = the voice's default).
TRAIN_PITCHES = (30, 40, 50, 60, 70)
HELD_OUT_PITCHES = (22, 45, 65, 78)

SPLITS = ("train", "validation", "test")


def voice_pool(split: str) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    """(voices, rates, pitches) a split's user turns are drawn from: train ones for train, held-out otherwise."""
    _check_split(split)
    if split == "train":
        return TRAIN_VOICES, TRAIN_RATES, TRAIN_PITCHES
    return HELD_OUT_VOICES, HELD_OUT_RATES, HELD_OUT_PITCHES


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: expected one of {SPLITS}.")


# ----------------------------------------------------------------------------------------------------------
# Text content: numbers (`processing.numbers`), facts, templates


@dataclass(frozen=True)
class Template:
    """One phrasing. `text` is a `str.format` pattern; held-out ones only appear in validation and test."""

    id: str
    text: str
    held_out: bool = False


def _templates(kind: str, train: Sequence[str], held_out: Sequence[str]) -> tuple[Template, ...]:
    """Numbered template ids per kind ("capital_of/0", ...), so a row names its exact phrasing."""
    texts = [(t, False) for t in train] + [(t, True) for t in held_out]
    return tuple(Template(f"{kind}/{i}", text, flag) for i, (text, flag) in enumerate(texts))


# Questions per kind. Fields: arithmetic {a} {op} {b} (words); facts {subject}.
QUESTION_TEMPLATES: dict[str, tuple[Template, ...]] = {
    "arithmetic": _templates(
        "arithmetic",
        ["what is {a} {op} {b}", "how much is {a} {op} {b}", "tell me what {a} {op} {b} is",
         "can you work out {a} {op} {b}"],
        ["please calculate {a} {op} {b}", "what does {a} {op} {b} equal"],
    ),
    "capital_of": _templates(
        "capital_of",
        ["what is the capital of {subject}", "which city is the capital of {subject}",
         "tell me the capital of {subject}", "name the capital city of {subject}"],
        ["do you know the capital of {subject}", "i wonder what the capital of {subject} is"],
    ),
    "color_of": _templates(
        "color_of",
        ["what color is {subject}", "what is the color of {subject}", "tell me the color of {subject}",
         "which color is {subject}"],
        ["do you know what color {subject} is", "can you tell me the color of {subject}"],
    ),
    "sound_of": _templates(
        "sound_of",
        ["what sound does {subject} make", "what does {subject} say", "which sound does {subject} make",
         "tell me the sound of {subject}"],
        ["what noise does {subject} make", "how does {subject} sound"],
    ),
    "opposite_of": _templates(
        "opposite_of",
        ["what is the opposite of {subject}", "tell me the opposite of {subject}",
         "which word is the opposite of {subject}", "what word means the opposite of {subject}"],
        ["give me the opposite of {subject}", "do you know the opposite of {subject}"],
    ),
    # Relations the demo model never saw, for the LoRA demonstration (processing/data/lora_numbers.tsv). Their
    # answers reuse the arithmetic statement, so every answer word is one the frozen speech head can already say.
    "double_of": _templates(
        "double_of",
        ["what is double {subject}", "what is twice {subject}", "tell me double {subject}",
         "how much is {subject} doubled"],
        ["can you double {subject}", "what do you get if you double {subject}"],
    ),
    "square_of": _templates(
        "square_of",
        ["what is {subject} squared", "what is the square of {subject}", "tell me {subject} squared",
         "how much is {subject} squared"],
        ["can you square {subject}", "what do you get if you square {subject}"],
    ),
}  # fmt: skip
# One answer form per kind: the model should learn one short way to answer, not to mirror the phrasing.
ANSWER_FORMATS = {
    "arithmetic": "{a} {op} {b} is {c}",
    "capital_of": "the capital of {subject} is {answer}",
    "color_of": "{subject} is {answer}",
    "sound_of": "{subject} says {answer}",
    "opposite_of": "the opposite of {subject} is {answer}",
    "double_of": "{subject} plus {subject} is {answer}",
    "square_of": "{subject} times {subject} is {answer}",
}
# Sentences read aloud (asr, repeat) or typed (t2s): a true statement {s} inside a carrier phrase.
SENTENCE_TEMPLATES = _templates(
    "sentence",
    ["{s}", "i think {s}", "everyone knows {s}", "i read that {s}", "remember that {s}"],
    # Held-out phrasings reuse words that training has (new arrangements, no new words): a model trained from
    # scratch cannot transcribe or read aloud a word it has never seen, and that is not what is being tested.
    ["i remember that {s}", "you think {s}"],
)

ALL_TEMPLATES = {t.id: t for group in (*QUESTION_TEMPLATES.values(), SENTENCE_TEMPLATES) for t in group}
HELD_OUT_TEMPLATES = tuple(sorted(t.id for t in ALL_TEMPLATES.values() if t.held_out))

FACTS_PATH = Path(__file__).parent / "data" / "demo_facts.tsv"
Facts = dict[str, list[tuple[str, str]]]  # relation -> [(subject, answer), ...]


FactsPath = str | Path | Sequence[str | Path]  # one fact TSV or several, merged


def load_facts(path: FactsPath = FACTS_PATH) -> Facts:
    """relation -> [(subject, answer), ...] from fact TSVs (columns relation, subject, answer). Several files
    are merged, e.g. new facts plus the demo's own as replay, so that adapting to them does not erase the old."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths:
        raise ValueError("load_facts needs at least one fact TSV path, got an empty list.")
    facts: Facts = {}
    for one in paths:
        with open(one, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                facts.setdefault(row["relation"], []).append((row["subject"], row["answer"]))
    # A new relation without question templates would silently never be asked: say so instead.
    missing = sorted(set(facts) - set(QUESTION_TEMPLATES))
    if missing:
        raise ValueError(f"{path} has relations {missing} with no templates; add them to QUESTION_TEMPLATES.")
    return facts


# Small operands keep answers short and every result in 0..999 (minus never goes negative).
ARITHMETIC_OPS = {
    # ~380 distinct problems: few enough that a few-million-parameter model trained from scratch on a CPU sees
    # each several times (with operands up to 20 it saw most test problems once or never and got 16 % right).
    "plus": (lambda a, b: a + b, 12),
    "minus": (lambda a, b: a - b, 12),
    "times": (lambda a, b: a * b, 10),
}


# `max_operand` (`--max-operand N`) raises or lowers plus/minus to N; times keeps its own limit of 10 (at most N):
# its products grow as N squared, and the shipped demo's 0..10 tables are the ones the speech head can say.
# `max_times_operand` moves that limit too. Every operand, sum, difference and product stays within 0..999,
# the range of `number_to_words`: N <= 499 (plus), times operand <= 31.
MAX_PLUS_OPERAND, MAX_TIMES_OPERAND = 499, 31


def arithmetic_limits(max_operand: int | None = None, max_times_operand: int | None = None) -> dict[str, int]:
    """op -> largest operand. No arguments: `ARITHMETIC_OPS`' own limits (12 plus/minus, 10 times)."""
    limits = {op: high for op, (_, high) in ARITHMETIC_OPS.items()}
    if max_operand is not None:
        if not 1 <= max_operand <= MAX_PLUS_OPERAND or int(max_operand) != max_operand:
            raise ValueError(f"max_operand must be an integer in 1..{MAX_PLUS_OPERAND} (sums stay <= 999), "
                             f"got {max_operand!r}.")
        limits.update(plus=int(max_operand), minus=int(max_operand), times=min(limits["times"], int(max_operand)))
    if max_times_operand is not None:
        if not 1 <= max_times_operand <= MAX_TIMES_OPERAND or int(max_times_operand) != max_times_operand:
            raise ValueError(f"max_times_operand must be an integer in 1..{MAX_TIMES_OPERAND} (products stay "
                             f"<= 999), got {max_times_operand!r}.")
        limits["times"] = int(max_times_operand)
    return limits


def sample_arithmetic(rng: random.Random, limits: dict[str, int] | None = None) -> dict[str, str]:
    """Random {a, op, b, c} in words, with c = a op b; operands up to `limits[op]` (default `ARITHMETIC_OPS`')."""
    op = rng.choice(sorted(ARITHMETIC_OPS))
    fn, high = ARITHMETIC_OPS[op]
    if limits is not None:
        high = limits[op]
    a = rng.randint(0, high)
    b = rng.randint(0, a) if op == "minus" else rng.randint(0, high)
    return {"a": number_to_words(a), "op": op, "b": number_to_words(b), "c": number_to_words(fn(a, b))}


def sample_fields(rng: random.Random, facts: Facts,
                  limits: dict[str, int] | None = None) -> tuple[str, dict[str, str]]:
    """(kind, fields) of one demo-domain fact: half arithmetic, half facts spread evenly over relations."""
    if rng.random() < 0.5:
        return "arithmetic", sample_arithmetic(rng, limits)
    relation = rng.choice(sorted(facts))
    subject, answer = rng.choice(facts[relation])
    return relation, {"subject": subject, "answer": answer}


def allowed_templates(templates: Sequence[Template], split: str) -> list[Template]:
    """Train phrasings for train, held-out phrasings for validation/test."""
    _check_split(split)
    return [t for t in templates if t.held_out == (split != "train")]


# ----------------------------------------------------------------------------------------------------------
# Row plans: everything about a row except its audio


@dataclass(frozen=True)
class RowPlan:
    """A row before synthesis. `voice`/`rate`/`pitch` are the user's; ""/0/-1 when the user typed (t2s)."""

    id: str
    task: str
    question_text: str
    answer_text: str
    voice: str
    rate: int
    pitch: int
    template: str

    @property
    def spoken_question(self) -> bool:
        return self.task != "t2s"

    @property
    def spoken_answer(self) -> bool:
        return self.task in SPEECH_ANSWER_TASKS


def plan_texts(task: str, split: str, rng: random.Random, facts: Facts,
               limits: dict[str, int] | None = None) -> tuple[str, str, str]:
    """(question_text, answer_text, template id) for one row of `task`; `limits`: see `arithmetic_limits`."""
    kind, fields = sample_fields(rng, facts, limits)
    statement = ANSWER_FORMATS[kind].format(**fields)
    if task in ("s2t", "s2s"):
        template = rng.choice(allowed_templates(QUESTION_TEMPLATES[kind], split))
        return template.text.format(**fields), statement, template.id
    # asr / repeat / t2s: the same sentence on both sides (transcript, echo, or text read aloud).
    template = rng.choice(allowed_templates(SENTENCE_TEMPLATES, split))
    sentence = template.text.format(s=statement)
    return sentence, sentence, template.id


# Open-vocabulary sentence rows (`--sentences`, `processing.sentences`): the user reads one aloud (asr) or types
# it for the assistant voice to read (t2s). Their template id names no phrasing: the sentence is the whole text.
SENTENCE_TASKS = ("asr", "t2s")
OPEN_SENTENCE_TEMPLATE = "open_sentence"
DEFAULT_SENTENCE_FRACTION = 0.25


def plan_split(split: str, num_rows: int, seed: int = 0, tasks: Sequence[str] = TASKS,
               facts_path: FactsPath = FACTS_PATH, max_operand: int | None = None,
               max_times_operand: int | None = None, sentences=None,
               sentence_fraction: float = DEFAULT_SENTENCE_FRACTION) -> list[RowPlan]:
    """`num_rows` row plans for `split`; tasks balanced to within one row, order shuffled, all from `seed`.
    `facts_path`: the fact list (TSV relation/subject/answer) questions are drawn from.
    `max_operand`, `max_times_operand`: arithmetic operand limits (`arithmetic_limits`; None keeps 12 / 10).
    `sentences`: an open-vocabulary sentence source (`processing.sentences.load_sentences`: "wordnet", a text file,
    or a loaded `Sentences`); then `round(sentence_fraction * num_rows)` of the rows are asr / t2s rows over this
    split's sentences (train sentences for train, held-out ones otherwise), the rest are demo-domain rows exactly
    as `plan_split(split, rest, ...)` without sentences makes them. None (the default): demo-domain rows only."""
    _check_split(split)
    tasks = tuple(tasks)
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tuple(tasks)}.")
    limits = None if max_operand is None and max_times_operand is None else arithmetic_limits(max_operand,
                                                                                             max_times_operand)
    num_sentence_rows = 0
    if sentences is not None:
        if not 0.0 <= sentence_fraction <= 1.0:
            raise ValueError(f"sentence_fraction must be within 0..1, got {sentence_fraction!r}.")
        if not set(SENTENCE_TASKS) & set(tasks):
            raise ValueError(f"Sentence rows are {SENTENCE_TASKS} rows, but tasks {tasks} has neither.")
        num_sentence_rows = round(sentence_fraction * num_rows)
    # One generator per split: a split's rows do not depend on the other splits' sizes.
    rng = random.Random(f"omnidrca-corpus/{seed}/{split}")
    facts = load_facts(facts_path)
    voices, rates, pitches = voice_pool(split)
    task_list = [tasks[i % len(tasks)] for i in range(num_rows - num_sentence_rows)]
    rng.shuffle(task_list)
    plans = []
    for i, task in enumerate(task_list):
        question, answer, template = plan_texts(task, split, rng, facts, limits)
        voice, rate, pitch = rng.choice(voices), rng.choice(rates), rng.choice(pitches)
        if task == "t2s":  # typed question: no user voice (draws above still happen, keeping rows aligned)
            voice, rate, pitch = "", 0, -1
        plans.append(RowPlan(f"{split}-{i:06d}", task, question, answer, voice, rate, pitch, template))
    if sentences is None:
        return plans
    return _add_sentence_rows(plans, split, num_sentence_rows, seed, tasks, sentences)


def _add_sentence_rows(plans: list[RowPlan], split: str, count: int, seed: int, tasks: tuple[str, ...],
                       sentences) -> list[RowPlan]:
    """`plans` plus `count` open-sentence rows at random places, renumbered; drawn from their own generator, so
    the demo-domain rows (and their order) are unchanged by them."""
    from processing.sentences import Sentences, load_sentences

    pool = sentences if isinstance(sentences, Sentences) else load_sentences(sentences)
    texts = pool.split(split)
    if count and not texts:
        raise ValueError(f"Sentence source {pool.source!r} has no {split} sentence.")
    rng = random.Random(f"omnidrca-corpus/{seed}/{split}/sentences")
    voices, rates, pitches = voice_pool(split)
    kinds = [t for t in SENTENCE_TASKS if t in tasks]
    # Without replacement while the pool lasts: as many distinct sentences as possible.
    order = rng.sample(range(len(texts)), len(texts)) if texts else []
    extra = []
    for i in range(count):
        task, text = kinds[i % len(kinds)], texts[order[i % len(order)]]
        voice, rate, pitch = rng.choice(voices), rng.choice(rates), rng.choice(pitches)
        if task == "t2s":
            voice, rate, pitch = "", 0, -1
        extra.append(RowPlan("", task, text, text, voice, rate, pitch, OPEN_SENTENCE_TEMPLATE))
    # Sentence rows at random places; the demo-domain rows keep their order around them.
    total = len(plans) + len(extra)
    places = set(rng.sample(range(total), len(extra)))
    demo, sentence_rows = iter(plans), iter(extra)
    combined = [next(sentence_rows) if i in places else next(demo) for i in range(total)]
    return [replace(p, id=f"{split}-{i:06d}") for i, p in enumerate(combined)]


# ----------------------------------------------------------------------------------------------------------
# Audio


# ----------------------------------------------------------------------------------------------------------
# Dataset

_EMPTY_AUDIO = np.zeros(0, dtype=np.int16)


def plan_to_row(plan: RowPlan, clips: dict[SynthesisJob, np.ndarray],
                assistant: str | AssistantVoice = DEFAULT_ASSISTANT_VOICE) -> dict:
    """A `processing.schema` row: the plan's texts and metadata plus its synthesised audio."""
    question_audio = clips[(plan.question_text, plan.voice, plan.rate, plan.pitch)] if plan.spoken_question else None
    answer_audio = clips[answer_job(plan, assistant)] if plan.spoken_answer else None
    return {
        "id": plan.id,
        "task": plan.task,
        "system_prompt": SYSTEM_PROMPTS[plan.task],
        "question_text": plan.question_text,
        "question_audio": _EMPTY_AUDIO if question_audio is None else question_audio,
        "answer_text": plan.answer_text,
        "answer_audio": _EMPTY_AUDIO if answer_audio is None else answer_audio,
        "voice": plan.voice,
        "rate": plan.rate,
        "pitch": plan.pitch,
        "template": plan.template,
        "source": "espeak",
    }


def build_split(split: str, num_rows: int, seed: int = 0, tasks: Sequence[str] = TASKS, num_workers: int = 1,
                progress: bool = True, facts_path: FactsPath = FACTS_PATH, max_operand: int | None = None,
                max_times_operand: int | None = None, assistant: str | AssistantVoice = DEFAULT_ASSISTANT_VOICE,
                sentences=None, sentence_fraction: float = DEFAULT_SENTENCE_FRACTION, user_voices: str = "espeak",
                augment_fraction: float = 0.0) -> Dataset:
    """Plan, synthesise and assemble one split as a `Dataset` with `processing.schema.FEATURES`.
    The options after `facts_path` are `plan_split`'s, plus `assistant`: the answers' voice (`ASSISTANT_VOICES`),
    `user_voices` and `augment_fraction` (`processing.user_voices`)."""
    plans = assign_user_voices(plan_split(split, num_rows, seed, tasks, facts_path, max_operand, max_times_operand,
                                          sentences, sentence_fraction), split, seed, user_voices)
    clips = synthesize_all(synthesis_jobs(plans, assistant), num_workers, progress, desc=f"espeak {split}")
    rows = [plan_to_row(p, clips, assistant) for p in plans]
    return rows_to_dataset(augment_rows(rows, split, seed, augment_fraction))


def corpus_info(corpus: DatasetDict, seed: int, tasks: Sequence[str]) -> dict:
    """What a corpus holds and how it was made, for `corpus_info.json` (counts, pools, held-out axes)."""
    splits = {}
    for name, ds in corpus.items():
        # Lengths straight from Arrow: reading the columns would turn every sample into a Python int.
        samples = sum(pc.sum(pc.list_value_length(ds.data.table.column(c))).as_py() or 0 for c in AUDIO_COLUMNS)
        seconds = samples / SAMPLING_RATE
        splits[name] = {
            "rows": len(ds),
            "tasks": dict(sorted(Counter(ds["task"]).items())),
            "templates": len(set(ds["template"])),
            "audio_hours": round(seconds / 3600, 4),
        }
    return {
        "source": "espeak-ng",
        "seed": seed,
        "tasks": list(tasks),
        "sampling_rate": SAMPLING_RATE,
        "splits": splits,
        "train": {"voices": list(TRAIN_VOICES), "rates": list(TRAIN_RATES), "pitches": list(TRAIN_PITCHES)},
        "held_out": {
            "voices": list(HELD_OUT_VOICES),
            "rates": list(HELD_OUT_RATES),
            "pitches": list(HELD_OUT_PITCHES),
            "templates": list(HELD_OUT_TEMPLATES),
        },
        "assistant": {"voice": ASSISTANT_VOICE, "rate": ASSISTANT_RATE, "pitch": ASSISTANT_PITCH},
        "espeak_version": espeak_version(),
    }


def build_corpus(output_dir: str | Path, num_train: int, num_validation: int, num_test: int, seed: int = 0,
                 tasks: Sequence[str] = TASKS, num_workers: int = 1, progress: bool = True,
                 facts_path: FactsPath = FACTS_PATH, max_operand: int | None = None,
                 max_times_operand: int | None = None, assistant: str = DEFAULT_ASSISTANT_VOICE,
                 sentences: str | Path | None = None,
                 sentence_fraction: float = DEFAULT_SENTENCE_FRACTION, user_voices: str = "espeak",
                 augment_fraction: float = 0.0) -> DatasetDict:
    """Build train/validation/test, save them with `save_to_disk(output_dir)` plus `corpus_info.json`.

    Train uses only train voices/rates/pitches/templates; validation and test only held-out ones.
    Deterministic given `seed` (independent of `num_workers`). A split of size 0 is saved empty.
    Options (defaults reproduce the shipped demo's corpus): `max_operand` / `max_times_operand` (arithmetic
    operand limits), `assistant` (the answers' voice, a key of `ASSISTANT_VOICES`), `sentences` and
    `sentence_fraction` (open-vocabulary asr / t2s rows, `processing.sentences`), `user_voices` / `augment_fraction`
    (flite / festival user voices, augmented train audio: `processing.user_voices`); each non-default one is
    recorded in `corpus_info.json`.
    """
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    if any(n < 0 for n in sizes.values()):
        raise ValueError(f"Split sizes must be >= 0, got {sizes}.")
    espeak_path()  # fail before any work if espeak-ng is missing (flite / festival too for user_voices="all")
    check_user_options(user_voices, augment_fraction)
    voice = assistant_voice(assistant)
    limits = None if max_operand is None and max_times_operand is None else arithmetic_limits(max_operand,
                                                                                             max_times_operand)
    if voice.engine == "festival":
        from processing.voices import text2wave_path

        text2wave_path()  # fail before any work if festival is missing
    pool = None
    if sentences is not None:
        from processing.sentences import load_sentences

        pool = load_sentences(sentences)
    corpus = DatasetDict(
        {split: build_split(split, n, seed, tuple(tasks), num_workers, progress, facts_path, max_operand,
                            max_times_operand, voice, pool, sentence_fraction, user_voices, augment_fraction)
         for split, n in sizes.items()}
    )  # fmt: skip
    output_dir = Path(output_dir)
    # datasets writes an empty split as 0 shards, which load_from_disk cannot read back: give it one shard.
    empty_shards = {split: 1 for split, n in sizes.items() if n == 0}
    with _datasets_progress(progress):
        corpus.save_to_disk(str(output_dir), num_shards=empty_shards)
    info = corpus_info(corpus, seed, tasks)
    info["facts"] = [Path(p).name for p in ([facts_path] if isinstance(facts_path, (str, Path)) else facts_path)]
    # Non-default options only, so that the default corpus_info.json stays exactly as before.
    if voice.name != DEFAULT_ASSISTANT_VOICE:
        info["assistant"] = {"name": voice.name, "engine": voice.engine, "voice": voice.voice, "rate": voice.rate,
                             "pitch": voice.pitch, "sampling_rate": SAMPLING_RATE}
        if voice.engine == "festival":
            info["assistant"]["festival_version"] = festival_version()
    if limits is not None:
        info["arithmetic"] = {"max_operand": limits}
    if pool is not None:
        info["sentences"] = {**pool.info(), "fraction": sentence_fraction, "template": OPEN_SENTENCE_TEMPLATE}
    info.update(extras_info(corpus, seed, user_voices, augment_fraction))  # nothing for the defaults
    (output_dir / "corpus_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return corpus


@contextmanager
def _datasets_progress(enabled: bool) -> Iterator[None]:
    """Silence datasets' own progress bars (saving) when `progress=False`, restoring the global setting."""
    was_enabled = datasets.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            datasets.enable_progress_bars()


__all__ = [
    "ALL_TEMPLATES",
    "ANSWER_FORMATS",
    "ASSISTANT_PITCH",
    "ASSISTANT_RATE",
    "ASSISTANT_VOICE",
    "ASSISTANT_VOICES",
    "DEFAULT_ASSISTANT_VOICE",
    "OPEN_SENTENCE_TEMPLATE",
    "SENTENCE_TASKS",
    "AssistantVoice",
    "arithmetic_limits",
    "assistant_voice",
    "AUDIO_COLUMNS",
    "FACTS_PATH",
    "HELD_OUT_PITCHES",
    "HELD_OUT_RATES",
    "HELD_OUT_TEMPLATES",
    "HELD_OUT_VOICES",
    "QUESTION_TEMPLATES",
    "SENTENCE_TEMPLATES",
    "SPLITS",
    "TRAIN_PITCHES",
    "TRAIN_RATES",
    "TRAIN_VOICES",
    "RowPlan",
    "Template",
    "build_corpus",
    "build_split",
    "corpus_info",
    "ESPEAK_EXECUTABLE",
    "SynthesisJob",
    "answer_job",
    "espeak_path",
    "espeak_version",
    "festival_version",
    "load_facts",
    "number_to_words",
    "plan_split",
    "plan_to_row",
    "rows_to_dataset",
    "synthesis_jobs",
    "synthesize",
    "synthesize_all",
    "trim_silence",
    "voice_pool",
]
