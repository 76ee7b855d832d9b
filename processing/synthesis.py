"""Speech synthesis for the corpora: espeak-ng for the user voices (flite / festival ones: `processing.user_voices`),
and the assistant's voice (espeak-ng's plain en-us by default, or festival's HTS voice), with the parallel synthesis
of a corpus's distinct clips.

`processing.corpus` plans what is said by whom; this module says it.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from modeling_omnidrca.audio_utils import resample
from processing.schema import SAMPLING_RATE, to_int16

if TYPE_CHECKING:
    from processing.corpus import RowPlan

ESPEAK_EXECUTABLE = "espeak-ng"

# The assistant's own voice: every speech answer, in every split; no user speaks with it. Plain en-us at
# 150 wpm is the espeak voice the Whisper judge transcribes best (14 % WER on 30 answers, against 17-33 %
# for en-us+m1/m2/m3/m5/m8/f2/f3/f4, en-gb and faster rates), so the ASR-WER floor of speech answers is lowest.
ASSISTANT_VOICE, ASSISTANT_RATE, ASSISTANT_PITCH = "en-us", 150, 50


@dataclass(frozen=True)
class AssistantVoice:
    """A voice the assistant's spoken answers (s2s, t2s, repeat targets) can be made with (`--assistant-voice`)."""

    name: str
    engine: str  # "espeak-ng" or "festival"
    voice: str
    rate: int  # espeak words per minute; 0 where the engine has no such knob
    pitch: int  # espeak pitch; -1 where the engine has no such knob

    @property
    def job_voice(self) -> str:
        """The voice field of this voice's synthesis jobs: espeak's own name (as before), "festival:<voice>" else."""
        return self.voice if self.engine == "espeak-ng" else f"{self.engine}:{self.voice}"


# "espeak" is the default (the voice above); "festival-slt" is festival's CMU US SLT HTS voice (`processing.voices`,
# `apt-get install festival festvox-us-slt-hts`), a natural female voice that Whisper hears far better (38/40 demo
# answers against 24/40, shared/ASSETS.md). User turns are always spoken by espeak's pools, never by this voice.
ASSISTANT_VOICES = {
    "espeak": AssistantVoice("espeak", "espeak-ng", ASSISTANT_VOICE, ASSISTANT_RATE, ASSISTANT_PITCH),
    "festival-slt": AssistantVoice("festival-slt", "festival", "cmu_us_slt_arctic_hts", 0, -1),
}
DEFAULT_ASSISTANT_VOICE = "espeak"


def assistant_voice(name: str | AssistantVoice = DEFAULT_ASSISTANT_VOICE) -> AssistantVoice:
    """The `AssistantVoice` called `name` (one of `ASSISTANT_VOICES`)."""
    if isinstance(name, AssistantVoice):
        return name
    if name not in ASSISTANT_VOICES:
        raise ValueError(f"Unknown assistant voice {name!r}: expected one of {sorted(ASSISTANT_VOICES)}.")
    return ASSISTANT_VOICES[name]


def espeak_path() -> str:
    """Absolute path of espeak-ng, or a FileNotFoundError that says how to install it."""
    path = shutil.which(ESPEAK_EXECUTABLE)
    if path is None:
        raise FileNotFoundError(
            f"`{ESPEAK_EXECUTABLE}` was not found on PATH; the synthetic corpus needs it. Install it with "
            "`apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)."
        )
    return path


def trim_silence(wave: np.ndarray, sampling_rate: int, threshold: float = 1e-3, pad_s: float = 0.05) -> np.ndarray:
    """Cut leading/trailing silence, keeping `pad_s` seconds each side so word onsets and decays survive.

    espeak-ng pads clips with exact zeros (~0.3 s at the end), which would teach the model that speech
    ends in long silences; a small absolute threshold removes only that padding.
    """
    voiced = np.flatnonzero(np.abs(wave) > threshold)
    if voiced.size == 0:
        return wave[:0]
    pad = int(pad_s * sampling_rate)
    return wave[max(0, voiced[0] - pad) : voiced[-1] + 1 + pad]


def synthesize(text: str, voice: str, rate: int, pitch: int, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Speak `text` with espeak-ng: (T,) float32 in [-1, 1] at `sampling_rate`, silence trimmed."""
    # List argv, no shell: the text is one argument whatever it contains; "--" ends the options so a
    # text starting with "-" is spoken, not parsed as a flag.
    cmd = [espeak_path(), "--stdout", "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)), "--", text]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        stderr = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"espeak-ng failed (exit {result.returncode}) for voice {voice!r}: {stderr or 'no audio'}")
    # espeak's streamed WAV header has placeholder sizes; libsndfile reads up to the real end of data.
    wave, sr = sf.read(io.BytesIO(result.stdout), dtype="float32")
    wave = trim_silence(wave, sr)
    if wave.size == 0:
        raise RuntimeError(f"espeak-ng produced only silence for {text!r} (voice {voice!r}).")
    if sr != sampling_rate:
        wave = resample(wave, sr, sampling_rate)
    return wave.astype(np.float32, copy=False)


# (text, voice, rate, pitch): the whole input of one synthesis, hashable so repeats are spoken once.
SynthesisJob = tuple[str, str, int, int]


def answer_job(plan: RowPlan, assistant: str | AssistantVoice = DEFAULT_ASSISTANT_VOICE) -> SynthesisJob:
    """The synthesis job of a plan's spoken answer in the assistant voice."""
    voice = assistant_voice(assistant)
    return (plan.answer_text, voice.job_voice, voice.rate, voice.pitch)


def synthesis_jobs(plans: Sequence[RowPlan], assistant: str | AssistantVoice = DEFAULT_ASSISTANT_VOICE
                   ) -> list[SynthesisJob]:
    """Distinct clips the plans need, in first-use order (answers repeat a lot in the assistant voice)."""
    jobs: dict[SynthesisJob, None] = {}
    for p in plans:
        if p.spoken_question:
            jobs[(p.question_text, p.voice, p.rate, p.pitch)] = None
        if p.spoken_answer:
            jobs[answer_job(p, assistant)] = None
    return list(jobs)


def _synthesize_job(job: SynthesisJob) -> np.ndarray:
    text, voice, rate, pitch = job
    if voice.startswith(("festival:", "flite:")):  # the festival assistant voice, flite / festival user voices
        from processing.user_voices import synthesize_user  # imports this module: import it only when needed

        return to_int16(synthesize_user(text, voice))
    return to_int16(synthesize(*job))


def synthesize_all(jobs: Sequence[SynthesisJob], num_workers: int = 1, progress: bool = True,
                   desc: str = "espeak") -> dict[SynthesisJob, np.ndarray]:
    """job -> int16 clip, synthesised by `num_workers` parallel espeak-ng processes.

    The workers are threads: ~90% of a clip's time is the espeak-ng child process (the GIL is released
    while waiting on it; trim + resample is ~2 ms), so threads use every core like a process pool would,
    without spawn re-importing torch per worker or fork inheriting torch's OpenMP threads. `map` yields in
    job order, so results never depend on `num_workers`.
    """
    bar = tqdm(total=len(jobs), desc=desc, unit="clip", disable=not progress)
    clips = []
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        for clip in pool.map(_synthesize_job, jobs):
            clips.append(clip)
            bar.update()
    bar.close()
    return dict(zip(jobs, clips))


def espeak_version() -> str:
    """espeak-ng's version line (recorded so a corpus says what made it)."""
    out = subprocess.run([espeak_path(), "--version"], capture_output=True, text=True, check=False).stdout
    return out.strip()


def festival_version() -> str:
    """festival's version line, when it is installed ("" otherwise)."""
    path = shutil.which("festival")
    if path is None:
        return ""
    result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip()


__all__ = ["ASSISTANT_PITCH", "ASSISTANT_RATE", "ASSISTANT_VOICE", "ASSISTANT_VOICES", "DEFAULT_ASSISTANT_VOICE",
           "ESPEAK_EXECUTABLE", "AssistantVoice", "SynthesisJob", "assistant_voice", "espeak_path", "espeak_version",
           "festival_version", "answer_job", "synthesis_jobs", "synthesize", "synthesize_all",
           "trim_silence"]
