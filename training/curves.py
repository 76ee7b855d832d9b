"""Training curves as PNG files, and TensorBoard logging when it is installed.

    python -m training.curves runs/stage1          # redraw runs/stage1/training_curves.png from its trainer state

`TrainingCurvesCallback` redraws `<output_dir>/training_curves.png` from `TrainerState.log_history` at every
save, evaluation and at the end, on the main process only. The file is written to a temporary name and
renamed, so a kill never leaves a half-written PNG.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from transformers import TrainerCallback

CURVES_FILE = "training_curves.png"
# Panels: title -> logged keys (train and `eval_` versions of each are drawn when present).
PANELS = {
    "loss": ("loss",),
    "loss components": ("text_loss", "speech_loss", "contrastive_loss", "stop_loss", "mel_loss", "stft_loss"),
    "learning rate": ("learning_rate",),
    "gradient norm": ("grad_norm",),
}


def available_loggers() -> list[str]:
    """`report_to` value: TensorBoard when `tensorboard` (or `tensorboardX`) is importable, else none."""
    found = any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))
    return ["tensorboard"] if found else []


def _series(log_history: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(e["step"], e[key]) for e in log_history if isinstance(e.get(key), (int, float)) and "step" in e]
    points = [(s, v) for s, v in points if math.isfinite(v)]
    return [s for s, _ in points], [v for _, v in points]


def plot_log_history(log_history: Sequence[dict], path: str | os.PathLike, title: str | None = None) -> Path | None:
    """Draw the logged losses, learning rate and gradient norm against the step into a PNG at `path`.

    Returns the path, or None when nothing numeric was logged yet. Needs matplotlib (`pip install -e ".[train]"`).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    panels = []
    for name, keys in PANELS.items():
        lines = [(label, *_series(log_history, label)) for key in keys for label in (key, f"eval_{key}")]
        lines = [line for line in lines if line[1]]
        if lines:
            panels.append((name, lines))
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, (name, lines) in zip(axes[:, 0], panels):
        for label, steps, values in lines:
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None, ms=3, label=label)
        positive = all(v > 0 for _, _, values in lines for v in values)
        if name != "learning rate" and positive and max(max(v) for *_, v in lines) > 20 * min(min(v) for *_, v in lines):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("step")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


class TrainingCurvesCallback(TrainerCallback):
    """Keeps `<output_dir>/training_curves.png` up to date (main process only)."""

    def __init__(self, filename: str = CURVES_FILE, title: str | None = None):
        self.filename = filename
        self.title = title

    def _draw(self, args, state) -> None:
        if state.is_world_process_zero:
            plot_log_history(state.log_history, Path(args.output_dir) / self.filename, self.title or args.run_name)

    def on_save(self, args, state, control, **kwargs):
        self._draw(args, state)

    def on_evaluate(self, args, state, control, **kwargs):
        self._draw(args, state)

    def on_train_end(self, args, state, control, **kwargs):
        self._draw(args, state)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Redraw training curves from a run's trainer_state.json.")
    parser.add_argument("run", help="an output folder or checkpoint folder holding trainer_state.json")
    parser.add_argument("--output", help=f"PNG path (default: <run>/{CURVES_FILE})")
    args = parser.parse_args(argv)
    run = Path(args.run)
    state_file = run / "trainer_state.json"
    if not state_file.exists():
        from .checkpoints import last_complete_checkpoint

        last = last_complete_checkpoint(run)
        if last is None:
            raise SystemExit(f"No trainer_state.json in {run} nor in a complete checkpoint-N under it.")
        state_file = Path(last) / "trainer_state.json"
    history = json.loads(state_file.read_text())["log_history"]
    out = plot_log_history(history, args.output or run / CURVES_FILE, title=run.name)
    print(out if out else "Nothing logged yet.")


if __name__ == "__main__":
    main()
