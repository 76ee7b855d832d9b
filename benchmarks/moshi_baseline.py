"""Moshi baseline: transformers' own `MoshiForConditionalGeneration`, random weights, CPU, fixed speech length.

    python benchmarks/moshi_baseline.py [--hidden 256] [--layers 6] [--codebooks 8] [--seconds 10] [--runs 3]

Imported by the generation benchmark to compare with our model at a matched backbone size.

What is timed: one `model.generate(...)` call producing `frames = round(12.5 * seconds)` Moshi frames from
the one-frame unconditional prompt (`get_unconditional_inputs`, no extra prompt frame). Per frame that is
one backbone (temporal transformer) step plus one `depth_decoder.generate` of `num_codebooks` depth steps,
with Mimi encoding one blank 80 ms user frame once per call. Because of Moshi's one-step acoustic delay,
`frames` audio frames take `frames + 1` new backbone steps (`max_new_tokens = frames + 1`). With
`decode_audio=True` (the default, as Moshi's generate does by default) the timing also includes the Mimi
decode of those codes into a 24 kHz waveform; `decode_audio=False` stops at the audio codes (the codes
are still un-delayed and returned, so the two settings differ by the Mimi decode alone).

Sizes follow the released Moshi's ratios (backbone 4096 x 32 layers, depth 1024 x 6, Mimi 512) scaled to
the requested backbone; the text vocabulary stays Moshi's 32000, so `backbone_params` (the whole
`model.decoder`) includes the text embedding and text head. Mimi keeps its real conv strides (24 kHz,
12.5 Hz frames) but is narrower and has 2 transformer layers instead of 8: it is not the point here.
Decoding is greedy, so every run does the same work, and `min_new_tokens` rules out an early stop.
"""

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
import transformers
from transformers import MoshiConfig, MoshiForConditionalGeneration

TEXT_VOCAB = 32_000  # Moshi's text vocabulary: its embedding and head are part of the per-frame backbone cost
FFN_RATIO = 5.5  # Moshi's `ffn_dim` is the fused gate+up width: 22528 / 4096 (backbone) = 5632 / 1024 (depth)


def _even(x: float) -> int:
    return 2 * round(x / 2)  # Moshi's gated MLP splits `ffn_dim` in two halves


def build_tiny_moshi(
    hidden_size: int = 256, num_layers: int = 6, num_codebooks: int = 8, num_heads: int = 4, seed: int = 0
) -> MoshiForConditionalGeneration:
    """random-weight Moshi whose backbone (the temporal transformer) has the given width/depth; depth decoder and
    Mimi audio codec kept small but realistic for that size; eval mode, float32"""
    depth_hidden = max(64, hidden_size // 4)  # released: 1024 for a 4096 backbone
    depth = dict(
        hidden_size=depth_hidden,
        num_hidden_layers=max(2, round(num_layers * 6 / 32)),  # released: 6 depth layers for 32 backbone layers
        num_attention_heads=max(1, depth_hidden // 64),  # released: head_dim 64
        ffn_dim=_even(FFN_RATIO * depth_hidden),
    )  # input_size, vocab sizes and num_codebooks are filled in by MoshiConfig from the backbone
    mimi_hidden = max(64, min(512, hidden_size // 2))
    mimi = dict(
        model_type="mimi",
        hidden_size=mimi_hidden,
        num_filters=mimi_hidden // 8,  # released: 64 filters for hidden 512
        num_hidden_layers=2,
        intermediate_size=4 * mimi_hidden,
        num_attention_heads=max(1, mimi_hidden // 64),
        num_key_value_heads=max(1, mimi_hidden // 64),
        codebook_dim=mimi_hidden // 2,
        vector_quantization_hidden_dimension=mimi_hidden // 2,
        upsample_groups=mimi_hidden,  # depthwise 25 Hz -> 12.5 Hz resampling, as released (groups == hidden)
        num_quantizers=num_codebooks,  # Moshi only ever uses the first `num_codebooks` quantizers
        codebook_size=2048,  # = Moshi's audio vocabulary
    )
    config = MoshiConfig(
        vocab_size=TEXT_VOCAB,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        ffn_dim=_even(FFN_RATIO * hidden_size),
        num_codebooks=num_codebooks,
        audio_encoder_config=mimi,
        depth_decoder_config=depth,
    )
    torch.manual_seed(seed)
    return MoshiForConditionalGeneration(config).to(torch.float32).eval()


@dataclass
class MoshiTiming:
    seconds_of_speech: float  # requested duration
    frames: int  # Moshi frames generated (12.5 Hz * seconds)
    backbone_params: int  # parameters of the temporal transformer (decoder) only
    depth_params: int  # depth decoder parameters
    median_s: float  # median wall seconds over runs, tokens + waveform decode (as Moshi's generate returns audio)
    runs_s: list[float]
    backbone_calls_per_second_of_speech: float  # 12.5
    decode_audio: bool = True  # False: median_s stops at the audio codes (no Mimi decode)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def time_moshi(
    model: MoshiForConditionalGeneration, seconds: float = 10.0, runs: int = 3, warmup: int = 1, decode_audio: bool = True
) -> MoshiTiming:
    """time `model.generate(...)` producing `seconds` of speech (frames = round(12.5*seconds) new audio frames,
    greedy so every run does the same work; min_new_tokens rules out an early stop) under torch.inference_mode"""
    frame_rate = model.config.audio_encoder_config.frame_rate  # 12.5 Hz with Mimi's conv strides
    frames = round(frame_rate * seconds)
    samples_per_frame = round(model.config.sampling_rate / frame_rate)
    prompt = model.get_unconditional_inputs(num_samples=1)  # 1 text id + 2 x (1, num_codebooks, 1) audio codes

    def generate() -> None:
        out = model.generate(
            **prompt,
            concat_unconditional_inputs=False,  # the prompt above already is the unconditional frame
            max_new_tokens=frames + 1,  # +1: the acoustic delay drops one step of codes
            min_new_tokens=frames + 1,
            do_sample=False,
            depth_decoder_do_sample=False,
            return_audio_codes=True,  # keeps the final depth step and un-delaying in both settings
            return_audio_waveforms=decode_audio,
        )
        # fail loudly rather than time a different amount of speech than asked
        if out.audio_codes.shape != (1, model.config.num_codebooks, frames):
            raise RuntimeError(f"expected {frames} frames, got audio codes {tuple(out.audio_codes.shape)}")
        if decode_audio and out.audio_sequences.shape[-1] != frames * samples_per_frame:
            raise RuntimeError(f"expected {frames * samples_per_frame} samples, got {out.audio_sequences.shape}")

    runs_s = []
    with torch.inference_mode():
        for _ in range(warmup):
            generate()
        for _ in range(runs):
            start = time.perf_counter()
            generate()
            runs_s.append(time.perf_counter() - start)
    return MoshiTiming(
        seconds_of_speech=seconds,
        frames=frames,
        backbone_params=_params(model.decoder),
        depth_params=_params(model.depth_decoder),
        median_s=statistics.median(runs_s),
        runs_s=runs_s,
        backbone_calls_per_second_of_speech=frame_rate,
        decode_audio=decode_audio,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--codebooks", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-decode", action="store_true", help="stop at audio codes (skip the Mimi decode)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Moshi's generate prepares the length twice, so every call logs "Both `max_new_tokens` and `max_length`
    # seem to have been set" and a generation_config deprecation notice: benign, and noise in a one-line summary
    transformers.logging.set_verbosity_error()
    model = build_tiny_moshi(args.hidden, args.layers, args.codebooks, args.heads)
    t = time_moshi(model, args.seconds, args.runs, decode_audio=not args.no_decode)
    what = "tokens + Mimi decode" if t.decode_audio else "tokens only"
    print(
        f"Moshi h={args.hidden} L={args.layers} K={args.codebooks} | backbone {t.backbone_params / 1e6:.1f} M, "
        f"depth {t.depth_params / 1e6:.1f} M, Mimi {_params(model.audio_encoder) / 1e6:.1f} M | "
        f"{t.seconds_of_speech:g} s = {t.frames} frames, {what}: median {t.median_s:.2f} s "
        f"(runs {', '.join(f'{r:.2f}' for r in t.runs_s)}), {t.seconds_of_speech / t.median_s:.1f}x real time, "
        f"{1000 * t.median_s / t.frames:.1f} ms/frame"
    )


if __name__ == "__main__":
    main()
