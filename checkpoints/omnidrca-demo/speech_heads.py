"""The speech-head interface and registry: `config.speech_head_type` -> the head class.

A speech head is one unit (one file) that owns everything that differs between ways of producing speech:

```
 head class (nn.Module, `speech_head.*` weights)     registered under its `speech_head_type`
   .continuous                       True when the speech stream carries latents (`speech_latents`) too
   .embedding_class(config)          Group(E_speech): a group of the speech stream -> one (D,) backbone input
                                     (`model.speech_embed.*` weights); forward(speech_ids, speech_latents=None)
   .loss(hidden, speech_ids, speech_labels, speech_latents, embed) -> SpeechHeadLoss     training objective
   .start_generation(model, settings, device) -> state                  per-generation state, whose
        state.next_group(hidden, speech_history, latent_history, active) -> SpeechGroup   makes the next group
        state.decode(speech_ids, speech_latents, lengths) -> (waveform, lengths)          and its audio
   .reads_text (optional, False)     True: `loss` also gets text_ids= (B, L) and text_embed= (the model's token
                                     embedding), and a state with `reads_text` True gets text_history= (B, H) and
                                     start= (B,) in `next_group` (the SRH's speech tracker reads the answer's text)
```

The model and the generation session look the head up once (`speech_head_class`); nothing else branches on
the head type. A new head is one new file with a class decorated `@register_speech_head("name")`, imported
before the config that names it is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

BUILTIN_SPEECH_HEAD_TYPES = ("srh", "diffusion")  # registered by speech_head_srh.py / diffusion_head.py
SPEECH_HEAD_REGISTRY: dict[str, type[nn.Module]] = {}


def register_speech_head(name: str):
    """Class decorator: make a speech head available as `speech_head_type=name`."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        SPEECH_HEAD_REGISTRY[name] = cls
        cls.speech_head_type = name
        return cls

    return register


def known_speech_head_types() -> tuple[str, ...]:
    return tuple(dict.fromkeys((*BUILTIN_SPEECH_HEAD_TYPES, *SPEECH_HEAD_REGISTRY)))


def speech_head_class(name: str) -> type[nn.Module]:
    if name not in SPEECH_HEAD_REGISTRY:
        raise ValueError(
            f"speech_head_type={name!r} is not registered: expected one of {sorted(SPEECH_HEAD_REGISTRY)}. Import the "
            "module that defines it (a class decorated with `@register_speech_head`) before building the model."
        )
    return SPEECH_HEAD_REGISTRY[name]


@dataclass
class SpeechHeadLoss:
    """What a head's training objective returns."""

    loss: torch.Tensor  # () the speech loss (weighted by `config.speech_loss_weight`)
    logits: torch.Tensor | None = None  # (P, k, Vs) teacher-forced logits, where the head has any
    stop_loss: torch.Tensor | None = None  # () an extra term (the diffusion head's stop head)
    stop_weight: float = 0.0  # its weight in the total loss


class SpeechGroup(NamedTuple):
    """One group made by a head's generation state for every row (`[pad]` where the row is not active)."""

    ids: torch.LongTensor  # (B, k) speech ids: codes, then `[eos]`, `[pad]`
    latents: torch.Tensor | None = None  # (B, k, d) continuous heads: the group's codec latents (0 off frames)
    logits: torch.Tensor | None = None  # (B, k, Vs) raw logits to report (NaN where nothing was sampled)


__all__ = [
    "BUILTIN_SPEECH_HEAD_TYPES",
    "SPEECH_HEAD_REGISTRY",
    "SpeechGroup",
    "SpeechHeadLoss",
    "known_speech_head_types",
    "register_speech_head",
    "speech_head_class",
]
