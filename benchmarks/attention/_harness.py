"""Each framework's own compiler, autodiff and clock, for the benchmarks.

The library itself uses keras.ops only; measuring it against the frameworks'
kernels, and timing forward+backward, needs each framework's entry points.
Compilation is the fastest mode each framework offers for this work on CPU:
TensorFlow graph mode (`tf.function`; XLA is slower here), `jax.jit`, and
PyTorch eager (its kernels are already compiled C++).
"""

import ctypes
import gc
import resource
import statistics
import threading
import time

import keras
import numpy as np
from keras import ops

BACKEND = keras.backend.backend()


def rss_peak_mib():
    """The process's peak resident memory so far, MiB (Linux: KiB units)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib():
    """The process's resident memory now, MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _release_freed_memory():
    """Returns freed heap pages to the system (glibc's `malloc_trim`)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to hand back
        pass


def steady_peak_mib(run, interval_s=0.0005):
    """Peak resident memory above the level before `run()`, MiB, sampled.

    Call it on a warmed-up run: compilation and one-time allocations are
    then outside what it measures. Memory the C allocator kept from earlier
    runs is handed back first, or the run would reuse it unseen.
    """
    gc.collect()
    _release_freed_memory()
    base = peak = rss_mib()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mib())
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(peak, rss_mib()) - base


def _scalar(x):
    return float(np.asarray(ops.convert_to_numpy(x)))


def runner(fn, inputs, variables=(), backward=False, eager=False):
    """A zero-argument function that runs `fn(*inputs)` once, to completion.

    With `backward`, it runs the gradient of `sum(fn(*inputs) * g)` (a fixed
    random `g`) w.r.t. every input and every variable in `variables`; with
    `eager` too, op by op as a custom training loop would (TensorFlow's
    `GradientTape` without `tf.function`, `jax.grad` without `jit`; PyTorch
    always runs so). Returns a float that depends on every result (so none
    is skipped).
    """
    inputs = [ops.convert_to_tensor(x) for x in inputs]
    variables = list(variables)
    if not backward:
        forward = compiled(lambda *xs: ops.sum(fn(*xs)))
        return lambda: _scalar(forward(*inputs))
    probe = fn(*inputs)
    g = ops.convert_to_tensor(
        np.random.default_rng(0).normal(size=tuple(probe.shape)).astype("float32"))
    del probe

    def loss(*xs):
        return ops.sum(fn(*xs) * g)

    if BACKEND == "jax":
        import jax

        def stateless_loss(values, *xs):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss(*xs)

        def grad(values, *xs):
            return _total(
                jax.grad(stateless_loss, argnums=tuple(range(len(xs) + 1)))(values, *xs))

        grad = grad if eager else jax.jit(grad)
        values = [v.value for v in variables]
        return lambda: _scalar(grad(values, *inputs))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def grad(*xs):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                value = loss(*xs)
            return _total(tape.gradient(value, list(xs) + [v.value for v in variables]))

        grad = grad if eager else tf.function(grad)

        return lambda: _scalar(grad(*inputs))
    import torch

    leaves = [x.detach().requires_grad_(True) for x in inputs]
    params = [v.value for v in variables]

    def run():
        for p in leaves + params:
            p.grad = None
        loss(*leaves).backward()
        with torch.no_grad():
            return float(_total([p.grad for p in leaves + params]))

    return run


def _total(tensors):
    """The sum of every element of a nested list of tensors."""
    total = 0.0
    for t in tensors:
        if isinstance(t, (list, tuple)):
            total = total + _total(t)
        elif t is not None:
            total = total + ops.sum(t)
    return total


def compiled(fn, torch_compile=False):
    """`fn` compiled the way this module times everything.

    With `torch_compile`, PyTorch runs `torch.compile` (inductor) instead of
    eager: for many small ops, where eager dispatch is most of the time.
    """
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    import torch

    if torch_compile:
        fn = torch.compile(fn)

    def eager(*xs):
        with torch.no_grad():
            return fn(*xs)

    return eager


def time_side_by_side(runners, repeats=3, warmup=1, budget_s=None):
    """Median seconds of each runner, run alternately after warm-ups.

    `runners` maps a name to a zero-argument function. Every other round
    runs them in reverse order, so that no runner always follows the same
    one (a run leaves caches and the allocator in a state that helps or
    hinders the next). With `budget_s`, stops repeating (never below one
    timed run each) once that much time is spent.
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runners}
    start = time.perf_counter()
    order = list(runners.items())
    for i in range(repeats):
        for name, run in order if i % 2 == 0 else order[::-1]:
            gc.collect()
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return {name: statistics.median(ts) for name, ts in times.items()}


def matmul_peak_gflops(n=2048, repeats=10):
    """This backend's float32 matmul rate at n x n, GFLOP/s (median)."""
    rng = np.random.default_rng(0)
    a, b = (ops.convert_to_tensor(rng.normal(size=(n, n)).astype("float32")) for _ in "ab")
    seconds = time_side_by_side(
        {"matmul": runner(ops.matmul, [a, b])}, repeats=repeats, warmup=2)["matmul"]
    return 2 * n**3 / seconds / 1e9
