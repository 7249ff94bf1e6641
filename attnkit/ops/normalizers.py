"""Normalizers of attention scores: softmax and two sparse alternatives.

`sparsemax` (Martins & Astudillo 2016) is the Euclidean projection of the
scores onto the probability simplex; `entmax15` is 1.5-entmax (Peters,
Niculae & Martins 2019), between softmax and sparsemax. Both give weights
that are exactly zero for low scores, and both are differentiable almost
everywhere with an exact gradient: the support is found by sorting (no
gradient flows through the sort), then the threshold `tau` is recomputed
from the supported scores in closed form, so autodiff yields the papers'
Jacobians.

Shape legend: any leading axes, D the normalized axis.
"""

from keras import ops

from attnkit.types import Tensor

# After shifting by the row maximum, both maps give zero weight below -1
# (sparsemax: tau >= max - 1; 1.5-entmax on z / 2: tau >= max / 2 - 1), so
# hidden and very low scores are clipped to this finite value, with a margin:
# no inf - inf in the cumulative sums, and no gradient (off the support).
_FLOOR = -3.0


def sparsemax(logits: Tensor, axis: int = -1, mask: Tensor | None = None):
    """Sparsemax: `argmin_p ||p - z||^2` over the probability simplex.

    `p_i = max(z_i - tau, 0)` with `tau` such that the weights sum to 1.

    Args:
        logits: float tensor `z`.
        axis: the axis normalized.
        mask: optional boolean tensor broadcastable to `logits`, True =
            may get weight. `-inf` logits are hidden too.

    Returns:
        Weights like `logits`: non-negative, summing to 1 over `axis`; a
        row with nothing visible is all zeros (with zero gradient).

    Example:

        >>> p = attnkit.ops.sparsemax(keras.ops.convert_to_tensor([[1.0, 0.5, -1.0]]))
        >>> print(keras.ops.convert_to_numpy(p).round(3))
        [[0.75 0.25 0.  ]]
    """
    return _normalize(logits, axis, mask, _sparsemax_rows)


def entmax15(logits: Tensor, axis: int = -1, mask: Tensor | None = None):
    """1.5-entmax: `p_i = max(z_i / 2 - tau, 0) ** 2`, summing to 1.

    Sparse like sparsemax but smoother (its weights are differentiable in
    the scores where sparsemax's are piecewise linear). Arguments and return
    as `sparsemax`.

    Example:

        >>> p = attnkit.ops.entmax15(keras.ops.convert_to_tensor([[2.0, 1.0, -2.0]]))
        >>> print(keras.ops.convert_to_numpy(p).round(3))
        [[0.831 0.169 0.   ]]
    """
    return _normalize(logits, axis, mask, _entmax15_rows)


def normalize(name: str, logits: Tensor, visible: Tensor | None = None):
    """Weights over the last axis by the sparse normalizer `name`
    (`"sparsemax"` or `"entmax15"`), `visible` a boolean mask or None."""
    if name == "sparsemax":
        return _normalize(logits, -1, visible, _sparsemax_rows)
    if name == "entmax15":
        return _normalize(logits, -1, visible, _entmax15_rows)
    raise ValueError(f"Unknown sparse normalizer {name!r}.")


def _normalize(logits, axis, mask, rows):
    logits = ops.convert_to_tensor(logits)
    dtype = logits.dtype
    if dtype not in ("float32", "float64"):
        logits = ops.cast(logits, "float32")
    visible = ops.not_equal(logits, float("-inf"))
    if mask is not None:
        visible = ops.logical_and(visible, ops.cast(mask, "bool"))
    last = axis in (-1, len(logits.shape) - 1)
    if not last:
        logits, visible = ops.moveaxis(logits, axis, -1), ops.moveaxis(visible, axis, -1)
    # The maps are shift invariant: shift by the visible maximum (no gradient).
    top = ops.amax(ops.where(visible, logits, float("-inf")), axis=-1, keepdims=True)
    any_visible = ops.isfinite(top)
    top = ops.stop_gradient(ops.where(any_visible, top, 0.0))
    x = ops.maximum(ops.where(visible, logits - top, _FLOOR), _FLOOR)
    p = ops.where(ops.logical_and(visible, any_visible), rows(x), 0.0)
    if not last:
        p = ops.moveaxis(p, -1, axis)
    return ops.cast(p, dtype)


def _descending(x):
    """The rows sorted from largest, without gradient, and 1..D."""
    sorted_x = ops.flip(ops.sort(ops.stop_gradient(x), axis=-1), axis=-1)
    k = ops.cumsum(ops.ones_like(x), axis=-1)  # 1..D (D may be unknown while tracing)
    return sorted_x, k


def _sparsemax_rows(x):
    sorted_x, k = _descending(x)
    in_support = 1.0 + k * sorted_x > ops.cumsum(sorted_x, axis=-1)
    size = ops.sum(ops.cast(in_support, x.dtype), axis=-1, keepdims=True)  # >= 1
    tau = (ops.take_along_axis(ops.cumsum(sorted_x, axis=-1),
                               ops.cast(size, "int32") - 1, axis=-1) - 1.0) / size
    in_support = x > tau
    support = ops.cast(in_support, x.dtype)
    # tau again, from the supported scores themselves: its gradient is the
    # sparsemax Jacobian's (1 / |S| for every supported score).
    tau = (ops.sum(x * support, axis=-1, keepdims=True) - 1.0) / ops.sum(
        support, axis=-1, keepdims=True)
    return ops.where(in_support, x - tau, 0.0)


def _entmax15_rows(x):
    x = x / 2.0
    sorted_x, k = _descending(x)
    mean = ops.cumsum(sorted_x, axis=-1) / k
    mean_sq = ops.cumsum(sorted_x * sorted_x, axis=-1) / k
    delta = (1.0 - k * (mean_sq - mean * mean)) / k
    taus = mean - ops.sqrt(ops.maximum(delta, 0.0))
    size = ops.sum(ops.cast(taus <= sorted_x, x.dtype), axis=-1, keepdims=True)  # >= 1
    tau = ops.take_along_axis(taus, ops.cast(size, "int32") - 1, axis=-1)
    in_support = x > tau
    support = ops.cast(in_support, x.dtype)
    # tau from the supported scores: the root of sum_S (x - tau)^2 = 1 below
    # them, whose gradient is (x_j - tau) / sum_S (x - tau).
    n = ops.sum(support, axis=-1, keepdims=True)
    m = ops.sum(x * support, axis=-1, keepdims=True) / n
    variance = ops.sum(support * (x - m) ** 2, axis=-1, keepdims=True) / n
    tau = m - ops.sqrt(ops.maximum((1.0 - n * variance) / n, 1e-12))
    return ops.where(in_support, (x - tau) ** 2, 0.0)
