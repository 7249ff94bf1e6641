"""The reference implementation path: the whole (B, N, T, S) score tensor.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim, R relative buckets.
"""

from keras import ops
from keras import random

from attnkit import _backends
from attnkit.ops import _blocks
from attnkit.ops import _plan
from attnkit.ops import _thresholds
from attnkit.ops import normalizers


def math_attention(plan):
    """Returns (output (B, T, N, Hv), weights (B, N, T, S))."""
    t, s = _blocks.dims(plan.query)[1], _blocks.dims(plan.key)[1]
    one_hot = _blocks.block_one_hot(plan, 0, t, 0, s)  # (T, S, R) or None
    logits, visible = _blocks.block_scores(
        plan, plan.query, plan.key, mask=plan.mask, bias=plan.bias, one_hot=one_hot
    )  # (B, N, T, S)
    if plan.normalizer == "softmax" and _framework_softmax(plan, logits, visible):
        weights = ops.softmax(logits, axis=-1)
    else:
        weights = normalize_weights(logits, visible, plan.normalizer)
    if plan.weights_mod is not None:
        weights = plan.weights_mod(weights)
    dropped = weights
    if plan.dropout_active:
        dropped = random.dropout(weights, plan.dropout_rate, seed=plan.seed)
    out = _blocks.weighted_values(plan, dropped, plan.value)  # (B, N, T, Hv)
    if one_hot is not None and plan.relative.value_table is not None:
        out = out + _blocks.relative_values(plan, _blocks.bucket_sums(dropped, one_hot))
    return ops.transpose(out, (0, 2, 1, 3)), weights


def normalize_weights(logits, visible, normalizer):
    """Weights over the last axis of `logits` by `normalizer`, over the keys
    `visible` (bool, or None for all) shows; a row with none is exactly 0."""
    if normalizer != "softmax":
        return normalizers.normalize(normalizer, logits, visible)
    return _blocks.masked_softmax(logits, visible)


def _framework_softmax(plan, logits, visible):
    """Whether `ops.softmax` computes these weights (see `_thresholds`)."""
    if visible is not None or plan.bias is not None or plan.score_mod is not None:
        return False  # hidden keys, or -inf logits: rows may be all hidden
    if logits.shape[-1] == 1:
        return False  # keras warns about a softmax over one element
    limit = _thresholds.FRAMEWORK_SOFTMAX_MAX_ELEMENTS.get(_backends.name())
    if limit is None:
        return True
    size = _plan.score_elements(plan)
    return size is not None and size <= limit
