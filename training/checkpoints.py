"""Finding a checkpoint that is safe to resume from after a run was killed.

`Trainer._save_checkpoint` writes into `checkpoint-N/` in place: weights, then optimizer/scheduler/RNG
state, and `trainer_state.json` last. A kill (SIGKILL, OOM, pre-emption) in the middle leaves a folder
that `transformers.trainer_utils.get_last_checkpoint` would still pick, and resuming from it fails or, worse,
loads half-written weights. Here a checkpoint counts only once its `trainer_state.json` parses and names
its own step and every safetensors file in it has a readable header. Incomplete folders are renamed
aside (never deleted) so neither resuming nor `save_total_limit` rotation touches them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from safetensors import safe_open

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors", "pytorch_model.bin")
AUTO_RESUME = ("auto", "last", "true")


def _step(path: Path) -> int:
    return int(CHECKPOINT_PATTERN.match(path.name).group(1))


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """True when `path` holds everything `Trainer` wrote for its step (see module docstring)."""
    path = Path(path)
    match = CHECKPOINT_PATTERN.match(path.name)
    if match is None or not path.is_dir():
        return False
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    if state.get("global_step") != int(match.group(1)):
        return False
    if not any((path / name).exists() for name in WEIGHT_FILES) and not (path / "pytorch_model_fsdp_0").exists():
        return False
    for weights in path.glob("*.safetensors"):
        try:
            with safe_open(str(weights), framework="pt") as f:
                f.keys()
        except Exception:  # truncated or empty file: safetensors raises its own error types
            return False
    return True


def set_aside_incomplete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Rename every incomplete `checkpoint-N` in `output_dir` to `checkpoint-N.incomplete[-i]`; return the new paths."""
    moved = []
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return moved
    for path in sorted(output_dir.iterdir()):
        if CHECKPOINT_PATTERN.match(path.name) and path.is_dir() and not is_complete_checkpoint(path):
            target, i = path.with_name(path.name + ".incomplete"), 1
            while target.exists():
                target, i = path.with_name(f"{path.name}.incomplete-{i}"), i + 1
            path.rename(target)
            logger.warning("%s is incomplete (the run was stopped while saving it); moved it to %s.", path, target)
            moved.append(target)
    return moved


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete `checkpoint-N` in `output_dir`, or None."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    complete = [p for p in output_dir.iterdir() if CHECKPOINT_PATTERN.match(p.name) and is_complete_checkpoint(p)]
    return str(max(complete, key=_step)) if complete else None


def resolve_resume(resume_from_checkpoint: str | bool | None, output_dir: str | os.PathLike) -> str | None:
    """Turn a `--resume_from_checkpoint` value into a folder for `Trainer.train`.

    `auto`/`last`/`true`: the newest complete checkpoint in `output_dir` (None on a fresh run, so the same
    command starts or resumes a job); incomplete ones are set aside first. A path: that checkpoint, which
    must be complete. None/empty/`false`: start fresh.
    """
    if resume_from_checkpoint in (None, False, "", "false", "False", "none"):
        return None
    if resume_from_checkpoint is True or str(resume_from_checkpoint).lower() in AUTO_RESUME:
        set_aside_incomplete_checkpoints(output_dir)
        return last_complete_checkpoint(output_dir)
    if not is_complete_checkpoint(resume_from_checkpoint):
        raise ValueError(
            f"Cannot resume from {resume_from_checkpoint!r}: it is not a complete `checkpoint-N` folder (missing or "
            "unreadable trainer_state.json or weights; a run killed while saving leaves such a folder). Pass "
            "`--resume_from_checkpoint auto` to use the newest complete checkpoint of the output folder."
        )
    return str(resume_from_checkpoint)


__all__ = ["is_complete_checkpoint", "last_complete_checkpoint", "resolve_resume", "set_aside_incomplete_checkpoints"]
