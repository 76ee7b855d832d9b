"""Speech codec training on corpus audio with transformers' `Trainer`, and its reconstruction report.

The codec's own `forward` scores a reconstruction (log-mel L1 + multi-resolution STFT loss, weighted by
its config), so training is `Trainer` with a collator that cuts random fixed-length segments, plus
component logging. Entry point: `training/train_codec.py`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import Trainer

from modeling_omnidrca.audio_utils import mel_filters
from modeling_omnidrca.audio_utils import stft as _stft
from modeling_omnidrca.codec_omnidrca import OmniDRCAConvNeXtBlock
from processing.schema import to_float

from .trainer_utils import LossOnlyPredictionMixin

CODEC_LOSS_COMPONENTS = ("mel_loss", "stft_loss")


def audio_clips(dataset: Dataset, columns: Sequence[str] = ("answer_audio", "question_audio"),
                min_samples: int = 1600, max_clips: int | None = None) -> Dataset:
    """One `audio` column (int16 clips) from every non-empty audio column of a `processing.schema` dataset.

    Clips shorter than `min_samples` (0.1 s at 16 kHz) are dropped: they hold too few codes to learn from.
    """
    columns = [c for c in columns if c in dataset.column_names]
    if not columns:
        raise ValueError(f"No audio column among {list(columns)} in the dataset (columns: {dataset.column_names}).")

    def explode(batch: dict) -> dict:
        return {"audio": [clip for c in columns for clip in batch[c] if len(clip) >= min_samples]}

    clips = dataset.map(explode, batched=True, remove_columns=dataset.column_names, desc="audio clips")
    if max_clips is not None:
        clips = clips.select(range(min(max_clips, len(clips))))
    if len(clips) == 0:
        raise ValueError(f"No clip of at least {min_samples} samples in columns {columns}: nothing to train the codec on.")
    return clips


class CodecCollator:
    """int16 clips -> a right-padded float batch; clips longer than `segment_samples` are randomly cropped.

    Crops start on code boundaries (multiples of `samples_per_code`), so a segment's codes are the codes
    the codec gives the full clip there. The crop uses torch's global RNG, which `Trainer` seeds and
    restores on resume.
    """

    def __init__(self, segment_samples: int | None, samples_per_code: int):
        self.segment_samples = segment_samples
        self.samples_per_code = samples_per_code

    def _crop(self, clip: np.ndarray) -> np.ndarray:
        if self.segment_samples is None or len(clip) <= self.segment_samples:
            return clip
        starts = (len(clip) - self.segment_samples) // self.samples_per_code + 1
        start = int(torch.randint(starts, ())) * self.samples_per_code
        return clip[start : start + self.segment_samples]

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        clips = [self._crop(to_float(r["audio"])) for r in rows]
        longest = max(len(c) for c in clips)
        values = torch.zeros(len(clips), longest)
        mask = torch.zeros(len(clips), longest, dtype=torch.long)
        for i, clip in enumerate(clips):
            values[i, : len(clip)] = torch.from_numpy(np.ascontiguousarray(clip))
            mask[i, : len(clip)] = 1
        return {"input_values": values, "attention_mask": mask}


class CodecTrainer(LossOnlyPredictionMixin, Trainer):
    """`Trainer` that logs the codec's loss components (mean over the steps since the last log).

    With a `feature_loss` (`training.feature_loss.WhisperFeatureLoss`), `feature_loss_weight` times its distance
    between each clip and its reconstruction joins the codec's own loss, and is logged as `feature_loss`.
    """

    def __init__(self, *args, feature_loss: nn.Module | None = None, feature_loss_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.feature_loss = feature_loss.to(self.args.device) if feature_loss is not None else None
        self.feature_loss_weight = feature_loss_weight
        self._components: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        outputs = model(**inputs)
        components = {name: getattr(outputs, name) for name in CODEC_LOSS_COMPONENTS}
        loss = outputs.loss
        if self.feature_loss is not None:
            wave, mask = inputs["input_values"], inputs["attention_mask"]
            n = min(wave.shape[1], outputs.waveform.shape[1])  # the decoder writes whole codes
            # The feature loss silences each clip past its length itself.
            components["feature_loss"] = self.feature_loss(wave[:, :n], outputs.waveform[:, :n], mask[:, :n].sum(-1))
            loss = loss + self.feature_loss_weight * components["feature_loss"]
        for name, value in components.items():
            value = self.accelerator.gather_for_metrics(value.detach()).float().mean().item()
            self._components[mode][name].append(value)
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss


    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if mode == "eval" else ""
        for name, values in self._components[mode].items():
            if values:
                logs[prefix + name] = sum(values) / len(values)
        self._components[mode].clear()
        super().log(logs, start_time)


def freeze_encoder(codec) -> int:
    """Freeze everything that decides the codes: the encoder (the log-mel front end and FSQ have no weights).

    A decoder retrained this way speaks exactly the codes the old one did, so it drops into a model whose speech
    head already writes them (`training.replace_codec`). Returns the number of parameters left trainable.
    """
    codec.encoder.requires_grad_(False)
    return sum(p.numel() for p in codec.parameters() if p.requires_grad)


@torch.no_grad()
def grow_decoder(codec, extra_layers: int) -> None:
    """Append `extra_layers` ConvNeXt blocks to every decoder stage, each starting as the identity.

    A new block's last projection is zero, so the grown codec decodes exactly as before its first step; the
    config's `decoder_layers` follows, so the saved codec reloads with the new depth (and streaming decoders
    read the wider receptive field from it).
    """
    if extra_layers < 0:
        raise ValueError(f"`grow_decoder_layers` must be >= 0, got {extra_layers}.")
    if extra_layers == 0:
        return
    cfg = codec.config
    for blocks in codec.decoder.stages:
        reference = blocks[0]
        for _ in range(extra_layers):
            block = OmniDRCAConvNeXtBlock(cfg.decoder_hidden_size, cfg.kernel_size, float(reference.layer_scale_init))
            block.to(device=reference.layer_scale.device, dtype=reference.layer_scale.dtype)
            block.pwconv2.weight.zero_()
            block.pwconv2.bias.zero_()
            blocks.append(block)
    cfg.decoder_layers += extra_layers


@torch.no_grad()
def reconstruction_report(codec, clips: Dataset, batch_size: int = 8, n_fft: int = 512, hop_length: int = 128) -> dict:
    """Reconstruction quality of `codec` on whole clips (an `audio_clips` dataset).

    Returns:
        `mel_l1`: mean |log10 mel power| difference per mel band and frame (the codec's mel-loss units x4);
        `log_spectral_distance_db`: per-frame RMS of the dB power-spectrum difference, averaged over real
        frames (the usual LSD; 0 is perfect, a few dB is good for a low-bit-rate codec);
        `codebook_usage`: fraction of the codebook's codes used at least once;
        `code_perplexity`: exp(entropy) of the code histogram (how many codes are effectively in use);
        `bitrate_bps`: codes per second x log2(codebook size); plus clip and audio counts.
    """
    cfg = codec.config
    device = next(codec.parameters()).device
    counts = torch.zeros(cfg.codebook_size, dtype=torch.long)
    mel_sum = lsd_sum = 0.0
    mel_count = frame_count = 0
    filters = mel_filters(cfg.num_mel_bins, n_fft, cfg.sampling_rate).to(device).float()  # (K, M)
    collate = CodecCollator(None, cfg.samples_per_code)
    seconds = 0.0
    for start in range(0, len(clips), batch_size):
        batch = collate([clips[i] for i in range(start, min(start + batch_size, len(clips)))])
        wave, mask = batch["input_values"].to(device), batch["attention_mask"].to(device)
        codes = codec.encode(wave, mask)  # (B, T25)
        lengths = codec.code_lengths(mask)
        recon = codec.decode(codes, (torch.arange(codes.shape[1], device=device) < lengths[:, None]).long())
        recon = recon[:, : wave.shape[1]] * mask
        for row in range(codes.shape[0]):
            counts += torch.bincount(codes[row, : lengths[row]].cpu(), minlength=cfg.codebook_size)
        power = _stft(wave, n_fft, hop_length).abs() ** 2  # (B, K, F)
        power_hat = _stft(recon, n_fft, hop_length).abs() ** 2
        frames = (torch.arange(power.shape[-1], device=device) * hop_length < mask.sum(-1, keepdim=True)).float()
        mel = torch.einsum("bkf,km->bmf", power, filters).clamp(min=1e-10).log10()
        mel_hat = torch.einsum("bkf,km->bmf", power_hat, filters).clamp(min=1e-10).log10()
        mel_sum += ((mel - mel_hat).abs() * frames[:, None]).sum().item()
        mel_count += int(frames.sum().item()) * cfg.num_mel_bins
        db = 10 * torch.log10(power.clamp(min=1e-10))
        db_hat = 10 * torch.log10(power_hat.clamp(min=1e-10))
        lsd_sum += (((db - db_hat) ** 2).mean(1).sqrt() * frames).sum().item()
        frame_count += int(frames.sum().item())
        seconds += mask.sum().item() / cfg.sampling_rate
    probs = counts.double() / counts.sum().clamp(min=1)
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum().item()
    return {
        "clips": len(clips),
        "audio_seconds": round(seconds, 1),
        "mel_l1": mel_sum / max(mel_count, 1),
        "log_spectral_distance_db": lsd_sum / max(frame_count, 1),
        "codebook_usage": float((counts > 0).float().mean()),
        "code_perplexity": math.exp(entropy),
        "codebook_size": cfg.codebook_size,
        "bitrate_bps": cfg.frame_rate * math.log2(cfg.codebook_size),
    }


__all__ = [
    "CODEC_LOSS_COMPONENTS", "CodecCollator", "CodecTrainer", "audio_clips", "freeze_encoder", "grow_decoder",
    "reconstruction_report",
]
