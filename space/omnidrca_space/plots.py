"""The answer's waveform and spectrogram, drawn without pyplot (its global state is not thread-safe)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def answer_figure(wave: np.ndarray, rate: int) -> Figure:
    """Waveform above a log-magnitude spectrogram (25 ms windows, 10 ms hop), both against seconds."""
    fig = Figure(figsize=(8, 4.2), layout="constrained")  # constrained: room at the top for gradio's label
    top, bottom = fig.subplots(2, 1, sharex=True)
    seconds = np.arange(len(wave)) / rate
    top.plot(seconds, wave, linewidth=0.6, color="#3b6ea8")
    top.set_ylabel("amplitude")
    peak = 1.05 * max(float(np.abs(wave).max()), 1e-3)
    top.set_ylim(-peak, peak)

    n_fft, hop = int(0.025 * rate), int(0.010 * rate)
    if len(wave) >= n_fft:
        frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop] * np.hanning(n_fft)  # (F, n_fft)
        power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2  # (F, n_fft // 2 + 1)
        db = 10 * np.log10(power.T + 1e-10)  # (freq, F)
        bottom.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                      extent=(0, len(wave) / rate, 0, rate / 2000))
    bottom.set_ylabel("kHz")
    bottom.set_xlabel("seconds")
    return fig


__all__ = ["answer_figure"]
