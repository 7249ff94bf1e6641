"""Multilingual date normalization: a seeded generator of (text, ISO date).

Dates as people write them in English, French, Spanish, German and
Portuguese (month names, abbreviations, ordinals, articles, weekdays, numeric
forms with `/`, `.` and `-`), each paired with its ISO 8601 form
`YYYY-MM-DD`, for years 1900-2099. No downloads: everything is generated.

Every text has exactly one correct answer: numeric day/month forms are
emitted only when the day exceeds 12 or equals the month (so that the
month/day order of another convention cannot read them as another date),
years always have four digits, and a weekday name is always the true one.

Example:

    >>> data = attnkit.datasets.dates.load_data(num_train=1000, num_val=100,
    ...                                         num_test=100, seed=0)
    >>> text, iso = data.train[0]
"""

import dataclasses
import datetime

import numpy as np

from attnkit.app import vocabulary
from attnkit.datasets._date_languages import LANGUAGES
from attnkit.datasets._date_languages import day_in_prose

FIRST = datetime.date(1900, 1, 1)
LAST = datetime.date(2099, 12, 31)
NUM_DAYS = (LAST - FIRST).days + 1
TARGET_LENGTH = 10  # YYYY-MM-DD


def _is_unambiguous_numeric(date):
    return date.day > 12 or date.day == date.month


def render(date: datetime.date, language: str, template: str, *, ordinal: bool = False,
           case: str = "as is"):
    """Writes `date` in `language` with `template` (see _date_languages)."""
    table = LANGUAGES[language]
    text = template.format(
        day=day_in_prose(language, date.day, ordinal),
        d=date.day, dd=f"{date.day:02d}", m=date.month, mm=f"{date.month:02d}",
        month=table["months"][date.month - 1],
        mon=table["abbreviations"][date.month - 1],
        weekday=table["weekdays"][date.weekday()], year=f"{date.year:04d}",
    )
    if case == "lower":
        return text.lower()
    if case == "upper":
        return text.upper()
    return text


def generate(num: int, seed: int | None = 0, languages: tuple[str, ...] = tuple(LANGUAGES),
             dates: list | None = None):
    """`num` pairs `(text, "YYYY-MM-DD")`, deterministic for a seed.

    Args:
        num: how many pairs.
        seed: the NumPy generator seed.
        languages: language codes among "en", "fr", "es", "de", "pt".
        dates: optional list of `datetime.date` to draw from (default: every
            day of 1900-2099).
    """
    unknown = [code for code in languages if code not in LANGUAGES]
    if unknown or not languages:
        raise ValueError(
            f"`languages` must be a non-empty subset of {tuple(LANGUAGES)}. "
            f"Received: {languages!r}."
        )
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(num):
        if dates is None:
            date = FIRST + datetime.timedelta(days=int(rng.integers(NUM_DAYS)))
        else:
            date = dates[int(rng.integers(len(dates)))]
        language = languages[int(rng.integers(len(languages)))]
        table = LANGUAGES[language]
        templates = table["templates"]
        if _is_unambiguous_numeric(date):
            templates = templates + table["numeric"] + ["{year}-{mm}-{dd}"]
        template = templates[int(rng.integers(len(templates)))]
        text = render(
            date, language, template, ordinal=bool(rng.integers(2)),
            case=("as is", "as is", "lower", "upper")[int(rng.integers(4))],
        )
        pairs.append((text, date.isoformat()))
    return pairs


class Vocabulary(vocabulary.Vocabulary):
    """Characters <-> ids. 0 is padding, 1 start, 2 end; then the characters.

    Built from the generator's own tables, so every text it can emit encodes.
    """

    def __init__(self, characters: str):
        super().__init__(characters, unit="char")

    @property
    def characters(self):
        return self.tokens

    def get_config(self):
        return {"characters": self.characters}


def source_vocabulary():
    """Every character any language table or template can produce."""
    chars = set("0123456789/-.,ºe ")
    for language, table in LANGUAGES.items():
        words = table["months"] + table["abbreviations"] + table["weekdays"]
        words += table["templates"] + table["numeric"]
        words += [day_in_prose(language, d, True) for d in range(1, 32)]
        for word in words:
            chars |= set(word) | set(word.lower()) | set(word.upper())
    chars -= set("{}")  # template braces are not text
    return Vocabulary(chars)


def target_vocabulary():
    return Vocabulary("0123456789-")


@dataclasses.dataclass
class DateData:
    """Train / validation / test pairs with no date shared between splits."""

    train: list
    val: list
    test: list
    source_vocab: Vocabulary
    target_vocab: Vocabulary


def load_data(num_train: int = 20000, num_val: int = 1000, num_test: int = 2000,
              seed: int | None = 0, languages: tuple[str, ...] = tuple(LANGUAGES)):
    """Generates the three splits; their calendar dates are disjoint.

    The days of 1900-2099 are shuffled with `seed` and cut 80/10/10, so no
    date of the test set (in any language or form) is seen in training.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(NUM_DAYS)
    cut1, cut2 = int(NUM_DAYS * 0.8), int(NUM_DAYS * 0.9)
    days = [
        [FIRST + datetime.timedelta(days=int(i)) for i in part]
        for part in (order[:cut1], order[cut1:cut2], order[cut2:])
    ]
    splits = [
        generate(n, seed=seed * 3 + k + 1, languages=languages, dates=d)
        for k, (n, d) in enumerate(zip((num_train, num_val, num_test), days))
    ]
    return DateData(*splits, source_vocabulary(), target_vocabulary())
