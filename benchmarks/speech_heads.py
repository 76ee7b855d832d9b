"""Speed of the two speech heads on the trained demo checkpoints: SRH (discrete codes) vs diffusion (continuous).

    python benchmarks/speech_heads.py [--discrete checkpoints/omnidrca-demo] \
        [--diffusion checkpoints/omnidrca-demo-diffusion] [--seconds 10] [--runs 5] [--threads 1]

Both models answer a spoken question (`--audio`, default the demo's `seven_plus_twelve.wav`) and generate exactly
`--seconds` of speech: the SRH's `[eos]` is suppressed, the diffusion head's stop head is held at "a full
group". Reports medians over `--runs` after a warm-up: the time of `generate(..., return_waveform=False)`
("tokens", prompt prefill included), the codec decode, the real-time factor (speech seconds / total), the
speech head's cost per 5 Hz step measured inside generation (forward hooks), and, for the diffusion head,
the cost against the number of ODE steps (Euler; one DiT call per step and group).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers.generation.logits_process import LogitsProcessor

from modeling_omnidrca import OmniDRCAForConditionalGeneration, OmniDRCAProcessor


class Ban(LogitsProcessor):
    def __init__(self, token: int):
        self.token = token

    def __call__(self, input_ids, scores):
        scores[:, self.token] = -math.inf
        return scores


@contextmanager
def head_timer(model, store: list[float]):
    """Accumulate the wall time spent inside the speech head (all its calls) during the block."""
    head = model.speech_head
    target = head if model.config.speech_head_type == "diffusion" else head.decoder
    start: list[float] = []
    pre = target.register_forward_pre_hook(lambda *a: start.append(time.perf_counter()))
    post = target.register_forward_hook(lambda *a: store.append(time.perf_counter() - start.pop()))
    try:
        yield
    finally:
        pre.remove()
        post.remove()


@contextmanager
def endless_speech(model):
    """Diffusion head: the stop head always answers "a full group" (SRH: see `Ban`)."""
    if model.config.speech_head_type != "diffusion":
        yield
        return
    k = model.config.group_size

    def full(module, args, out):
        out = out.clone()
        out[..., :k] = -math.inf
        return out

    hook = model.speech_head.stop_head.register_forward_hook(full)
    try:
        yield
    finally:
        hook.remove()


def median_time(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(folder: str, wav: str, seconds: float, runs: int, ode_steps: list[int]) -> dict:
    model = OmniDRCAForConditionalGeneration.from_pretrained(folder).eval()
    processor = OmniDRCAProcessor.from_pretrained(folder)
    cfg = model.config
    conversation = [{"role": "user", "content": [{"type": "audio", "audio": str(wav)}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    frames = math.ceil(seconds * cfg.codec_config.frame_rate)
    steps = cfg.speech_delay + math.ceil((frames + 1) / cfg.group_size)
    kwargs = dict(generation_mode="audio", max_new_tokens=steps, do_sample=False)
    diffusion = cfg.speech_head_type == "diffusion"
    if not diffusion:
        kwargs["speech_logits_processor"] = [Ban(cfg.speech_eos_token_id)]

    def tokens(**extra):
        with endless_speech(model), torch.no_grad():
            return model.generate(**inputs, return_waveform=False, **kwargs, **extra)

    out = tokens()
    n = int(out.speech_lengths[0])
    lengths = out.speech_lengths

    def decode():
        with torch.no_grad():
            if diffusion:
                return model._decode_latent_waveform(out.speech_latents, lengths)
            return model._decode_waveform(out.speech_ids, lengths)

    t_tokens, t_decode = median_time(tokens, runs), median_time(decode, runs)
    head_times: list[float] = []
    with head_timer(model, head_times):
        tokens()
    speech_seconds = n / cfg.codec_config.frame_rate
    groups = steps - cfg.speech_delay
    result = {
        "folder": folder,
        "head": cfg.speech_head_type,
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "head_params_M": round(sum(p.numel() for p in model.speech_head.parameters()) / 1e6, 2),
        "speech_seconds": speech_seconds,
        "answer_steps": steps,
        "tokens_s": round(t_tokens, 3),
        "decode_s": round(t_decode, 3),
        "rtf_x": round(speech_seconds / (t_tokens + t_decode), 2),
        "head_ms_per_step": round(1000 * sum(head_times) / groups, 2),
        "head_calls_per_step": round(len(head_times) / groups, 2),
    }
    if diffusion:
        result["ode_steps"] = cfg.diffusion_config.num_ode_steps
        sweep = {}
        for n_steps in ode_steps:
            sweep[n_steps] = round(median_time(lambda: tokens(speech_ode_steps=n_steps), max(1, runs // 2)), 3)
        result["tokens_s_by_ode_steps"] = sweep
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--discrete", default="checkpoints/omnidrca-demo")
    parser.add_argument("--diffusion", default="checkpoints/omnidrca-demo-diffusion")
    parser.add_argument("--audio", default="checkpoints/omnidrca-demo/examples/seven_plus_twelve.wav")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ode-steps", type=int, nargs="*", default=[1, 2, 5, 10, 20])
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [measure(folder, args.audio, args.seconds, args.runs, args.ode_steps) for folder in (args.discrete, args.diffusion)]
    print("| model | head | head params | tokens (s) | + decode (s) | real-time factor | head ms / 5 Hz step | head calls / step |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['folder']} | {r['head']} | {r['head_params_M']} M | {r['tokens_s']} | {r['decode_s']} | "
              f"{r['rtf_x']}x | {r['head_ms_per_step']} | {r['head_calls_per_step']} |")
    for r in results:
        if "tokens_s_by_ode_steps" in r:
            print("\nODE steps (Euler) -> tokens time (s):", r["tokens_s_by_ode_steps"])
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
