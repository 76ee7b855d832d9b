"""Feature-extraction speed: OmniDRCAFeatureExtractor vs transformers' WhisperFeatureExtractor.

    python benchmarks/feature_extraction.py [--runs 50] [--seconds 10] [--threads N]

Prints a markdown table of median wall times (after warm-up) on CPU. Run it on an idle machine: with
another process busy on a core, torch's OpenMP threads wait for each other and a 2 ms STFT takes 100 ms
(the load average is printed; `--threads 1` sidesteps it). Whisper's extractor has no resampler,
so its 48 kHz cells are empty; its "numpy path" is the float64 numpy STFT it uses when torch is missing,
its default path is the torch STFT (padded to the longest clip here, not to 30 s, for a fair comparison).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from modeling_omnidrca.audio_utils import resample
from modeling_omnidrca.feature_extraction_omnidrca import OmniDRCAFeatureExtractor


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    n16, n48 = int(args.seconds * 16000), int(args.seconds * 48000)
    clip16 = (0.1 * rng.standard_normal(n16)).astype(np.float32)
    batch16 = [(0.1 * rng.standard_normal(n16)).astype(np.float32) for _ in range(8)]
    clip48 = (0.1 * rng.standard_normal(n48)).astype(np.float32)

    ours = OmniDRCAFeatureExtractor()
    whisper = WhisperFeatureExtractor(feature_size=80)
    s = f"{args.seconds:g} s"
    rows = [
        (f"1 clip, {s} @ 16 kHz",
         median_ms(lambda: ours(clip16, sampling_rate=16000, return_tensors="pt"), args.runs),
         median_ms(lambda: whisper(clip16, sampling_rate=16000, padding="longest", return_tensors="pt"), args.runs),
         median_ms(lambda: whisper._np_extract_fbank_features(clip16[None], "cpu"), args.runs)),
        (f"8 clips, {s} each @ 16 kHz",
         median_ms(lambda: ours(batch16, sampling_rate=16000, return_tensors="pt"), args.runs),
         median_ms(lambda: whisper(batch16, sampling_rate=16000, padding="longest", return_tensors="pt"), args.runs),
         median_ms(lambda: whisper._np_extract_fbank_features(np.stack(batch16), "cpu"), max(5, args.runs // 5))),
        (f"1 clip, {s} @ 48 kHz (incl. resampling)",
         median_ms(lambda: ours(clip48, sampling_rate=48000, return_tensors="pt"), args.runs), None, None),
        (f"resample only, {s} 48 kHz -> 16 kHz",
         median_ms(lambda: resample(clip48, 48000, 16000), args.runs), None, None),
    ]

    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}; "
          f"median of {args.runs} runs after 5 warm-up runs\n")
    print("| input | OmniDRCA (ms) | Whisper FE, torch path (ms) | Whisper FE, numpy path (ms) |")
    print("|---|---:|---:|---:|")
    for name, *cells in rows:
        print(f"| {name} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
