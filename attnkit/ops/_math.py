"""The reference implementation path: the whole (B, N, T, S) score tensor.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

from keras import ops
from keras import random

from attnkit.ops import _scores


def math_attention(plan):
    """Returns (output (B, T, N, Hv), weights (B, N, T, S))."""
    logits, visible = _scores.block_scores(
        plan, plan.query, plan.key, mask=plan.mask, bias=plan.bias
    )  # (B, N, T, S)
    weights = _scores.masked_softmax(logits, visible)
    dropped = weights
    if plan.dropout_active:
        dropped = random.dropout(weights, plan.dropout_rate, seed=plan.seed)
    out = _scores.weighted_values(plan, dropped, plan.value)  # (B, N, T, Hv)
    return ops.transpose(out, (0, 2, 1, 3)), weights
