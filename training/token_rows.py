"""Train only some rows of a frozen token embedding: the stream tokens added to a pretrained backbone.

PEFT's trainable tokens would be the idiom, but with tied embeddings PEFT 0.21 wraps every module whose
name ends in `lm_head`, the SRH's own `speech_head.lm_head` included, and fails on its shape. Instead the
(tied) embedding weight trains with a gradient mask, and the trained rows are written next to each
checkpoint (`token_rows.safetensors`, a few KB) so that resuming and packaging find them.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

ROWS_FILE = "token_rows.safetensors"


def train_token_rows(embedding: torch.nn.Embedding, start: int) -> torch.utils.hooks.RemovableHandle:
    """Let rows `start:` of `embedding` train (the others get zero gradient). Needs weight decay 0: decoupled
    decay would shrink the frozen rows too."""
    if not 0 <= start < embedding.num_embeddings:
        raise ValueError(f"trainable_token_start must be in [0, {embedding.num_embeddings}); got {start}.")
    mask = torch.zeros(embedding.num_embeddings, 1)
    mask[start:] = 1.0
    embedding.weight.requires_grad_(True)
    return embedding.weight.register_hook(lambda grad: grad * mask.to(grad))


def save_token_rows(embedding: torch.nn.Embedding, start: int, folder: str) -> None:
    rows = embedding.weight.detach()[start:].float().contiguous().cpu()
    save_file({"rows": rows, "start": torch.tensor([start])}, os.path.join(folder, ROWS_FILE))


def load_token_rows(embedding: torch.nn.Embedding, folder: str) -> bool:
    """Copy the rows saved in `folder` into `embedding`; False when `folder` has none."""
    path = os.path.join(folder, ROWS_FILE)
    if not os.path.exists(path):
        return False
    saved = load_file(path)
    start = int(saved["start"][0])
    with torch.no_grad():
        embedding.weight[start : start + saved["rows"].shape[0]] = saved["rows"].to(embedding.weight)
    return True


class TokenRowsCallback(TrainerCallback):
    """Writes the trained rows into every checkpoint folder the trainer saves."""

    def __init__(self, embedding: torch.nn.Embedding, start: int):
        self.embedding, self.start = embedding, start

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            os.makedirs(folder, exist_ok=True)
            save_token_rows(self.embedding, self.start, folder)
