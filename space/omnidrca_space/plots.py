"""The answer's waveform and spectrogram, drawn without pyplot (its global state is not thread-safe)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

ENVELOPE_BINS = 800  # about one per pixel column: drawing 32 000 line vertices per answer tripled the render time


def answer_figure(wave: np.ndarray, rate: int) -> Figure:
    """Waveform envelope above a log-magnitude spectrogram (25 ms windows, 10 ms hop), both against seconds."""
    fig = Figure(figsize=(8, 4), dpi=80)
    fig.subplots_adjust(left=0.09, right=0.99, top=0.9, bottom=0.12, hspace=0.08)  # top: room for gradio's label
    top, bottom = fig.subplots(2, 1, sharex=True)
    bins = min(ENVELOPE_BINS, len(wave))
    usable = len(wave) // max(bins, 1) * bins
    if usable:
        blocks = wave[:usable].reshape(bins, -1)  # (bins, samples per bin)
        seconds = (np.arange(bins) + 0.5) * (usable / bins) / rate
        top.fill_between(seconds, blocks.min(axis=1), blocks.max(axis=1), linewidth=0, color="#3b6ea8")
    peak = 1.05 * max(float(np.abs(wave).max(initial=0.0)), 1e-3)
    top.set_ylim(-peak, peak)
    top.set_ylabel("amplitude")

    n_fft, hop = int(0.025 * rate), int(0.010 * rate)
    if len(wave) >= n_fft:
        frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop] * np.hanning(n_fft)  # (F, n_fft)
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2  # (F, n_fft // 2 + 1)
        db = 10 * np.log10(power.T + 1e-10)  # (freq, F)
        bottom.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                      extent=(0, len(wave) / rate, 0, rate / 2000))
    bottom.set_xlim(0, max(len(wave) / rate, 1e-3))
    bottom.set_ylabel("kHz")
    bottom.set_xlabel("seconds")
    return fig


__all__ = ["answer_figure"]
