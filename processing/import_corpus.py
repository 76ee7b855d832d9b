"""Import a real speech corpus folder into a train/validation/test `DatasetDict` of ASR rows.

    python -m processing.import_corpus --folder path/to/LibriSpeech/dev-clean --output data/librispeech-dev \
        --validation 0.05 --test 0.05

The folder holds *.wav / *.flac files with transcripts: the LibriSpeech layout (speaker/chapter/*.trans.txt)
or `name.wav` + `name.txt` (or `.lab`). Unusable files are skipped with a warning each and counted; the
validation/test splits hold out whole speakers. The result is saved with `save_to_disk` (load it back with
`datasets.load_from_disk`). It exits with an error, saving nothing, if no usable example is left.

A `datasets` dataset (e.g. from the Hub) is imported from Python instead:
`processing.importers.import_hf_dataset(ds, audio_column="audio", text_column="text")`.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import pyarrow.compute as pc
from datasets import Dataset

from .importers import CorpusWarning, import_folder, require_nonempty, split_dataset
from .schema import SAMPLING_RATE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m processing.import_corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True, help="corpus folder, e.g. LibriSpeech/dev-clean")
    parser.add_argument("--output", required=True, help="where to save the DatasetDict (save_to_disk)")
    parser.add_argument("--source", default=None, help="the rows' `source` name (default: the folder's name)")
    parser.add_argument("--validation", type=float, default=0.05, help="fraction of rows held out for validation")
    parser.add_argument("--test", type=float, default=0.05, help="fraction of rows held out for test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the speaker split")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="skip longer clips (the encoder's window)")
    return parser.parse_args(argv)


def hours(dataset: Dataset) -> float:
    """Total `question_audio` duration, from the Arrow list lengths (no audio is copied into Python)."""
    audio = dataset.select_columns(["question_audio"]).with_format("arrow")
    samples = sum(pc.sum(pc.list_value_length(b["question_audio"])).as_py() or 0 for b in audio.iter(batch_size=1000))
    return samples / SAMPLING_RATE / 3600


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # one "warning: ..." line per skipped file, not Python's two-line format
        warnings.simplefilter("always", CorpusWarning)  # skips are this command's report, never errors
        warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
        try:
            result = import_folder(args.folder, source=args.source, max_seconds=args.max_seconds)
            require_nonempty(result, f"--folder {args.folder}")
            splits = split_dataset(result.dataset, args.validation, args.test, seed=args.seed)
            require_nonempty(splits, "the split dataset")
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"error: {e}") from e
    seconds = time.perf_counter() - t0
    splits.save_to_disk(args.output)

    print(f"{result.summary()} in {seconds:.1f} s ({result.num_found / max(seconds, 1e-9):.1f} files/s)")
    for name, split in splits.items():
        print(f"  {name}: {len(split)} rows, {len(set(split['voice']))} speakers, {hours(split):.2f} h of audio")
    print(f"saved to {args.output}")


if __name__ == "__main__":
    main()
