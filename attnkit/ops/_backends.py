"""Every backend workaround of the core, and the native kernels, in one module.

`keras.ops.dot_product_attention` reaches JAX's kernel and cuDNN where
available; PyTorch's SDPA (a CPU flash kernel) is called directly. Nothing
else in attnkit asks which backend runs.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

from keras import backend
from keras import ops

from attnkit.ops import _thresholds


def name():
    """The keras backend: "tensorflow", "jax" or "torch"."""
    return backend.backend()


def custom_gradient_traceable():
    """False while TorchDynamo traces: keras's PyTorch custom gradient is a
    `torch.autograd.Function` it cannot compile. True everywhere else."""
    if backend.backend() != "torch":
        return True
    import torch

    return not torch.compiler.is_compiling()


def fit_fixes_batch_shapes():
    """Whether keras's `fit` on a `PyDataset` turns the shapes of its first
    batches into one signature for every batch (TensorFlow's tf.data):
    dimensions the peeked batches share are fixed, the others unknown."""
    return backend.backend() == "tensorflow"


def branches_in_loops():
    """Whether a data-dependent `ops.cond` may run inside the chunked loops.

    Not on PyTorch: its loops run in Python, so only a tensor query offset
    would be traced, and a branch on it would break a `torch.compile` graph.
    """
    return backend.backend() != "torch"


def as_graph(fn, tensors):
    """`fn(*tensors)`, run as one graph where the backend would run it op by op.

    Eager TensorFlow (a `GradientTape` outside `tf.function`) runs the
    chunked loops in Python, one op at a time, keeping a copy of every
    accumulator per block; as a `tf.function` the same loops take half the
    time and a third of the memory. Everywhere else `fn` runs as it is.
    """
    if backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.executing_eagerly():
            return tf.function(fn, autograph=False)(*tensors)
    return fn(*tensors)


def native_kernel_refuses(plan):
    """A reason the native kernel of this backend cannot run `plan`, or None."""
    if backend.backend() == "jax" and plan.value.shape[-1] != plan.key.shape[-1]:
        return "JAX's kernel needs the value head dim equal to the key head dim"
    return None


def native_attention(query, key, value, *, bias, mask, scale, is_causal, grouped):
    """The backend's fused kernel: output (B, T, N, Hv)."""
    if backend.backend() == "torch":
        return _torch_sdpa(query, key, value, bias=bias, mask=mask, scale=scale,
                           is_causal=is_causal, grouped=grouped)
    if grouped and key.shape[2] == 1 and backend.backend() == "tensorflow":
        # keras 3.15's TensorFlow kernel repeats K > 1 heads but fails on K = 1.
        key = ops.repeat(key, query.shape[2], axis=2)
        value = ops.repeat(value, query.shape[2], axis=2)
    return ops.dot_product_attention(
        query, key, value, bias=bias, mask=mask, scale=scale, is_causal=is_causal)


def _torch_sdpa(query, key, value, *, bias, mask, scale, is_causal, grouped):
    # Called directly rather than through keras: keras's wrapper cannot be
    # traced by TorchDynamo, and `enable_gqa` reads grouped key/value heads
    # without copying them.
    import torch.nn.functional as F

    q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # (B, N, T, H)
    if (key.shape[1] or 0) >= _thresholds.TORCH_CONTIGUOUS_FROM_KEYS:
        q, k, v = (x.contiguous() for x in (q, k, v))
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias if bias is not None else mask,
        is_causal=is_causal, scale=scale, enable_gqa=grouped,
    )
    return out.transpose(1, 2)


def write(total, start, update, add=False):
    """`total` with `update` written (or, with `add`, added) at `start`.

    keras's PyTorch `slice_update` clones the whole tensor, which the chunked
    loops would do at every block; outside autograd (the chunked path's own
    forward and backward, whose buffers are fresh) PyTorch writes in place.
    """
    if _torch_in_place(start):
        index = tuple(slice(a, a + n) for a, n in zip(start, update.shape))
        if add:
            total[index] += update
        else:
            total[index] = update
        return total
    if add:
        update = ops.slice(total, start, ops.shape(update)) + update
    if backend.backend() == "tensorflow" and not _tf_in_xla():
        return _tf_write(total, start, update)
    return ops.slice_update(total, start, update)


def _tf_in_xla():
    """Whether TensorFlow is tracing for XLA (`jit_compile=True`)."""
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


def _tf_write(total, start, update):
    # keras's TensorFlow `slice_update` is XLA's dynamic update slice, which
    # outside XLA compiles on demand and copies the whole tensor at every
    # block; TensorFlow's own strided-slice update reuses the buffer when
    # nothing else holds it (XLA needs constant bounds for it, so under
    # jit_compile the first runs instead).
    import tensorflow as tf

    begin = tf.stack([tf.cast(a, "int32") for a in start])
    end = begin + tf.shape(update, out_type="int32")
    return tf.raw_ops.TensorStridedSliceUpdate(
        input=total, begin=begin, end=end, strides=tf.ones_like(begin), value=update)


def _torch_in_place(start):
    if backend.backend() != "torch" or not all(isinstance(a, int) for a in start):
        return False
    import torch

    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def sequential(index, carried):
    """`index`, made to depend on the loop's `carried` tensor.

    TensorFlow's while loop runs up to ten iterations at once wherever the
    data allow: every block's scores would be live together. Reading the
    next block's position through the previous block's result (a term that
    is always 0) keeps the blocks one after another.
    """
    if backend.backend() != "tensorflow" or isinstance(index, int):
        return index
    first = ops.reshape(carried, (-1,))[:1]
    return index + ops.minimum(ops.cast(ops.sum(ops.cast(ops.isnan(first), "int32")), "int32"), 0)
