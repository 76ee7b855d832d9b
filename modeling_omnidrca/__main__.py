"""Quickstart: ask an OmniDRCA checkpoint a spoken question; it answers in text and speech in one pass.

    python -m modeling_omnidrca --model checkpoints/omnidrca-demo \\
        --audio checkpoints/omnidrca-demo/examples/seven_plus_twelve.wav --save answer.wav

prints the answer's text first, then where its speech was written. `--explain` then tours what the model
did: its parts, the question's dual-resolution positions, how a training example lays out the parallel
text and speech streams, their losses, and the speech codec. The tour is on by default for a checkpoint
whose model card says it is randomly initialised (`tests/fixtures/tiny-random-omnidrca`, the default
`--model`): its words and sounds are meaningless, so the shapes and flow are the point.

Everything goes through the public path a Hub user takes: `AutoProcessor`/`AutoModel` with
`trust_remote_code=True`, `apply_chat_template` on a user turn holding only audio, then `generate`.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

RANDOM_CARD = re.compile(r"\brandomly[ -]initiali[sz]ed\b", re.IGNORECASE)


def synthetic_speech(seconds: float, sampling_rate: int = 16000) -> np.ndarray:
    """A voiced-sounding test signal (harmonics under a moving formant), float32 in [-1, 1]."""
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sampling_rate
    formant = 0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * t)
    wave = sum((formant if h % 2 else 1 - formant) * np.sin(h * phase) / h for h in range(1, 12))
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def is_random_checkpoint(model: str) -> bool:
    """Whether a local checkpoint's model card says its weights are random (the test fixtures' do). The
    card, not a look at the weights: a trained checkpoint with a bad answer must not be called random.
    A Hub id counts as trained: this quickstart does not fetch cards."""
    card = Path(model) / "README.md"
    return card.is_file() and bool(RANDOM_CARD.search(card.read_text(encoding="utf-8", errors="replace")))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tests/fixtures/tiny-random-omnidrca", help="checkpoint folder or Hub id")
    parser.add_argument("--audio", help="a question wav/flac to answer (default: a synthetic test signal)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the synthetic signal (no --audio)")
    parser.add_argument("--save", default=None, help="write the spoken answer to this wav file")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="5 Hz steps to generate (12, or 60 with --audio)")
    parser.add_argument("--explain", action=argparse.BooleanOptionalAction, default=None,
                        help="after the answer, show the model's parts, streams, losses and codec "
                             "(default: only for a randomly initialised checkpoint)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    random_weights = is_random_checkpoint(args.model)
    explain = random_weights if args.explain is None else args.explain

    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
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

    # The answer, in text and speech in one parallel pass.
    begin = time.perf_counter()
    max_steps = args.max_new_tokens or (60 if args.audio else 12)
    with torch.no_grad():
        generated = model.generate(**inputs, generation_mode="audio", max_new_tokens=max_steps, do_sample=False)
    elapsed = time.perf_counter() - begin
    (text,) = processor.post_process_multimodal_output(generated, generation_mode="text")
    (answer_wave,) = processor.post_process_multimodal_output(generated, generation_mode="audio")
    steps = generated.sequences.shape[1] - inputs["input_ids"].shape[1]
    rate = model.speech_codec.config.sampling_rate
    # Random weights decode to arbitrary bytes: quoted, so control characters cannot garble the terminal.
    print(f"answer: {text!r}" if random_weights else f"answer: {text.strip() or '(no words)'}")
    spoken = f"spoken answer: {answer_wave.shape[0] / rate:.2f} s at {rate} Hz"
    if args.save:
        import soundfile as sf

        sf.write(args.save, answer_wave, rate)
        print(f"{spoken}, written to {args.save}")
    else:
        print(f"{spoken} (pass --save answer.wav to keep it)")
    print(f"({type(model).__name__} from {args.model}: {steps} greedy steps in {elapsed:.2f} s"
          + ("" if explain else "; --explain shows the streams behind it") + ")")
    if random_weights:
        print("(a randomly initialised checkpoint: the answer's words and sound are meaningless)")
    elif not args.audio:
        print(f"(the question was a {args.seconds:.1f} s synthetic test signal, not speech: "
              "pass --audio question.wav to ask something)")
    if explain:
        print()
        explain_model(model, processor, inputs, conversation, args.seconds)


def explain_model(model, processor, inputs: dict, conversation: list[dict], seconds: float) -> None:
    """The tour: parameters per part, the question's positions, a training example's parallel streams and
    losses, and the codec. The example's answer codes are made up (0..12): it shows the layout, and its
    speech loss is high on any model."""
    config, k = model.config, model.config.group_size
    parts = {
        "audio_tower": model.model.audio_tower, "audio grouper": model.model.multi_modal_projector,
        "speech group embedding": model.model.speech_embed, "language_model": model.model.language_model,
        "lm_head": model.lm_head, f"speech_head ({config.speech_head_type})": model.speech_head,
        "speech_codec (frozen)": model.speech_codec,
    }
    print(f"{type(model).__name__}: k={k}, speech delay={config.speech_delay} groups")
    for name, module in parts.items():
        print(f"  {name:24s} {sum(p.numel() for p in module.parameters()) / 1e6:8.3f} M params")
    frames = int(inputs["feature_attention_mask"].sum())
    slots = int((inputs["input_ids"] == config.audio_token_id).sum())
    print(f"\nquestion: {seconds:.1f} s -> {frames} mel frames (100 Hz) -> {slots} LLM positions at {25 / k:g} Hz")

    example = {"messages": conversation, "answer_text": "seven plus twelve is nineteen",
               "answer_codes": list(range(13)), "transcripts": ["what is seven plus twelve"]}
    if model.speech_head.continuous:  # its speech stream carries the codes' continuous latents
        example["answer_latents"] = model.speech_codec.codes_to_latents(torch.tensor([list(range(13))]))[0]
    batch = processor.build_training_batch([example])
    start = int(batch["labels"][0].ne(-100).nonzero()[0]) - 1  # the <|abos|> step
    print("\na training example's assistant streams (made-up answer codes 0..12; row = one LLM step, "
          "speech shows the k codes of the group):")
    for t in range(start, batch["input_ids"].shape[1]):
        token = processor.tokenizer.convert_ids_to_tokens(int(batch["input_ids"][0, t]))
        print(f"  step {t - start}: text {token!r:14s} speech {batch['speech_ids'][0, t].tolist()}")
    with torch.no_grad():
        out = model(**batch)
    print(f"training forward on it: loss {out.loss:.3f} = text {out.text_loss:.3f} + {config.speech_loss_weight} x "
          f"speech {out.speech_loss:.3f} (+ {config.contrastive_weight} x contrastive {out.contrastive_loss:.3f}, "
          "0 with a single clip: no negatives)"
          + (f" + {config.diffusion_config.stop_loss_weight} x stop {out.stop_loss:.3f}" if out.stop_loss is not None else ""))

    (wave,) = processor.decode_speech(batch["speech_ids"][:1], model.speech_codec)
    rate = model.speech_codec.config.sampling_rate
    print(f"speech codec: 13 codes at 25 Hz -> {wave.shape[0]} samples = {wave.shape[0] / rate:.2f} s at {rate} Hz")


if __name__ == "__main__":
    main()
