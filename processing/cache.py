"""Caching steps that run once the codec exists: the answer audio's 25 Hz codec codes."""

from __future__ import annotations

import torch
from datasets import Dataset, Sequence, Value

from .schema import to_float


def add_answer_codes(dataset: Dataset, codec, batch_size: int = 16) -> Dataset:
    """Add `answer_codes` (the codec codes of `answer_audio`; empty for text-only answers) to every row.

    Codes are computed once here rather than in the collator: the codec is frozen during LM training, so
    every epoch would recompute the same codes.
    """
    device = next(codec.parameters()).device

    def encode(batch: dict) -> dict:
        waves = [to_float(a) for a in batch["answer_audio"]]
        codes: list[list[int]] = [[] for _ in waves]
        spoken = [i for i, w in enumerate(waves) if len(w)]
        if spoken:
            longest = max(len(waves[i]) for i in spoken)
            padded = torch.zeros(len(spoken), longest)
            mask = torch.zeros(len(spoken), longest, dtype=torch.long)
            for row, i in enumerate(spoken):
                padded[row, : len(waves[i])] = torch.from_numpy(waves[i])
                mask[row, : len(waves[i])] = 1
            with torch.no_grad():
                out = codec.encode(padded.to(device), mask.to(device)).cpu()
            lengths = codec.code_lengths(mask).cpu()
            for row, i in enumerate(spoken):
                codes[i] = out[row, : int(lengths[row])].tolist()
        return {"answer_codes": codes}

    features = dataset.features.copy()
    features["answer_codes"] = Sequence(Value("int32"))
    return dataset.map(encode, batched=True, batch_size=batch_size, features=features, desc="codec codes")


__all__ = ["add_answer_codes"]
