"""More user voices (flite, festival) and augmented user audio for the synthetic corpus (`processing.corpus`).

`--user-voices all` (`build_corpus(user_voices="all")`): about half of the spoken user turns
(`OTHER_VOICE_SHARE`) are re-voiced by flite or festival voices (human recordings concatenated or modelled,
unlike espeak's formant voices). Train turns draw from `OTHER_TRAIN_VOICES`, validation and test turns only from
`OTHER_HELD_OUT_VOICES`, so held-out voices stay unseen. Which turns, and which voice, come from their own
generator: the espeak rows' texts, order and draws are exactly those of `--user-voices espeak` (the default).
A re-voiced row's `voice` field is "flite:<voice>" or "festival:<voice>", its rate 0 and pitch -1 (no such knob).

`--augment-fraction F` (`augment_fraction=F`): `round(F * n)` of the train split's n spoken user turns are passed
through `processing.augment.augment` (speed, gain, noise, room), chosen and drawn from the seed; validation and
test are never augmented. Counted as `augmentation` in `corpus_info.json`.

    apt-get install flite festival festvox-kallpc16k festvox-kdlpc16k
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from modeling_omnidrca.audio_utils import resample
from processing.augment import augment
from processing.schema import SAMPLING_RATE, to_int16
from processing.synthesis import festival_version, trim_silence

if TYPE_CHECKING:
    from datasets import DatasetDict

    from processing.corpus import RowPlan

USER_VOICE_MODES = ("espeak", "all")
DEFAULT_USER_VOICES = "espeak"
OTHER_VOICE_SHARE = 0.5  # share of spoken user turns re-voiced by flite / festival with --user-voices all
# flite's built-in CMU voices (kal: 8 kHz diphone; kal16: 16 kHz diphone; slt, awb, rms: clustergen) and
# festival's diphone voices (kal_diphone: festvox-kallpc16k; ked_diphone: festvox-kdlpc16k).
OTHER_TRAIN_VOICES = ("flite:kal", "flite:kal16", "flite:slt", "festival:kal_diphone")
OTHER_HELD_OUT_VOICES = ("flite:awb", "flite:rms", "festival:ked_diphone")
FLITE_EXECUTABLE = "flite"


def flite_path() -> str:
    """Absolute path of flite, or a FileNotFoundError that says how to install it."""
    path = shutil.which(FLITE_EXECUTABLE)
    if path is None:
        raise FileNotFoundError("`flite` was not found on PATH; `--user-voices all` needs it. Install it with "
                                "`apt-get install flite` (Debian/Ubuntu).")
    return path


def flite_version() -> str:
    """flite's version line ("" when it is not installed)."""
    path = shutil.which(FLITE_EXECUTABLE)
    if path is None:
        return ""
    result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    lines = [line.strip() for line in (result.stdout or result.stderr).splitlines() if line.strip()]
    return next((line for line in lines if "version" in line), " ".join(lines))


def synthesize_flite(text: str, voice: str, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Speak `text` with a flite voice (kal, kal16, awb, rms, slt): (T,) float32 at `sampling_rate`, trimmed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        # List argv, no shell: the text is the one argument of -t whatever it starts with.
        result = subprocess.run([flite_path(), "-voice", voice, "-t", text, "-o", str(out)], capture_output=True,
                                check=False)
        if result.returncode != 0 or not out.is_file():
            stderr = result.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"flite failed (exit {result.returncode}) for voice {voice!r}: {stderr or 'no audio'}")
        wave, sr = sf.read(out, dtype="float32", always_2d=True)
    wave = trim_silence(wave.mean(axis=1), sr)
    if sr != sampling_rate and wave.size:
        wave = resample(wave, sr, sampling_rate)
    return np.asarray(wave, dtype=np.float32)


def synthesize_user(text: str, voice: str, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Speak `text` with an "engine:voice" user voice ("flite:kal", "festival:kal_diphone"), float32 16 kHz."""
    engine, _, name = voice.partition(":")
    if engine == "flite":
        wave = synthesize_flite(text, name, sampling_rate)
    elif engine == "festival":
        from processing.voices import synthesize_festival

        wave = synthesize_festival(text, name, sampling_rate)
    else:
        raise ValueError(f"Unknown user voice {voice!r}: expected 'flite:<voice>' or 'festival:<voice>'.")
    if wave.size == 0:
        raise RuntimeError(f"{engine} produced only silence for {text!r} (voice {voice!r}).")
    return wave


def check_options(user_voices: str = DEFAULT_USER_VOICES, augment_fraction: float = 0.0) -> None:
    """Fail before any work: unknown mode, a fraction outside 0..1, or a missing flite / festival."""
    if user_voices not in USER_VOICE_MODES:
        raise ValueError(f"user_voices must be one of {USER_VOICE_MODES}, got {user_voices!r}.")
    if not 0.0 <= augment_fraction <= 1.0:
        raise ValueError(f"augment_fraction must be within 0..1, got {augment_fraction!r}.")
    if user_voices == "all":
        from processing.voices import text2wave_path

        flite_path()
        text2wave_path()


def other_voice_pool(split: str) -> tuple[str, ...]:
    """The flite / festival voices a split's re-voiced user turns draw from: train ones for train, else held-out."""
    return OTHER_TRAIN_VOICES if split == "train" else OTHER_HELD_OUT_VOICES


def assign_user_voices(plans: Sequence[RowPlan], split: str, seed: int = 0,
                       user_voices: str = DEFAULT_USER_VOICES) -> list[RowPlan]:
    """`plans` with about `OTHER_VOICE_SHARE` of the spoken user turns re-voiced (`user_voices="all"`); unchanged
    for "espeak". Own generator, one draw per plan whatever its task, so the choice never shifts other rows."""
    if user_voices == DEFAULT_USER_VOICES:
        return list(plans)
    check_options(user_voices)
    rng = random.Random(f"omnidrca-corpus/{seed}/{split}/user-voices")
    pool = other_voice_pool(split)
    out = []
    for plan in plans:
        revoice, voice = rng.random() < OTHER_VOICE_SHARE, rng.choice(pool)
        out.append(replace(plan, voice=voice, rate=0, pitch=-1) if revoice and plan.spoken_question else plan)
    return out


def augmented_indices(tasks: Sequence[str], split: str, seed: int = 0, fraction: float = 0.0) -> list[int]:
    """Indices of the rows whose user audio is augmented: `round(fraction * n)` of the n spoken (non-t2s) rows of
    the train split, chosen from the seed; none for validation / test or `fraction == 0`."""
    if split != "train" or fraction <= 0:
        return []
    spoken = [i for i, task in enumerate(tasks) if task != "t2s"]
    rng = random.Random(f"omnidrca-corpus/{seed}/{split}/augment")
    return sorted(rng.sample(spoken, round(fraction * len(spoken))))


def augment_rows(rows: list[dict], split: str, seed: int = 0, fraction: float = 0.0) -> list[dict]:
    """Rows with the user audio of `augmented_indices` passed through `augment` (in place; returns `rows`)."""
    for i in augmented_indices([r["task"] for r in rows], split, seed, fraction):
        rng = np.random.default_rng([seed, i, 0xA06])  # per row: independent of which other rows are augmented
        wave = rows[i]["question_audio"].astype(np.float32) / 32768.0
        rows[i]["question_audio"] = to_int16(augment(wave, rng, SAMPLING_RATE))
    return rows


def extras_info(corpus: DatasetDict, seed: int, user_voices: str, augment_fraction: float) -> dict:
    """`corpus_info.json` entries of the non-default options (nothing for the defaults, keeping it as before)."""
    info: dict = {}
    if user_voices != DEFAULT_USER_VOICES:
        info["user_voices"] = {
            "mode": user_voices, "share": OTHER_VOICE_SHARE, "train": list(OTHER_TRAIN_VOICES),
            "held_out": list(OTHER_HELD_OUT_VOICES), "flite_version": flite_version(),
            "festival_version": festival_version(),
            "rows": {name: dict(sorted(Counter(v for v in ds["voice"] if ":" in v).items()))
                     for name, ds in corpus.items()},
        }  # fmt: skip
    if augment_fraction > 0:
        rows = {name: len(augmented_indices(ds["task"], name, seed, augment_fraction)) for name, ds in corpus.items()}
        info["augmentation"] = {"fraction": augment_fraction, "split": "train", "rows": rows}
    return info


__all__ = ["DEFAULT_USER_VOICES", "OTHER_HELD_OUT_VOICES", "OTHER_TRAIN_VOICES", "OTHER_VOICE_SHARE",
           "USER_VOICE_MODES", "assign_user_voices", "augment_rows", "augmented_indices", "check_options",
           "extras_info", "flite_path", "flite_version", "other_voice_pool", "synthesize_flite", "synthesize_user"]
