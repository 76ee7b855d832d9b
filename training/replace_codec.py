"""Put a retrained codec decoder into a trained model: same codes, new voice rendering.

    python -m training.replace_codec --model runs/smollm2-stage14b-merged --codec runs/codec-festival-decoder \
        --output runs/smollm2-stage15-merged

The speech head writes codec codes; the codec's encoder and quantiser define what each code means. A codec whose
encoder was frozen while its decoder retrained (`train_codec --freeze_encoder`) keeps that meaning, so it can
replace the model's codec without touching anything else. A codec with another encoder, codebook or frame layout
is refused: the model's speech head would write codes the new decoder reads differently.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from modeling_omnidrca import OmniDRCAForConditionalGeneration, OmniDRCAProcessor, OmniDRCASpeechCodec

# Config fields that fix what a code is and how codes map to time; the decoder's own fields may differ.
_CODE_FIELDS = ("fsq_levels", "sampling_rate", "frame_rate", "hop_length", "n_fft", "num_mel_bins",
                "encoder_hidden_size", "encoder_layers", "kernel_size")


def check_same_codes(old: OmniDRCASpeechCodec, new: OmniDRCASpeechCodec) -> None:
    """Raise ValueError unless `new` encodes audio to exactly the codes `old` does (same config and encoder)."""
    for name in _CODE_FIELDS:
        if getattr(old.config, name) != getattr(new.config, name):
            raise ValueError(
                f"The new codec's `{name}` is {getattr(new.config, name)!r}, the model's codec has "
                f"{getattr(old.config, name)!r}: its codes would mean something else. Retrain only the decoder "
                "(`python -m training.train_codec --codec_name_or_path <the model's codec> --freeze_encoder`)."
            )
    old_state, new_state = old.encoder.state_dict(), new.encoder.state_dict()
    changed = [k for k in old_state if not torch.equal(old_state[k].float(), new_state[k].float())]
    if changed:
        raise ValueError(
            f"The new codec's encoder differs from the model's in {len(changed)} tensors (first: {changed[0]}): "
            "its codes would differ. Train the decoder with `--freeze_encoder` from the model's codec."
        )


def replace_codec(model: OmniDRCAForConditionalGeneration, codec: OmniDRCASpeechCodec) -> None:
    """Swap `model.speech_codec` for `codec` (checked by `check_same_codes`), config included."""
    check_same_codes(model.speech_codec, codec)
    codec = codec.to(dtype=model.speech_codec.dtype, device=model.speech_codec.device).eval()
    codec.requires_grad_(False)
    model.speech_codec = codec
    model.config.codec_config = codec.config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a plain OmniDRCA folder (merge_run's output)")
    parser.add_argument("--codec", required=True, help="a codec folder (train_codec's output_dir)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    model = OmniDRCAForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    replace_codec(model, OmniDRCASpeechCodec.from_pretrained(args.codec, dtype=torch.float32))
    model.config.name_or_path = f"{args.model} + codec {args.codec}"
    model.save_pretrained(args.output)
    OmniDRCAProcessor.from_pretrained(args.model).save_pretrained(args.output)
    compact = Path(args.model) / "compact.json"  # how the folder's backbone was made: still true of it
    if compact.is_file():
        shutil.copy(compact, Path(args.output) / compact.name)
    print(f"wrote {args.output}: codec decoder {model.config.codec_config.decoder_layers} layers per stage")


if __name__ == "__main__":
    main()
