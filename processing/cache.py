"""Caching steps that run once the codec exists: the answer audio's 25 Hz codec codes (or latents)."""

from __future__ import annotations

import torch
from datasets import Dataset, Sequence, Value

from .schema import to_float


def encode_answer_audio(batch: dict, codec, continuous: bool = False) -> list[torch.Tensor | None]:
    """(B rows) -> per row the codec codes (n_codes,) of `answer_audio`, or with `continuous` its (n_codes, d)
    pre-quantisation latents; None for rows without answer audio. Spoken rows are encoded as one padded batch."""
    device = next(codec.parameters()).device
    waves = [to_float(a) for a in batch["answer_audio"]]
    out: list[torch.Tensor | None] = [None] * len(waves)
    spoken = [i for i, w in enumerate(waves) if len(w)]
    if not spoken:
        return out
    longest = max(len(waves[i]) for i in spoken)
    padded = torch.zeros(len(spoken), longest)
    mask = torch.zeros(len(spoken), longest, dtype=torch.long)
    for row, i in enumerate(spoken):
        padded[row, : len(waves[i])] = torch.from_numpy(waves[i])
        mask[row, : len(waves[i])] = 1
    encode = codec.encode_continuous if continuous else codec.encode
    with torch.no_grad():
        encoded = encode(padded.to(device), mask.to(device)).cpu()  # (n, T25) codes or (n, T25, d) latents
    if continuous:
        encoded = encoded.float()
    lengths = codec.code_lengths(mask).cpu()
    for row, i in enumerate(spoken):
        out[i] = encoded[row, : int(lengths[row])]
    return out


def add_answer_codes(dataset: Dataset, codec, batch_size: int = 16) -> Dataset:
    """Add `answer_codes` (the codec codes of `answer_audio`; empty for text-only answers) to every row.

    Codes are computed once here rather than in the collator: the codec is frozen during LM training, so
    every epoch would recompute the same codes.
    """

    def encode(batch: dict) -> dict:
        return {"answer_codes": [[] if c is None else c.tolist() for c in encode_answer_audio(batch, codec)]}

    features = dataset.features.copy()
    features["answer_codes"] = Sequence(Value("int32"))
    return dataset.map(encode, batched=True, batch_size=batch_size, features=features, desc="codec codes")


__all__ = ["add_answer_codes", "encode_answer_audio"]
