"""Audio helpers shared by the feature extractor and the speech codec (torch only, no torchaudio)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
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


# ---------------------------------------------------------------------------------------------------------
# Resampling. torchaudio's PyPI wheel is CUDA-linked and scipy is not a dependency, so this is a small
# band-limited (windowed-sinc) polyphase resampler in torch. The ratio target/orig is reduced by the gcd to
# up/down; output sample n sits at input time n * down / up. The pattern repeats every `down` input
# samples (= `up` output samples), so the input is cut into blocks of `down` samples (channels) and one
# stride-1 conv1d maps them to `up` output phases per block.


@lru_cache(maxsize=16)
def _resample_kernel(up: int, down: int, zero_crossings: int, rolloff: float, beta: float) -> tuple[torch.Tensor, int]:
    """(up, down, K) float64 conv1d kernel (output phase, sample within an input block, block), left padding."""
    # Cutoff in cycles per input sample: below both Nyquists (anti-aliasing when down-sampling, anti-imaging
    # when up-sampling), pulled in by `rolloff` to leave room for the transition band.
    cutoff = rolloff * min(1.0, up / down) / 2
    width = zero_crossings / (2 * cutoff)  # filter half-length, in input samples
    half = math.ceil(width)
    phase = torch.arange(up, dtype=torch.float64)
    taps = torch.arange(down + 2 * half, dtype=torch.float64)  # input index - block start + half
    tau = (phase * down / up)[:, None] + half - taps[None, :]  # (up, L) output time minus input time
    window = torch.special.i0(beta * torch.sqrt((1 - (tau / width) ** 2).clamp(min=0)))
    window = window / torch.special.i0(torch.tensor(beta, dtype=torch.float64)) * (tau.abs() <= width)
    kernel = 2 * cutoff * torch.sinc(2 * cutoff * tau) * window  # (up, L), DC gain ~1 for every phase
    blocks = -(-kernel.shape[1] // down)
    kernel = torch.nn.functional.pad(kernel, (0, blocks * down - kernel.shape[1]))
    kernel = kernel.reshape(up, blocks, down).transpose(1, 2).contiguous()  # (up, down, K)
    return kernel, half


def resample(
    wave: np.ndarray | torch.Tensor,
    orig_sr: int,
    target_sr: int,
    *,
    zero_crossings: int = 32,
    rolloff: float = 0.96,
    beta: float = 10.0,
) -> np.ndarray | torch.Tensor:
    """Band-limited resampling of the last axis from `orig_sr` to `target_sr` (windowed-sinc, polyphase).

    The low-pass cuts at `rolloff * min(orig_sr, target_sr) / 2` with a Kaiser window and `zero_crossings`
    sinc lobes each side (defaults close to ffmpeg's, which Whisper's training audio went through):
    48 kHz -> 16 kHz keeps 7 kHz within 0.01 dB and attenuates 8.5 kHz and up (would alias) by > 100 dB.

    Args:
        wave: (..., T) floating-point waveform, numpy or torch (any device).
    Returns:
        (..., round(T * target_sr / orig_sr)), the same type, dtype and device as `wave`.
    """
    if orig_sr <= 0 or target_sr <= 0 or int(orig_sr) != orig_sr or int(target_sr) != target_sr:
        raise ValueError(f"Sampling rates must be positive integers, got orig_sr={orig_sr}, target_sr={target_sr}.")
    is_numpy = isinstance(wave, np.ndarray)
    x = torch.from_numpy(wave) if is_numpy else wave
    if not x.is_floating_point():
        raise ValueError(f"`resample` needs a floating-point waveform, got dtype {x.dtype}; scale it to [-1, 1] first.")
    g = math.gcd(int(orig_sr), int(target_sr))
    up, down = int(target_sr) // g, int(orig_sr) // g
    *lead, t = x.shape
    n_out = round(t * up / down)
    if up == down or n_out == 0:
        out = x.clone() if up == down else x.new_zeros(*lead, 0)
        return out.numpy() if is_numpy else out

    # A conv with few output channels runs far below peak (48k -> 16k has up = 1): take `periods` repeats of
    # the pattern per block so that there are >= 16 output phases (~8x faster there, same numbers).
    periods = -(-16 // up)
    up, down = up * periods, down * periods
    kernel, half = _resample_kernel(up, down, zero_crossings, float(rolloff), float(beta))
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    kernel = kernel.to(x.device, dtype)
    m = -(-n_out // up)  # output blocks (ceil); each block is `up` outputs from `down` inputs
    blocks = m + kernel.shape[-1] - 1
    # Zeros around the clip: the filter reaches `half` samples before it and up to a block past its end.
    flat = x.reshape(math.prod(lead), t).to(dtype)  # (B, T)
    flat = torch.nn.functional.pad(flat, (half, blocks * down - t - half))  # (B, blocks * down)
    flat = flat.reshape(-1, blocks, down).transpose(1, 2)  # (B, down, blocks)
    y = torch.nn.functional.conv1d(flat, kernel)  # (B, up, m)
    y = y.transpose(1, 2).reshape(-1, m * up)[:, :n_out]  # (B, n_out): phases interleaved in time order
    y = y.reshape(*lead, n_out).to(x.dtype)
    return y.numpy() if is_numpy else y


def stft(wave: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """(B, T) float32 -> (B, n_fft // 2 + 1, T // hop) complex STFT with "same" framing (as Vocos):
    frame f is centred on hop block [f * hop, (f + 1) * hop), so T = F * hop samples have exactly F frames.

    Zero (not reflect) padding: a frame sees only samples near its block and zeros beyond the ends, so a
    clip's frames do not depend on what follows it in a padded batch.
    """
    window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    left = (n_fft - hop_length) // 2
    padded = F.pad(wave, (left, n_fft - hop_length - left))
    return torch.stft(padded, n_fft, hop_length, window=window, center=False, return_complex=True)


def istft(
    spec: torch.Tensor, n_fft: int, hop_length: int, frame_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, K, F) complex -> (B, F * hop) float32, the exact inverse of `stft` (windowed overlap-add divided
    by the summed squared window). torch.istft would need F + 1 frames for F * hop samples.

    `frame_mask` (B, F) drops frames from both the sum and the window envelope, so a clip in a padded batch
    is synthesised exactly as alone (and is silent past its frames).
    """
    frames = spec.shape[-1]
    window = torch.hann_window(n_fft, device=spec.device, dtype=torch.float32)
    weights = window[None, :, None].expand(1, n_fft, frames)  # (1, n_fft, F)
    if frame_mask is not None:
        weights = weights * frame_mask[:, None, :].float()  # (B, n_fft, F)
    chunks = torch.fft.irfft(spec, n=n_fft, dim=1) * weights  # (B, n_fft, F)
    size = (frames - 1) * hop_length + n_fft
    fold = lambda x: F.fold(x, output_size=(1, size), kernel_size=(1, n_fft), stride=(1, hop_length))  # noqa: E731
    wave = fold(chunks)[:, 0, 0]  # (B, size)
    envelope = fold(weights * window[None, :, None])[:, 0, 0]  # (B or 1, size) summed squared window
    left = (n_fft - hop_length) // 2
    keep = slice(left, left + frames * hop_length)
    return wave[:, keep] / envelope[:, keep].clamp(min=1e-11)


def log_mel(power: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """(B, K, F) power spectrogram -> (B, M, F) log-mel on Whisper's scale, (log10 + 4) / 4.

    A fixed floor instead of Whisper's per-clip (max - 8) floor keeps every frame local: a clip gets the
    same features alone, in a padded batch, or cut into chunks.
    """
    mel = torch.einsum("bkf,km->bmf", power, filters)
    return (torch.clamp(mel, min=1e-10).log10() + 4.0) / 4.0

__all__ = ["istft", "log_mel", "log_mel_spectrogram", "mel_filters", "resample", "stft"]
