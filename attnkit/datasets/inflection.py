"""Verb inflection in French and Spanish (morphological reinflection).

A lemma and the features of one of its forms give the form, as in the
SIGMORPHON shared tasks:

    parler  V;IND;PRS;1;SG  ->  parle

The conjugation tables are the ones the `mlconjug3` package installs (MIT
licensed; Verbiste's tables for French, and its Spanish ones), read where the
package puts them: nothing is downloaded or copied. The package itself is
never imported (its declared dependencies pin `numpy<2`), so install it
without them: `pip install --no-deps mlconjug3`.

- A form is the verb's root followed by its conjugation template's ending.
  The simple tenses are kept, the infinitive (the lemma itself) and the
  compound tenses (auxiliary + participle) left out; features are written in
  UniMorph's tags (`V;IND;PST;IPFV;3;PL`, `V.PTCP;PST;FEM;SG`, ...). A slot
  the table leaves empty (a defective verb, as `acaecer` in the first
  person) has no form.
- The verbs, in the tables' order, numbered from 0, are split by lemma:
  number % 10 == 8 goes to dev, == 9 to test, the rest to train, so no
  lemma is in two splits.
- Training sets take the first n triples of a seeded shuffle of every
  training triple (a larger set holds every smaller one of the same seed):
  `SIZES`, SIGMORPHON's low / medium / high, are 100 / 1,000 / 10,000.
  Dev and test are fixed samples of 1,000 triples of their lemmas.
- Scores are the shared task's: exact-match accuracy and the mean
  Levenshtein distance between the output and the form
  (`attnkit.app.metrics.accuracy_and_distance`).

A model reads the lemma's characters and then the features, each a token
(`source_text`): the pairs' source unit is `"word"`, their target unit
`"char"`.

Example:

    >>> data = attnkit.datasets.inflection.load_data("fr", train_size="low")
    >>> len(data.train), len(data.dev), len(data.test)
    (100, 1000, 1000)
    >>> data.train[0]
    ('tambouriner', 'V;IND;FUT;2;PL', 'tambourinerez')
    >>> data.pairs("train")[0]
    ('t a m b o u r i n e r V IND FUT 2 PL', 'tambourinerez')
"""

import dataclasses
import importlib.util
import json
import os
import random

from attnkit.app.vocabulary import Vocabulary

PACKAGE = "mlconjug3"
TABLES = os.path.join("data", "conjug_manager")
LANGUAGES = ("fr", "es")
SIZES = {"low": 100, "medium": 1000, "high": 10000}
MODULUS, DEV, TEST = 10, 8, 9
EVALUATION_SIZE = 1000

PERSONS = ("1;SG", "2;SG", "3;SG", "1;PL", "2;PL", "3;PL")

# (mood, tense) of the tables, lower-cased -> (features, the tags of each
# slot; ("",) for a table that holds one form).
_FRENCH = {
    ("indicatif", "présent"): ("V;IND;PRS", PERSONS),
    ("indicatif", "imparfait"): ("V;IND;PST;IPFV", PERSONS),
    ("indicatif", "passé simple"): ("V;IND;PST;PFV", PERSONS),
    ("indicatif", "futur"): ("V;IND;FUT", PERSONS),
    ("conditionnel", "présent"): ("V;COND", PERSONS),
    ("subjonctif", "présent"): ("V;SBJV;PRS", PERSONS),
    ("subjonctif", "imparfait"): ("V;SBJV;PST;IPFV", PERSONS),
    ("imperatif", "imperatif présent"): ("V;IMP;POS", ("2;SG", "1;PL", "2;PL")),
    ("participe", "participe passé"): ("V.PTCP;PST", ("MASC;SG", "MASC;PL", "FEM;SG",
                                                      "FEM;PL")),
    ("participe", "participe présent"): ("V.PTCP;PRS", ("",)),
}
_SPANISH_IMPERATIVE = ("2;SG", "2;SG;FORM", "1;PL", "2;PL", "2;PL;FORM")
_SPANISH = {
    ("indicativo", "indicativo presente"): ("V;IND;PRS", PERSONS),
    ("indicativo", "indicativo pretérito imperfecto"): ("V;IND;PST;IPFV", PERSONS),
    ("indicativo", "indicativo pretérito perfecto simple"): ("V;IND;PST;PFV", PERSONS),
    ("indicativo", "indicativo futuro"): ("V;IND;FUT", PERSONS),
    ("condicional", "condicional"): ("V;COND", PERSONS),
    ("subjuntivo", "subjuntivo presente"): ("V;SBJV;PRS", PERSONS),
    ("subjuntivo", "subjuntivo pretérito imperfecto (1)"): ("V;SBJV;PST;IPFV;LGSPEC1",
                                                            PERSONS),
    ("subjuntivo", "subjuntivo pretérito imperfecto (2)"): ("V;SBJV;PST;IPFV;LGSPEC2",
                                                            PERSONS),
    ("subjuntivo", "subjuntivo futuro"): ("V;SBJV;FUT", PERSONS),
    ("imperativo", "imperativo"): ("V;IMP;POS", _SPANISH_IMPERATIVE),
    ("imperativo", "imperativo non"): ("V;IMP;NEG", _SPANISH_IMPERATIVE),
    # The gerund's table also holds the participle, second: its first slot only.
    ("gerundio", "gerundio"): ("V.CVB;PRS", ("",)),
    ("participo", "participo"): ("V.PTCP;PST", ("",)),
}
FEATURES = {"fr": _FRENCH, "es": _SPANISH}


def tables_path():
    """The folder where the installed `mlconjug3` package keeps its tables
    (found without importing the package)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The conjugation tables come from the `mlconjug3` package: "
            "pip install --no-deps mlconjug3 (its declared dependencies pin numpy<2; "
            "attnkit reads its data files and needs none of them).")
    folder = os.path.join(list(spec.submodule_search_locations)[0], TABLES)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"The `mlconjug3` package has no {TABLES} at {folder}.")
    return folder


def _check_language(language):
    if language not in LANGUAGES:
        raise ValueError(f"`language` must be one of {LANGUAGES}. Received: "
                         f"language={language!r}.")


def read_tables(language: str, folder: str | os.PathLike | None = None):
    """Every (lemma, features, form) of `language` ("fr" or "es"), verbs in
    the tables' order, each verb's forms in a fixed order."""
    _check_language(language)
    folder = tables_path() if folder is None else folder
    with open(os.path.join(folder, f"verbs-{language}.json"), encoding="utf-8") as f:
        verbs = json.load(f)
    with open(os.path.join(folder, f"conjugation-{language}.json"), encoding="utf-8") as f:
        templates = json.load(f)
    wanted = FEATURES[language]
    triples = []
    for lemma, verb in verbs.items():
        root = verb["root"]
        for mood, tenses in templates[verb["template"]].items():
            for tense, slots in (tenses or {}).items():
                known = wanted.get((mood.lower(), tense.lower()))
                if known is None or slots is None:
                    continue
                features, tags = known
                if isinstance(slots, str):  # a table of one form
                    slots = [[0, slots]]
                for index, ending in slots:
                    # An empty slot (None, or "" in the Spanish tables) is a
                    # form the verb lacks, not one equal to its root.
                    if not ending or index >= len(tags):
                        continue
                    tag = tags[index]
                    triples.append((lemma, f"{features};{tag}" if tag else features,
                                    root + ending))
    return triples


def source_text(lemma: str, features: str):
    """What a model reads: the lemma's characters, then each feature, spaced
    (`"p a r l e r V IND PRS 1 SG"`, unit `"word"`)."""
    return " ".join(list(lemma) + features.split(";"))


def split_of(index: int):
    """"train", "dev" or "test" for the verb numbered `index` in the tables."""
    rest = index % MODULUS
    return "dev" if rest == DEV else "test" if rest == TEST else "train"


@dataclasses.dataclass
class InflectionData:
    """(lemma, features, form) triples of each split, and the vocabularies
    of `pairs` (source: characters and features; target: characters)."""

    language: str
    train: list
    dev: list
    test: list
    source_vocab: Vocabulary
    target_vocab: Vocabulary

    def pairs(self, split: str):
        """(source_text, form) pairs of "train", "dev" or "test"."""
        if split not in ("train", "dev", "test"):
            raise ValueError(f"`split` must be 'train', 'dev' or 'test'. Received: "
                             f"split={split!r}.")
        return [(source_text(lemma, features), form)
                for lemma, features, form in getattr(self, split)]


def load_data(language: str, train_size: int | str | None = "high", seed: int | None = 0,
              folder: str | os.PathLike | None = None):
    """The lemma-split task of `language`, with a training set of one size.

    Args:
        language: "fr" or "es".
        train_size: "low", "medium" or "high" (100 / 1,000 / 10,000
            triples), a positive int, or None for every training triple.
        seed: the shuffle the training triples are taken from (dev and test
            are the same for every seed).
        folder: a folder holding `verbs-<language>.json` and
            `conjugation-<language>.json` in mlconjug3's format (default: the
            installed package's).
    """
    _check_language(language)
    size = SIZES.get(train_size, train_size) if isinstance(train_size, str) else train_size
    counted = size is None or (not isinstance(size, bool) and isinstance(size, int)
                               and size > 0)
    if not counted:  # refused before the tables are read
        raise ValueError(f"`train_size` must be one of {tuple(SIZES)}, a positive int or "
                         f"None. Received: train_size={train_size!r}.")
    triples = read_tables(language, folder)
    number, splits = {}, {"train": [], "dev": [], "test": []}
    for triple in triples:
        index = number.setdefault(triple[0], len(number))
        splits[split_of(index)].append(triple)
    train = list(splits["train"])
    random.Random(seed).shuffle(train)
    train = train if size is None else train[:size]
    fixed = {}
    for name in ("dev", "test"):
        held = list(splits[name])
        random.Random(f"{language}-{name}").shuffle(held)
        fixed[name] = held[:EVALUATION_SIZE]
    everything = train + fixed["dev"] + fixed["test"]
    return InflectionData(
        language, train, fixed["dev"], fixed["test"],
        Vocabulary.from_texts([source_text(l, f) for l, f, _ in everything], unit="word"),
        Vocabulary.from_texts([form for _, _, form in everything], unit="char"))
