"""Package a trained OmniDRCA folder as a parts-only checkpoint: pretrained weights come from installed packages.

    python -m training.package_parts --model runs/smollm2-sft-merged --output checkpoints/omnidrca-smollm2 \
        [--dtype float16] [--external model.language_model=smollm2-135m-instruct ...]

For each submodule named in `--external` (default: the SmolLM2 backbone and the Whisper tiny.en encoder), every
tensor is compared with the source's (`modeling_omnidrca/pretrained_sources.py`): equal -> omitted; differs in a
few rows (e.g. the stream tokens' embedding rows) -> those rows and their indices; a 2-D difference of low rank
(a merged LoRA) -> its SVD factors, the rank the smallest whose relative reconstruction error of the difference is
<= --svd-tolerance; otherwise the full tensor. A representation is only used if it rebuilds the tensor within the
storage dtype's tolerance. Everything else (projector, speech head, codec, ...) is stored as is (in --dtype). The
tied `lm_head` follows the embedding. The written folder is then assembled in memory and compared with the input,
tensor by tensor; the largest error is printed, and the command fails above the tolerance.

`from_pretrained` on the output assembles the full model once into `~/.cache/omnidrca/assembled/` (see
`modeling_omnidrca/assembly.py`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from modeling_omnidrca.assembly import (
    CONFIG_KEY,
    MANIFEST_FILE,
    PARTS_FILE,
    WEIGHT_FILES,
    assemble_state_dict,
    base_tensor,
    fingerprint,
    split_name,
)
from modeling_omnidrca.hub_code import refresh_code_files
from modeling_omnidrca.pretrained_sources import source_state_dict

DEFAULT_EXTERNAL = {"model.language_model": "smollm2-135m-instruct", "model.audio_tower": "whisper-tiny.en"}
# max |rebuilt - original| allowed, relative to max |original| of the tensor, by storage dtype
RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def tolerance(original: torch.Tensor, dtype: torch.dtype) -> float:
    scale = original.abs().max().item() if original.numel() else 0.0
    return RTOL.get(dtype, 1e-5) * max(scale, 1e-6)


def read_state_dict(folder: Path) -> dict:
    """Every tensor of a full folder (one `model.safetensors` or its shards)."""
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    state = {}
    for name in files:
        with safe_open(folder / name, "pt") as f:
            state |= {key: f.get_tensor(key) for key in f.keys()}
    return state


def _store(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()


def encode(name: str, tensor: torch.Tensor, base: torch.Tensor | None, dtype: torch.dtype,
           svd_tolerance: float = 1e-3) -> tuple[str, dict]:
    """(kind, tensors to store) for one tensor against its source's `base` (float32, same shape, or None)."""
    if base is None or not tensor.is_floating_point():
        return "stored", {name: _store(tensor, dtype)}
    original = tensor.float()
    if torch.equal(original, base):
        return "external", {}
    tol, candidates = tolerance(original, dtype), []
    delta = original - base
    changed = (delta.reshape(delta.shape[0], -1) != 0).any(dim=1).nonzero().flatten() if delta.dim() else None
    if changed is not None and changed.numel() < delta.shape[0]:
        rows = _store(tensor[changed], dtype)
        rebuilt = base.clone()
        rebuilt[changed] = rows.float()
        if (rebuilt - original).abs().max().item() <= tol:
            candidates.append(("rows", {f"{name}@rows": rows, f"{name}@row_indices": changed.to(torch.int64)}))
    if delta.dim() == 2 and min(delta.shape) > 1:
        u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
        tail = s.pow(2).flip(0).cumsum(0).flip(0).sqrt()  # tail[r] = error norm when keeping r components
        total = tail[0].item()
        within = (tail <= svd_tolerance * total).nonzero()
        rank = int(within[0]) if within.numel() else s.numel()
        rank = max(rank, 1)
        if rank * sum(delta.shape) < delta.numel():
            b, a = _store((u[:, :rank] * s[:rank]).float(), dtype), _store(vh[:rank].float(), dtype)
            if (base + b.float() @ a.float() - original).abs().max().item() <= tol:
                candidates.append(("low_rank", {f"{name}@b": b, f"{name}@a": a}))
    if candidates:
        return min(candidates, key=lambda c: sum(t.numel() * t.element_size() for t in c[1].values()))
    return "stored", {name: _store(tensor, dtype)}


def package(model: str | Path, output: str | Path, external: dict | None = None, dtype: torch.dtype = torch.float32,
            svd_tolerance: float = 1e-3, verify: bool = True) -> dict:
    """Write the parts-only folder `output` for the full folder `model`; returns a summary (sizes, counts, error)."""
    model, output, external = Path(model), Path(output), dict(external or DEFAULT_EXTERNAL)
    start = time.perf_counter()
    state = read_state_dict(model)
    sources = {prefix: source_state_dict(name) for prefix, name in external.items()}
    tensors, manifest, counts = {}, {}, {}
    for name, tensor in state.items():
        where = split_name(name, external)
        base = base_tensor(sources[where[0]], where[1], tuple(tensor.shape)) if where else None
        kind, stored = encode(name, tensor, base, dtype, svd_tolerance) if where else ("stored", {
            name: _store(tensor, dtype)})
        tensors |= stored
        manifest[name] = {"kind": kind, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}
        counts[kind] = counts.get(kind, 0) + 1
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    for item in model.iterdir():
        if item.name in WEIGHT_FILES or item.name.endswith(".safetensors") or item.name == "config.json":
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, output / item.name)
    config = json.loads((model / "config.json").read_text())
    config[CONFIG_KEY] = external
    (output / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (output / MANIFEST_FILE).write_text(json.dumps({
        "format": 1, "storage_dtype": str(dtype).removeprefix("torch."),
        "sources": {prefix: {"name": external[prefix], "fingerprint": fingerprint(sources[prefix])} for prefix in external},
        "tensors": manifest}, indent=1) + "\n")
    save_file(tensors, output / PARTS_FILE, metadata={"format": "pt"})
    refresh_code_files(output)
    summary = {"counts": counts, "parts_bytes": (output / PARTS_FILE).stat().st_size,
               "folder_bytes": sum(p.stat().st_size for p in output.rglob("*") if p.is_file()),
               "full_bytes": sum(p.stat().st_size for p in model.glob("*.safetensors")),
               "package_s": time.perf_counter() - start}
    if verify:
        start = time.perf_counter()
        rebuilt = assemble_state_dict(output)
        if set(rebuilt) != set(state):
            raise RuntimeError(f"assembly of {output} gives other tensors: missing {sorted(set(state) - set(rebuilt))}, "
                               f"extra {sorted(set(rebuilt) - set(state))}")
        worst, worst_name = 0.0, None
        for name, tensor in state.items():
            if rebuilt[name].dtype != tensor.dtype or rebuilt[name].shape != tensor.shape:
                raise RuntimeError(f"{name}: rebuilt as {rebuilt[name].dtype} {tuple(rebuilt[name].shape)}, "
                                   f"was {tensor.dtype} {tuple(tensor.shape)}")
            if not tensor.is_floating_point():
                if not torch.equal(rebuilt[name], tensor):
                    raise RuntimeError(f"{name}: rebuilt integer tensor differs")
                continue
            error = (rebuilt[name].float() - tensor.float()).abs().max().item() if tensor.numel() else 0.0
            if error > tolerance(tensor.float(), dtype):
                raise RuntimeError(f"{name}: rebuilt with max abs error {error:.3g}, above the {dtype} tolerance "
                                   f"{tolerance(tensor.float(), dtype):.3g}")
            if error >= worst:
                worst, worst_name = error, name
        summary |= {"max_abs_error": worst, "max_error_tensor": worst_name, "verify_s": time.perf_counter() - start}
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a full (merged) OmniDRCA folder")
    parser.add_argument("--output", required=True, help="the parts-only folder to write (replaced if present)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="storage dtype of the stored tensors, rows and factors (rebuilt in the original dtype)")
    parser.add_argument("--external", action="append", metavar="PREFIX=SOURCE",
                        help="a submodule and the source of its pretrained weights (repeatable; default "
                             + ", ".join(f"{k}={v}" for k, v in DEFAULT_EXTERNAL.items()) + ")")
    parser.add_argument("--svd-tolerance", type=float, default=1e-3,
                        help="relative Frobenius error of the rank-truncated difference (default 1e-3)")
    parser.add_argument("--no-verify", action="store_true", help="skip assembling and comparing the result")
    args = parser.parse_args(argv)
    external = dict(item.split("=", 1) for item in args.external) if args.external else None
    try:
        s = package(args.model, args.output, external, getattr(torch, args.dtype), args.svd_tolerance,
                    not args.no_verify)
    except (FileNotFoundError, ModuleNotFoundError, KeyError) as error:
        raise SystemExit(f"python -m training.package_parts: error: {error}") from None
    mb = 1e6
    print(f"{args.model} -> {args.output}: tensors {s['counts']}; parts {s['parts_bytes'] / mb:.1f} MB, folder "
          f"{s['folder_bytes'] / mb:.1f} MB (full weights {s['full_bytes'] / mb:.1f} MB); packaged in "
          f"{s['package_s']:.1f} s")
    if "max_abs_error" in s:
        print(f"verified: every tensor rebuilt, max abs error {s['max_abs_error']:.3g} ({s['max_error_tensor']}), "
              f"in {s['verify_s']:.1f} s")


if __name__ == "__main__":
    main()
