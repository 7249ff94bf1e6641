"""Score modifiers for the `score_mod=` argument of `attnkit.ops.attention`.

Each builder returns `score_mod(scores, b, h, q_idx, kv_idx) -> scores` on
scores `(B, N, t, s)` and broadcasting int32 indices (`q_idx` absolute).
"""

import math
import numbers

import numpy as np
from keras import ops


def soft_cap(cap):
    """`cap * tanh(scores / cap)` (Gemma 2, Grok). Same as `logit_soft_cap`."""
    if not isinstance(cap, numbers.Real) or cap <= 0:
        raise ValueError(f"`cap` must be a positive number. Received: {cap!r}.")

    def score_mod(scores, b, h, q_idx, kv_idx):
        c = float(cap)  # a Python float keeps the scores' precision
        return c * ops.tanh(scores / c)

    return score_mod


def alibi_slopes(num_heads):
    """ALiBi's per-head slopes (Press et al. 2022) as a float64 NumPy array.

    For a power of two `n`, the geometric sequence starting at and with ratio
    `2 ** (-8 / n)`; otherwise the slopes of the nearest lower power of two
    followed by every other slope of the next one, as in the paper's code.
    """
    if isinstance(num_heads, bool) or not isinstance(num_heads, numbers.Integral) or num_heads <= 0:
        raise ValueError(
            f"`num_heads` must be a positive int. Received: {num_heads!r}."
        )

    def power_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = power_of_two(closest)
    if closest != num_heads:
        slopes += power_of_two(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(slopes, dtype="float64")


def alibi(num_heads):
    """ALiBi: subtracts `slope[h] * |q_idx - kv_idx|` from the scores.

    For causal attention this is the paper's `-slope * (i - j)`; for
    bidirectional attention the distance is symmetric.
    """
    slopes = ops.convert_to_tensor(alibi_slopes(num_heads), "float32")

    def score_mod(scores, b, h, q_idx, kv_idx):
        slope = ops.cast(ops.take(slopes, h), scores.dtype)
        distance = ops.cast(ops.abs(q_idx - kv_idx), scores.dtype)
        return scores - slope * distance

    return score_mod
