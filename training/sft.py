"""Supervised training of OmniDRCA through TRL's `SFTTrainer`, optimising the model's *full* loss.

TRL 1.16's `SFTTrainer.compute_loss` replaces the model's loss with a fused text-only LM-head loss, which
would silently drop the speech (SRH) and contrastive terms. `OmniDRCASFTTrainer` computes the loss with
the model's own forward (text + speech_loss_weight·speech + contrastive_weight·contrastive) and logs each
component next to TRL's usual metrics.

Rows come in the `processing.schema` format; speech answers need their codec codes cached first
(`processing.cache.add_answer_codes`). `OmniDRCACollator` turns rows into parallel-stream batches with the
processor's `build_training_batch`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from trl import SFTConfig, SFTTrainer

from processing.cache import add_answer_codes, encode_answer_audio
from processing.schema import SAMPLING_RATE, SPEECH_ANSWER_TASKS, TASKS, to_float

from .curves import available_loggers
from .trainer_utils import LossOnlyPredictionMixin

LOSS_COMPONENTS = ("text_loss", "speech_loss", "contrastive_loss", "stop_loss")


def row_to_example(row: dict) -> dict:
    """One `processing.schema` row -> an example for `OmniDRCAProcessor.build_training_batch`."""
    spoken = len(row["question_audio"]) > 0
    if spoken:
        user = [{"type": "audio", "audio": to_float(row["question_audio"]), "sampling_rate": SAMPLING_RATE}]
    else:
        user = row["question_text"]
    codes = latents = None
    if row["task"] in SPEECH_ANSWER_TASKS:
        codes = row.get("answer_codes")
        if codes is None:
            raise ValueError(
                f"Row {row.get('id')!r} ({row['task']}) answers in speech but has no `answer_codes`. Cache the codes "
                "of the answer audio first: `processing.cache.add_answer_codes(dataset, model.speech_codec)`."
            )
        latents = row.get("answer_latents")  # the diffusion head's continuous stream (`add_answer_latents`)
    example = {
        "messages": [{"role": "system", "content": row["system_prompt"]}, {"role": "user", "content": user}],
        "answer_text": row["answer_text"],
        "answer_codes": None if codes is None else list(codes),
        "transcripts": [row["question_text"]] if spoken else None,
    }
    if latents is not None:
        example["answer_latents"] = latents
    return example


class OmniDRCACollator:
    """Rows -> one right-padded parallel-stream batch (text, speech, user audio, transcripts)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        return dict(self.processor.build_training_batch([row_to_example(r) for r in rows]))


class OmniDRCASFTTrainer(LossOnlyPredictionMixin, SFTTrainer):
    """`SFTTrainer` that optimises and logs OmniDRCA's full multi-part loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Our own per-mode accumulators, averaged into the next `log` call: TRL's `_metrics` is private.
        self._components: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._num_train_tokens = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        outputs = model(**inputs, use_cache=False)
        for name in LOSS_COMPONENTS:
            value = getattr(outputs, name)
            if value is not None:
                value = self.accelerator.gather_for_metrics(value.detach()).float().mean().item()
                self._components[mode][name].append(value)
        if mode == "train" and "attention_mask" in inputs:
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._num_train_tokens += tokens
            self._components[mode]["num_tokens"] = [self._num_train_tokens]
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""  # eval logs carry `eval_` keys
        logs.update({prefix + name: sum(values) / len(values) for name, values in self._components[mode].items()})
        self._components[mode].clear()
        super().log(logs, start_time)


def sft_defaults() -> dict[str, Any]:
    """The project's `SFTConfig` defaults (see `sft_config`); `training.train` installs them as parser defaults."""
    gpu = torch.cuda.is_available()
    return dict(
        bf16=gpu and torch.cuda.is_bf16_supported(),
        activation_checkpointing=gpu,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        average_tokens_across_devices=False,
        ddp_find_unused_parameters=True,
        report_to=available_loggers(),
    )


def sft_config(output_dir: str, **overrides: Any) -> SFTConfig:
    """An `SFTConfig` with what the parallel-stream batches need: the collator builds the batch (no TRL
    dataset preparation, keep every column), and the multi-part loss is not rescaled by token counts.

    TRL defaults to bf16 autocast and activation checkpointing; both only pay off on GPUs (on a CPU, bf16
    autocast is slow and inexact, and there is no memory pressure), so they follow the hardware here.
    Under DDP, unused parameters are searched for: a batch without speech answers leaves the SRH out of
    the graph. Logs go to TensorBoard when it is installed.
    """
    return SFTConfig(**{**sft_defaults(), "output_dir": output_dir, **overrides})


def _encode_answers(batch: dict, codec) -> list[torch.Tensor | None]:
    """(B rows) -> per row the (n_codes, d) continuous latents of `answer_audio`, or None without audio."""
    return encode_answer_audio(batch, codec, continuous=True)


def add_answer_latents(dataset, codec, batch_size: int = 16):
    """Add `answer_latents` (the codec's continuous latents of `answer_audio`, (n_codes, d) per row, one per
    cached code; empty for text-only answers): the diffusion head's inputs and targets, computed once."""
    from datasets import Sequence as DSequence
    from datasets import Value

    def encode(batch: dict) -> dict:
        return {"answer_latents": [[] if x is None else x.tolist() for x in _encode_answers(batch, codec)]}

    features = dataset.features.copy()
    features["answer_latents"] = DSequence(DSequence(Value("float32")))
    return dataset.map(encode, batched=True, batch_size=batch_size, features=features, desc="codec latents")


def speech_latent_stats(dataset, codec, batch_size: int = 32, max_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the codec's continuous latents over the answer audio of `dataset`
    (the diffusion head's normalisation, `model.set_speech_latent_stats`)."""
    total = torch.zeros(codec.config.latent_dim, dtype=torch.float64)
    squares, count = torch.zeros_like(total), 0
    rows = len(dataset) if max_rows is None else min(max_rows, len(dataset))
    for start in range(0, rows, batch_size):
        batch = dataset[start : min(start + batch_size, rows)]
        for latents in _encode_answers(batch, codec):
            if latents is not None:
                total += latents.double().sum(0)
                squares += (latents.double() ** 2).sum(0)
                count += latents.shape[0]
    if count == 0:
        raise ValueError("No answer audio in the dataset: the latent statistics need speech answers (S2S/T2S rows).")
    mean = total / count
    return mean.float(), (squares / count - mean**2).clamp(min=1e-8).sqrt().float()


def prepare_dataset(dataset, codec, tasks: Sequence[str] | None = None, max_samples: int | None = None,
                    name: str = "dataset", latents: bool = False):
    """Select the rows a stage trains on and cache their answer codes.

    Args:
        dataset: rows in the `processing.schema` format.
        codec: the model's speech codec (`model.speech_codec`), for `answer_codes` when they are missing.
        tasks: keep only these task families (e.g. stage 1: `["asr", "t2s"]`); None keeps all.
        max_samples: keep the first `max_samples` rows after the task filter.
        latents: also cache `answer_latents` (the diffusion head's continuous speech stream).
    """
    if tasks:
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"Unknown task(s) {unknown} for {name}; expected a subset of {list(TASKS)}.")
        wanted = set(tasks)
        dataset = dataset.filter(lambda task: task in wanted, input_columns="task", desc=f"{name}: tasks {sorted(wanted)}")
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(
            f"The {name} is empty after selecting tasks {list(tasks) if tasks else 'all'}: nothing to train on. "
            "Check the corpus path, its `task` column and the `tasks` setting."
        )
    if "answer_codes" not in dataset.column_names:
        dataset = add_answer_codes(dataset, codec)
    if latents and "answer_latents" not in dataset.column_names:
        dataset = add_answer_latents(dataset, codec)
    return dataset


def freeze_modules(model, backbone: bool = False, audio_encoder: bool = False) -> list[str]:
    """Stop gradients into parts of the model; the speech codec is always frozen (its codes are cached).

    `backbone`: the text LM (decoder layers, token embeddings and text head), as in the paper's alignment
    stage, where the speech encoder, projector, speech embeddings and SRH learn to meet a fixed LLM.
    `audio_encoder`: the Whisper encoder. Returns the names of the frozen top-level parts.
    """
    frozen = {"speech_codec": model.speech_codec}
    if backbone:
        frozen["model.language_model"] = model.model.language_model
        frozen["lm_head"] = model.lm_head
    if audio_encoder:
        frozen["model.audio_tower"] = model.model.audio_tower
    for module in frozen.values():
        module.requires_grad_(False)
    return list(frozen)


def train_only(model, prefixes: list[str]) -> list[str]:
    """Freeze every parameter whose name does not start with one of `prefixes`; returns the frozen names' top-level
    parts. A prefix that matches nothing is an error (a typo would otherwise train nothing)."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            tops = sorted({name.split(".")[0] for name in names})
            raise ValueError(f"`trainable_modules` entry {prefix!r} names no parameter; expected a prefix of the "
                             f"model's parameter names, such as {tops}.")
    frozen = set()
    for name, param in model.named_parameters():
        param.requires_grad_(any(name.startswith(prefix) for prefix in prefixes))
        if not param.requires_grad:
            frozen.add(name.split(".")[0])
    return sorted(frozen)


def build_trainer(model, processor, train_dataset, args: SFTConfig, eval_dataset=None, peft_config=None,
                  callbacks=None) -> OmniDRCASFTTrainer:
    """The project's trainer: TRL `SFTTrainer` + the stream collator + the full loss (+ LoRA via `peft_config`)."""
    if len(train_dataset) == 0:
        raise ValueError("The training dataset is empty: nothing to train on. Check the corpus path and its filters.")
    return OmniDRCASFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor.tokenizer,
        data_collator=OmniDRCACollator(processor),
        peft_config=peft_config,
        callbacks=callbacks,
    )


__all__ = [
    "LOSS_COMPONENTS",
    "add_answer_latents",
    "speech_latent_stats",
    "OmniDRCACollator",
    "OmniDRCASFTTrainer",
    "build_trainer",
    "freeze_modules",
    "train_only",
    "prepare_dataset",
    "row_to_example",
    "sft_config",
    "sft_defaults",
]
