"""Voices other than the corpus's espeak-ng one: festival's HTS voice, used as the evaluation's reference voice.

The synthetic corpus speaks with espeak-ng (`processing.corpus.synthesize`). The evaluation also needs a voice
the judge hears well, to measure the judge's floor: the reference voice saying the model's own text answers
(`training.evaluate --judge-floor`). festival's CMU US SLT HTS voice (female, Debian main, free) is the one
Whisper understands best of the free voices tried (38/40 demo answers heard right by Whisper base).
The corpus can also speak its answers with it (`python -m processing.build_corpus --assistant-voice festival-slt`).
`synthesize_festival` takes any installed festival voice by name: `--user-voices all` (`processing.user_voices`) also
speaks user turns with the diphone voices `kal_diphone` (festvox-kallpc16k) and `ked_diphone` (festvox-kdlpc16k).

    apt-get install festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from modeling_omnidrca.audio_utils import resample

from .schema import SAMPLING_RATE
from .synthesis import trim_silence

FESTIVAL_VOICE = "cmu_us_slt_arctic_hts"


def text2wave_path() -> str:
    """Absolute path of festival's `text2wave`, or a FileNotFoundError that says how to install it."""
    path = shutil.which("text2wave")
    if path is None:
        raise FileNotFoundError("festival's `text2wave` was not found on PATH; festival voices need it. Install it "
                                "with `apt-get install festival festvox-us-slt-hts` (Debian/Ubuntu).")
    return path


def synthesize_festival(text: str, voice: str = FESTIVAL_VOICE, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Speak `text` with the festival voice `voice` (the name after `voice_`, e.g. "kal_diphone"): (T,) float32 in
    [-1, 1] at `sampling_rate`, silence trimmed.

    An empty text (or one festival says nothing for) gives an empty clip: a judge hears nothing in it.
    """
    if not text.strip():
        return np.zeros(0, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        # The text goes in on stdin (no shell, no quoting); the voice is chosen by a Scheme expression.
        result = subprocess.run([text2wave_path(), "-eval", f"(voice_{voice})", "-o", str(out)], input=text.encode(),
                                capture_output=True, check=False)
        stderr = result.stderr.decode(errors="replace").strip()
        if result.returncode != 0 or not out.is_file() or "error" in stderr.lower():
            raise RuntimeError(f"festival failed (exit {result.returncode}) for voice {voice!r}: {stderr or 'no audio'}"
                               " (is the voice installed? apt-get install festvox-us-slt-hts festvox-kallpc16k "
                               "festvox-kdlpc16k)")
        wave, sr = sf.read(out, dtype="float32", always_2d=True)
    wave = trim_silence(wave.mean(axis=1), sr)
    if sr != sampling_rate and wave.size:
        wave = resample(wave, sr, sampling_rate)
    return np.asarray(wave, dtype=np.float32)


__all__ = ["FESTIVAL_VOICE", "synthesize_festival", "text2wave_path"]
