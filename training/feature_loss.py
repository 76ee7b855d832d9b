"""What a speech recogniser hears, as a codec training loss: distances between Whisper encoder states.

The codec's own losses (log-mel L1, multi-resolution STFT) weigh every band and frame alike, but the judge of the
demo's speech is a Whisper model, and much of what decides whether it hears a word (formant transitions, stop
bursts) is a small part of the spectrum's energy. `WhisperFeatureLoss` runs a frozen Whisper encoder on the
reference clip and on its reconstruction and compares the hidden states of chosen layers (L1, scaled by the
reference's mean magnitude per layer so each layer counts alike), on the clips' real frames only. The gradient
reaches the reconstruction, never the encoder.

    loss = WhisperFeatureLoss.from_pretrained("whisper-tiny.en")  # or a converted Whisper folder
    value = loss(reference_wave, reconstructed_wave, lengths)      # () tensor

Used by `training.train_codec` with `feature_loss_model` / `feature_loss_weight` (see codec_festival_decoder2.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from modeling_omnidrca.audio_utils import log_mel_spectrogram


class WhisperFeatureLoss(nn.Module):
    """Mean over `layers` of the L1 distance between encoder states of reference and reconstruction."""

    def __init__(self, encoder: WhisperEncoder, layers: Sequence[int] | None = None):
        super().__init__()
        depth = len(encoder.layers)
        layers = list(range(1, depth + 1)) if layers is None else list(layers)
        if not layers or any(not 1 <= i <= depth for i in layers):
            raise ValueError(f"`layers` must name encoder layers 1..{depth} (the output of each), got {layers}.")
        self.encoder = encoder.eval().requires_grad_(False)
        self.layers = layers
        self.sampling_rate = 16000
        self.hop_length = 160  # Whisper's 100 Hz mel frames; the encoder's conv2 halves them to 50 Hz

    @classmethod
    def from_pretrained(cls, name_or_path: str, layers: Sequence[int] | None = None) -> "WhisperFeatureLoss":
        """`whisper-tiny.en` (the encoder the demo listens with, from its installed package) or a Whisper folder."""
        if name_or_path == "whisper-tiny.en":
            from modeling_omnidrca.pretrained_sources import export_whisper_tiny_en

            name_or_path = str(export_whisper_tiny_en())
        return cls(WhisperModel.from_pretrained(name_or_path).encoder, layers)

    def train(self, mode: bool = True) -> "WhisperFeatureLoss":
        return super().train(False)  # dropout off: the frozen encoder is a fixed measuring instrument

    def hidden_states(self, wave: torch.Tensor, lengths: torch.LongTensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, T) waves with (B,) real samples -> [(B, T50, Da)] the states of `layers`, and the (B, T50) mask."""
        enc = self.encoder
        dtype = enc.conv1.weight.dtype
        real = torch.arange(wave.shape[1], device=wave.device) < lengths[:, None]  # (B, T)
        # Silence past each clip, whatever the batch held there: Whisper's log-mel floor is the clip's maximum - 8.
        mel = log_mel_spectrogram(wave.float() * real, hop_length=self.hop_length, sampling_rate=self.sampling_rate)
        frames = mel.shape[-1]
        if frames > 2 * enc.config.max_source_positions:
            raise ValueError(f"Clips of {frames} mel frames exceed Whisper's {2 * enc.config.max_source_positions}; "
                             f"train on shorter segments (`segment_seconds`).")
        len100 = torch.div(lengths, self.hop_length, rounding_mode="floor").clamp(min=1)
        valid100 = (torch.arange(frames, device=wave.device) < len100[:, None])[:, None]  # (B, 1, F)
        x = F.gelu(enc.conv1(mel.to(dtype) * valid100)) * valid100
        x = F.gelu(enc.conv2(x)).transpose(1, 2)  # (B, T50, Da)
        t50 = x.shape[1]
        valid50 = torch.arange(t50, device=x.device) < ((len100 - 1) // 2 + 1)[:, None]  # (B, T50)
        x = x + enc.embed_positions.weight[:t50].to(x.dtype)
        attn_mask = torch.zeros(x.shape[0], 1, 1, t50, dtype=x.dtype, device=x.device)
        attn_mask = attn_mask.masked_fill(~valid50[:, None, None, :], torch.finfo(x.dtype).min)
        states = []
        for i, layer in enumerate(enc.layers, start=1):
            x = layer(x, attn_mask)
            x = x[0] if isinstance(x, tuple) else x
            if i in self.layers:
                states.append(enc.layer_norm(x) if i == len(enc.layers) else x)
            if i == max(self.layers):
                break
        return states, valid50

    def forward(self, reference: torch.Tensor, reconstruction: torch.Tensor, lengths: torch.LongTensor | None = None) -> torch.Tensor:
        """reference, reconstruction: (B, T) waves at 16 kHz; lengths: (B,) real samples (default: all T)."""
        if reference.shape != reconstruction.shape:
            raise ValueError(f"reference {tuple(reference.shape)} and reconstruction {tuple(reconstruction.shape)} "
                             "must have the same (batch, samples) shape; crop or pad the reconstruction first.")
        if lengths is None:
            lengths = torch.full(reference.shape[:1], reference.shape[1], dtype=torch.long, device=reference.device)
        with torch.no_grad():
            targets, valid = self.hidden_states(reference, lengths)
        outputs, _ = self.hidden_states(reconstruction, lengths)
        weight = valid[..., None].to(targets[0].dtype)  # (B, T50, 1)
        count = (weight.sum() * targets[0].shape[-1]).clamp(min=1.0)
        terms = []
        for target, output in zip(targets, outputs):
            scale = ((target.abs() * weight).sum() / count).clamp(min=1e-6)  # each layer in its own units
            terms.append(((output - target).abs() * weight).sum() / count / scale)
        return torch.stack(terms).mean()


__all__ = ["WhisperFeatureLoss"]
