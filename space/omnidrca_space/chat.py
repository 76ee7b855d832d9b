"""From the page's inputs to the model's conversation, and the streamed answer back.

The demo model learned each task under its own system prompt (`modeling_omnidrca.processing_omnidrca.
SYSTEM_PROMPTS`), so the page's task choice picks the prompt; typed text without audio is read aloud, the only
typed task it was trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from modeling_omnidrca.processing_omnidrca import SYSTEM_PROMPTS

from .models import LoadedModel

TASKS = {  # the page's wording -> training task
    "Answer my question": "s2s",
    "Transcribe what I say": "asr",
    "Repeat after me": "repeat",
}
MODES = {"Text": "text", "Text and speech": "audio"}
MAX_TYPED_CHARS = 300
CONTEXT_TURNS = 4  # earlier messages kept when context is on: the demo was trained on single questions


@dataclass
class Sampling:
    """The page's sampling controls; `do_sample=False` is greedy (the demo's evaluated setting)."""

    do_sample: bool = False
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 0.95
    max_new_tokens: int = 60  # 5 Hz steps: 12 s of answer
    seed: int | None = 0

    def generate_kwargs(self) -> dict:
        kwargs: dict = {"do_sample": self.do_sample, "max_new_tokens": int(self.max_new_tokens)}
        if self.do_sample:
            kwargs.update(temperature=float(self.temperature), top_k=int(self.top_k) or None, top_p=float(self.top_p))
            if self.seed is not None:
                kwargs["seed"] = int(self.seed)
        return kwargs


def user_turn(wave: np.ndarray | None, rate: int, typed: str) -> dict:
    """One user message as the processor's chat template takes it (audio item, or plain text)."""
    if wave is not None:
        return {"role": "user", "content": [{"type": "audio", "audio": wave, "sampling_rate": rate}]}
    return {"role": "user", "content": typed}


def build_conversation(task: str, turn: dict, earlier: list[dict] | None = None) -> list[dict]:
    """System prompt of `task`, the last `CONTEXT_TURNS` earlier messages (if any), then `turn`."""
    if task not in SYSTEM_PROMPTS:
        raise ValueError(f"task must be one of {sorted(SYSTEM_PROMPTS)}, got {task!r}.")
    history = list(earlier or [])[-CONTEXT_TURNS:]
    if history and history[0]["role"] == "assistant":  # never open on an answer without its question
        history = history[1:]
    return [{"role": "system", "content": SYSTEM_PROMPTS[task]}, *history, turn]


@torch.no_grad()  # wraps every resume of the generator: gradio resumes it from different worker threads
def stream_answer(
    loaded: LoadedModel, conversation: list[dict], mode: str, sampling: Sampling, chunk_steps: int = 2
) -> Iterator[tuple[str, np.ndarray | None]]:
    """Yield `(text_piece, audio_chunk)` as the model produces them; chunks are float32 at the codec's rate.

    `chunk_steps=2` decodes audio every 0.4 s of speech: the first sound arrives soon after the 0.4 s
    speech delay, and the chunks stay large enough for the browser's player.
    """
    if mode not in MODES.values():
        raise ValueError(f"mode must be one of {sorted(MODES.values())}, got {mode!r}.")
    processor, model = loaded.processor, loaded.model
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt").to(model.device)
    yield from model.generate_stream(processor, chunk_steps=chunk_steps, **inputs, generation_mode=mode,
                                     **sampling.generate_kwargs())


__all__ = ["MODES", "TASKS", "Sampling", "build_conversation", "stream_answer", "user_turn"]
