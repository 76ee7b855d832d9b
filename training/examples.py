"""The question wavs that packaged checkpoints and adapters ship under `examples/` (synthetic corpus voices)."""

from __future__ import annotations

import json
from pathlib import Path

import soundfile as sf

from processing.corpus import synthesize


def write_examples(folder: Path, examples: dict[str, tuple[str, str, int, int]]) -> None:
    """Synthesise each question wav (16 kHz PCM) and a questions.json saying what each one asks, in which voice."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (question, voice, rate, pitch) in examples.items():
        sf.write(folder / f"{stem}.wav", synthesize(question, voice, rate, pitch), 16000, subtype="PCM_16")
    (folder / "questions.json").write_text(json.dumps(
        {f"{stem}.wav": {"question": q, "voice": v, "rate": r, "pitch": p} for stem, (q, v, r, p) in examples.items()},
        indent=2) + "\n")


__all__ = ["write_examples"]
