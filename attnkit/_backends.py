"""The backend-specific code of the core and the models, in one module: the
core's workarounds and native kernels, and the models' compiled inference.

`keras.ops.dot_product_attention` reaches JAX's kernel and cuDNN where
available; PyTorch's SDPA (a CPU flash kernel) is called directly.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

import collections

import numpy as np
from keras import backend
from keras import ops


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


def is_concrete(x):
    """Whether `x` has a value now: a NumPy array or Python number, or a
    tensor outside any trace (not a JAX tracer, a TensorFlow graph tensor or
    a tensor under `torch.compile`)."""
    if isinstance(x, (np.ndarray, np.generic, bool, int, float)):
        return True
    name = backend.backend()
    if name == "jax":
        import jax

        return not isinstance(x, jax.core.Tracer)
    if name == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly() and not isinstance(x, tf.__internal__.SymbolicTensor)
    if name == "torch":
        import torch

        return not torch.compiler.is_compiling()
    return True


def to_numpy(x):
    """A concrete tensor's value as a NumPy array."""
    if backend.backend() == "torch" and hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(ops.convert_to_numpy(x))


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


# Compiled graphs of the chunked path by plan signature (see `as_graph`),
# least recently used first, with the plans they were traced from (which
# keep the terms their keys name by identity alive).
_GRAPHS = collections.OrderedDict()
_MAX_GRAPHS = 64


def as_graph(key, fn, tensors, owner=None):
    """`fn(*tensors)`, run as one compiled graph per `key`.

    Eager TensorFlow (a `GradientTape` outside `tf.function`) would run the
    chunked loops in Python, one op at a time, keeping a copy of every
    accumulator per block; eager JAX would trace every loop again at every
    call. So where the call is eager, `fn` becomes a `tf.function` or
    `jax.jit` traced once per `key` (the plan's signature: shapes, dtypes
    and options; `fn` must take every tensor it reads from `tensors`) and
    reused by later calls. Inside a trace, and on PyTorch, `fn` runs as it is.
    """
    name = backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return fn(*tensors)
        def compile_(f):
            return tf.function(f, autograph=False)
    elif name == "jax" and all(is_concrete(x) for x in tensors):
        import jax

        compile_ = jax.jit
    else:
        return fn(*tensors)
    entry = _GRAPHS.get(key)
    if entry is None:
        entry = _GRAPHS[key] = (compile_(fn), owner)
        if len(_GRAPHS) > _MAX_GRAPHS:
            _GRAPHS.popitem(last=False)
    else:
        _GRAPHS.move_to_end(key)
    return entry[0](*tensors)


def dynamic_loops():
    """Whether loops whose trip counts are tensors can run: not while
    TorchDynamo compiles (its graph cannot depend on a tensor's value)."""
    if backend.backend() != "torch":
        return True
    import torch

    return not torch.compiler.is_compiling()


def python_traced():
    """Whether TorchDynamo is tracing (it interprets the Python it meets)."""
    if backend.backend() != "torch":
        return False
    import torch

    return torch.compiler.is_compiling()


def constant_result(fn):
    """`fn`, run as plain Python even while TorchDynamo traces: its result
    (Python constants) becomes a constant of the compiled graph."""
    if backend.backend() != "torch":
        return fn
    import torch

    return torch._dynamo.assume_constant_result(fn)


def python_loops():
    """Whether the chunked loops run as Python loops over known blocks:
    PyTorch runs op by op, and a Python int indexes a block for free."""
    return backend.backend() == "torch"


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


# PyTorch's CPU SDPA kernel reads (B, N, T, H) inputs: the transposed views
# of the layer's (B, T, N, H) tensors are copied to contiguous ones from this
# many keys on, as keras passes them. MultiHeadAttention against keras, one
# run, each order alternated: L = 2048 and 4096 forward + backward 0.98x
# keras with the views, 0.99-1.01x with the copies; at L = 128 the copies
# cost more than they save (1.03-1.11x with the views, 0.96-0.98x with the
# copies).
TORCH_CONTIGUOUS_FROM_KEYS = 1024


def _torch_sdpa(query, key, value, *, bias, mask, scale, is_causal, grouped):
    # Called directly rather than through keras: keras's wrapper cannot be
    # traced by TorchDynamo, and `enable_gqa` reads grouped key/value heads
    # without copying them.
    import torch.nn.functional as F

    q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # (B, N, T, H)
    if (key.shape[1] or 0) >= TORCH_CONTIGUOUS_FROM_KEYS:
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


# On JAX on CPU, inputs of at most this many rows (a word typed at `attnkit
# translate`, a line of its filter) compile with XLA's cheaper settings:
# compiling a decoding loop is most of a first answer's time, and these
# settings cut it (0.45-0.66 s against 0.75-0.96 s for the date reader's
# greedy loop, 2-core CPU) while the program, run once or a few times, is
# slower by milliseconds (4x on a batch of 2,048, which keeps the full
# optimization).
QUICK_COMPILE_ROWS = 8
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compiled_inference(fn, variables):
    """`fn(*tensors)` as one compiled program per input signature, reading
    `variables` (keras variables) as they are at each call: `jax.jit` with
    the variables' values passed in (a `keras.StatelessScope`, so a model
    trained between calls is not read stale; inputs of up to
    `QUICK_COMPILE_ROWS` rows compiled quickly rather than well),
    `tf.function` (which reads
    variables by reference; the loops use `keras.ops.while_loop`, so
    without autograph, which would spend a second converting the model's
    code on each first call), and on PyTorch `fn` itself without autograd."""
    name = backend.backend()
    if name == "jax":
        import jax
        import keras

        def pure(values, *tensors):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*tensors)

        full = jax.jit(pure)
        # Measured on CPU only; elsewhere every input gets the full build.
        quick = jax.jit(pure, compiler_options=QUICK_COMPILE) \
            if jax.default_backend() == "cpu" else full

        def run(*tensors):
            rows = tensors[0].shape[0] if tensors and getattr(tensors[0], "ndim", 0) else None
            compiled = quick if rows is not None and rows <= QUICK_COMPILE_ROWS else full
            return compiled([v.value for v in variables], *tensors)

        return run
    if name == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True, autograph=False)
    import torch

    def run(*tensors):
        with torch.no_grad():
            return fn(*tensors)

    return run


def compute_dtype_for(dtype):
    """The dtype the core computes in for inputs of `dtype`: float64 stays
    float64, every other float (half precision included) is float32."""
    return "float64" if backend.standardize_dtype(dtype) == "float64" else "float32"
