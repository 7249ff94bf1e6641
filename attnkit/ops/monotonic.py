"""Monotonic alignments: attention that only moves forward over the memory.

Raffel et al. 2017 ("Online and Linear-Time Attention by Enforcing Monotonic
Alignments"): at output step `i` the decoder scans the memory from where it
stopped at step `i - 1` and stops at position `j` with probability
`p[i, j]` (a sigmoid of an energy). Training uses the expected alignment,
which this module computes in parallel over the memory axis; test time uses
the hard decision `p > 0.5`. Chiu & Raffel 2018 (MoChA) then spread each
stop over a chunk of `w` positions ending there, with a softmax of a second
energy.

Shape legend: any leading axes (e.g. B batch), S memory length (last axis).
"""

from keras import ops

from attnkit import _checks
from attnkit.types import Tensor

MODES = ("exact", "parallel", "recursive", "hard")

# cumprod(1 - p) divides the expected alignment; clipping it at this value
# (as Raffel et al.'s reference code does) keeps the division finite when a
# probability saturates at 1.
_CUMPROD_FLOOR = 1e-10
# log(1 - p) floor of the exact form: a probability of exactly 1 still
# stops (almost) all mass, and its gradient stays finite.
_LOG_FLOOR = 1e-30


def safe_cumprod(x: Tensor, axis: int = -1, exclusive: bool = False):
    """Cumulative product of `x` in `[0, 1]` as `exp(cumsum(log(x)))`.

    `x` is clipped to `[1e-10, 1]` first, so a product of many small
    factors underflows gracefully and its gradient stays finite.
    `exclusive=True` starts with 1 (position `j` multiplies `x[..., :j]`).
    """
    logs = ops.log(ops.clip(x, _CUMPROD_FLOOR, 1.0))
    total = ops.cumsum(logs, axis=axis)
    if exclusive:
        total = total - logs
    return ops.exp(total)


def monotonic_alignment(p_choose: Tensor, previous: Tensor, mode: str = "exact"):
    """The monotonic alignment of one output step.

    `alpha[j] = p[j] * q[j]` with `q[j] = (1 - p[j-1]) q[j-1] + previous[j]`
    (Raffel et al. 2017, eq. 10-11): the probability that the scan, started
    where `previous` put it, reaches `j` and stops there.

    Args:
        p_choose: `(..., S)` stopping probabilities in `[0, 1]` (0 on
            padding).
        previous: `(..., S)` the alignment of the previous output step; a
            one-hot on position 0 before the first step.
        mode: how to compute it:

            - `"exact"`: the expected alignment in parallel over the
              memory, `q[j] = sum_{k <= j} previous[k] prod_{k <= l < j}
              (1 - p[l])` with each product a sum of logarithms of its own
              (no division): exact for any probabilities, `O(S^2)` memory
              per step. For training, with memories up to hundreds long.
            - `"parallel"`: the paper's closed form (eq. 12), `p *
              cumprod(1 - p) * cumsum(previous / cumprod(1 - p))`, `O(S)`
              memory. It clips `cumprod(1 - p)` at 1e-10 as the paper's
              code does, so it loses mass once that product falls below
              1e-10 (probabilities near 1 early in the memory).
            - `"recursive"`: the recursion above as a loop over a static
              `S`: exact, slower.
            - `"hard"`: test-time decisions `p > 0.5`: a one-hot on the
              first position at or after the previous stop that chooses,
              or all zeros when none does (the context is then 0).

    Returns:
        `(..., S)` alignment; it sums to at most 1 (the rest of the mass
        ran off the end of the memory).

    Example:

        >>> p = keras.ops.convert_to_tensor([[0.2, 0.9, 0.6]])
        >>> start = keras.ops.convert_to_tensor([[1.0, 0.0, 0.0]])
        >>> alpha = attnkit.ops.monotonic_alignment(p, start, mode="hard")
        >>> print(keras.ops.convert_to_numpy(alpha))
        [[0. 1. 0.]]
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}.")
    p_choose = _checks.as_float_tensor("p_choose", p_choose)
    previous = _checks.as_float_tensor("previous", previous)
    if tuple(p_choose.shape) != tuple(previous.shape) and None not in p_choose.shape:
        raise ValueError(
            "`p_choose` and `previous` must have the same shape. Received: "
            f"p_choose.shape={tuple(p_choose.shape)}, previous.shape={tuple(previous.shape)}.")
    previous = ops.cast(previous, p_choose.dtype)
    if mode == "hard":
        # Only positions at or after the previous stop may choose; the
        # exclusive cumprod keeps the first one that does.
        chosen = ops.cast(ops.greater(p_choose, 0.5), p_choose.dtype)
        chosen = chosen * ops.cumsum(previous, axis=-1)
        return chosen * _exclusive_keep(chosen)
    if mode == "recursive":
        return _recursive(p_choose, previous)
    if mode == "exact":
        return p_choose * _reached_exact(p_choose, previous)
    kept = safe_cumprod(1.0 - p_choose, exclusive=True)  # prod_{k<j} (1 - p[k])
    reached = ops.cumsum(previous / ops.clip(kept, _CUMPROD_FLOOR, 1.0), axis=-1)
    return p_choose * kept * reached


def _exclusive_keep(chosen):
    """1 where no earlier position chose, for binary `chosen`: the
    exclusive cumprod of `1 - chosen`, exact and without a product."""
    return 1.0 - ops.minimum(ops.cumsum(chosen, axis=-1) - chosen, 1.0)


def _reached_exact(p_choose, previous):
    """`q[j] = sum_{k <= j} previous[k] exp(sum_{k <= l < j} log(1 - p[l]))`.
    Each pair's sum runs over its own terms (an exclusive cumsum down the
    rows of `logs[l] * [l >= k]`), so no large sums cancel."""
    logs = ops.log(ops.clip(1.0 - p_choose, _LOG_FLOOR, 1.0))  # (..., S)
    length = p_choose.shape[-1] if p_choose.shape[-1] is not None else ops.shape(p_choose)[-1]
    positions = ops.arange(length)
    from_k = ops.cast(positions[:, None] >= positions[None, :], logs.dtype)  # (l, k): l >= k
    terms = ops.expand_dims(logs, -1) * from_k  # (..., l, k)
    sums = ops.cumsum(terms, axis=-2) - terms  # (..., j, k): sum over k <= l < j
    reach = ops.where(from_k > 0, ops.exp(sums), 0.0)  # (..., j, k), zero for k > j
    return ops.einsum("...jk,...k->...j", reach, previous)


def _recursive(p_choose, previous):
    length = p_choose.shape[-1]
    if length is None:
        raise ValueError("mode='recursive' needs a static memory length S.")
    q = previous[..., 0]
    alphas = [p_choose[..., 0] * q]
    for j in range(1, length):
        q = (1.0 - p_choose[..., j - 1]) * q + previous[..., j]
        alphas.append(p_choose[..., j] * q)
    return ops.stack(alphas, axis=-1)


def chunkwise_alignment(monotonic: Tensor, chunk_energies: Tensor, chunk_size: int | None,
                        mask: Tensor | None = None):
    """MoChA's attention: each monotonic stop spread over the `chunk_size`
    positions ending there, by a softmax of `chunk_energies`.

    `beta[j] = exp(u[j]) * sum_{k=j}^{j+w-1} alpha[k] / sum_{l=k-w+1}^{k}
    exp(u[l])` (Chiu & Raffel 2018, eq. 20), which with a one-hot `alpha`
    (hard monotonic decisions) is the softmax of `u` over the window ending
    at the stop.

    Args:
        monotonic: `(..., S)` the monotonic alignment `alpha`.
        chunk_energies: `(..., S)` the chunk energies `u`.
        chunk_size: `w`, a positive int; 1 returns `monotonic`.
        mask: optional `(..., S)` boolean, True = real memory position.

    Returns:
        `(..., S)` the chunkwise alignment; it sums to what `monotonic`
        sums to.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive int. Received: {chunk_size!r}.")
    if chunk_size == 1:
        return monotonic
    u = chunk_energies
    monotonic = _checks.as_float_tensor("monotonic", monotonic)
    u = _checks.as_float_tensor("chunk_energies", u)
    if tuple(u.shape) != tuple(monotonic.shape):
        raise ValueError(
            "`monotonic` and `chunk_energies` must have the same shape. Received: "
            f"monotonic.shape={tuple(monotonic.shape)}, "
            f"chunk_energies.shape={tuple(u.shape)}.")
    if mask is not None:
        mask = ops.cast(mask, "bool")
        u = ops.where(mask, u, ops.cast(-1e9, u.dtype))
    # Shifting by the row maximum is exact for the ratio and keeps exp finite.
    exp_u = ops.exp(u - ops.stop_gradient(ops.max(u, axis=-1, keepdims=True)))
    if mask is not None:
        exp_u = ops.where(mask, exp_u, ops.zeros_like(exp_u))
    denominators = _window_sum(exp_u, chunk_size, backward=True)  # sum over l in (k-w, k]
    share = monotonic / ops.maximum(denominators, 1e-30)
    return exp_u * _window_sum(share, chunk_size, backward=False)  # sum over k in [j, j+w)


def _window_sum(x, width, backward):
    """Sums of `width` neighbours along the last axis: positions
    `(j - width, j]` if `backward`, else `[j, j + width)`; zeros beyond
    the ends. `width` shifted slices: exact, and cheap for the small
    chunk sizes MoChA uses."""
    length = x.shape[-1] if x.shape[-1] is not None else ops.shape(x)[-1]
    pad = [(0, 0)] * (len(x.shape) - 1)
    padded = ops.pad(x, pad + ([(width - 1, 0)] if backward else [(0, width - 1)]))
    total = None
    for d in range(width):
        part = padded[..., d:d + length]
        total = part if total is None else total + part
    return total
