"""Importers for real speech corpora: audio + transcripts -> ASR rows in the project's format (`schema.FEATURES`).

Two sources, one output:
- `import_folder`: a folder of *.wav / *.flac files with transcripts, either in the LibriSpeech layout
  (`speaker/chapter/speaker-chapter.trans.txt`, lines `UTTID TEXT`, next to `UTTID.flac`) or flat
  (`name.wav` with `name.txt` or `name.lab` beside it). Both may be mixed in one folder.
- `import_hf_dataset`: any `datasets.Dataset` with an audio column and a text column.

Every row is an ASR example: the clip (16 kHz mono int16) is the user turn, its transcript the answer.

Bad input never stops an import. A file (or row) whose audio is unreadable, empty, non-finite, too short or
too long, or that has no transcript, is skipped with a `CorpusWarning` naming it and the reason, and listed
in `ImportResult.skipped`. `require_nonempty` is the gate training calls so that it never starts on an
empty dataset; `split_dataset` holds out whole speakers for validation/test.

Memory: the imported audio is held in memory until saved (16 kHz int16 is ~115 MB per hour of speech, about
twice that at the peak while the Arrow table is built). That suits corpora up to a few tens of hours
(LibriSpeech dev/test; train-clean-100 on a large machine); import bigger ones a folder at a time and
`datasets.concatenate_datasets` the saved parts.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Audio, Dataset, DatasetDict

from modeling_omnidrca.audio_utils import resample

from .schema import SAMPLING_RATE, SYSTEM_PROMPTS, rows_to_dataset, to_int16

AUDIO_SUFFIXES = (".wav", ".flac")
TRANSCRIPT_SUFFIXES = (".txt", ".lab")  # a sidecar transcript next to its clip (.lab: the MFA/HTK convention)
LIBRISPEECH_TRANSCRIPTS = "*.trans.txt"
# One 25 ms STFT window at 16 kHz: OmniDRCAFeatureExtractor rejects anything shorter, so such a clip would
# only fail later, in the middle of training.
MIN_SAMPLES = 400


class CorpusWarning(UserWarning):
    """A corpus file (or dataset row) was skipped, or the corpus looks incomplete."""


class SkippedClip(Exception):
    """One clip cannot be used. `str(e)` is the reason, "kind: detail"; the kind is what summaries count."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass
class ImportResult:
    """What an import produced: the rows, and what was skipped and why."""

    dataset: Dataset  # rows in `schema.FEATURES` format, in input order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file path or row name, reason)
    num_found: int = 0  # audio files found (folder) or rows read (dataset), usable or not
    where: str = ""  # what was imported, for messages
    unit: str = "files"  # "files" or "rows"

    @property
    def num_imported(self) -> int:
        return len(self.dataset)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def skip_counts(self) -> dict[str, int]:
        """{reason kind: count}, most common first."""
        return dict(Counter(reason.partition(":")[0] for _, reason in self.skipped).most_common())

    def summary(self) -> str:
        counts = ", ".join(f"{kind}: {n}" for kind, n in self.skip_counts().items())
        skipped = f"; skipped {self.num_skipped} ({counts})" if self.skipped else ""
        return f"imported {self.num_imported} of {self.num_found} {self.unit} from {self.where}{skipped}"


# ------------------------------------------------------------------ transcripts


def normalize_transcript(text: str) -> str:
    """One line with single spaces; an ALL-CAPS transcript (LibriSpeech's style) is lower-cased.

    Cased transcripts are kept as they are: the text head is a cased language model, and casing and
    punctuation are information. All-caps text is unlike anything it was trained on, so that is lowered.
    """
    text = " ".join(text.split())
    return text.lower() if text.isupper() else text


def read_librispeech_transcripts(path: str | os.PathLike) -> dict[str, str]:
    """{utterance id: raw text} from one LibriSpeech `*.trans.txt` (lines `UTTID TEXT`)."""
    transcripts = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            uttid, _, text = line.strip().partition(" ")
            transcripts[uttid] = text  # a line with no text gives "", skipped later as "empty transcript"
    return transcripts


def _transcript_and_speaker(audio: Path, root: Path, librispeech: dict[Path, str]) -> tuple[str, str]:
    """(normalised transcript, speaker id) of one audio file, or SkippedClip.

    A sidecar `name.txt`/`name.lab` wins over a LibriSpeech line. Speaker: LibriSpeech's utterance-id prefix
    (`84-121123-0000` -> `84`); for sidecars the first folder under the root (`spk1/a.wav` -> `spk1`), or
    "" (unknown) for files directly in it.
    """
    sidecars = [audio.with_suffix(s) for s in TRANSCRIPT_SUFFIXES if audio.with_suffix(s).is_file()]
    if sidecars:
        try:
            text = sidecars[0].read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SkippedClip("unreadable transcript", f"{sidecars[0].name}: {type(e).__name__}: {e}") from e
        rel = audio.relative_to(root)
        speaker = rel.parts[0] if len(rel.parts) > 1 else ""
    elif audio.with_suffix("") in librispeech:
        text, speaker = librispeech[audio.with_suffix("")], audio.stem.split("-")[0]
    else:
        raise SkippedClip(
            "no transcript",
            f"expected {audio.stem}.txt or {audio.stem}.lab next to it, or a line '{audio.stem} TEXT' in a "
            f"{LIBRISPEECH_TRANSCRIPTS} file in its folder",
        )
    text = normalize_transcript(text)
    if not text:
        raise SkippedClip("empty transcript", "the transcript has no words")
    return text, speaker


# ------------------------------------------------------------------ audio


def read_audio(source: str | os.PathLike | bytes) -> tuple[np.ndarray, int]:
    """An audio file (path or its bytes) -> ((T,) float32 mono, its sampling rate), or SkippedClip."""
    try:
        data, sr = _read_soundfile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Exception as e:  # libsndfile reports each failure (bad header, truncated, not audio) its own way
        raise SkippedClip("broken audio", f"{type(e).__name__}: {e}") from e
    return data.mean(axis=1), sr  # (T, C) -> (T,): average the channels


def _read_soundfile(file) -> tuple[np.ndarray, int]:
    import soundfile  # a core dependency; imported here so that `import processing` stays light

    return soundfile.read(file, dtype="float32", always_2d=True)


def prepare_clip(wave: np.ndarray, sampling_rate: int, max_seconds: float = 30.0) -> np.ndarray:
    """Decoded samples at `sampling_rate` -> 16 kHz mono int16 for `question_audio`, or SkippedClip.

    `wave`: (T,) or multi-channel (T, C)/(C, T) (channels = the short axis), float in [-1, 1] or signed
    integer PCM. Clips over `max_seconds` are skipped, not cut: the cut-off words would still be in the
    transcript.
    """
    wave = np.asarray(wave)
    if wave.dtype.kind == "i":  # PCM: full scale is 2 ** (bits - 1)
        wave = wave.astype(np.float32) / 2.0 ** (8 * wave.dtype.itemsize - 1)
    elif wave.dtype.kind != "f":
        raise SkippedClip("bad samples", f"dtype {wave.dtype}; expected float in [-1, 1] or signed int PCM")
    if wave.size == 0:
        raise SkippedClip("empty audio", "0 samples")
    if wave.ndim == 2:
        wave = wave.mean(axis=int(np.argmin(wave.shape)))
    if wave.ndim != 1:
        raise SkippedClip("bad samples", f"shape {wave.shape}; expected (T,) or (T, channels)")
    if not np.isfinite(wave).all():
        raise SkippedClip("non-finite audio", f"{int((~np.isfinite(wave)).sum())} NaN/inf samples")
    if not (isinstance(sampling_rate, (int, np.integer)) and sampling_rate > 0):
        raise SkippedClip("bad sampling rate", f"{sampling_rate!r}; expected a positive integer in Hz")
    seconds = wave.shape[0] / sampling_rate
    if seconds > max_seconds:
        raise SkippedClip("too long", f"{seconds:.2f} s > max_seconds={max_seconds:g}; split it at pauses")
    # `resample` wraps the array in a torch tensor: it must be writable (a `datasets` numpy row can be a
    # read-only view of Arrow memory) and contiguous. np.require copies only when it has to.
    wave = np.require(wave, dtype=np.float32, requirements=["C", "W"])
    if sampling_rate != SAMPLING_RATE:
        wave = resample(wave, int(sampling_rate), SAMPLING_RATE)
    if wave.shape[0] < MIN_SAMPLES:
        raise SkippedClip("too short", f"{1000 * seconds:.1f} ms < {1000 * MIN_SAMPLES / SAMPLING_RATE:g} ms")
    return to_int16(wave)


# ------------------------------------------------------------------ rows and datasets


def asr_row(row_id: str, transcript: str, clip: np.ndarray, voice: str, source: str) -> dict:
    """One ASR example in `schema.FEATURES` format: the clip is the question, its transcript the answer."""
    return {
        "id": row_id,
        "task": "asr",
        "system_prompt": SYSTEM_PROMPTS["asr"],
        "question_text": transcript,
        "question_audio": clip,
        "answer_text": transcript,
        "answer_audio": np.zeros(0, dtype=np.int16),
        "voice": voice,
        "rate": 0,
        "pitch": -1,
        "template": "",
        "source": source,
    }


def _skip(skipped: list[tuple[str, str]], name: str, reason: str) -> None:
    skipped.append((name, reason))
    warnings.warn(f"skipping {name}: {reason}", CorpusWarning, stacklevel=3)


def _finish(rows: list[dict], skipped: list[tuple[str, str]], found: int, where: str, unit: str) -> ImportResult:
    result = ImportResult(rows_to_dataset(rows), skipped, found, where, unit)
    if skipped:
        warnings.warn(result.summary(), CorpusWarning, stacklevel=3)
    return result


# ------------------------------------------------------------------ importers


def import_folder(folder: str | os.PathLike, source: str | None = None, max_seconds: float = 30.0) -> ImportResult:
    """Import a folder of *.wav/*.flac files with transcripts (LibriSpeech layout or sidecar .txt/.lab).

    Files are read in sorted path order, so the same folder always gives the same dataset. Row ids are
    the relative path without its suffix (`84/121123/84-121123-0000`); `source` defaults to the folder's name.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Corpus folder not found: '{root}'. Expected a folder of {'/'.join(AUDIO_SUFFIXES)} files with "
            "transcripts (LibriSpeech layout, or name.txt next to name.wav), e.g. LibriSpeech/dev-clean."
        )
    source = source or root.resolve().name
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    librispeech = {  # {folder/uttid: text} over every *.trans.txt under the root
        path.parent / uttid: text
        for path in sorted(root.rglob(LIBRISPEECH_TRANSCRIPTS))
        for uttid, text in read_librispeech_transcripts(path).items()
    }

    rows, skipped, ids = [], [], {}
    for path in files:
        row_id = path.relative_to(root).with_suffix("").as_posix()
        try:
            if row_id in ids:  # a.wav and a.flac: importing both would count one utterance twice
                raise SkippedClip("duplicate", f"same name as {ids[row_id]}; keep one of them")
            text, speaker = _transcript_and_speaker(path, root, librispeech)
            clip = prepare_clip(*read_audio(path), max_seconds=max_seconds)
        except SkippedClip as e:
            _skip(skipped, str(path), str(e))
            continue
        ids[row_id] = path.name
        rows.append(asr_row(row_id, text, clip, speaker, source))

    # Transcript lines without audio: not rows we could skip, but the sign of an incomplete download.
    orphans = sorted(set(librispeech) - {p.with_suffix("") for p in files})
    if orphans:
        warnings.warn(
            f"{len(orphans)} transcript line(s) in {LIBRISPEECH_TRANSCRIPTS} files under {root} have no audio file "
            f"(first: '{orphans[0].name}' in {orphans[0].parent}); the corpus may be incompletely extracted.",
            CorpusWarning,
            stacklevel=2,
        )
    return _finish(rows, skipped, len(files), str(root), "files")


def _audio_kind(dataset: Dataset, column: str, sampling_rate: int | None) -> str:
    """How `column` holds audio: "file" (Audio feature or {bytes, path}), "dict" ({array, sampling_rate})
    or "array" (plain samples at `sampling_rate`). Raises on a column this importer cannot read."""
    feature = dataset.features[column]
    if isinstance(feature, Audio) or (isinstance(feature, dict) and {"bytes", "path"} <= set(feature)):
        return "file"
    if isinstance(feature, dict) and "array" in feature and ("sampling_rate" in feature or sampling_rate):
        return "dict"
    if not isinstance(feature, dict) and sampling_rate:
        return "array"
    raise ValueError(
        f"Column '{column}' is {feature}; expected an `Audio` feature, a struct {{'array', 'sampling_rate'}}, or "
        "plain sample arrays together with `sampling_rate=` (their rate in Hz)."
    )


def _decode(value, kind: str, sampling_rate: int | None) -> tuple[np.ndarray, int]:
    """One audio cell -> (samples, their rate), or SkippedClip."""
    if value is None:
        raise SkippedClip("no audio", "the audio cell is empty (None)")
    if kind == "array":
        return value, sampling_rate
    if kind == "dict":
        rate = value.get("sampling_rate")  # a 0-d array in numpy format; None when the row lacks it
        return value["array"], sampling_rate if rate is None else np.asarray(rate).item()
    if value.get("bytes") is not None:
        return read_audio(bytes(value["bytes"]))
    if value.get("path"):
        return read_audio(value["path"])
    raise SkippedClip("no audio", "the audio cell has neither bytes nor a path")


def import_hf_dataset(
    dataset: Dataset,
    audio_column: str = "audio",
    text_column: str = "text",
    speaker_column: str | None = None,
    id_column: str | None = None,
    source: str = "hf",
    sampling_rate: int | None = None,
    max_seconds: float = 30.0,
) -> ImportResult:
    """Import any `datasets.Dataset` with an audio column and a transcript column, in row order.

    The audio column may be an `Audio` feature, a struct {"array", "sampling_rate"} (what `Audio` decodes
    to), or plain sample arrays, whose rate is then `sampling_rate`. An `Audio` column is read with
    `decode=False` and decoded here with soundfile: `datasets` >= 4 decodes audio with torchcodec, which this
    project does not depend on. Row ids are `id_column` or `{source}-{index}`; voice is `speaker_column` or "".
    """
    missing = [c for c in (audio_column, text_column, speaker_column, id_column) if c and c not in dataset.features]
    if missing:
        raise ValueError(
            f"The dataset has no column(s) {missing}; its columns are {list(dataset.features)}. Pass the right "
            "names with audio_column=, text_column=, speaker_column=, id_column=."
        )
    kind = _audio_kind(dataset, audio_column, sampling_rate)
    if isinstance(dataset.features[audio_column], Audio):
        dataset = dataset.cast_column(audio_column, Audio(decode=False))
    texts = list(dataset[text_column])
    speakers = list(dataset[speaker_column]) if speaker_column else [""] * len(dataset)
    ids = [str(i) for i in dataset[id_column]] if id_column else [f"{source}-{i}" for i in range(len(dataset))]
    audio = dataset.select_columns([audio_column]).with_format("numpy")  # arrays come out as ndarrays

    rows, skipped = [], []
    for i, cell in enumerate(audio):
        name = f"{source} row {i} (id {ids[i]})"
        try:
            text = normalize_transcript("" if texts[i] is None else str(texts[i]))
            if not text:
                raise SkippedClip("empty transcript", f"column '{text_column}' has no words")
            clip = prepare_clip(*_decode(cell[audio_column], kind, sampling_rate), max_seconds=max_seconds)
        except SkippedClip as e:
            _skip(skipped, name, str(e))
            continue
        rows.append(asr_row(ids[i], text, clip, str(speakers[i]), source))
    return _finish(rows, skipped, len(dataset), f"dataset '{source}'", "rows")


# ------------------------------------------------------------------ splits and the empty-data gate


def _assign(groups: dict[str, list[int]], targets: dict[str, int], seed: int) -> dict[str, list[int]] | None:
    """Whole groups -> held-out splits, each filled up to its target row count without going over.
    None when some split gets no group at all (every remaining group is bigger than its target)."""
    order = sorted(groups)  # sorted first: the shuffle must not depend on the dataset's row order
    np.random.default_rng(seed).shuffle(order)
    held: dict[str, list[int]] = {}
    for split, target in targets.items():
        held[split] = []
        for key in list(order):
            if len(held[split]) + len(groups[key]) <= target:
                held[split] += groups[key]
                order.remove(key)
        if not held[split]:
            return None
    held["train"] = [i for key in order for i in groups[key]]
    return held


def split_dataset(
    dataset: Dataset, validation_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0, by: str = "voice"
) -> DatasetDict:
    """Deterministic train/validation/test split that holds out whole speakers (values of `by`) when it can.

    Each held-out split takes about `ceil(fraction * rows)` rows, made of whole speakers (never more, maybe
    fewer), so no validation/test speaker is heard in training. Rows with an unknown speaker ("") count as
    one speaker each. If no speaker is small enough, it splits by row instead and warns. A split whose
    fraction is 0 is left out. Rows keep their dataset order within each split.
    """
    fractions = {"validation": validation_fraction, "test": test_fraction}
    if not all(0 <= f < 1 for f in fractions.values()) or sum(fractions.values()) >= 1:
        raise ValueError(
            f"validation_fraction and test_fraction must be in [0, 1) with a sum below 1, got {validation_fraction} "
            f"and {test_fraction}. Typical: 0.05 each."
        )
    n = len(dataset)
    targets = {split: math.ceil(f * n) for split, f in fractions.items() if f > 0}
    if n - sum(targets.values()) < 1:
        raise ValueError(
            f"Cannot split {n} row(s) into train + {' + '.join(targets)} ({targets}): training would get no rows. "
            "Import more data or lower the validation/test fractions."
        )
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(dataset[by]):
        groups.setdefault(str(key) if key != "" else f"\0row {i}", []).append(i)
    held = _assign(groups, targets, seed)
    if held is None:
        warnings.warn(
            f"Cannot hold out whole '{by}' groups: the smallest has {min(map(len, groups.values()))} rows, more than "
            f"the held-out target {targets}. Splitting by row instead, so validation/test share speakers with train.",
            CorpusWarning,
            stacklevel=2,
        )
        held = _assign({str(i): [i] for i in range(n)}, targets, seed)
    return DatasetDict({split: dataset.select(sorted(held[split])) for split in ("train", *targets)})


def require_nonempty(data: Dataset | DatasetDict | ImportResult, what: str = "the dataset") -> None:
    """Raise ValueError unless `data` has rows (every split, for a DatasetDict). Training calls this first,
    so that an import that skipped everything fails here, clearly, instead of as an empty training run."""
    if isinstance(data, ImportResult):
        if data.num_imported > 0:
            return
        if data.num_found == 0:
            raise ValueError(
                f"No usable examples in {what}: found no {data.unit} in {data.where}. Expected "
                f"{'/'.join(AUDIO_SUFFIXES)} files with transcripts (LibriSpeech layout, or name.txt next to "
                "name.wav); point it at the corpus folder itself, e.g. LibriSpeech/dev-clean."
            )
        counts = ", ".join(f"{kind}: {n}" for kind, n in data.skip_counts().items())
        first = "; ".join(f"{name}: {reason}" for name, reason in data.skipped[:3])
        raise ValueError(
            f"No usable examples in {what}: all {data.num_skipped} {data.unit} in {data.where} were skipped "
            f"({counts}). First: {first}. Fix or remove those files (see the warnings for each), then import again."
        )
    splits = data.items() if isinstance(data, DatasetDict) else [("rows", data)]
    empty = [name for name, split in splits if len(split) == 0]
    if empty or not splits:
        raise ValueError(
            f"No usable examples in {what}: {', '.join(empty) or 'no splits'} empty. Expected at least one row "
            "in each split; import more data (and check the importer's skip warnings) before training."
        )


__all__ = [
    "AUDIO_SUFFIXES",
    "CorpusWarning",
    "ImportResult",
    "SkippedClip",
    "asr_row",
    "import_folder",
    "import_hf_dataset",
    "normalize_transcript",
    "prepare_clip",
    "read_audio",
    "read_librispeech_transcripts",
    "require_nonempty",
    "rows_to_dataset",
    "split_dataset",
]
