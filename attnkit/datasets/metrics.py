"""Word and token error rates against one or more references per input.

The scoring of pronunciation (G2P) results, usable for any sequence task:
an input is correct when its prediction equals any of its references; its
token errors are the edit distance to the closest reference. Distances come
from `rapidfuzz` (`pip install attnkit[g2p]`).

Example:

    >>> scores = attnkit.datasets.metrics.error_rates(
    ...     {"read": "R IY D"}, {"read": ["R EH D", "R IY D"]}, unit="word")
    >>> scores["wer"], scores["per"]
    (0.0, 0.0)
"""


def _levenshtein():
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError as error:
        raise ImportError(
            "Error rates need the `rapidfuzz` package: pip install 'attnkit[g2p]'."
        ) from error
    return Levenshtein


def error_rates(predictions, references, unit="word"):
    """WER, token error rate (PER for phones) and counts.

    Args:
        predictions: dict input -> predicted text.
        references: dict input -> list of reference texts (or one text).
            Every input of `references` is scored; a missing prediction
            counts as an empty one.
        unit: "word" (whitespace-separated tokens, as phones) or "char".

    Returns:
        dict with `wer` (1 - inputs correct / inputs), `per` (summed edit
        distance to the closest reference / summed length of those
        references), `inputs`, `correct`, `edits` and `reference_tokens`.
    """
    if unit not in ("word", "char"):
        raise ValueError(f"`unit` must be 'word' or 'char'. Received: unit={unit!r}.")
    if not references:
        raise ValueError("`references` is empty: there is nothing to score.")
    levenshtein = _levenshtein()
    split = str.split if unit == "word" else list
    correct = edits = length = 0
    for key, refs in references.items():
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise ValueError(f"No reference for {key!r}.")
        guess = split(predictions.get(key, ""))
        best = min((levenshtein.distance(guess, split(r)), len(split(r))) for r in refs)
        correct += best[0] == 0
        edits += best[0]
        length += best[1]
    inputs = len(references)
    return {
        "wer": 1.0 - correct / inputs,
        "per": edits / max(length, 1),
        "inputs": inputs,
        "correct": correct,
        "edits": edits,
        "reference_tokens": length,
    }
