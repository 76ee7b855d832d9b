"""Open-vocabulary English sentences for the synthetic corpus's extra ASR and T2S rows (`--sentences`).

The demo-domain rows only ever say a few hundred words. Listening to (ASR) and reading aloud (T2S) broad English
needs broad sentences; the one free, offline source found is the example sentences of WordNet 3.0
(Debian main `wordnet-base`, `/usr/share/wordnet/data.{noun,verb,adj,adv}`; WordNet 3.0 licence: use, copy,
modify and distribute for any purpose, keeping Princeton's copyright notice; see
`/usr/share/doc/wordnet-base/copyright`). ~48,000 quoted examples ("he arranged his robes to avoid a trip-up
later"), ~33,000 distinct after cleaning. A plain text file (one sentence per line) works too.

    apt-get install wordnet-base

Cleaning (`clean_sentence`) makes each sentence say exactly what its text says, in the corpus's own spelling:
lower-case ASCII letters, spaces and in-word apostrophes; accents folded; hyphens and "..." become spaces,
other punctuation is dropped; a plain whole number 0..999 is spelled with `number_to_words`, and a sentence
with any other digits (years, decimals, ordinals, "1,000"), symbols ($ % & / @ # + =), brackets or an
abbreviation's inner full stop ("U.S.", "Dr. Smith") is dropped; 3-20 words are kept.

Short utterances come from `wordnet-words`: the WordNet lemmas tagged in the SemCor corpus (`cntlist.rev`, the same
package; ~22,000 of 1-3 words: "boy", "road", "palm oil", "look around"), most frequent first. A transcriber trained
only on sentences answers a sentence to a single spoken word; these rows teach it to stop.

Splits are by a hash of the cleaned text (`sentence_split`): the same sentence always falls in the same split,
whatever the source order or size, so a validation or test sentence is never trained on.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from processing.numbers import number_to_words

WORDNET_SOURCE = "wordnet"
WORDNET_DIR = Path(os.environ.get("WNSEARCHDIR", "/usr/share/wordnet"))
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDS_SOURCE = "wordnet-words"
WORDNET_COUNTS = "cntlist.rev"

MIN_WORDS, MAX_WORDS = 3, 20
WORD_LIMITS = (1, 3)  # words per `wordnet-words` utterance
_VOWEL = re.compile(r"[aeiouy]")  # a lemma without one is an abbreviation a voice would spell out ("ml", "tv")
# Shares of the hash space: a sentence's split depends on nothing but its cleaned text.
HELD_OUT_SHARES = {"validation": 0.05, "test": 0.05}

_QUOTED = re.compile(r'"([^"]+)"')
_REJECT = re.compile(r"[$%&/@#+=*<>(){}\[\]|\\~^_`]")
_NUMBER = re.compile(r"\d+")
_PLAIN_NUMBER = re.compile(r"(?<![\w.,'])\d{1,3}(?![\w.,']\w|\w)")  # a whole word of 1-3 digits, no "3.5", "1,000"
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def clean_sentence(text: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> str | None:
    """The spoken-friendly form of `text` (see the module doc), or None when it cannot be said as written or has
    fewer than `min_words` or more than `max_words` words."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()  # "café" -> "cafe"
    text = text.strip().replace("...", " ").replace("--", " ")
    if _REJECT.search(text):
        return None
    text = re.sub(r"[.!?;:,\"]+$", "", text.rstrip())  # the closing punctuation
    if "." in text:  # an inner full stop: an abbreviation ("U.S.", "Mr.") or two sentences
        return None

    def spell(m: re.Match) -> str:
        return f" {number_to_words(int(m.group()))} "

    text = _PLAIN_NUMBER.sub(spell, text)
    if _NUMBER.search(text):  # digits that are not a plain small number
        return None
    text = text.lower().replace("-", " ")
    words = []
    for token in re.split(r"[\s,;:!?\"]+", text):
        token = token.strip("'")  # quotation marks, not apostrophes
        if not token:
            continue
        if not _WORD.fullmatch(token):
            return None
        words.append(token)
    if not min_words <= len(words) <= max_words:
        return None
    return " ".join(words)


def sentence_split(sentence: str) -> str:
    """"train", "validation" or "test" for a cleaned sentence, from a hash of its text alone."""
    bucket = int.from_bytes(hashlib.sha256(sentence.encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for split, share in HELD_OUT_SHARES.items():
        edge += share
        if bucket < edge:
            return split
    return "train"


def read_wordnet_examples(folder: str | Path = WORDNET_DIR) -> Iterator[str]:
    """WordNet's quoted example sentences, raw, in file order (data.noun, data.verb, data.adj, data.adv)."""
    folder = Path(folder)
    missing = [name for name in WORDNET_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"WordNet data files {missing} not found in {folder}; install them with "
                                "`apt-get install wordnet-base` (Debian/Ubuntu) or pass a text file.")
    for name in WORDNET_FILES:
        with open(folder / name, encoding="latin-1") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:  # the licence header; synsets without a gloss
                    continue
                yield from _QUOTED.findall(line.split(" | ", 1)[1])


def read_wordnet_words(folder: str | Path = WORDNET_DIR) -> Iterator[str]:
    """WordNet lemmas tagged in SemCor, most frequent (summed over their senses) first, ties alphabetical; "_" in a
    compound becomes a space and lemmas without a vowel (abbreviations) are left out."""
    path = Path(folder) / WORDNET_COUNTS
    if not path.is_file():
        raise FileNotFoundError(f"WordNet's sense counts {path} not found; install them with "
                                "`apt-get install wordnet-base` (Debian/Ubuntu).")
    counts: dict[str, int] = {}
    with open(path, encoding="latin-1") as f:
        for line in f:  # "boy%1:18:00:: 1 203": sense key, sense number, tag count
            key, _, count = line.split()
            lemma = key.split("%", 1)[0].replace("_", " ")
            counts[lemma] = counts.get(lemma, 0) + int(count)
    for lemma in sorted(counts, key=lambda w: (-counts[w], w)):
        if _VOWEL.search(lemma):
            yield lemma


def read_text_lines(path: str | Path) -> Iterator[str]:
    """One sentence per line of a UTF-8 text file; blank lines and lines starting with "#" are skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                yield line


# The named sources: their reader, the WordNet file whose time invalidates the cache, and the words kept per item.
NAMED_SOURCES = {
    WORDNET_SOURCE: (read_wordnet_examples, WORDNET_FILES[0], (MIN_WORDS, MAX_WORDS)),
    WORDS_SOURCE: (read_wordnet_words, WORDNET_COUNTS, WORD_LIMITS),
}


def read_source(source: str | Path) -> Iterator[str]:
    """Raw sentences of `source`: a name of `NAMED_SOURCES` ("wordnet", "wordnet-words"), a WordNet data folder,
    or a text file (one sentence a line)."""
    if str(source) in NAMED_SOURCES:
        return NAMED_SOURCES[str(source)][0]()
    path = Path(source)
    if path.is_dir():
        return read_wordnet_examples(path)
    if not path.is_file():
        raise FileNotFoundError(f"Sentence source {str(source)!r} is neither one of {sorted(NAMED_SOURCES)}, a "
                                "WordNet data folder nor a text file.")
    return read_text_lines(path)


@dataclass(frozen=True)
class Sentences:
    """Cleaned, distinct sentences per split (each in first-seen source order) and where they came from."""

    source: str
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    raw: int  # sentences read before cleaning

    def split(self, name: str) -> tuple[str, ...]:
        return getattr(self, name)

    def info(self) -> dict:
        return {"source": self.source, "raw": self.raw,
                **{name: len(self.split(name)) for name in ("train", "validation", "test")}}  # fmt: skip


def split_sentences(raw: Iterable[str], source: str = "", min_words: int = MIN_WORDS,
                    max_words: int = MAX_WORDS) -> Sentences:
    """Clean (keeping `min_words`..`max_words` words), deduplicate and split sentences by hash (`sentence_split`)."""
    seen: dict[str, None] = {}
    count = 0
    for text in raw:
        count += 1
        cleaned = clean_sentence(text, min_words, max_words)
        if cleaned is not None:
            seen[cleaned] = None
    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for sentence in seen:
        splits[sentence_split(sentence)].append(sentence)
    return Sentences(source, *(tuple(splits[name]) for name in ("train", "validation", "test")), raw=count)


@lru_cache(maxsize=4)
def _load_cached(source: str, mtime: float) -> Sentences:
    if source in NAMED_SOURCES:
        return split_sentences(read_source(source), source, *NAMED_SOURCES[source][2])
    name = source if Path(source).is_dir() else Path(source).name
    return split_sentences(read_source(source), name)


def load_sentences(source: str | Path) -> Sentences:
    """`split_sentences(read_source(source))`, cached per source (and file time) within a process."""
    named = NAMED_SOURCES.get(str(source))
    path = WORDNET_DIR / named[1] if named else Path(source)
    mtime = path.stat().st_mtime if path.exists() else 0.0
    result = _load_cached(str(source), mtime)
    if not (result.train or result.validation or result.test):
        raise ValueError(f"Sentence source {str(source)!r} gave no usable sentence ({result.raw} read).")
    return result


__all__ = [
    "HELD_OUT_SHARES",
    "MAX_WORDS",
    "MIN_WORDS",
    "NAMED_SOURCES",
    "WORDNET_DIR",
    "WORDNET_SOURCE",
    "WORDS_SOURCE",
    "WORD_LIMITS",
    "Sentences",
    "clean_sentence",
    "load_sentences",
    "read_source",
    "read_text_lines",
    "read_wordnet_examples",
    "read_wordnet_words",
    "sentence_split",
    "split_sentences",
]
