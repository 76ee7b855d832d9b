"""Train OmniDRCA with TRL: one entry point, one YAML config per stage.

    # stage 1, alignment (ASR + T2S + contrastive; `freeze_backbone: true` keeps a pretrained LLM fixed)
    python -m training.train --config training/configs/stage1_alignment.yaml
    # stage 2, multi-task SFT (S2T / S2S / T2S / ASR mixed, the system prompt picks the task)
    python -m training.train --config training/configs/stage2_sft.yaml
    # LoRA on the backbone, speech heads saved in full with the adapter
    python -m training.train --config training/configs/lora.yaml
    # any setting can be overridden on the command line, e.g. --max_steps 100 --output_dir runs/try
    # several processes / GPUs (configs in training/accelerate/):
    accelerate launch --config_file training/accelerate/ddp.yaml -m training.train --config training/configs/stage2_sft.yaml

Re-running the same command with `resume_from_checkpoint: auto` continues from the newest complete
checkpoint in `output_dir` (a checkpoint half-written by a killed run is set aside, not used). The logic
lives in `training/sft.py`, `training/checkpoints.py` and `training/curves.py`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from datasets import concatenate_datasets, load_from_disk
from trl import ModelConfig, SFTConfig, TrlParser, get_peft_config

from modeling_omnidrca import OmniDRCAForConditionalGeneration, OmniDRCAProcessor
from modeling_omnidrca.speech_tracker import attach_speech_tracker

from .checkpoints import resolve_resume
from .curves import TrainingCurvesCallback
from .sft import build_trainer, freeze_modules, prepare_dataset, sft_defaults, train_only
from .token_rows import TokenRowsCallback, load_token_rows, save_token_rows, train_token_rows

# The backbone's attention and MLP projections; not the SRH's or the Whisper encoder's (same layer names).
BACKBONE_LINEAR_REGEX = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


@dataclass
class OmniDRCAScriptArguments:
    dataset_path: str = field(metadata={"help": "Corpus saved with `save_to_disk` (processing.build_corpus / import_corpus)."})
    train_split: str = field(default="train")
    mix_dataset_paths: list[str] | None = field(
        default=None,
        metadata={"help": "More corpora whose `train_split` rows join the first's (e.g. a question drill beside "
                          "open-vocabulary rows); the evaluation split is the first corpus's."},
    )
    eval_split: str | None = field(default="validation", metadata={"help": "Empty or 'none' to skip evaluation."})
    tasks: list[str] | None = field(default=None, metadata={"help": "Task families to train on (asr s2t s2s t2s repeat); default all."})
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    freeze_backbone: bool = field(default=False, metadata={"help": "Freeze the text LM (layers, embeddings, text head)."})
    freeze_audio_encoder: bool = field(default=False, metadata={"help": "Freeze the Whisper speech encoder."})
    contrastive_weight: float | None = field(default=None, metadata={"help": "Override the model config's contrastive loss weight."})
    speech_loss_weight: float | None = field(default=None, metadata={"help": "Override the model config's speech loss weight (SRH CE or diffusion flow-matching MSE)."})
    speech_input_noise: float | None = field(default=None, metadata={"help": "Override the model config's speech_input_noise: the largest fraction of the speech codes the backbone reads swapped for random ones (SRH only)."})
    lora_target_regex: str = field(
        default=BACKBONE_LINEAR_REGEX,
        metadata={"help": "With use_peft and no lora_target_modules: PEFT regex (full match) of the LoRA targets."},
    )
    text_alignment: str | None = field(
        default=None,
        metadata={"help": "Switch the model's stream layout before training ('leading' or 'spread': a spoken answer's "
                          "text spread over its speech); the model and processor saved after training carry it."},
    )
    speech_delay: int | None = field(
        default=None,
        metadata={"help": "Switch the model's speech delay (groups the speech stream lags the text) before training: "
                          "a delay as long as short answers lets their text finish before the backbone reads speech. "
                          "The model and processor saved after training carry it."},
    )
    speech_read: str | None = field(
        default=None,
        metadata={"help": "Switch where the backbone reads speech before training ('always', or 'after_text': only "
                          "where the text stream pads, so a leading answer's text never sits beside speech). The "
                          "model and processor saved after training carry it."},
    )
    speech_tracker_layers: int | None = field(
        default=None,
        metadata={"help": "Give the SRH a fresh speech tracker of this many layers before training "
                          "(modeling_omnidrca/speech_tracker.py); it starts silent. The saved model carries it."},
    )
    trainable_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Train only the parameters under these name prefixes (e.g. `speech_head`); every other "
                          "parameter is frozen. Full fine-tuning of those parts, not with use_peft."},
    )
    trainable_token_start: int | None = field(
        default=None,
        metadata={"help": "With a frozen backbone: the token embedding rows from this id on still train (the "
                          "stream tokens added to a pretrained backbone's vocabulary; training/token_rows.py)."},
    )


def load_train_rows(script_args: OmniDRCAScriptArguments, codec, latents: bool):
    """The training rows: `dataset_path`'s `train_split`, then each of `mix_dataset_paths`' (concatenated)."""
    split = script_args.train_split
    parts = []
    for path in [script_args.dataset_path, *(script_args.mix_dataset_paths or [])]:
        corpus = load_from_disk(path)
        if split not in corpus:
            raise ValueError(f"Corpus {path} has no {split!r} split (it has {sorted(corpus)}); train on a corpus "
                             f"built with training rows, or set `train_split`.")
        parts.append(prepare_dataset(corpus[split], codec, script_args.tasks, script_args.max_train_samples,
                                     name=f"{split} split of {path}", latents=latents))
    if len(parts) == 1:
        return parts[0]
    columns = set(parts[0].column_names)
    for path, part in zip(script_args.mix_dataset_paths, parts[1:]):
        if set(part.column_names) != columns:
            raise ValueError(f"Corpus {path} has columns {sorted(part.column_names)}, but {script_args.dataset_path} "
                             f"has {sorted(columns)}; mix corpora built by the same processing version.")
    return concatenate_datasets([part.select_columns(parts[0].column_names) for part in parts])


def main(script_args: OmniDRCAScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> dict:
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model = OmniDRCAForConditionalGeneration.from_pretrained(model_args.model_name_or_path, dtype=dtype)
    for name in ("text_alignment", "speech_delay", "speech_read", "contrastive_weight", "speech_loss_weight", "speech_input_noise"):
        if getattr(script_args, name) not in (None, ""):
            setattr(model.config, name, getattr(script_args, name))
    model.config.validate_omnidrca()  # the recipe's overrides, checked once
    layout = {name: getattr(model.config, name) for name in ("speech_delay", "text_alignment", "speech_read")}
    processor = OmniDRCAProcessor.from_pretrained(model_args.model_name_or_path, **layout)
    if script_args.speech_tracker_layers:
        attach_speech_tracker(model, script_args.speech_tracker_layers)
    frozen = freeze_modules(model, script_args.freeze_backbone, script_args.freeze_audio_encoder)
    if script_args.trainable_modules:
        if model_args.use_peft:
            raise ValueError("`trainable_modules` trains those parts in full; it does not combine with use_peft. "
                             "Drop one of them.")
        frozen = train_only(model, script_args.trainable_modules)

    with training_args.main_process_first(desc="corpus selection and codec codes"):
        latents = model.config.speech_head_type == "diffusion"  # its speech stream is continuous
        train = load_train_rows(script_args, model.speech_codec, latents)
        evaluation = None
        if script_args.eval_split and script_args.eval_split.lower() != "none":
            corpus = load_from_disk(script_args.dataset_path)
            if script_args.eval_split not in corpus:
                raise ValueError(f"Corpus {script_args.dataset_path} has no {script_args.eval_split!r} split (it has "
                                 f"{sorted(corpus)}); the evaluation split comes from `dataset_path`. Put a corpus "
                                 "with one first, or set `eval_split: none`.")
            evaluation = prepare_dataset(corpus[script_args.eval_split],
                                         model.speech_codec, script_args.tasks,
                                         script_args.max_eval_samples, name=f"{script_args.eval_split} split",
                                         latents=latents)

    peft_config = get_peft_config(model_args)
    if peft_config is not None and not model_args.lora_target_modules:
        peft_config.target_modules = script_args.lora_target_regex
    trainer = build_trainer(model, processor, train, training_args, eval_dataset=evaluation,
                            peft_config=peft_config, callbacks=[TrainingCurvesCallback()])
    start = script_args.trainable_token_start
    if start is not None and training_args.weight_decay:
        raise ValueError(f"trainable_token_start needs weight_decay 0 (got {training_args.weight_decay}): decoupled "
                         "decay would shrink the frozen embedding rows too. Set `weight_decay: 0.0`.")
    embedding = model.get_input_embeddings()  # the same module inside the PEFT wrapper
    if start is not None:
        train_token_rows(embedding, start)
        trainer.add_callback(TokenRowsCallback(embedding, start))
    if trainer.is_world_process_zero():
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
        print(f"processes {training_args.world_size} (backend {backend}); train rows {len(train)}, eval rows {len(evaluation) if evaluation else 0}; frozen {frozen}; "
              f"trainable parameters {trainable / 1e6:.2f} M")
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    if start is not None and resume:
        load_token_rows(embedding, resume)
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(result.metrics)
    if evaluation is not None:
        metrics.update(trainer.evaluate())
    trainer.save_model(training_args.output_dir)  # full model, or the adapter (+ modules_to_save) with LoRA
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        if start is not None:
            save_token_rows(embedding, start, training_args.output_dir)
        with open(os.path.join(training_args.output_dir, "train_results.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics


def make_parser() -> TrlParser:
    parser = TrlParser((OmniDRCAScriptArguments, SFTConfig, ModelConfig))
    # The project's SFT defaults first; the YAML config and then the command line override them.
    parser.set_defaults(**sft_defaults())
    return parser


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
