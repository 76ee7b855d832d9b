"""Speech codec speed and size: encode + decode 10 s of audio on this machine.

    python benchmarks/codec.py [--runs 10] [--threads 2]

Weights are random (speed does not depend on them); reports medians over `--runs` after a warm-up.
"""

import argparse

import torch
from feature_extraction import median_ms  # benchmarks/ is on sys.path when run as a script

from modeling_omnidrca import OmniDRCASpeechCodec, OmniDRCASpeechCodecConfig

CONFIGS = {
    "default (3^8 codes)": {},
    "default, griffin_lim vocoder": {"vocoder_type": "griffin_lim"},
    "demo size (3^8 codes)": dict(encoder_hidden_size=128, encoder_layers=1, decoder_hidden_size=256, decoder_layers=2),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| codec config | params | encode {args.seconds:g} s (ms) | decode (ms) | real-time factor |")
    print("|---|---:|---:|---:|---:|")
    for name, overrides in CONFIGS.items():
        torch.manual_seed(0)
        codec = OmniDRCASpeechCodec(OmniDRCASpeechCodecConfig(**overrides)).eval()
        wave = 0.1 * torch.randn(1, int(args.seconds * codec.config.sampling_rate))
        with torch.no_grad():
            codes = codec.encode(wave)
            enc = median_ms(lambda: codec.encode(wave), args.runs)
            dec = median_ms(lambda: codec.decode(codes), args.runs)
        params = sum(p.numel() for p in codec.parameters()) / 1e6
        rtf = args.seconds * 1000 / (enc + dec)
        print(f"| {name} | {params:.2f} M | {enc:.1f} | {dec:.1f} | {rtf:.0f}x |")


if __name__ == "__main__":
    main()
