"""Build the synthetic espeak-ng demo corpus (DESIGN.md §5) and save it as a `datasets.DatasetDict`.

    python -m processing.build_corpus --output data/corpus --train 2000 --validation 200 --test 200 --seed 0 --workers 2

Writes `save_to_disk` splits train/validation/test plus `corpus_info.json` (counts, voices, held-out axes)
into `--output`. Validation and test use only held-out voices, rates, pitches and phrasings. The logic
lives in `processing/corpus.py`; this file only parses flags. Options beyond the demo's defaults (each one
recorded in `corpus_info.json`; left out, the corpus is exactly the shipped demo's):

    --max-operand 20 --assistant-voice festival-slt --sentences wordnet --sentence-fraction 0.3
    --user-voices all --augment-fraction 0.3
"""

from __future__ import annotations

import argparse
import json
import time

from processing.corpus import (
    ASSISTANT_VOICES,
    DEFAULT_ASSISTANT_VOICE,
    DEFAULT_SENTENCE_FRACTION,
    FACTS_PATH,
    build_corpus,
)
from processing.schema import TASKS
from processing.user_voices import DEFAULT_USER_VOICES, OTHER_HELD_OUT_VOICES, OTHER_TRAIN_VOICES, USER_VOICE_MODES


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
    parser.add_argument("--max-operand", type=int, default=None,
                        help="largest plus/minus operand (default 12); times keeps 10 (or N if smaller)")
    parser.add_argument("--max-times-operand", type=int, default=None, help="largest times operand (default 10)")
    parser.add_argument("--assistant-voice", default=DEFAULT_ASSISTANT_VOICE, choices=sorted(ASSISTANT_VOICES),
                        help="voice of the spoken answers: espeak (en-us, 150 wpm) or festival-slt (festival's "
                             "cmu_us_slt_arctic_hts); user turns: see --user-voices")
    parser.add_argument("--sentences", default=None, metavar="PATH_OR_SOURCE",
                        help="open-vocabulary sentences for extra asr / t2s rows: 'wordnet' (Debian wordnet-base's "
                             "example sentences), 'wordnet-words' (its common words and compounds of 1-3 words), "
                             "a WordNet data folder, or a text file with one sentence a line")
    parser.add_argument("--sentence-fraction", type=float, default=DEFAULT_SENTENCE_FRACTION,
                        help="share of each split's rows that are sentence rows (with --sentences)")
    parser.add_argument("--user-voices", default=DEFAULT_USER_VOICES, choices=USER_VOICE_MODES,
                        help="voices of the user turns: espeak (espeak-ng's pools only, the default) or all (about "
                             "half of the spoken user turns by flite / festival voices: "
                             f"{', '.join(OTHER_TRAIN_VOICES)} in train, held-out {', '.join(OTHER_HELD_OUT_VOICES)} "
                             "in validation / test; needs "
                             "apt-get install flite festival festvox-kallpc16k festvox-kdlpc16k)")
    parser.add_argument("--augment-fraction", type=float, default=0.0, metavar="F",
                        help="share (0..1) of the train split's spoken user turns augmented with speed, gain, noise "
                             "and room effects (processing/augment.py), chosen from the seed; never validation / "
                             "test (default 0.0)")
    parser.add_argument("--workers", type=int, default=1, help="parallel espeak-ng processes")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    corpus = build_corpus(
        args.output, args.train, args.validation, args.test, seed=args.seed, tasks=args.tasks, facts_path=args.facts or FACTS_PATH,
        num_workers=args.workers, progress=not args.no_progress, max_operand=args.max_operand,
        max_times_operand=args.max_times_operand, assistant=args.assistant_voice, sentences=args.sentences,
        sentence_fraction=args.sentence_fraction, user_voices=args.user_voices, augment_fraction=args.augment_fraction,
    )  # fmt: skip
    counts = {split: len(ds) for split, ds in corpus.items()}
    print(f"Saved {json.dumps(counts)} to {args.output} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
