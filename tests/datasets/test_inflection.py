"""Verb inflection from mlconjug3's tables: forms, features, lemma splits,
sizes and the shared task's scores.

References: conjugations from French and Spanish grammar (written here, not
read from the tables), the tables' own files read here with the json module
alone, and edit distances counted by hand.
"""

import importlib.util
import json
import os

import pytest

from attnkit.datasets import inflection
from attnkit.app import metrics

pytestmark = pytest.mark.backend_independent

# Forms any grammar of the language gives; irregular verbs included.
FRENCH = [
    ("parler", "V;IND;PRS;1;SG", "parle"), ("parler", "V;IND;PRS;3;PL", "parlent"),
    ("finir", "V;IND;PRS;1;PL", "finissons"), ("aller", "V;IND;FUT;1;SG", "irai"),
    ("aller", "V;IND;PRS;3;PL", "vont"), ("avoir", "V;SBJV;PRS;3;SG", "ait"),
    ("faire", "V;IND;PST;PFV;3;SG", "fit"), ("venir", "V.PTCP;PST;FEM;PL", "venues"),
    ("manger", "V.PTCP;PRS", "mangeant"), ("prendre", "V;IMP;POS;2;PL", "prenez"),
    ("pouvoir", "V;COND;1;SG", "pourrais"), ("parler", "V;IND;PST;IPFV;1;PL", "parlions"),
]
SPANISH = [
    ("hablar", "V;IND;PRS;1;SG", "hablo"), ("tener", "V;IND;FUT;1;SG", "tendré"),
    ("ser", "V;IND;PST;PFV;3;SG", "fue"), ("decir", "V.PTCP;PST", "dicho"),
    ("hablar", "V.CVB;PRS", "hablando"), ("ir", "V;SBJV;PRS;1;PL", "vayamos"),
    ("hablar", "V;SBJV;PST;IPFV;LGSPEC1;3;PL", "hablaran"),
    ("hablar", "V;SBJV;PST;IPFV;LGSPEC2;3;PL", "hablasen"),
    ("comer", "V;IND;PST;IPFV;1;PL", "comíamos"), ("poner", "V;COND;3;SG", "pondría"),
    ("hacer", "V;IMP;POS;2;SG", "haz"), ("hablar", "V;IMP;NEG;2;PL", "habléis"),
]


@pytest.fixture(scope="module", params=inflection.LANGUAGES)
def tables(request):
    return request.param, inflection.read_tables(request.param)


def test_forms_are_the_grammars_forms():
    for language, known in (("fr", FRENCH), ("es", SPANISH)):
        forms = {(lemma, features): form
                 for lemma, features, form in inflection.read_tables(language)}
        for lemma, features, form in known:
            assert forms.get((lemma, features)) == form, (language, lemma, features)


def test_every_verb_of_the_tables_is_read_once_per_slot(tables):
    language, triples = tables
    folder = os.path.join(
        list(importlib.util.find_spec("mlconjug3").submodule_search_locations)[0],
        "data", "conjug_manager")
    with open(os.path.join(folder, f"verbs-{language}.json"), encoding="utf-8") as f:
        verbs = json.load(f)
    lemmas = {lemma for lemma, _, _ in triples}
    assert lemmas <= set(verbs) and len(lemmas) > 0.99 * len(verbs)
    keys = [(lemma, features) for lemma, features, _ in triples]
    assert len(keys) == len(set(keys))  # one form per lemma and features
    assert all(form for _, _, form in triples)
    # Finite forms carry person and number; the infinitive is the lemma, left out.
    for _, features, _ in triples:
        tags = features.split(";")
        assert tags[0] in ("V", "V.PTCP", "V.CVB"), features
        if tags[0] == "V":
            assert tags[-1] in ("SG", "PL", "FORM") and any(t in "123" for t in tags)


def test_splits_share_no_lemma_and_have_their_sizes():
    for language in inflection.LANGUAGES:
        data = {size: inflection.load_data(language, size, seed=0)
                for size in ("low", "medium", "high")}
        assert [len(data[s].train) for s in data] == [100, 1000, 10000]
        high = data["high"]
        assert len(high.dev) == len(high.test) == 1000
        lemmas = [{lemma for lemma, _, _ in getattr(high, split)}
                  for split in ("train", "dev", "test")]
        assert not (lemmas[0] & lemmas[1] or lemmas[0] & lemmas[2] or lemmas[1] & lemmas[2])
        # A larger set holds every smaller one; dev and test never change.
        assert data["medium"].train[:100] == data["low"].train
        assert high.train[:1000] == data["medium"].train
        other = inflection.load_data(language, 100, seed=1)
        assert other.train != data["low"].train
        assert (other.dev, other.test) == (high.dev, high.test)


def test_pairs_read_characters_then_features():
    data = inflection.load_data("fr", "low")
    assert inflection.source_text("parler", "V;IND;PRS;1;SG") == "p a r l e r V IND PRS 1 SG"
    for (source, target), (lemma, features, form) in zip(data.pairs("test"), data.test):
        tokens = source.split()
        assert "".join(tokens[:len(lemma)]) == lemma and target == form
        assert ";".join(tokens[len(lemma):]) == features
        data.source_vocab.encode(source)
        data.target_vocab.encode(target)
    # No feature token can be read as a character of a lemma.
    letters = {c for lemma, _, _ in data.train + data.dev + data.test for c in lemma}
    features = {t for _, f, _ in data.train + data.dev + data.test for t in f.split(";")}
    assert not letters & features
    assert data.source_vocab.unit == "word" and data.target_vocab.unit == "char"
    with pytest.raises(ValueError, match="split"):
        data.pairs("valid")


def test_bad_arguments_are_refused_before_reading():
    for kwargs, match in ((dict(language="de"), "language"),
                          (dict(language="fr", train_size="tiny"), "train_size"),
                          (dict(language="fr", train_size=0), "train_size"),
                          (dict(language="fr", train_size=True), "train_size")):
        with pytest.raises(ValueError, match=match):
            inflection.load_data(**kwargs)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps mlconjug3"):
        inflection.load_data("fr")


def test_accuracy_and_mean_distance():
    scores = metrics.accuracy_and_distance(
        {"a": "parle", "b": "parlont", "c": "fini"},
        {"a": "parle", "b": "parlons", "c": "finissons", "d": "vont"})
    # Distances 0, 1 (t -> s), 5 (insert s, s, o, n, s), 4 (d has no output).
    assert scores == {"accuracy": 0.25, "mean_distance": 10 / 4, "inputs": 4}
