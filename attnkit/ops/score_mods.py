"""Score modifiers: changes of the scores before the normalizer, as
saveable objects.

A score term is called as `score_mod(scores, b, h, q_idx, kv_idx) ->
scores` on scores `(B, N, t, s)` with broadcasting int32 indices (`q_idx`
absolute); the `attnkit.ops.terms` protocol says how to write one. Build
the common ones with `soft_cap` and `alibi`, chain several with
`chain_score_mods`.

Shape legend: B batch, N query heads, t / s a block of queries / keys.
"""

import math

import numpy as np
from keras import ops

from attnkit import _checks
from attnkit.ops.terms import ScoreMod
from attnkit.ops.terms import cache_key
from attnkit.ops.terms import deserialize_term
from attnkit.ops.terms import register
from attnkit.ops.terms import serialize_term
from attnkit.types import Tensor


@register
class SoftCap(ScoreMod):
    """`cap * tanh(scores / cap)` (Gemma 2, Grok); the same as `logit_soft_cap`.

    Given alone as `score_mod`, the core runs it as `logit_soft_cap`, whose
    derivative the chunked backward knows.
    """

    _keyed_by_config = True

    def __init__(self, cap: float):
        _checks.check_positive_number("cap", cap)
        self.cap = float(cap)

    def __call__(self, scores, b, h, q_idx, kv_idx):
        return self.cap * ops.tanh(scores / self.cap)

    def get_config(self):
        return {"cap": self.cap}


@register
class ChainedScoreMods(ScoreMod):
    """Applies `score_mods` one after another (the first one first).

    Additive (and so memory-lean in the chunked backward) when all are.
    """

    def __init__(self, *score_mods):
        score_mods = tuple(deserialize_term(m) if isinstance(m, dict) else m
                           for m in score_mods)
        if not score_mods or not all(callable(m) for m in score_mods):
            raise TypeError(
                f"chain_score_mods takes one or more score functions. Received: {score_mods!r}.")
        self.score_mods = score_mods

    @property
    def additive(self):
        return all(getattr(m, "additive", False) for m in self.score_mods)

    def bias(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor):
        total = self.score_mods[0].bias(b, h, q_idx, kv_idx)
        for other in self.score_mods[1:]:
            total = total + other.bias(b, h, q_idx, kv_idx)
        return total

    def __call__(self, scores, b, h, q_idx, kv_idx):
        for score_mod in self.score_mods:
            scores = score_mod(scores, b, h, q_idx, kv_idx)
        return scores

    def check_heads(self, num_heads: int):
        for score_mod in self.score_mods:
            if hasattr(score_mod, "check_heads"):
                score_mod.check_heads(num_heads)

    def cache_key(self):
        return (type(self).__qualname__,) + tuple(cache_key(m) for m in self.score_mods)

    def get_config(self):
        return {"score_mods": [serialize_term(m, "score_mods") for m in self.score_mods]}

    @classmethod
    def from_config(cls, config):
        return cls(*config["score_mods"])


def chain_score_mods(*score_mods):
    """One score modifier applying `score_mods` in order; None entries are
    skipped, and a single one is returned as it is."""
    score_mods = [m for m in score_mods if m is not None]
    if len(score_mods) <= 1:
        return score_mods[0] if score_mods else None
    return ChainedScoreMods(*score_mods)


def alibi_slopes(num_heads: int):
    """ALiBi's per-head slopes (Press et al. 2022) as a float64 NumPy array.

    For a power of two `n`, the geometric sequence starting at and with ratio
    `2 ** (-8 / n)`; otherwise the slopes of the nearest lower power of two
    followed by every other slope of the next one, as in the paper's code.
    """
    _checks.check_positive_int("num_heads", num_heads)

    def power_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = power_of_two(closest)
    if closest != num_heads:
        slopes += power_of_two(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(slopes, dtype="float64")


@register
class Alibi(ScoreMod):
    """ALiBi: subtracts `slope[h] * |q_idx - kv_idx|` from the scores.

    For causal attention this is the paper's `-slope * (i - j)`; for
    bidirectional attention the distance is symmetric. The slopes are those
    of `alibi_slopes(num_heads)`; the attention must have `num_heads`
    query heads. With `split_directions`, head `h` takes slope
    `alibi_slopes(ceil(num_heads / 2))[h // 2]`: each pair of heads shares a
    slope, for `split_directions_mask` to point one head of the pair each way.
    """

    _keyed_by_config = True

    def __init__(self, num_heads: int, split_directions: bool = False):
        _checks.check_positive_int("num_heads", num_heads)
        self.num_heads = int(num_heads)
        self.split_directions = bool(split_directions)
        if self.split_directions:
            slopes = np.repeat(alibi_slopes((self.num_heads + 1) // 2), 2)[: self.num_heads]
        else:
            slopes = alibi_slopes(self.num_heads)
        self._slopes = ops.convert_to_tensor(slopes, "float32")

    def bias(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor):
        slope = ops.take(self._slopes, h)  # (1, N, 1, 1)
        return -slope * ops.cast(ops.abs(q_idx - kv_idx), "float32")

    def check_heads(self, num_heads: int):
        if num_heads is not None and num_heads != self.num_heads:
            raise ValueError(
                f"alibi({self.num_heads}) has one slope per head and needs "
                f"{self.num_heads} query heads. Received: {num_heads} query heads; "
                f"build it with alibi({num_heads}).")

    def get_config(self):
        return {"num_heads": self.num_heads, "split_directions": self.split_directions}


def soft_cap(cap: float):
    """`cap * tanh(scores / cap)` (Gemma 2, Grok). Same as `logit_soft_cap`."""
    return SoftCap(cap)


def alibi(num_heads: int, split_directions: bool = False):
    """ALiBi: subtracts `slope[h] * |q_idx - kv_idx|` from the scores.

    For causal attention this is the paper's `-slope * (i - j)`; for
    bidirectional attention the distance is symmetric, and the scores alone
    cannot tell a key on the left from one on the right at the same
    distance. `split_directions=True` gives each pair of heads one slope
    (`alibi_slopes(ceil(num_heads / 2))`), for bidirectional attention
    together with `mask_mod=attnkit.ops.split_directions_mask()`, which
    turns even heads to the left and odd heads to the right. The attention
    must have `num_heads` query heads.
    """
    return Alibi(num_heads, split_directions=split_directions)
