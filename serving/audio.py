"""Audio in and out of the API: base64 or uploaded bytes -> a checked 16 kHz-ready clip, and answers -> wav/pcm16.

Everything a client sends is untrusted: a clip that cannot be decoded, is empty, too long or holds invalid samples
raises `AudioError` (a `ValueError`) whose message says what was expected; the server answers it with a 400.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import shutil
import subprocess

import numpy as np
import soundfile as sf

from modeling_omnidrca.audio_utils import resample

INPUT_FORMATS = ("wav", "mp3", "flac", "ogg", "pcm16")  # what `input_audio.format` may say
OUTPUT_FORMATS = ("wav", "mp3", "flac", "opus", "pcm16")  # chat `audio.format`; /v1/audio/speech says "pcm"
_SOUNDFILE = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"),
              "opus": ("OGG", "OPUS")}
PCM16_RATE = 24_000  # OpenAI's pcm16: raw 16-bit little-endian mono at 24 kHz (chat and Realtime)
MIN_SECONDS = 0.1


class AudioError(ValueError):
    """A client's audio that cannot be used; the message is sent back as it is."""


def decode_base64(data: str, what: str = "input_audio.data") -> bytes:
    if not isinstance(data, str) or not data:
        raise AudioError(f"`{what}` must be a non-empty base64 string, got {type(data).__name__}.")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AudioError(f"`{what}` is not valid base64 (expected the audio file's bytes, base64-encoded).") from None


def read_audio(raw: bytes, fmt: str | None, max_seconds: float) -> tuple[np.ndarray, int]:
    """Encoded bytes -> (float32 mono wave, rate), checked: decodable, non-empty, finite, at most `max_seconds`."""
    if fmt is not None and fmt not in INPUT_FORMATS:
        raise AudioError(f"Unsupported audio format {fmt!r}: expected one of {list(INPUT_FORMATS)}.")
    if fmt == "pcm16":
        wave, rate = pcm16_to_wave(raw), PCM16_RATE
    else:
        wave, rate = _decode_file(raw, fmt)
    seconds = len(wave) / rate
    if seconds < MIN_SECONDS:
        raise AudioError(f"The audio is {seconds:.2f} s long; expected at least {MIN_SECONDS} s of speech.")
    if seconds > max_seconds:
        raise AudioError(f"The audio is {seconds:.1f} s long; this server takes clips of at most {max_seconds:g} s.")
    if not np.isfinite(wave).all():
        raise AudioError("The audio holds invalid (NaN or infinite) samples.")
    return wave, rate


def _decode_file(raw: bytes, fmt: str | None) -> tuple[np.ndarray, int]:
    try:
        wave, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
        return wave.mean(axis=1), int(rate)  # (T, C) -> (T,): the model hears mono
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        pass
    wave = _decode_with_ffmpeg(raw)  # containers libsndfile cannot read (some mp3s, m4a, webm)
    if wave is None:
        raise AudioError(f"Could not decode the audio as {fmt or 'an audio file'}: expected wav, mp3, flac or ogg "
                         "bytes (or raw pcm16 with format 'pcm16').")
    return wave, 16_000


def _decode_with_ffmpeg(raw: bytes) -> np.ndarray | None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        try:
            import imageio_ffmpeg
        except ImportError:
            return None
        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    cmd = [ffmpeg, "-v", "error", "-nostdin", "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", "16000", "-"]
    try:
        result = subprocess.run(cmd, input=raw, capture_output=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0 or not result.stdout:
        return None
    return np.frombuffer(result.stdout, dtype=np.float32).copy()


def encode_audio(wave: np.ndarray, rate: int, fmt: str) -> bytes:
    """A float wave at `rate` -> the bytes of `fmt` (wav/mp3/flac/opus at `rate`; "pcm16"/"pcm": raw at 24 kHz)."""
    wave = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    if fmt in ("pcm16", "pcm"):
        return pcm16_bytes(wave, rate)
    if fmt not in _SOUNDFILE:
        raise AudioError(f"Unsupported output format {fmt!r}: expected one of {list(OUTPUT_FORMATS)}.")
    buffer = io.BytesIO()
    container, subtype = _SOUNDFILE[fmt]
    sf.write(buffer, wave, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def pcm16_bytes(wave: np.ndarray, rate: int) -> bytes:
    """Raw 16-bit little-endian mono at OpenAI's 24 kHz."""
    if rate != PCM16_RATE and len(wave):
        wave = resample(np.asarray(wave, dtype=np.float32), rate, PCM16_RATE)
    return _to_pcm16(wave)


class StreamingResampler:
    """Resamples a stream chunk by chunk into exactly the samples of resampling it whole: an output sample is
    released once the input it depends on (the filter's reach, `margin`) has arrived, and `flush` releases the
    rest. Resampling each chunk on its own would instead put a click at every chunk boundary."""

    def __init__(self, orig_sr: int, target_sr: int, zero_crossings: int = 32, rolloff: float = 0.96):
        g = math.gcd(orig_sr, target_sr)
        self.orig, self.target, self.up, self.down = orig_sr, target_sr, target_sr // g, orig_sr // g
        # input samples an output depends on either side (`audio_utils.resample`'s filter half-length), plus a block
        self.margin = math.ceil(zero_crossings / (rolloff * min(1.0, self.up / self.down))) + self.down
        self.buffer = np.zeros(0, np.float32)
        self.offset = 0  # input index of buffer[0]; a multiple of `down`, so its outputs fall on the output grid
        self.received = 0
        self.emitted = 0  # output samples released

    def push(self, chunk: np.ndarray) -> np.ndarray:
        self.buffer = np.concatenate([self.buffer, np.asarray(chunk, dtype=np.float32)])
        self.received += len(chunk)
        return self._release(max(0, (self.received - self.margin) * self.up // self.down))

    def flush(self) -> np.ndarray:
        return self._release(round(self.received * self.up / self.down))

    def _release(self, limit: int) -> np.ndarray:
        if limit <= self.emitted:
            return np.zeros(0, np.float32)
        if self.up == self.down:
            out = self.buffer[self.emitted - self.offset : limit - self.offset]
        else:
            start = self.offset * self.up // self.down  # the output index of the buffer's first output
            out = resample(self.buffer, self.orig, self.target)[self.emitted - start : limit - start]
        self.emitted = limit
        keep = max(0, self.emitted * self.down // self.up - self.margin)  # input no later output reaches is dropped
        keep -= keep % self.down
        if keep > self.offset:
            self.buffer, self.offset = self.buffer[keep - self.offset :], keep
        return out


class Pcm16Stream:
    """A stream of float chunks at `rate` -> OpenAI's pcm16 bytes at 24 kHz, chunk by chunk, without seams."""

    def __init__(self, rate: int):
        self.resampler = StreamingResampler(rate, PCM16_RATE)

    def push(self, chunk: np.ndarray) -> bytes:
        return _to_pcm16(self.resampler.push(chunk))

    def flush(self) -> bytes:
        return _to_pcm16(self.resampler.flush())


def _to_pcm16(wave: np.ndarray) -> bytes:
    return (np.clip(wave, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def pcm16_to_wave(raw: bytes) -> np.ndarray:
    """Raw 24 kHz pcm16 (a Realtime buffer) -> float32 at 24 kHz."""
    if len(raw) % 2:
        raise AudioError("pcm16 audio must hold whole 16-bit samples (an even number of bytes).")
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


__all__ = ["INPUT_FORMATS", "OUTPUT_FORMATS", "PCM16_RATE", "AudioError", "Pcm16Stream", "StreamingResampler", "b64",
           "decode_base64", "encode_audio", "pcm16_bytes", "pcm16_to_wave", "read_audio"]
