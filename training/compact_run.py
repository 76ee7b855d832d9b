"""Truncate a merged model's low-rank backbone changes to a fixed rank, so that its parts-only checkpoint fits.

    python -m training.compact_run --model runs/smollm2-stage3-merged --rank 64 --output runs/smollm2-stage3-r64

Each LoRA stage merged into the backbone (`training.merge_run`) adds up to its rank to the difference between a
weight and its pretrained source: three rank-32 stages leave rank-96 differences, whose factors no longer fit
the 60 MB budget (`training.package_parts` stores exactly what it is given). This step replaces every 2-D
difference from the named pretrained source (`DEFAULT_EXTERNAL`) with its best rank-`--rank` approximation
(truncated SVD) and leaves every other tensor as it is, including differences confined to a few rows (the
added tokens' embedding rows, which packaging stores as rows). It is lossy: evaluate the output, not the input. The
relative Frobenius error of each truncated difference is printed (largest and mean).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from modeling_omnidrca.pretrained_sources import source_state_dict

from .package_parts import DEFAULT_EXTERNAL, WEIGHT_FILES, base_tensor, read_state_dict, split_name


def truncate(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, float]:
    """The best rank-`rank` approximation of a 2-D `delta` and its relative Frobenius error."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)  # (m, r) (r,) (r, n)
    kept = (u[:, :rank] * s[:rank]) @ vh[:rank]
    error = (s[rank:].square().sum().sqrt() / s.square().sum().sqrt().clamp_min(1e-30)).item()
    return kept.to(delta.dtype), error


def compact(model: str | Path, output: str | Path, rank: int, external: dict | None = None) -> dict:
    """Write `output`: `model` with each 2-D difference from its pretrained source truncated to `rank`."""
    if rank < 1:
        raise ValueError(f"--rank must be a positive integer, got {rank}.")
    model, output, external = Path(model), Path(output), dict(external or DEFAULT_EXTERNAL)
    state = read_state_dict(model)
    sources = {prefix: source_state_dict(name) for prefix, name in external.items()}
    errors = {}
    for name, tensor in state.items():
        where = split_name(name, external)
        base = base_tensor(sources[where[0]], where[1], tuple(tensor.shape)) if where else None
        if base is None or tensor.dim() != 2 or min(tensor.shape) <= rank:
            continue
        delta = tensor.float() - base.float()
        if (delta.abs().sum(dim=1) > 0).float().mean() < 0.5:  # unchanged, or a few rows (new tokens): kept exactly
            continue
        kept, errors[name] = truncate(delta, rank)
        state[name] = (base.float() + kept).to(tensor.dtype)
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    for item in model.iterdir():
        if item.name in WEIGHT_FILES or item.name.endswith(".safetensors"):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, output / item.name)
    save_file({k: v.contiguous() for k, v in state.items()}, output / "model.safetensors", metadata={"format": "pt"})
    summary = {"rank": rank, "truncated": len(errors), "max_relative_error": max(errors.values(), default=0.0),
               "mean_relative_error": sum(errors.values()) / max(len(errors), 1)}
    (output / "compact.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a full (merged) OmniDRCA folder")
    parser.add_argument("--output", required=True)
    parser.add_argument("--rank", type=int, required=True, help="the rank each backbone difference keeps")
    args = parser.parse_args(argv)
    print(json.dumps(compact(args.model, args.output, args.rank)))


if __name__ == "__main__":
    main()
