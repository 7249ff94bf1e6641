"""Backend-specific test plumbing: autodiff, jit and NumPy conversion.

Library code uses keras.ops only; the tests need each framework's own
gradient and compilation entry points to check it.
"""

import typing

import keras
import numpy as np
from keras import ops

BACKEND = keras.backend.backend()


def to_numpy(x):
    if isinstance(x, keras.Variable):
        x = ops.convert_to_tensor(x)
    if BACKEND == "torch" and hasattr(x, "detach"):
        # keras's convert_to_numpy calls np.array(tensor), which warns under
        # NumPy 2 with this torch; go through torch's own conversion.
        return x.detach().cpu().numpy()
    return np.asarray(ops.convert_to_numpy(x))


def dtype_name(x):
    return keras.backend.standardize_dtype(x.dtype)


def grads(fn, *args):
    """Gradients of the scalar `fn(*args)` w.r.t. every arg, as NumPy."""
    args = [ops.convert_to_tensor(a) for a in args]
    if BACKEND == "jax":
        import jax

        return [np.asarray(g) for g in jax.grad(fn, argnums=tuple(range(len(args))))(*args)]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(args)
            value = fn(*args)
        return [to_numpy(g) for g in tape.gradient(value, args)]
    args = [a.detach().clone().requires_grad_(True) for a in args]
    value = fn(*args)
    value.backward()
    return [a.grad.detach().cpu().numpy() for a in args]


def jit(fn):
    """The backend's compiler: XLA for TF and JAX, TorchDynamo for torch.

    The compiled function takes tensors; NumPy arguments are converted first.
    """
    if BACKEND == "jax":
        import jax

        compiled = jax.jit(fn)
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(fn, jit_compile=True)
    else:
        import torch

        # Each test compiles a fresh closure of the same code object; start
        # from an empty cache so Dynamo's recompile limit is not the test.
        torch._dynamo.reset()
        compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)

    def run(*args):
        return compiled(*[ops.convert_to_tensor(a) for a in args])

    return run


def rng(seed=0):
    return np.random.default_rng(seed)


def normal(gen, *shape, scale=1.0):
    return (gen.normal(size=shape) * scale).astype("float32")


def central_differences(loss, args, eps=1e-6):
    """Gradients of the scalar NumPy `loss(*args)` w.r.t. each float64 array
    in `args`, by central differences of step `eps`."""
    grads_ = []
    for i, arg in enumerate(args):
        numeric = np.zeros_like(arg)
        for pos in np.ndindex(arg.shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[i][pos] += eps
            minus[i][pos] -= eps
            numeric[pos] = (loss(*plus) - loss(*minus)) / (2 * eps)
        grads_.append(numeric)
    return grads_


def reversal_pairs(num, seed):
    """Words of 3-7 letters -> their letters reversed, upper case, spaced."""
    import random

    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 7)))
             for _ in range(num)]
    return [(w, " ".join(w[::-1].upper())) for w in words]


class CommandRun(typing.NamedTuple):
    code: int
    out: str
    err: str


def run_cli(*args, stdin=None):
    """`attnkit ARGS` in this process: (exit code, stdout, stderr). `stdin`
    is text or bytes read as the command's standard input."""
    import contextlib
    import io
    import sys

    from attnkit.app import cli

    out, err = io.StringIO(), io.StringIO()
    if isinstance(stdin, str):
        stdin = stdin.encode("utf-8")
    saved_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin or b""), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in args])
            except SystemExit as done:  # --help and --version exit like argparse does
                code = done.code
    finally:
        sys.stdin = saved_stdin
    return CommandRun(code, out.getvalue(), err.getvalue())
