"""The reference implementation path: the whole (B, N, T, S) score tensor.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

from keras import ops
from keras import random

from attnkit.ops import _scores


def math_attention(plan):
    """Returns (output (B, T, N, Hv), weights (B, N, T, S))."""
    t, s = _scores.dims(plan.query)[1], _scores.dims(plan.key)[1]
    one_hot = _scores.block_one_hot(plan, 0, t, 0, s)  # (T, S, R) or None
    logits, visible = _scores.block_scores(
        plan, plan.query, plan.key, mask=plan.mask, bias=plan.bias, one_hot=one_hot
    )  # (B, N, T, S)
    weights = _scores.masked_softmax(logits, visible)
    dropped = weights
    if plan.dropout_active:
        dropped = random.dropout(weights, plan.dropout_rate, seed=plan.seed)
    out = _scores.weighted_values(plan, dropped, plan.value)  # (B, N, T, Hv)
    if one_hot is not None and plan.relative.value_table is not None:
        out = out + _scores.relative_values(plan, _scores.bucket_sums(dropped, one_hot))
    return ops.transpose(out, (0, 2, 1, 3)), weights
