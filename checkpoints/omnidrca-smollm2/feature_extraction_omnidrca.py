"""OmniDRCA feature extractor: waveforms (arrays, tensors, lists, audio files) -> Whisper log-mel at 100 Hz.

This file ships inside checkpoints for `trust_remote_code`, so it imports only its sibling files (relatively),
torch, numpy, transformers and, lazily for file paths, soundfile.

Differences from `WhisperFeatureExtractor`, on purpose:
- a batch is padded to its longest clip, not to 30 s, and `attention_mask` marks the real 100 Hz frames;
  each clip is featurised alone, so its real frames do not depend on what it is batched with;
- any common sampling rate is resampled to 16 kHz, multi-channel audio is averaged to mono and integer
  PCM is scaled to [-1, 1];
- audio longer than `max_length_seconds` (the encoder's 30 s) is an error, not silently truncated: the
  model would never see the end of the question, so the caller must split it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature

from .audio_utils import log_mel_spectrogram, resample

_MAX_CHANNELS = 8  # 7.1 surround; a larger "channel" axis is more likely a batch or a transposed mistake

Clip = np.ndarray | torch.Tensor | list[float] | str | os.PathLike  # samples, or an audio file's path


class OmniDRCAFeatureExtractor(SequenceFeatureExtractor):
    r"""Whisper-compatible log-mel features for OmniDRCA's audio tower.

    Args:
        feature_size: number of mel bins (Whisper-large-v3 uses 128, earlier Whisper models 80).
        sampling_rate: rate the features are computed at; other inputs are resampled to it.
        hop_length: STFT hop in samples (160 at 16 kHz = 100 frames per second).
        n_fft: STFT window in samples (400 at 16 kHz = 25 ms).
        padding_value: value of the padded feature frames (masked out by `attention_mask`).
        max_length_seconds: longest clip accepted, the Whisper encoder's 30 s window; longer clips raise.

    Call it with one clip or a list of clips (see `__call__`); it returns a `BatchFeature` with
    `input_features` (N, feature_size, frames) float32 and `attention_mask` (N, frames), 1 on real frames.
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 80,
        sampling_rate: int = 16000,
        hop_length: int = 160,
        n_fft: int = 400,
        padding_value: float = 0.0,
        max_length_seconds: float = 30.0,
        return_attention_mask: bool = True,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.max_length_seconds = max_length_seconds

    # ------------------------------------------------------------------ inputs -> mono float32 waveforms

    def _read_file(self, path: str | os.PathLike) -> tuple[np.ndarray, int]:
        """(T, C) float32 samples and the file's own sampling rate."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Audio file not found (or not a file): '{os.fspath(path)}'. Check the path.")
        try:
            import soundfile  # only needed for paths; arrays work without it
        except ImportError as e:
            raise ImportError(f"Reading '{os.fspath(path)}' needs soundfile: `pip install soundfile`.") from e
        try:
            data, sr = soundfile.read(path, dtype="float32", always_2d=True)
        except Exception as e:  # libsndfile raises its own error types, all meaning "not readable audio"
            raise ValueError(
                f"Could not decode '{os.fspath(path)}' as audio ({type(e).__name__}: {e}). Expected a file soundfile "
                "reads (WAV, FLAC, OGG/Vorbis, MP3 with libsndfile >= 1.1); convert it, e.g. "
                "`ffmpeg -i in.xyz -ar 16000 -ac 1 out.wav`, or pass the decoded samples as an array."
            ) from e
        return data, sr

    def load(self, audio: Clip, sampling_rate: int | None = None, name: str = "audio") -> np.ndarray:
        """One clip (array, tensor, list of floats or file path) -> validated (T,) float32 mono at
        `self.sampling_rate`, ready for `__call__`. `sampling_rate` is the rate of array input (default
        `self.sampling_rate`); a file uses its own. Raises ValueError on unusable audio (see `__call__`)."""
        return self._to_mono(audio, self.sampling_rate if sampling_rate is None else sampling_rate, name)

    def _to_mono(self, audio: Clip, sampling_rate: int, name: str) -> np.ndarray:
        if not _is_positive_int(sampling_rate):
            raise ValueError(f"{name}: `sampling_rate` must be a positive integer in Hz, got {sampling_rate!r}.")
        if isinstance(audio, (str, os.PathLike)):
            name = f"{name} ('{os.fspath(audio)}')"
            audio, sampling_rate = self._read_file(audio)
        elif isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu()
            # numpy has no bfloat16; float32 holds every floating torch dtype's values exactly
            audio = (audio.float() if audio.is_floating_point() else audio).numpy()
        elif isinstance(audio, (list, tuple)):
            if not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in audio):
                raise ValueError(f"{name}: a list clip must hold numbers (samples), got {_describe(audio)}.")
            audio = np.asarray(audio, dtype=np.float32)  # python numbers are float samples, never PCM ints
        elif not isinstance(audio, np.ndarray):
            hint = "Decode the audio first (e.g. `soundfile.read(path)`) or pass its path."
            if isinstance(audio, dict) and "array" in audio:  # a `datasets` Audio row
                hint = "For a `datasets` audio row pass `row['array']` with `sampling_rate=row['sampling_rate']`."
            raise TypeError(
                f"{name}: expected a 1-D numpy array, torch tensor, list of floats or an audio file path, got "
                f"{_describe(audio)}. {hint}"
            )

        kind, bits = audio.dtype.kind, 8 * audio.dtype.itemsize
        if kind == "i" and bits <= 32:  # PCM int8/16/32: full scale is 2 ** (bits - 1)
            audio = audio.astype(np.float32) / 2.0 ** (bits - 1)
        elif kind == "u" and bits == 8:  # 8-bit WAV is unsigned, centred on 128
            audio = (audio.astype(np.float32) - 128.0) / 128.0
        elif kind == "f":
            audio = audio.astype(np.float32, copy=False)
        else:
            raise ValueError(
                f"{name}: expected float samples in [-1, 1] or int16/int32/uint8 PCM, got dtype {audio.dtype}. "
                "Convert it, e.g. `audio.astype(np.float32) / 32768` for 16-bit PCM held in a wider integer type."
            )

        if audio.ndim == 2:
            # Channel axis = the short one: (T, C) from soundfile, (C, T) from torch-style loaders.
            channel_axis = int(np.argmin(audio.shape))
            if audio.shape[channel_axis] > _MAX_CHANNELS:
                raise ValueError(
                    f"{name}: a 2-D array is read as multi-channel audio (T, C) or (C, T) with at most "
                    f"{_MAX_CHANNELS} channels, got shape {audio.shape}. To pass a batch, pass a list of 1-D clips."
                )
            audio = audio.mean(axis=channel_axis)  # (T,)
        elif audio.ndim != 1:
            raise ValueError(
                f"{name}: expected mono (T,) or multi-channel (T, C)/(C, T) audio, got a {audio.ndim}-D array of "
                f"shape {audio.shape}. Pass a batch as a list of clips, one array per clip."
            )

        if audio.size == 0:
            raise ValueError(f"{name}: the audio is empty (0 samples). Drop it from the batch or pass real audio.")
        if not np.isfinite(audio).all():
            bad = ~np.isfinite(audio)
            what = "NaN" if np.isnan(audio).any() else "inf"
            raise ValueError(
                f"{name}: the audio has {int(bad.sum())} non-finite samples ({what}, first at sample "
                f"{int(bad.argmax())}). Expected finite values; fix the decoder or replace them, e.g. "
                "`np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0)`."
            )

        sampling_rate = int(sampling_rate)  # a file's rate, or the argument checked above
        seconds = audio.shape[0] / sampling_rate
        if seconds > self.max_length_seconds:
            raise ValueError(
                f"{name}: the audio is {seconds:.2f} s long, over the {self.max_length_seconds:g} s the audio encoder "
                f"accepts. Split it into chunks of at most {self.max_length_seconds:g} s (e.g. at pauses) and pass "
                "them as separate clips; it is not truncated silently because the model would miss the end."
            )
        if sampling_rate != self.sampling_rate:
            audio = resample(audio, sampling_rate, self.sampling_rate)
        if audio.shape[0] < self.n_fft:
            raise ValueError(
                f"{name}: the audio is {1000 * seconds:.1f} ms long, shorter than one {self.n_fft}-sample analysis "
                f"window ({1000 * self.n_fft / self.sampling_rate:g} ms). Pad it with silence or drop it."
            )
        return np.ascontiguousarray(audio)  # torch.from_numpy rejects negative strides

    # ------------------------------------------------------------------ the call

    def __call__(
        self,
        audio: Clip | Sequence[Clip],
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        padding: bool | str = "longest",
        return_attention_mask: bool | None = None,
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> BatchFeature:
        """Featurises one clip or a batch of clips.

        Args:
            audio: one clip or a list/tuple of clips. A clip is a 1-D numpy array or torch tensor, a list of
                float samples, a (T, C)/(C, T) multi-channel array (averaged to mono, C <= 8), or a path to an
                audio file (read with soundfile at the file's own rate). Floats are expected in [-1, 1];
                int16/int32/uint8 PCM is scaled to it.
            sampling_rate: rate of the array inputs in Hz, resampled to `self.sampling_rate` when different.
                Like Whisper it defaults to `self.sampling_rate` (16 kHz): pass it whenever your audio may be
                at another rate. File paths always use their own rate.
            return_tensors: "pt" for torch tensors, "np" or None for numpy arrays.
            padding: "longest"/True pads to the longest clip, "max_length" to `max_length_seconds`.
            return_attention_mask: defaults to `self.return_attention_mask` (True).
            device: where the STFT runs ("cuda" for long batches on GPU); outputs come back on CPU.
        Returns:
            BatchFeature with `input_features` (N, feature_size, frames) float32 and `attention_mask`
            (N, frames) int32, 1 on the len(clip) // hop_length real frames of each clip.
        """
        if sampling_rate is None:
            sampling_rate = self.sampling_rate
        if return_tensors not in (None, "np", "pt"):
            raise ValueError(f"`return_tensors` must be 'pt', 'np' or None, got {return_tensors!r}.")
        if padding not in (True, "longest", "max_length"):
            raise ValueError(f"`padding` must be 'longest' (or True) or 'max_length', got {padding!r}.")
        if kwargs:
            raise TypeError(f"{type(self).__name__}.__call__ got unexpected arguments {sorted(kwargs)}.")

        clips = list(audio) if _is_batch(audio) else [audio]
        if not clips:
            raise ValueError("Got an empty batch (no clips). Pass at least one clip.")
        waves = [self._to_mono(clip, sampling_rate, f"clip {i}") for i, clip in enumerate(clips)]

        # Each clip alone: the log-mel's reflect padding at the clip's end and its per-clip (max - 8)
        # floor would otherwise change with the clips it is batched with.
        feats = [
            log_mel_spectrogram(
                torch.from_numpy(w).to(device)[None],  # (1, T)
                num_mel_bins=self.feature_size,
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                sampling_rate=self.sampling_rate,
            )[0].cpu()  # (M, T // hop)
            for w in waves
        ]
        total = max(f.shape[-1] for f in feats)
        if padding == "max_length":
            total = max(total, int(self.max_length_seconds * self.sampling_rate) // self.hop_length)
        input_features = np.full((len(feats), self.feature_size, total), self.padding_value, dtype=np.float32)
        attention_mask = np.zeros((len(feats), total), dtype=np.int32)
        for i, f in enumerate(feats):
            input_features[i, :, : f.shape[-1]] = f.numpy()
            attention_mask[i, : f.shape[-1]] = 1

        data = {"input_features": input_features}
        if self.return_attention_mask if return_attention_mask is None else return_attention_mask:
            data["attention_mask"] = attention_mask
        return BatchFeature(data, tensor_type="pt" if return_tensors == "pt" else None)


def _is_positive_int(x: Any) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool) and x > 0 and float(x).is_integer()


def _is_batch(audio: Any) -> bool:
    """A list/tuple is a batch unless it is a flat list of numbers (one clip's samples)."""
    if not isinstance(audio, (list, tuple)):
        return False
    return len(audio) == 0 or not isinstance(audio[0], (int, float, np.number))


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        inner = sorted({type(v).__name__ for v in value[:8]})
        return f"a {type(value).__name__} of {', '.join(inner) or 'nothing'}"
    return f"a {type(value).__name__}"


__all__ = ["OmniDRCAFeatureExtractor"]
