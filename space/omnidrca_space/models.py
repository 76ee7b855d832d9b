"""Which checkpoints the Space offers, and loading each one once (lazily, shared by every visitor)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = REPO_ROOT / "checkpoints"
DEFAULT_MODEL = CHECKPOINTS / "omnidrca-demo"


@dataclass
class LoadedModel:
    """A model and its processor, ready to answer; `engine()` batches every visitor's answer together."""

    name: str
    model: Any  # OmniDRCAForConditionalGeneration (from trust_remote_code)
    processor: Any  # OmniDRCAProcessor
    load_seconds: float
    _engine: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def engine(self):
        """The model's serving engine (`serving.engine.Engine`), started on first use: visitors asking at the
        same time are answered in one batch, each joining at the next step, as the API server does."""
        with self._lock:
            if self._engine is None:
                from serving.engine import Engine

                # torch_threads=None: app.py's --threads already set this process's torch threads
                self._engine = Engine(self.model, self.processor, max_new_tokens=256, torch_threads=None).start()
            return self._engine

    @property
    def sampling_rate(self) -> int:
        return int(self.model.speech_codec.config.sampling_rate)


def find_checkpoints(root: str | Path = CHECKPOINTS) -> dict[str, str]:
    """Display name -> folder of every `omnidrca-demo*` checkpoint under `root` (a folder with config.json)."""
    root = Path(root)
    if not root.is_dir():
        return {}
    return {p.name: str(p) for p in sorted(root.glob("omnidrca-demo*")) if (p / "config.json").is_file()}


def model_choices(extra: str | None = None, root: str | Path = CHECKPOINTS) -> tuple[dict[str, str], str | None]:
    """(the dropdown's choices, the selected one): the bundled checkpoints, plus `extra` (a folder or Hub id)
    first if it is not one of them. `extra` given as another spelling of a bundled folder (relative,
    symlinked) selects that folder's entry, so the selection is always one of the choices."""
    found = find_checkpoints(root)
    if extra is None:
        return found, next(iter(found.values()), None)
    for folder in found.values():
        if Path(extra).resolve() == Path(folder).resolve():
            return found, folder
    label = Path(extra).name if Path(extra).exists() else str(extra)
    return {label: str(extra), **found}, str(extra)


class ModelRegistry:
    """Loads a checkpoint on first use and keeps it: switching models in the page never reloads one twice."""

    def __init__(self, device: str | None = None):
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()  # two visitors picking a new model at once load it once

    def get(self, name_or_path: str) -> LoadedModel:
        loaded = self._loaded.get(name_or_path)
        if loaded is not None:  # no lock on the common path: answers never wait behind another model's load
            return loaded
        with self._lock:
            if name_or_path not in self._loaded:
                self._loaded[name_or_path] = self._load(name_or_path)
            return self._loaded[name_or_path]

    def loaded(self) -> list[str]:
        return list(self._loaded)

    def _load(self, name_or_path: str) -> LoadedModel:
        from transformers import AutoModel, AutoProcessor

        start = time.perf_counter()
        path = Path(name_or_path)
        # A missing local folder would otherwise be tried as a Hub id: a network wait, then a confusing error.
        looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or (
            path.parent != Path(".") and path.parent.exists())
        if looks_local and not path.exists():
            raise ValueError(
                f"Could not load an OmniDRCA checkpoint from {name_or_path!r}: expected an existing folder (or a Hub "
                "id like owner/name), got a path that does not exist. Fix: pass --model checkpoints/omnidrca-demo."
            )
        try:
            processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=True)
            model = AutoModel.from_pretrained(name_or_path, trust_remote_code=True).to(self.device).eval()
            model.requires_grad_(False)
        except (OSError, ValueError, KeyError) as error:  # missing files, unknown processor/model type
            raise ValueError(
                f"Could not load an OmniDRCA checkpoint from {name_or_path!r}: expected a folder (or Hub id) with "
                "config.json, model.safetensors and the processor files, got an error: "
                f"{error}. Fix: pass --model checkpoints/omnidrca-demo or another saved OmniDRCA folder."
            ) from error
        if not hasattr(model, "generate_stream"):
            raise ValueError(
                f"{name_or_path!r} loaded as {type(model).__name__}, expected an OmniDRCA model with "
                "generate_stream. Fix: point --model at an OmniDRCA checkpoint."
            )
        return LoadedModel(str(name_or_path), model, processor, time.perf_counter() - start)


__all__ = ["CHECKPOINTS", "DEFAULT_MODEL", "LoadedModel", "ModelRegistry", "find_checkpoints", "model_choices"]
