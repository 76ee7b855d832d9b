"""A LoRA training run (or one of its checkpoints) -> one plain OmniDRCA folder, adapter merged in.

A run that trained parts in full (`trainable_modules`) already holds the whole model: it is copied out without
its checkpoints and logs, with the run's processor, so every run packages the same way.

    python -m training.merge_run --run runs/smollm2-sft --base runs/smollm2-init --output runs/smollm2-merged
    python -m training.merge_run --run runs/smollm2-sft/checkpoint-600 --base runs/smollm2-init --output /tmp/m

The run holds a PEFT adapter (LoRA + the `modules_to_save` copies) and, with `trainable_token_start`, the
trained token-embedding rows (`token_rows.safetensors`). The output loads like any checkpoint, evaluates with
`training.evaluate`, and packages with `training.package_parts`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from modeling_omnidrca import OmniDRCAForConditionalGeneration, OmniDRCAProcessor

from .token_rows import load_token_rows


def merge_run(run: str | Path, base: str | Path) -> OmniDRCAForConditionalGeneration:
    """The base model with the run's adapter merged in and its token rows copied."""
    from peft import PeftModel

    model = OmniDRCAForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(run)).merge_and_unload()
    load_token_rows(model.get_input_embeddings(), str(run))
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a training output folder or one of its checkpoint-N folders")
    parser.add_argument("--base", required=True, help="the model the run started from (its model_name_or_path)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    run = Path(args.run)
    if (run / "adapter_config.json").is_file():
        model = merge_run(run, args.base)
    elif (run / "config.json").is_file() and any(run.glob("model*.safetensors")):
        model = OmniDRCAForConditionalGeneration.from_pretrained(run, dtype=torch.float32).eval()
    else:
        raise SystemExit(f"{args.run} has neither adapter_config.json nor model weights: expected a training run "
                         "folder or one of its checkpoints.")
    model.config.name_or_path = f"{args.base} + {args.run} (merged)"
    # The run's processor (the trainer saves it with the run and each checkpoint) carries a layout the run may
    # have switched (`train.py --text_alignment / --speech_delay / --speech_read`); the base's is the fallback.
    trained = Path(args.run) / "processor_config.json"
    processor = OmniDRCAProcessor.from_pretrained(args.run if trained.is_file() else args.base)
    model.config.text_alignment = processor.text_alignment
    model.config.speech_delay = processor.speech_delay
    model.config.speech_read = processor.speech_read
    processor.check_model_compatibility(model.config)
    model.save_pretrained(args.output)
    processor.save_pretrained(args.output)
    print(f"wrote {args.output}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
