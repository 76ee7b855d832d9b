"""Build the synthetic espeak-ng demo corpus (DESIGN.md §5) and save it as a `datasets.DatasetDict`.

    python -m processing.build_corpus --output data/corpus --train 2000 --validation 200 --test 200 --seed 0 --workers 2

Writes `save_to_disk` splits train/validation/test plus `corpus_info.json` (counts, voices, held-out axes)
into `--output`. Validation and test use only held-out voices, rates, pitches and phrasings. The logic
lives in `processing/corpus.py`; this file only parses flags.
"""

from __future__ import annotations

import argparse
import json
import time

from processing.corpus import FACTS_PATH, build_corpus
from processing.schema import TASKS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="directory for the saved DatasetDict")
    parser.add_argument("--train", type=int, default=2000, help="train rows")
    parser.add_argument("--validation", type=int, default=200, help="validation rows (held-out voices/phrasings)")
    parser.add_argument("--test", type=int, default=200, help="test rows (held-out voices/phrasings)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="task families to include")
    parser.add_argument("--facts", nargs="+", default=None,
                        help="fact list TSV(s) (relation, subject, answer), merged; default: the demo's")
    parser.add_argument("--workers", type=int, default=1, help="parallel espeak-ng processes")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    corpus = build_corpus(
        args.output, args.train, args.validation, args.test, seed=args.seed, tasks=args.tasks, facts_path=args.facts or FACTS_PATH,
        num_workers=args.workers, progress=not args.no_progress,
    )  # fmt: skip
    counts = {split: len(ds) for split, ds in corpus.items()}
    print(f"Saved {json.dumps(counts)} to {args.output} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
