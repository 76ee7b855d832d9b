"""Turn whatever a visitor uploaded or recorded into a 16 kHz mono question, or say plainly what is wrong.

Every rejection is an `InputProblem` (a `ValueError`) whose message is written for the person at the
microphone: the page shows it as it is and keeps serving.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLING_RATE = 16_000
MAX_SECONDS = 30.0  # the Whisper encoder's window; the feature extractor refuses longer clips
MIN_SECONDS = 0.2
SILENCE_PEAK = 0.01  # a peak below -40 dBFS: a muted or unplugged microphone, not speech


class InputProblem(ValueError):
    """Something about the visitor's input that they can fix; the message is shown in the page."""


def find_ffmpeg() -> str | None:
    """Path of an `ffmpeg` executable: the machine's own, else imageio-ffmpeg's static build, else None.

    Browsers record compressed formats that libsndfile cannot read, and gradio streams audio to the browser
    through ffmpeg (AAC); the pip wheel keeps the Space installable without apt.
    """
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_bin_dir(ffmpeg: str) -> str:
    """A folder holding `ffmpeg` under that very name, for programs that run it from PATH (gradio does):
    its own folder, or a temporary one with a link (imageio-ffmpeg's binary has a versioned name).

    The temporary folder is named after the binary's path, so a link another install left behind (its
    virtualenv since deleted, or another environment's binary) is never the one handed out.
    """
    if Path(ffmpeg).name == "ffmpeg":
        return str(Path(ffmpeg).parent)
    target = Path(ffmpeg).resolve()
    key = hashlib.sha256(str(target).encode()).hexdigest()[:16]
    shim = Path(tempfile.gettempdir()) / f"omnidrca-space-bin-{key}"
    shim.mkdir(exist_ok=True)
    link = shim / "ffmpeg"
    if not link.is_symlink():
        try:
            link.symlink_to(target)
        except FileExistsError:  # another process made the same link first
            pass
    return str(shim)


def _decode_with_ffmpeg(path: str) -> np.ndarray | None:
    """Any container ffmpeg knows (webm/ogg/mp3/m4a from browsers) -> float32 mono 16 kHz, or None."""
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        return None
    cmd = [ffmpeg, "-v", "error", "-nostdin", "-i", path, "-f", "f32le", "-ac", "1", "-ar", str(SAMPLING_RATE), "-"]
    result = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    if result.returncode != 0 or not result.stdout:
        return None
    return np.frombuffer(result.stdout, dtype=np.float32).copy()


def load_question(path: str | os.PathLike | None) -> tuple[np.ndarray, int]:
    """(wave float32 mono, sampling rate) of a question clip, or an `InputProblem` that says what to do."""
    if path is None or str(path) == "":
        raise InputProblem("Record a question with the microphone or upload a wav file first.")
    path = str(path)
    try:
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)  # (T, C) -> (T,): the model hears mono
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        wave, rate = _decode_with_ffmpeg(path), SAMPLING_RATE
        if wave is None:
            name = Path(path).name
            raise InputProblem(
                f"I could not read “{name}” as audio. Upload a wav, flac, ogg or mp3 file, or use the microphone."
            ) from None
    seconds = len(wave) / rate
    if seconds < MIN_SECONDS:
        raise InputProblem("The recording is empty. Press record, ask your question, then stop.")
    if seconds > MAX_SECONDS:
        raise InputProblem(
            f"The clip is {seconds:.0f} s long; the model listens to at most {MAX_SECONDS:.0f} s. "
            "Ask one short question (a few seconds is plenty)."
        )
    if not np.isfinite(wave).all():
        raise InputProblem("The audio file is damaged (it holds invalid samples). Record or upload it again.")
    if float(np.abs(wave).max()) < SILENCE_PEAK:
        raise InputProblem("I only heard silence. Check that the microphone is on and speak a little louder.")
    return wave, int(rate)


def wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    """16-bit wav bytes: what gradio's streaming audio output takes without re-normalising each chunk."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


__all__ = ["MAX_SECONDS", "SAMPLING_RATE", "InputProblem", "ffmpeg_bin_dir", "find_ffmpeg", "load_question",
           "wav_bytes"]
