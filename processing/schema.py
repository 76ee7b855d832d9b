"""The one row format every corpus in this project is saved in (synthetic or imported).

One row = one training example: a user turn (speech, or typed text for text-to-speech) and the answer
(text, plus speech for the tasks that answer in speech). Audio is 16 kHz mono int16, stored inline so a
saved `DatasetDict` is self-contained. Columns added later by caching steps (log-mel, codec codes) are
optional and never required by readers.
"""

from __future__ import annotations

import numpy as np
from datasets import Features, Sequence, Value

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


__all__ = ["FEATURES", "SAMPLING_RATE", "SPEECH_ANSWER_TASKS", "SYSTEM_PROMPTS", "TASKS", "to_float", "to_int16"]
