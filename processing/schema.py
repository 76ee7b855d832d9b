"""The one row format every corpus in this project is saved in (synthetic or imported).

One row = one training example: a user turn (speech, or typed text for text-to-speech) and the answer
(text, plus speech for the tasks that answer in speech). Audio is 16 kHz mono int16, stored inline so a
saved `DatasetDict` is self-contained. Columns added later by caching steps (log-mel, codec codes) are
optional and never required by readers.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence as RowSequence

import numpy as np
import pyarrow as pa
from datasets import Dataset, Features, Sequence, Value
from datasets.table import InMemoryTable

# Task families (DESIGN.md §5); the package holds their system prompts, which tell the model the task of a turn.
from modeling_omnidrca.processing_omnidrca import SYSTEM_PROMPTS, TASKS

SAMPLING_RATE = 16_000

# Tasks whose answer carries speech (its codes are the speech stream's targets).
SPEECH_ANSWER_TASKS = ("s2s", "t2s", "repeat")

FEATURES = Features(
    {
        "id": Value("string"),
        "task": Value("string"),
        "system_prompt": Value("string"),
        "question_text": Value("string"),  # the words of the user turn (its transcript when spoken)
        "question_audio": Sequence(Value("int16")),  # 16 kHz; empty when the user typed (t2s)
        "answer_text": Value("string"),
        "answer_audio": Sequence(Value("int16")),  # 16 kHz; empty for text-only answers (asr, s2t)
        "voice": Value("string"),  # the question's voice / speaker id
        "rate": Value("int32"),  # speaking rate (words per minute), 0 when unknown
        "pitch": Value("int32"),  # espeak pitch 0-99, -1 when unknown
        "template": Value("string"),  # phrasing template id ("" for imported data)
        "source": Value("string"),  # "espeak" or the importer's source name
    }
)


def to_int16(wave: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] -> int16 PCM (clipped); the inverse of `to_float` on every int16 value."""
    return np.clip(np.round(np.asarray(wave, dtype=np.float32) * 32768.0), -32768, 32767).astype(np.int16)


def to_float(pcm) -> np.ndarray:
    """int16 PCM (list or array) -> float32 in [-1, 1]."""
    return np.asarray(pcm, dtype=np.int16).astype(np.float32) / 32768.0


AUDIO_COLUMNS = ("question_audio", "answer_audio")
_BATCH_SAMPLES = 2**28  # Arrow list offsets are int32: keep each batch's audio far below 2**31 samples


def _audio_column(clips: RowSequence[np.ndarray]) -> pa.ListArray:
    """int16 clips -> Arrow list<int16> straight from numpy (one copy, no Python ints per sample)."""
    offsets = np.zeros(len(clips) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([len(c) for c in clips])
    values = np.concatenate(clips) if clips else np.zeros(0, dtype=np.int16)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int16, copy=False), type=pa.int16()))


def _row_batches(rows: RowSequence[dict], batch_rows: int) -> Iterator[RowSequence[dict]]:
    """Consecutive slices of at most `batch_rows` rows and `_BATCH_SAMPLES` samples (unless one row alone has
    more); always at least one, possibly empty."""
    start = samples = 0
    for i, row in enumerate(rows):
        n = sum(len(row[name]) for name in AUDIO_COLUMNS)
        if i > start and (i - start == batch_rows or samples + n > _BATCH_SAMPLES):
            yield rows[start:i]
            start, samples = i, 0
        samples += n
    yield rows[start:]


def rows_to_dataset(rows: RowSequence[dict], batch_rows: int = 1000) -> Dataset:
    """Schema rows (audio as int16 arrays) -> `Dataset` with exactly `FEATURES`, built as Arrow record batches.

    `Dataset.from_dict` converts every audio sample to a Python int (~14 s per 1000 rows, slower than
    synthesising them); building the list<int16> columns from numpy takes milliseconds.
    """
    schema = FEATURES.arrow_schema  # carries the `datasets` feature metadata, so features round-trip
    batches = []
    for chunk in _row_batches(rows, batch_rows):
        arrays = [
            _audio_column([r[name] for r in chunk]) if name in AUDIO_COLUMNS
            else pa.array([r[name] for r in chunk], type=schema.field(name).type)
            for name in FEATURES
        ]  # fmt: skip
        batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
    return Dataset(InMemoryTable(pa.Table.from_batches(batches, schema=schema)))


__all__ = [
    "AUDIO_COLUMNS", "FEATURES", "SAMPLING_RATE", "SPEECH_ANSWER_TASKS", "SYSTEM_PROMPTS", "TASKS", "rows_to_dataset",
    "to_float", "to_int16",
]
