"""The fused path: the backend's native attention kernel.

attnkit sends a call there only when the request means exactly the same
thing; this module says when that is, and hides the two places where the
kernels differ from the attnkit semantics (fully-masked rows, and bias
together with a mask).

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

from keras import ops

from attnkit import _backends
from attnkit.ops import _blocks


def option_refusals(*, normalizer="softmax", weights_mod=None, score_mod=None,
                    logit_soft_cap=None):
    """What among options fixed before any call (those of an
    `AttentionSpec`) the native kernels cannot compute: a list of reasons,
    each naming its option, empty when they can."""
    refusals = []
    if normalizer != "softmax":
        refusals.append(f"normalizer={normalizer!r}: the native kernels compute softmax, "
                        f"not {normalizer}")
    if weights_mod is not None:
        refusals.append("weights_mod: the native kernels never hold the weights weights_mod "
                        "changes")
    if score_mod is not None and not getattr(score_mod, "additive", False):
        refusals.append("score_mod: a Python function the native kernels cannot run (only "
                        "additive attnkit.ops.ScoreMod terms reach them, as a bias)")
    if logit_soft_cap is not None:
        refusals.append("logit_soft_cap: keras's native soft cap is not c * tanh(s / c)")
    return refusals


def ineligible_reason(plan):
    """Why the native kernel cannot compute `plan` exactly, or None."""
    early = option_refusals(normalizer=plan.normalizer, weights_mod=plan.weights_mod)
    if early:
        return early[0]
    if plan.return_weights:
        return "the native kernels do not return attention weights"
    if plan.dropout_active:
        return "the native kernels have no dropout on the weights"
    if plan.relative is not None and plan.relative.value_table is not None:
        return "the native kernels cannot add relative-position value terms"
    late = option_refusals(score_mod=plan.score_mod, logit_soft_cap=plan.logit_soft_cap)
    if late:
        return late[0]
    return _backends.native_kernel_refuses(plan)


def materializes(plan):
    """Whether the kernel would need a dense (B?, N, T, S) bias built from
    relative rows or an additive score_mod (eligible, but not memory-lean)."""
    return plan.relative is not None or plan.score_mod is not None


def _dense_bias(plan):
    """plan.bias plus the relative rows and additive score_mod, (B?, N?, T, S)."""
    bias = plan.bias
    if not materializes(plan):
        return bias
    b, t = _blocks.dims(plan.query)[:2]
    s = _blocks.dims(plan.key)[1]
    extra = ops.zeros((1, 1, 1, 1), dtype=plan.compute_dtype)
    if plan.relative is not None:
        extra = _blocks.bucket_rows(_blocks.relative_rows(plan, plan.query),
                                   _blocks.block_one_hot(plan, 0, t, 0, s))
    if plan.score_mod is not None:
        extra = plan.score_mod(extra, *_blocks.indices(plan, b, 0, t, 0, s))
    return extra if bias is None else bias + extra


def _is_plain_causal(plan):
    """True when `is_causal` alone can go to the kernel as its own flag
    (PyTorch's SDPA takes no bias beside it)."""
    return (
        plan.is_causal
        and isinstance(plan.q_offset, int)
        and plan.q_offset == 0
        and plan.bias is None
        and not materializes(plan)
        and plan.mask is None
        and plan.sliding_window is None
        and not plan.mask_mods
    )


def fused_attention(plan):
    """Returns the output (B, T, N, Hv)."""
    query, key, value = plan.query, plan.key, plan.value  # compute dtype
    bias = _dense_bias(plan)
    visible, row_has_key = None, None
    plain_causal = _is_plain_causal(plan)
    if not plain_causal:
        b, t, _, _ = _blocks.dims(query)
        visible = _blocks.block_visibility(
            plan, b, 0, t, 0, _blocks.dims(key)[1], mask=plan.mask
        )
    if visible is not None:
        # The kernels give a uniform (or NaN) row where no key is visible;
        # show them every key there and zero those rows afterwards.
        row_has_key = ops.any(visible, axis=-1, keepdims=True)  # (B?, N?, T, 1)
        visible = ops.logical_or(visible, ops.logical_not(row_has_key))
        if bias is not None:  # keras takes a bias or a mask, not both
            bias = ops.where(visible, bias, _blocks.NEG)
            visible = None
    out = _backends.native_attention(
        query, key, value, bias=bias, mask=visible, scale=plan.scale,
        is_causal=plain_causal, grouped=plan.groups > 1,
    )  # (B, T, N, Hv)
    if row_has_key is not None:
        keep = ops.transpose(row_has_key, (0, 2, 1, 3))  # (B?, T, N?, 1)
        out = ops.where(keep, out, 0.0)
    return out
