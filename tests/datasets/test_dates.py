"""The date generator: determinism, one answer per text, disjoint splits."""

import datetime

import pytest

from attnkit.datasets import dates
from attnkit.datasets._date_languages import LANGUAGES

pytestmark = pytest.mark.backend_independent


def test_same_seed_same_pairs_other_seed_other_pairs():
    assert dates.generate(500, seed=4) == dates.generate(500, seed=4)
    assert dates.generate(500, seed=4) != dates.generate(500, seed=5)
    a, b = dates.load_data(200, 20, 20, seed=1), dates.load_data(200, 20, 20, seed=1)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)


def test_targets_are_iso_dates_in_range():
    for text, iso in dates.generate(3000, seed=0):
        date = datetime.date.fromisoformat(iso)
        assert len(iso) == dates.TARGET_LENGTH
        assert dates.FIRST <= date <= dates.LAST
        assert text.strip() == text and text


def test_every_month_word_names_one_month_in_every_language():
    meaning = {}
    for table in LANGUAGES.values():
        for index, words in enumerate(zip(table["months"], table["abbreviations"])):
            for word in words:
                meaning.setdefault(word.lower().rstrip("."), set()).add(index)
    clashes = {w: m for w, m in meaning.items() if len(m) > 1}
    assert clashes == {}


def test_numeric_forms_are_never_ambiguous_exhaustively():
    """Every numeric text the generator can emit, over all 73,049 days."""
    seen = {}
    day = dates.FIRST
    while day <= dates.LAST:
        if dates._is_unambiguous_numeric(day):
            for code, table in LANGUAGES.items():
                for template in table["numeric"] + ["{year}-{mm}-{dd}"]:
                    text = dates.render(day, code, template)
                    assert seen.setdefault(text, day) == day, text
        day += datetime.timedelta(days=1)
    # A day <= 12 with day != month would read as another date elsewhere:
    assert "03/04/2021" not in seen and "04/03/2021" not in seen
    assert "13/04/2021" in seen and "04/13/2021" in seen


def test_each_text_has_exactly_one_answer_in_a_large_sample():
    answer = {}
    for text, iso in dates.generate(200_000, seed=7):
        assert answer.setdefault(text, iso) == iso, text


def test_weekdays_are_the_true_weekdays():
    names = {code: [w.lower() for w in t["weekdays"]] for code, t in LANGUAGES.items()}
    checked = 0
    for code in LANGUAGES:
        for text, iso in dates.generate(400, seed=3, languages=(code,)):
            found = [i for i, w in enumerate(names[code]) if w in text.lower()]
            if found:
                checked += 1
                assert found == [datetime.date.fromisoformat(iso).weekday()], (text, iso)
    assert checked > 100


def test_splits_share_no_date_and_no_text():
    data = dates.load_data(num_train=3000, num_val=300, num_test=300, seed=2)
    for a, b in [(data.train, data.val), (data.train, data.test), (data.val, data.test)]:
        assert not {iso for _, iso in a} & {iso for _, iso in b}
        assert not {t for t, _ in a} & {t for t, _ in b}
    assert (len(data.train), len(data.val), len(data.test)) == (3000, 300, 300)


def test_vocabularies_cover_every_text_and_round_trip():
    data = dates.load_data(num_train=5000, num_val=10, num_test=10, seed=0)
    src, tgt = data.source_vocab, data.target_vocab
    for text, iso in data.train:
        ids = src.encode(text, length=64)
        assert len(ids) == 64 and src.decode(ids) == text
        assert tgt.decode(tgt.encode(iso, add_start_end=True)[1:]) == iso
    languages_seen = {t for t, _ in data.train if any(c in t for c in "éçºäû")}
    assert languages_seen  # accented characters are generated and encode


@pytest.mark.parametrize("call, message", [
    (lambda: dates.source_vocabulary().encode("3 mars 2021 ☃"), "outside the vocabulary: '☃'"),
    (lambda: dates.target_vocabulary().encode("2021-03-03", length=5), "needs 10 positions"),
    (lambda: dates.generate(3, languages=("it",)), "`languages` must be"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
