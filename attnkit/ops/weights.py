"""Attention weights from scores a layer computed itself: the core's own
normalization, for layers whose scores are not a dot product of heads (an
additive alignment model, a monotonic or stateful attention).

Shape legend: any leading axes, S the keys (the normalized axis).
"""

from keras import backend
from keras import ops

from attnkit import _backends
from attnkit import _checks
from attnkit.ops import _math
from attnkit.types import Tensor


def attention_weights(scores: Tensor, mask: Tensor | None = None,
                      normalizer: str = "softmax") -> Tensor:
    """Weights over the last axis of `scores` `(..., S)`.

    Args:
        scores: float scores; half precision is normalized in float32.
        mask: optional boolean tensor broadcastable to `scores`, True =
            may get weight.
        normalizer: `"softmax"`, `"sparsemax"` or `"entmax15"`.

    Returns:
        Weights like `scores` (same dtype), summing to 1 over the visible
        keys; a row with no visible key is exactly 0.
    """
    _checks.check_normalizer(normalizer)
    dtype = backend.standardize_dtype(scores.dtype)
    logits = ops.cast(scores, _backends.compute_dtype_for(dtype))
    if mask is not None:
        mask = ops.cast(mask, "bool")
    return ops.cast(_math.normalize_weights(logits, mask, normalizer), dtype)
