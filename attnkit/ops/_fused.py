"""The one dispatch module for the backends' native attention kernels.

`keras.ops.dot_product_attention` reaches PyTorch's SDPA (a CPU flash kernel),
JAX's `dot_product_attention` and cuDNN where available. attnkit sends a call
there only when the request means exactly the same thing; this module says
when that is, and hides the two places where the kernels differ from the
attnkit semantics (fully-masked rows, and bias together with a mask). It also says
whether a keras custom gradient can be traced where the call runs.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

from keras import backend
from keras import ops

from attnkit.ops import _scores


def ineligible_reason(plan):
    """Why the native kernel cannot compute `plan` exactly, or None."""
    if plan.return_weights:
        return "the native kernels do not return attention weights"
    if plan.dropout_active:
        return "the native kernels have no dropout on the weights"
    if plan.relative is not None:
        return "the native kernels cannot add relative-position terms"
    if plan.score_mod is not None:
        return "score_mod is a Python function the native kernels cannot run"
    if plan.logit_soft_cap is not None:
        return "keras's native soft cap is not c * tanh(s / c)"
    if backend.backend() == "jax" and plan.value.shape[-1] != plan.key.shape[-1]:
        return "JAX's kernel needs the value head dim equal to the key head dim"
    return None


def custom_gradient_traceable():
    """False while TorchDynamo traces: keras's PyTorch custom gradient is a
    `torch.autograd.Function` it cannot compile. True everywhere else."""
    if backend.backend() != "torch":
        return True
    import torch

    return not torch.compiler.is_compiling()


def _is_plain_causal(plan):
    """True when `is_causal` alone can go to the kernel as its own flag."""
    return (
        plan.is_causal
        and isinstance(plan.q_offset, int)
        and plan.q_offset == 0
        and plan.mask is None
        and plan.sliding_window is None
        and plan.mask_mod is None
    )


def fused_attention(plan):
    """Returns the output (B, T, N, Hv)."""
    query, key, value = plan.query, plan.key, plan.value  # compute dtype
    bias = plan.bias
    visible, row_has_key = None, None
    plain_causal = _is_plain_causal(plan)
    if not plain_causal:
        b, t, _, _ = _scores.dims(query)
        visible = _scores.block_visibility(
            plan, b, 0, t, 0, _scores.dims(key)[1], mask=plan.mask
        )
    if visible is not None:
        # The kernels give a uniform (or NaN) row where no key is visible;
        # show them every key there and zero those rows afterwards.
        row_has_key = ops.any(visible, axis=-1, keepdims=True)  # (B?, N?, T, 1)
        visible = ops.logical_or(visible, ops.logical_not(row_has_key))
        if bias is not None:  # keras takes a bias or a mask, not both
            bias = ops.where(visible, bias, _scores.NEG)
            visible = None
    kernel = _torch_sdpa if backend.backend() == "torch" else _keras_kernel
    out = kernel(
        query, key, value, bias=bias, mask=visible, scale=plan.scale,
        is_causal=plain_causal, grouped=plan.groups > 1,
    )  # (B, T, N, Hv)
    if row_has_key is not None:
        keep = ops.transpose(row_has_key, (0, 2, 1, 3))  # (B?, T, N?, 1)
        out = ops.where(keep, out, 0.0)
    return out


def _keras_kernel(query, key, value, *, bias, mask, scale, is_causal, grouped):
    if grouped and key.shape[2] == 1 and backend.backend() == "tensorflow":
        # keras 3.15's TensorFlow kernel repeats K > 1 heads but fails on K = 1.
        key = ops.repeat(key, query.shape[2], axis=2)
        value = ops.repeat(value, query.shape[2], axis=2)
    return ops.dot_product_attention(
        query, key, value, bias=bias, mask=mask, scale=scale,
        is_causal=is_causal,
    )


def _torch_sdpa(query, key, value, *, bias, mask, scale, is_causal, grouped):
    # Called directly rather than through keras: keras's wrapper cannot be
    # traced by TorchDynamo, and `enable_gqa` reads grouped key/value heads
    # without copying them.
    import torch.nn.functional as F

    q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # (B, N, T, H)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias if bias is not None else mask,
        is_causal=is_causal, scale=scale, enable_gqa=grouped,
    )
    return out.transpose(1, 2)
