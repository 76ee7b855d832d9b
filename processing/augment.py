"""Random augmentation of user speech: speed, gain, additive coloured noise and a synthetic room.

`augment(wave, rng)` applies each effect with its own probability, in this order:

    speed   resampling by a factor 0.9-1.1 (tempo and pitch together; the length changes by 1/factor)
    room    an exponentially decaying noise impulse response, RT60 0.2-0.8 s, mixed wet/dry (length kept)
    gain    -6..+6 dB
    noise   white, pink (1/f) or brown (1/f^2) noise at an SNR of 10-30 dB against the speech

then scales the whole clip down if its peak would pass 0.99 (scaling keeps the SNR). Used by
`processing.build_corpus --augment-fraction F` on the train split's user audio (`processing.user_voices`).
"""

from __future__ import annotations

import numpy as np

SPEED_RANGE = (0.9, 1.1)
GAIN_DB_RANGE = (-6.0, 6.0)
SNR_DB_RANGE = (10.0, 30.0)
RT60_RANGE = (0.2, 0.8)
WET_RANGE = (0.2, 0.6)
NOISE_COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f**exponent
DEFAULT_PROBABILITIES = {"speed": 0.5, "room": 0.3, "gain": 0.5, "noise": 0.5}
PEAK = 0.99


def change_speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """Play `wave` `factor` times faster (higher pitch too): linear-interpolated to round(len / factor) samples."""
    n_out = max(1, int(round(len(wave) / factor)))
    positions = np.arange(n_out, dtype=np.float64) * factor
    return np.interp(positions, np.arange(len(wave)), wave).astype(np.float32)


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of unit-RMS noise whose power spectrum falls as 1 / f**NOISE_COLORS[color] (no DC)."""
    exponent = NOISE_COLORS[color]
    white = rng.standard_normal(n)
    if exponent:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n)
        freqs[0] = np.inf  # no DC: brown noise would otherwise drift
        white = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    white -= white.mean()
    rms = np.sqrt(np.mean(white**2))
    return (white / rms if rms > 0 else white).astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    """`wave` plus `color` noise at `snr_db` dB below its power (unchanged when `wave` is silent)."""
    power = float(np.mean(np.square(wave, dtype=np.float64)))
    if power == 0.0:
        return wave
    noise = colored_noise(len(wave), color, rng) * np.sqrt(power / 10 ** (snr_db / 10))
    return (wave + noise).astype(np.float32)


def room_impulse_response(rt60: float, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: Gaussian noise decaying by 60 dB over `rt60` seconds, direct path first, unit energy."""
    t = np.arange(max(1, int(rt60 * sampling_rate))) / sampling_rate
    ir = rng.standard_normal(len(t)) * np.exp(-3 * np.log(10) * t / rt60)
    ir[0] = abs(ir[0]) + 1.0
    return (ir / np.sqrt(np.sum(ir**2))).astype(np.float32)


def add_room(wave: np.ndarray, rt60: float, wet: float, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """`wave` through `room_impulse_response`, the reverberant part at the dry RMS, mixed `wet` to `1 - wet`."""
    ir = room_impulse_response(rt60, sampling_rate, rng)
    n = len(wave) + len(ir) - 1
    size = 1 << (n - 1).bit_length()
    reverberant = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(ir, size), size)[: len(wave)]
    dry_rms, wet_rms = np.sqrt(np.mean(wave.astype(np.float64) ** 2)), np.sqrt(np.mean(reverberant**2))
    if wet_rms > 0:
        reverberant *= dry_rms / wet_rms
    return ((1 - wet) * wave + wet * reverberant).astype(np.float32)


def augment_with_effects(wave: np.ndarray, rng: np.random.Generator, sampling_rate: int = 16000,
                         probabilities: dict[str, float] | None = None,
                         ensure_one: bool = True) -> tuple[np.ndarray, list[str]]:
    """`augment`, also returning the effects applied ("speed", "room", "gain", "noise:<color>")."""
    probs = {**DEFAULT_PROBABILITIES, **(probabilities or {})}
    unknown = sorted(set(probs) - set(DEFAULT_PROBABILITIES))
    if unknown:
        raise ValueError(f"Unknown augmentation effects {unknown}: expected {sorted(DEFAULT_PROBABILITIES)}.")
    chosen = [name for name in DEFAULT_PROBABILITIES if rng.random() < probs[name]]
    possible = [name for name in DEFAULT_PROBABILITIES if probs[name] > 0]
    if not chosen and ensure_one and possible:  # an augmented clip always differs from its source
        chosen = [possible[rng.integers(len(possible))]]
    wave = np.asarray(wave)
    if not chosen or wave.size == 0:
        return wave, []
    out = np.nan_to_num(wave.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    applied = []
    if "speed" in chosen:
        out = change_speed(out, rng.uniform(*SPEED_RANGE))
        applied.append("speed")
    if "room" in chosen:
        out = add_room(out, rng.uniform(*RT60_RANGE), rng.uniform(*WET_RANGE), sampling_rate, rng)
        applied.append("room")
    if "gain" in chosen:
        out = out * np.float32(10 ** (rng.uniform(*GAIN_DB_RANGE) / 20))
        applied.append("gain")
    if "noise" in chosen:
        color = sorted(NOISE_COLORS)[rng.integers(len(NOISE_COLORS))]
        out = add_noise(out, rng.uniform(*SNR_DB_RANGE), color, rng)
        applied.append(f"noise:{color}")
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > PEAK:
        out = out * np.float32(PEAK / peak)
    return np.clip(out, -1.0, 1.0).astype(np.float32), applied


def augment(wave: np.ndarray, rng: np.random.Generator, sampling_rate: int = 16000,
            probabilities: dict[str, float] | None = None, ensure_one: bool = True) -> np.ndarray:
    """Randomly augmented `wave` (float32 in [-1, 1], no NaN): each effect of the module docstring with its
    probability (`DEFAULT_PROBABILITIES`, overridden by `probabilities`); with `ensure_one`, one effect is forced
    when none was drawn. All probabilities 0: `wave` itself, unchanged."""
    return augment_with_effects(wave, rng, sampling_rate, probabilities, ensure_one)[0]


__all__ = ["DEFAULT_PROBABILITIES", "GAIN_DB_RANGE", "NOISE_COLORS", "RT60_RANGE", "SNR_DB_RANGE", "SPEED_RANGE",
           "add_noise", "add_room", "augment", "augment_with_effects", "change_speed", "colored_noise",
           "room_impulse_response"]
