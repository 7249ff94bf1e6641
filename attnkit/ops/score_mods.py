"""Score modifier builders for the `score_mod=` argument of `attnkit.ops.attention`.

Each returns a score term (`attnkit.ops.terms`), a saveable object called
as `score_mod(scores, b, h, q_idx, kv_idx) -> scores` on scores
`(B, N, t, s)` and broadcasting int32 indices (`q_idx` absolute).
"""

from attnkit.ops import terms
from attnkit.ops.terms import alibi_slopes  # noqa: F401  (public here too)


def soft_cap(cap: float):
    """`cap * tanh(scores / cap)` (Gemma 2, Grok). Same as `logit_soft_cap`."""
    return terms.SoftCap(cap)


def alibi(num_heads: int):
    """ALiBi: subtracts `slope[h] * |q_idx - kv_idx|` from the scores.

    For causal attention this is the paper's `-slope * (i - j)`; for
    bidirectional attention the distance is symmetric. The attention must
    have `num_heads` query heads.
    """
    return terms.Alibi(num_heads)
