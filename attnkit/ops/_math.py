"""The reference implementation path: the whole (B, N, T, S) score tensor.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

from keras import backend
from keras import ops
from keras import random

from attnkit.ops import _scores
from attnkit.ops import _validation

# Where every key is visible and every logit finite, the framework's softmax
# replaces our masked one: one fused kernel on TensorFlow (1.5x faster
# forward+backward at L = 1024) and PyTorch. On JAX (XLA:CPU) it wins up to
# this many score elements (2x forward at L = 128, B = 64) and loses past it
# (1.5x slower forward at L = 1024, B = 8). Measured side by side, 2 cores.
FRAMEWORK_SOFTMAX_MAX_ELEMENTS = {"jax": 1 << 24}


def math_attention(plan):
    """Returns (output (B, T, N, Hv), weights (B, N, T, S))."""
    t, s = _scores.dims(plan.query)[1], _scores.dims(plan.key)[1]
    one_hot = _scores.block_one_hot(plan, 0, t, 0, s)  # (T, S, R) or None
    logits, visible = _scores.block_scores(
        plan, plan.query, plan.key, mask=plan.mask, bias=plan.bias, one_hot=one_hot
    )  # (B, N, T, S)
    if _framework_softmax(plan, logits, visible):
        weights = ops.softmax(logits, axis=-1)
    else:
        weights = _scores.masked_softmax(logits, visible)
    dropped = weights
    if plan.dropout_active:
        dropped = random.dropout(weights, plan.dropout_rate, seed=plan.seed)
    out = _scores.weighted_values(plan, dropped, plan.value)  # (B, N, T, Hv)
    if one_hot is not None and plan.relative.value_table is not None:
        out = out + _scores.relative_values(plan, _scores.bucket_sums(dropped, one_hot))
    return ops.transpose(out, (0, 2, 1, 3)), weights


def _framework_softmax(plan, logits, visible):
    """Whether `ops.softmax` computes these weights (see the constant above)."""
    if visible is not None or plan.bias is not None or plan.score_mod is not None:
        return False  # hidden keys, or -inf logits: rows may be all hidden
    if logits.shape[-1] == 1:
        return False  # keras warns about a softmax over one element
    limit = FRAMEWORK_SOFTMAX_MAX_ELEMENTS.get(backend.backend())
    if limit is None:
        return True
    size = _validation.score_elements(plan)
    return size is not None and size <= limit
