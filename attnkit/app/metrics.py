"""Word and token error rates against one or more references per input.

The scoring of pronunciation (G2P) results, usable for any sequence task:
an input is correct when its prediction equals any of its references; its
token errors are the edit distance (Levenshtein: insertions, deletions and
substitutions of one token each) to the closest reference.

Example:

    >>> scores = attnkit.app.metrics.error_rates(
    ...     {"read": "R IY D"}, {"read": ["R EH D", "R IY D"]}, unit="word")
    >>> scores["wer"], scores["per"]
    (0.0, 0.0)
"""

from collections.abc import Sequence


def edit_distance(a: Sequence, b: Sequence):
    """Levenshtein distance between the sequences `a` and `b`: the fewest
    insertions, deletions and substitutions of one element that turn one
    into the other."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))  # distances from a[:0] to each prefix of b
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def error_rates(predictions: dict, references: dict, unit: str = "word"):
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
    split = str.split if unit == "word" else list
    correct = edits = length = 0
    for key, refs in references.items():
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise ValueError(f"No reference for {key!r}.")
        guess = split(predictions.get(key, ""))
        best = min((edit_distance(guess, split(r)), len(split(r))) for r in refs)
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


def accuracy_and_distance(predictions: dict, references: dict):
    """The SIGMORPHON inflection scores: exact-match accuracy and the mean
    Levenshtein distance (in characters) to the closest reference.

    Args:
        predictions: dict input -> predicted text.
        references: dict input -> reference text (or list of texts); every
            input of `references` is scored, a missing prediction as "".

    Returns:
        dict with `accuracy` (inputs correct / inputs), `mean_distance`
        (summed distance / inputs) and `inputs`.
    """
    return shared_task_scores(error_rates(predictions, references, unit="char"))


def shared_task_scores(scores: dict):
    """`accuracy_and_distance`'s dict from what `error_rates` (with
    `unit="char"`) returned for the same predictions: nothing is scored
    again."""
    return {"accuracy": scores["correct"] / scores["inputs"],
            "mean_distance": scores["edits"] / scores["inputs"],
            "inputs": scores["inputs"]}
