"""flite / festival user voices (--user-voices all) and augmented train audio (--augment-fraction).

Real flite / festival / espeak-ng audio at tiny sizes; the synthesis tests skip only when the binary is missing.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from datasets import load_from_disk

from processing import augment as A
from processing import build_corpus as cli
from processing import corpus as C
from processing import user_voices as U
from processing.schema import SAMPLING_RATE

needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")
needs_festival = pytest.mark.skipif(shutil.which("text2wave") is None, reason="festival is not installed")
needs_all = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("text2wave") is None
                               or shutil.which("espeak-ng") is None, reason="flite, festival or espeak-ng missing")
ONLY = {name: 0.0 for name in A.DEFAULT_PROBABILITIES}


def speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A voiced-looking test signal: harmonics of 150 Hz under a syllable-rate envelope, peak 0.3."""
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    rng = np.random.default_rng(seed)
    wave = sum(np.sin(2 * np.pi * 150 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 8))
    wave = wave * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    return (0.3 * wave / np.max(np.abs(wave))).astype(np.float32)


def test_zero_probability_is_identity():
    wave = speech_like()
    for seed in range(5):
        out = A.augment(wave, np.random.default_rng(seed), probabilities=ONLY)
        assert out is wave


@pytest.mark.parametrize("seed", range(8))
def test_speed_keeps_length_within_factor_bounds(seed):
    wave = speech_like()
    out, effects = A.augment_with_effects(wave, np.random.default_rng(seed), probabilities={**ONLY, "speed": 1.0})
    assert effects == ["speed"]
    low, high = A.SPEED_RANGE
    assert len(wave) / high - 1 <= len(out) <= len(wave) / low + 1
    assert len(out) != len(wave) or not np.allclose(out, wave)


@pytest.mark.parametrize("seed", range(12))
def test_default_augment_changes_signal_and_stays_valid(seed):
    wave = speech_like(seed=seed)
    out = A.augment(wave, np.random.default_rng(seed))
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    assert np.max(np.abs(out)) <= 1.0
    low, high = A.SPEED_RANGE
    assert len(wave) / high - 1 <= len(out) <= len(wave) / low + 1
    n = min(len(out), len(wave))
    assert len(out) != len(wave) or np.max(np.abs(out[:n] - wave[:n])) > 1e-3


def test_augment_is_deterministic_given_rng():
    wave = speech_like()
    a = A.augment(wave, np.random.default_rng(3))
    b = A.augment(wave, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(12))
def test_noise_snr_within_range(seed):
    wave = speech_like(seed=seed)
    out, effects = A.augment_with_effects(wave, np.random.default_rng(seed), probabilities={**ONLY, "noise": 1.0})
    assert len(effects) == 1 and effects[0].split(":")[1] in A.NOISE_COLORS
    assert len(out) == len(wave)
    # Independent of the module: fit the (possibly peak-rescaled) clean part, the residual is the added noise.
    scale = float(np.dot(out, wave) / np.dot(wave, wave))
    noise = out.astype(np.float64) - scale * wave
    snr = 10 * np.log10(np.sum((scale * wave.astype(np.float64)) ** 2) / np.sum(noise**2))
    assert A.SNR_DB_RANGE[0] - 0.5 <= snr <= A.SNR_DB_RANGE[1] + 0.5


def test_gain_and_room_change_signal_without_changing_length():
    wave = speech_like()
    for effect in ("gain", "room"):
        out, effects = A.augment_with_effects(wave, np.random.default_rng(1), probabilities={**ONLY, effect: 1.0})
        assert effects == [effect] and len(out) == len(wave)
        assert np.max(np.abs(out - wave)) > 1e-3
    rt60 = 0.5
    ir = A.room_impulse_response(rt60, SAMPLING_RATE, np.random.default_rng(0))
    energy = np.cumsum(ir[::-1] ** 2)[::-1]  # Schroeder decay: -60 dB near the end of rt60
    db = 10 * np.log10(energy / energy[0])
    assert db[int(0.25 * SAMPLING_RATE)] < -20


def check_voice(wave: np.ndarray):
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert 0.3 * SAMPLING_RATE < len(wave) < 10 * SAMPLING_RATE  # at 16 kHz: ~1-3 s for a short question
    assert np.sqrt(np.mean(wave**2)) > 0.01 and np.max(np.abs(wave)) <= 1.0
    # Trimmed like the espeak clips: no long silence at either end.
    assert np.max(np.abs(wave[: int(0.2 * SAMPLING_RATE)])) > 1e-3
    assert np.max(np.abs(wave[-int(0.2 * SAMPLING_RATE):])) > 1e-3


@needs_flite
@pytest.mark.parametrize("voice", ["flite:kal", "flite:awb"])
def test_flite_voice_synthesizes_16k_speech(voice):
    check_voice(U.synthesize_user("what is the capital of norway", voice))


@needs_festival
def test_festival_kal_voice_synthesizes_16k_speech():
    check_voice(U.synthesize_user("what is the capital of norway", "festival:kal_diphone"))


def test_default_user_voices_leave_plans_unchanged():
    plans = C.plan_split("train", 40, seed=0)
    assert U.assign_user_voices(plans, "train", 0, "espeak") == plans
    assert U.augmented_indices([p.task for p in plans], "validation", 0, 0.5) == []
    assert U.augmented_indices([p.task for p in plans], "train", 0, 0.0) == []


@needs_all
def test_assign_user_voices_keeps_held_out_voices_held_out():
    for split in C.SPLITS:
        plans = C.plan_split(split, 200, seed=1)
        voiced = U.assign_user_voices(plans, split, 1, "all")
        assert [(p.id, p.task, p.question_text) for p in voiced] == [(p.id, p.task, p.question_text) for p in plans]
        other = [p for p in voiced if ":" in p.voice]
        assert all(p.task != "t2s" for p in other) and all((p.rate, p.pitch) == (0, -1) for p in other)
        spoken = sum(p.task != "t2s" for p in plans)
        assert 0.3 * spoken < len(other) < 0.7 * spoken
        allowed = set(U.OTHER_TRAIN_VOICES if split == "train" else U.OTHER_HELD_OUT_VOICES)
        assert {p.voice for p in other} == allowed
    assert not set(U.OTHER_TRAIN_VOICES) & set(U.OTHER_HELD_OUT_VOICES)


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        U.check_options("flite")
    with pytest.raises(ValueError):
        U.check_options("espeak", 1.5)
    with pytest.raises(SystemExit):
        cli.parse_args(["--output", str(tmp_path), "--user-voices", "festival"])


@needs_all
def test_tiny_build_with_all_voices_and_augmentation(tmp_path):
    out = tmp_path / "corpus"
    argv = ["--output", str(out), "--train", "8", "--validation", "4", "--test", "4", "--seed", "0",
            "--user-voices", "all", "--augment-fraction", "0.5", "--no-progress"]
    assert cli.parse_args(argv).user_voices == "all" and cli.parse_args(argv).augment_fraction == 0.5
    assert cli.parse_args(argv[:2]).user_voices == "espeak" and cli.parse_args(argv[:2]).augment_fraction == 0.0
    cli.main(argv)
    corpus = load_from_disk(str(out))
    info = json.loads((out / "corpus_info.json").read_text())
    train_voices = set(corpus["train"]["voice"])
    assert train_voices & set(U.OTHER_TRAIN_VOICES), train_voices
    assert not train_voices & set(U.OTHER_HELD_OUT_VOICES)
    for split in ("validation", "test"):
        voices = {v for v in corpus[split]["voice"] if v}
        assert voices <= set(U.OTHER_HELD_OUT_VOICES) | set(C.HELD_OUT_VOICES), voices
    assert {v for v in corpus["test"]["voice"] if ":" in v} <= set(U.OTHER_HELD_OUT_VOICES)
    assert info["user_voices"]["mode"] == "all" and info["user_voices"]["held_out"] == list(U.OTHER_HELD_OUT_VOICES)
    assert sum(info["user_voices"]["rows"]["train"].values()) == sum(":" in v for v in corpus["train"]["voice"])
    spoken = sum(t != "t2s" for t in corpus["train"]["task"])
    assert info["augmentation"]["rows"] == {"train": round(0.5 * spoken), "validation": 0, "test": 0}
    # Every spoken user turn has 16 kHz int16 audio; the augmented ones differ from a fresh synthesis.
    for split in C.SPLITS:
        for row in corpus[split]:
            assert (len(row["question_audio"]) > 0) == (row["task"] != "t2s")
    rows = corpus["train"]
    changed = 0
    for i in U.augmented_indices(rows["task"], "train", 0, 0.5):
        row = rows[i]
        if ":" in row["voice"]:
            clean = U.synthesize_user(row["question_text"], row["voice"])
        else:
            clean = C.synthesize(row["question_text"], row["voice"], row["rate"], row["pitch"])
        audio = np.asarray(row["question_audio"], dtype=np.float32) / 32768
        changed += len(audio) != len(clean) or float(np.max(np.abs(audio - clean))) > 1e-2
    assert changed == round(0.5 * spoken)
