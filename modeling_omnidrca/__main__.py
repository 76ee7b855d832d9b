"""Quickstart: load an OmniDRCA checkpoint and its processor, ask a spoken question, and show the
dual-resolution streams, the losses, generation and the speech codec.

    python -m modeling_omnidrca --model tests/fixtures/tiny-random-omnidrca

Everything goes through the public path a Hub user takes: `AutoProcessor`/`AutoModel` with
`trust_remote_code=True`, `apply_chat_template` on a user turn holding only audio, then the model.
With the tiny random checkpoint the words and sounds are meaningless; shapes and flow are the point.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor


def synthetic_speech(seconds: float, sampling_rate: int = 16000) -> np.ndarray:
    """A voiced-sounding test signal (harmonics under a moving formant), float32 in [-1, 1]."""
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
    parser.add_argument("--audio", help="a question wav/flac to answer instead of the synthetic signal")
    parser.add_argument("--save", default=None, help="write the spoken answer to this wav file")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="5 Hz steps to generate (12, or 60 with --audio)")
    args = parser.parse_args()

    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
    config, k = model.config, model.config.group_size
    parts = {
        "audio_tower": model.model.audio_tower, "audio grouper": model.model.multi_modal_projector,
        "speech group embedding": model.model.speech_embed, "language_model": model.model.language_model,
        "lm_head": model.lm_head, f"speech_head ({config.speech_head_type})": model.speech_head,
        "speech_codec (frozen)": model.speech_codec,
    }
    print(f"{type(model).__name__} from {args.model}: k={k}, speech delay={config.speech_delay} groups")
    for name, module in parts.items():
        print(f"  {name:24s} {sum(p.numel() for p in module.parameters()) / 1e6:8.3f} M params")

    if args.audio:
        import soundfile as sf

        question, rate = sf.read(args.audio, dtype="float32", always_2d=True)
        question = question.mean(axis=1)
        args.seconds = len(question) / rate
    else:
        question, rate = synthetic_speech(args.seconds), 16000
    conversation = [{"role": "user", "content": [{"type": "audio", "audio": question, "sampling_rate": rate}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="pt")
    frames = int(inputs["feature_attention_mask"].sum())
    slots = int((inputs["input_ids"] == config.audio_token_id).sum())
    print(f"\nquestion: {args.seconds:.1f} s -> {frames} mel frames (100 Hz) -> {slots} LLM positions at {25 / k:g} Hz")

    # A training example: the same question answered in text and speech (13 codes = 0.52 s).
    example = {"messages": conversation, "answer_text": "seven plus twelve is nineteen",
               "answer_codes": list(range(13)), "transcripts": ["what is seven plus twelve"]}
    if config.speech_head_type == "diffusion":  # its speech stream carries the codes' continuous latents
        example["answer_latents"] = model.speech_codec.codes_to_latents(torch.tensor([list(range(13))]))[0]
    batch = processor.build_training_batch([example])
    start = int(batch["labels"][0].ne(-100).nonzero()[0]) - 1  # the <|abos|> step
    print("\nassistant streams (row = one LLM step; speech shows the k codes of the group):")
    for t in range(start, batch["input_ids"].shape[1]):
        token = processor.tokenizer.convert_ids_to_tokens(int(batch["input_ids"][0, t]))
        print(f"  step {t - start}: text {token!r:14s} speech {batch['speech_ids'][0, t].tolist()}")
    with torch.no_grad():
        out = model(**batch)
    print(f"\ntraining forward: loss {out.loss:.3f} = text {out.text_loss:.3f} + {config.speech_loss_weight} x speech "
          f"{out.speech_loss:.3f} (+ {config.contrastive_weight} x contrastive {out.contrastive_loss:.3f}, "
          "0 with a single clip: no negatives)"
          + (f" + {config.diffusion_config.stop_loss_weight} x stop {out.stop_loss:.3f}" if out.stop_loss is not None else ""))

    # The public path: the user turn above, answered in text and speech in one parallel pass.
    begin = time.perf_counter()
    steps = args.max_new_tokens or (60 if args.audio else 12)
    generated = model.generate(**inputs, generation_mode="audio", max_new_tokens=steps, do_sample=False)
    elapsed = time.perf_counter() - begin
    (text,) = processor.post_process_multimodal_output(generated, generation_mode="text")
    (answer_wave,) = processor.post_process_multimodal_output(generated, generation_mode="audio")
    steps = generated.sequences.shape[1] - inputs["input_ids"].shape[1]
    rate = model.speech_codec.config.sampling_rate
    print(f"greedy text+speech generation ({steps} steps, {elapsed * 1000:.0f} ms): text {text!r}, "
          f"speech {int(generated.speech_lengths[0])} codes -> {answer_wave.shape[0]} samples "
          f"({answer_wave.shape[0] / rate:.2f} s; a random checkpoint gives noise)")
    if args.save:
        import soundfile as sf

        sf.write(args.save, answer_wave, rate)
        print(f"spoken answer written to {args.save}")

    (wave,) = processor.decode_speech(batch["speech_ids"][:1], model.speech_codec)  # (1, L, k)
    rate = model.speech_codec.config.sampling_rate
    print(f"speech codec: 13 codes at 25 Hz -> {wave.shape[0]} samples = {wave.shape[0] / rate:.2f} s at {rate} Hz")


if __name__ == "__main__":
    main()
