"""Token <-> id tables for sequence-to-sequence data.

A `Vocabulary` reads text as characters (`unit="char"`: spelling, dates)
or as whitespace-separated tokens (`unit="word"`: phones, words). Ids 0, 1
and 2 are padding, start and end; the tokens follow in sorted order.

Example:

    >>> phones = attnkit.app.vocabulary.Vocabulary(["HH", "AH", "L", "OW"], unit="word")
    >>> phones.encode("HH AH L OW", add_start_end=True)
    [1, 4, 3, 5, 6, 2]
    >>> phones.decode([4, 3, 5, 6, 2, 0])
    'HH AH L OW'
"""

from collections.abc import Iterable
from collections.abc import Sequence

UNITS = ("char", "word")


class Vocabulary:
    """Tokens <-> ids. 0 is padding, 1 start, 2 end; then the tokens."""

    PAD, START, END = 0, 1, 2

    def __init__(self, tokens: Iterable[str], unit: str = "char"):
        if unit not in UNITS:
            raise ValueError(f"`unit` must be one of {UNITS}. Received: unit={unit!r}.")
        self.unit = unit
        self.tokens = sorted(set(tokens))
        bad = [t for t in self.tokens if not isinstance(t, str) or not t
               or (unit == "char" and len(t) != 1) or (unit == "word" and t != t.strip())
               or (unit == "word" and len(t.split()) != 1)]
        if bad:
            what = "single characters" if unit == "char" else "non-empty words without spaces"
            raise ValueError(f"Tokens must be {what}. Received: {bad[:5]!r}.")
        self._ids = {t: i + 3 for i, t in enumerate(self.tokens)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], unit: str = "char"):
        """The vocabulary of every token in `texts`."""
        return cls({token for text in texts for token in _split(text, unit)}, unit=unit)

    def __len__(self):
        return len(self.tokens) + 3

    def split(self, text: str):
        """The tokens of `text`."""
        return _split(text, self.unit)

    def join(self, tokens: Sequence[str]):
        return ("" if self.unit == "char" else " ").join(tokens)

    def encode(self, text: str, length: int | None = None, add_start_end: bool = False):
        """ids of `text` (padded with 0 to `length`); ValueError on unknowns."""
        tokens = self.split(text)
        unknown = sorted({t for t in tokens if t not in self._ids})
        if unknown:
            what, shown = ("Characters", "".join(unknown)) if self.unit == "char" else \
                ("Tokens", unknown)
            raise ValueError(f"{what} outside the vocabulary: {shown!r} in {text!r}.")
        ids = [self._ids[t] for t in tokens]
        if add_start_end:
            ids = [self.START] + ids + [self.END]
        if length is not None:
            if len(ids) > length:
                raise ValueError(f"{text!r} needs {len(ids)} positions; length={length}.")
            ids = ids + [self.PAD] * (length - len(ids))
        return ids

    def decode(self, ids: Sequence[int]):
        """Text of `ids`, stopping at the first end or padding id."""
        out = []
        for i in ids:
            i = int(i)
            if i in (self.PAD, self.END):
                break
            if i >= 3:
                out.append(self.tokens[i - 3])
        return self.join(out)

    def get_config(self):
        return {"tokens": list(self.tokens), "unit": self.unit}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _split(text, unit):
    return list(text) if unit == "char" else text.split()
