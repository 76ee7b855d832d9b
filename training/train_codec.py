"""Train the speech codec on corpus audio and report its reconstruction quality.

    python -m training.train_codec --config training/configs/codec.yaml
    # overrides on the command line, e.g. --max_steps 200 --output_dir runs/codec-try
    accelerate launch --config_file training/accelerate/ddp.yaml -m training.train_codec --config training/configs/codec.yaml

Writes the codec (`OmniDRCASpeechCodec.from_pretrained(output_dir)`; `codec_model=` of
`compose_from_backbones`), `reconstruction.json` (the untrained and the trained codec on held-out clips,
see `training.codec.reconstruction_report`) and `training_curves.png`. With `resume_from_checkpoint: auto`
the same command resumes a killed run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from datasets import Dataset, concatenate_datasets, load_from_disk
from transformers import TrainingArguments
from trl import TrlParser

from modeling_omnidrca import OmniDRCASpeechCodec, OmniDRCASpeechCodecConfig

from .checkpoints import resolve_resume
from .codec import CodecCollator, CodecTrainer, audio_clips, freeze_encoder, grow_decoder, reconstruction_report
from .curves import TrainingCurvesCallback, available_loggers
from .feature_loss import WhisperFeatureLoss


@dataclass
class CodecScriptArguments:
    dataset_path: str = field(metadata={"help": "Corpus saved with `save_to_disk` (processing.build_corpus / import_corpus)."})
    train_split: str = field(default="train")
    eval_split: str | None = field(default="validation", metadata={"help": "Held-out clips for evaluation and the report."})
    mix_dataset_paths: list[str] | None = field(default=None, metadata={"help": "More corpora whose training splits join it."})
    codec_name_or_path: str | None = field(default=None, metadata={"help": "Start from this trained codec instead of a new one."})
    freeze_encoder: bool = field(default=False, metadata={"help": "Train only the decoder and vocoder head, so the codes stay "
                                 "those of `codec_name_or_path` (a model's speech head keeps speaking them)."})
    grow_decoder_layers: int = field(default=0, metadata={"help": "Add this many identity-initialised ConvNeXt blocks to "
                                     "each decoder stage of `codec_name_or_path`."})
    fsq_levels: list[int] | None = field(default=None, metadata={"help": "FSQ levels of a new codec (codebook = product)."})
    encoder_hidden_size: int = field(default=256)
    encoder_layers: int = field(default=2)
    decoder_hidden_size: int = field(default=256)
    decoder_layers: int = field(default=2)
    vocoder_type: str = field(default="istft")
    audio_columns: list[str] = field(default_factory=lambda: ["answer_audio", "question_audio"],
                                     metadata={"help": "Corpus columns whose clips train the codec."})
    segment_seconds: float = field(default=2.0, metadata={"help": "Training crop length; 0 trains on whole clips."})
    feature_loss_model: str | None = field(default=None, metadata={"help": "Add a Whisper-encoder feature loss "
                                           "(training.feature_loss): 'whisper-tiny.en' or a converted Whisper folder."})
    feature_loss_weight: float = field(default=1.0, metadata={"help": "Weight of that loss beside the codec's own."})
    feature_loss_layers: list[int] | None = field(default=None, metadata={"help": "Encoder layers compared (1-based); default all."})
    max_train_clips: int | None = field(default=None)
    max_eval_clips: int | None = field(default=64)


def build_codec(args: CodecScriptArguments) -> OmniDRCASpeechCodec:
    if args.codec_name_or_path:
        codec = OmniDRCASpeechCodec.from_pretrained(args.codec_name_or_path)
        grow_decoder(codec, args.grow_decoder_layers)
        if args.freeze_encoder:
            freeze_encoder(codec)
        return codec
    if args.freeze_encoder or args.grow_decoder_layers:
        raise ValueError(
            "`freeze_encoder` and `grow_decoder_layers` keep a trained codec's codes: pass its folder as "
            "`codec_name_or_path` (a new codec has no codes to keep)."
        )
    config = OmniDRCASpeechCodecConfig(
        fsq_levels=args.fsq_levels, encoder_hidden_size=args.encoder_hidden_size, encoder_layers=args.encoder_layers,
        decoder_hidden_size=args.decoder_hidden_size, decoder_layers=args.decoder_layers, vocoder_type=args.vocoder_type,
    )  # fmt: skip
    return OmniDRCASpeechCodec(config)


def training_clips(args: CodecScriptArguments, corpus) -> Dataset:
    """The `audio` clips of `train_split` of the corpus and of each of `mix_dataset_paths`, in that order."""
    parts = [corpus[args.train_split], *(load_from_disk(path)[args.train_split] for path in args.mix_dataset_paths or [])]
    clips = concatenate_datasets([audio_clips(part, args.audio_columns) for part in parts])
    return clips if args.max_train_clips is None else clips.select(range(min(args.max_train_clips, len(clips))))


def main(script_args: CodecScriptArguments, training_args: TrainingArguments) -> dict:
    torch.manual_seed(training_args.seed)  # the new codec's init
    codec = build_codec(script_args)
    corpus = load_from_disk(script_args.dataset_path)
    with training_args.main_process_first(desc="audio clips"):
        train = training_clips(script_args, corpus)
        held_out = None
        if script_args.eval_split and script_args.eval_split.lower() != "none":
            held_out = audio_clips(corpus[script_args.eval_split], script_args.audio_columns, max_clips=script_args.max_eval_clips)
    cfg = codec.config
    segment = round(script_args.segment_seconds * cfg.sampling_rate / cfg.samples_per_code) * cfg.samples_per_code
    trainer = CodecTrainer(
        model=codec,
        args=training_args,
        train_dataset=train,
        eval_dataset=held_out,
        data_collator=CodecCollator(segment or None, cfg.samples_per_code),
        callbacks=[TrainingCurvesCallback()],
        feature_loss=None if not script_args.feature_loss_model
        else WhisperFeatureLoss.from_pretrained(script_args.feature_loss_model, script_args.feature_loss_layers),
        feature_loss_weight=script_args.feature_loss_weight,
    )
    report = {}
    if held_out is not None and trainer.is_world_process_zero():
        codec.eval()
        report["before"] = reconstruction_report(codec, held_out)
    params = sum(p.numel() for p in codec.parameters())
    trainable = sum(p.numel() for p in codec.parameters() if p.requires_grad)
    if trainer.is_world_process_zero():
        print(f"codec {params / 1e6:.2f} M parameters ({trainable / 1e6:.2f} M trained), {cfg.codebook_size} codes at {cfg.frame_rate} Hz; "
              f"{len(train)} training clips, {len(held_out) if held_out else 0} held-out clips")
    result = trainer.train(resume_from_checkpoint=resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir))
    trainer.save_model(training_args.output_dir)
    metrics = dict(result.metrics)
    if trainer.is_world_process_zero():
        if held_out is not None:
            codec.eval()
            report["after"] = reconstruction_report(trainer.model, held_out)
            print(markdown_report(report))
        with open(os.path.join(training_args.output_dir, "reconstruction.json"), "w") as f:
            json.dump({"parameters": params, "train": metrics, **report}, f, indent=2)
    return {**metrics, **{f"{k}_{m}": v for k, r in report.items() for m, v in r.items()}}


def markdown_report(report: dict) -> str:
    rows = ["| codec | mel L1 (log10) | LSD (dB) | codebook usage | code perplexity | bitrate |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in report.items():
        rows.append(f"| {name} training | {r['mel_l1']:.3f} | {r['log_spectral_distance_db']:.2f} | "
                    f"{100 * r['codebook_usage']:.1f} % of {r['codebook_size']} | {r['code_perplexity']:.0f} | "
                    f"{r['bitrate_bps']:.0f} bit/s |")
    return "\n".join(rows)


def make_parser() -> TrlParser:
    parser = TrlParser((CodecScriptArguments, TrainingArguments))
    # `audio` is the only column and the codec's forward does not name it: keep it for the collator.
    parser.set_defaults(remove_unused_columns=False, report_to=available_loggers())
    return parser


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
