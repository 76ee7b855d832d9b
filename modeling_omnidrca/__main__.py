"""Quickstart: load an OmniDRCA checkpoint, feed it speech, and show the dual-resolution streams.

    python -m modeling_omnidrca --model tests/fixtures/tiny-random-omnidrca

Loads through `AutoModel(..., trust_remote_code=True)` as a Hub user would, turns a synthetic
spoken-like signal into Whisper log-mel, lays out an assistant answer in parallel text/speech streams,
and runs the training forward (all loss components) and greedy text generation. With the tiny random
checkpoint the numbers are meaningless; the shapes and the flow are the point.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import AutoModel, WhisperFeatureExtractor

from .modeling_omnidrca import OmniDRCAModel
from .streams import IGNORE_INDEX, build_assistant_streams


def synthetic_speech(seconds: float, sampling_rate: int = 16000) -> np.ndarray:
    """A voiced-sounding test signal (glottal-like harmonics with a moving formant), float32 in [-1, 1]."""
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sampling_rate
    formant = 0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * t)
    wave = sum((formant if h % 2 else 1 - formant) * np.sin(h * phase) / h for h in range(1, 12))
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tests/fixtures/tiny-random-omnidrca", help="checkpoint folder or Hub id")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the synthetic question")
    args = parser.parse_args()

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
    config = model.config
    k = config.group_size
    parts = {
        "audio_tower": model.model.audio_tower, "audio grouper": model.model.multi_modal_projector,
        "speech group embedding": model.model.speech_embed, "language_model": model.model.language_model,
        "lm_head": model.lm_head, "speech_head (SRH)": model.speech_head,
    }
    print(f"{type(model).__name__} from {args.model}: k={k}, speech delay={config.speech_delay} groups")
    for name, module in parts.items():
        print(f"  {name:24s} {sum(p.numel() for p in module.parameters()) / 1e6:8.3f} M params")

    wave = synthetic_speech(args.seconds)
    extractor = WhisperFeatureExtractor(feature_size=config.audio_config.num_mel_bins)
    feats = extractor(wave, sampling_rate=16000, padding="longest", return_attention_mask=True, return_tensors="pt")
    frames = feats.input_features.shape[-1]
    slots = OmniDRCAModel.num_audio_tokens(frames, k)
    print(f"\nquestion: {args.seconds:.1f} s -> {frames} mel frames (100 Hz) -> {slots} LLM positions at {25 / k:g} Hz")

    prompt = torch.tensor([[1] + [config.audio_token_id] * slots + [2]])
    answer = build_assistant_streams([5, 6, 7], list(range(13)), config)  # 3 text tokens, 13 codes (0.52 s)
    print("\nassistant streams (row = one LLM step; speech shows the k codes of the group):")
    for t in range(answer.input_ids.shape[0]):
        print(f"  step {t}: text {answer.input_ids[t].item():4d}   speech {answer.speech_ids[t].tolist()}")

    n = prompt.shape[1]
    pad_group = torch.full((n, k), config.speech_pad_token_id)
    batch = dict(
        input_ids=torch.cat([prompt[0], answer.input_ids])[None],
        speech_ids=torch.cat([pad_group, answer.speech_ids])[None],
        labels=torch.cat([torch.full((n,), IGNORE_INDEX), answer.labels])[None],
        speech_labels=torch.cat([torch.full((n, k), IGNORE_INDEX), answer.speech_labels])[None],
        input_features=feats.input_features,
        feature_attention_mask=feats.attention_mask,
    )
    with torch.no_grad():
        out = model(**batch)
    print(f"\ntraining forward: loss {out.loss:.3f} = text {out.text_loss:.3f} + "
          f"{config.speech_loss_weight} x speech {out.speech_loss:.3f} (contrastive needs transcripts)")

    start = time.perf_counter()
    with torch.no_grad():
        generated = model.generate(input_ids=prompt, input_features=feats.input_features,
                                   feature_attention_mask=feats.attention_mask, max_new_tokens=8, do_sample=False,
                                   pad_token_id=0)
    elapsed = time.perf_counter() - start
    print(f"greedy text generation: {generated[0, n:].tolist()} in {elapsed * 1000:.0f} ms")


if __name__ == "__main__":
    main()
