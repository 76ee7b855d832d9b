"""Numbers as the corpus speaks them; shared by corpus generation and answer scoring (`training.evaluate`)."""

from __future__ import annotations

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """0..999 as spoken words, American style without "and" or hyphens: 144 -> "one hundred forty four"."""
    if not 0 <= n <= 999 or int(n) != n:
        raise ValueError(f"number_to_words handles integers 0..999, got {n!r}.")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    hundreds, rest = divmod(n, 100)
    return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))


__all__ = ["number_to_words"]
