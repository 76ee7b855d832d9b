"""Audio helpers shared by the feature extractor and the speech codec (torch only, no torchaudio)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank


@lru_cache(maxsize=8)
def _mel_filters_np(num_mel_bins: int, n_fft: int, sampling_rate: int) -> np.ndarray:
    return mel_filter_bank(
        num_frequency_bins=1 + n_fft // 2,
        num_mel_filters=num_mel_bins,
        min_frequency=0.0,
        max_frequency=sampling_rate / 2,
        sampling_rate=sampling_rate,
        norm="slaney",
        mel_scale="slaney",
    ).astype(np.float32)


def mel_filters(num_mel_bins: int, n_fft: int, sampling_rate: int) -> torch.Tensor:
    """(n_fft // 2 + 1, num_mel_bins) Slaney mel filterbank, the one Whisper uses."""
    return torch.from_numpy(_mel_filters_np(num_mel_bins, n_fft, sampling_rate))


def log_mel_spectrogram(
    wave: torch.Tensor,
    *,
    num_mel_bins: int = 80,
    n_fft: int = 400,
    hop_length: int = 160,
    sampling_rate: int = 16000,
) -> torch.Tensor:
    """Whisper-normalised log-mel: log10 power mel, floored at (max - 8) per clip, scaled (x + 4) / 4.

    Args:
        wave: (B, T) float waveform at `sampling_rate`.
    Returns:
        (B, num_mel_bins, T // hop_length) features; differentiable, so the codec can train through it.
    """
    window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    spec = torch.stft(wave, n_fft, hop_length, window=window, return_complex=True)  # (B, F, T/hop + 1)
    power = spec[..., :-1].abs() ** 2  # Whisper drops the last frame: T // hop frames
    filters = mel_filters(num_mel_bins, n_fft, sampling_rate).to(wave.device, wave.dtype)
    mel = torch.einsum("bft,fm->bmt", power, filters)  # (B, M, T // hop)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0


__all__ = ["log_mel_spectrogram", "mel_filters"]
