"""The benchmark cases, run on the backend named by KERAS_BACKEND.

Each suite returns rows (dicts) for the report. Competitors of one case are
timed alternately in one process (`_harness.time_side_by_side`); memory is
measured in a fresh process per competitor (`memory_case`).

Shapes: B batch, L sequence length (T = S = L), N = 8 heads of H = 64.
FLOPs counted are the matmuls a materializing implementation must do:
forward 4 B N L^2 H, forward+backward three times that.
"""

import math
import time

import keras
import numpy as np
from keras import ops

import attnkit
from benchmarks.attention import _harness

HEADS, HEAD_DIM = 8, 64
# Competitors that hold whole (B, N, L, L) tensors are skipped past this
# much estimated memory (this machine has 24 GiB).
MATERIALIZED_LIMIT = 10 * 2**30
# Holding (B, N, L, L) float32 scores, roughly this many copies are live.
LIVE_COPIES = {"fwd": 3, "fwd+bwd": 6}


def _rng_tensor(shape, seed=0):
    return ops.convert_to_tensor(
        np.random.default_rng(seed).normal(size=shape).astype("float32"))


def _flops(batch, length, passes):
    forward = 4 * batch * HEADS * length * length * HEAD_DIM
    return forward * (3 if passes == "fwd+bwd" else 1)


def _materialized_bytes(batch, length, passes):
    return LIVE_COPIES[passes] * batch * HEADS * length * length * 4


def native_attention():
    """The framework's own attention kernel, (B, L, N, H) layout, or None."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch.nn.functional as F

        def sdpa(q, k, v):
            out = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)))
            return out.transpose(1, 2)

        return sdpa
    if backend == "jax":
        import jax

        return jax.nn.dot_product_attention
    return None  # TensorFlow has no fused attention kernel on CPU


def _materializes(name):
    """Whether a competitor holds whole (B, N, L, L) score tensors."""
    backend = keras.backend.backend()
    if name in ("attnkit:chunked",) or (backend == "torch" and name in (
            "attnkit:fused", "keras.ops", "native")):
        return False
    return name != "attnkit" or None  # None: depends on attnkit's choice


def ops_competitors(q):
    """name -> (fn(q, k, v), implementation label) for one input shape."""
    found = {}
    choice = attnkit.ops.explain(q, q, q).implementation
    found["attnkit"] = (lambda q, k, v: attnkit.ops.attention(q, k, v), choice)
    for impl in ("math", "chunked", "fused"):
        found[f"attnkit:{impl}"] = (
            lambda q, k, v, impl=impl: attnkit.ops.attention(q, k, v, implementation=impl),
            impl)
    found["keras.ops"] = (ops.dot_product_attention, "keras")
    native = native_attention()
    if native is not None:
        found["native"] = (native, "native")
    return found


def _too_big(name, impl, batch, length, passes):
    materializes = _materializes(name)
    if materializes is None:
        materializes = impl == "math"
    return materializes and _materialized_bytes(batch, length, passes) > MATERIALIZED_LIMIT


def ops_suite(lengths, tokens, max_backward_length, repeats, peak):
    rows = []
    for length in lengths:
        batch = max(1, tokens // length)
        q, k, v = (_rng_tensor((batch, length, HEADS, HEAD_DIM), i) for i in range(3))
        competitors = ops_competitors(q)
        for passes in ("fwd", "fwd+bwd"):
            if passes == "fwd+bwd" and length > max_backward_length:
                continue
            runners, skipped = {}, []
            for name, (fn, impl) in competitors.items():
                if _too_big(name, impl, batch, length, passes):
                    skipped.append(name)
                    continue
                runners[name] = _harness.runner(fn, [q, k, v], backward=passes == "fwd+bwd")
            # Past 4096 one timed run (after the warm-up) each: seconds per call.
            times = _harness.time_side_by_side(runners, repeats=repeats if length <= 4096 else 1)
            flops = _flops(batch, length, passes)
            for name, seconds in times.items():
                rows.append(_row("ops", name, competitors[name][1], length, batch, passes,
                                 seconds, flops, peak))
            rows += [_row("ops", name, competitors[name][1], length, batch, passes,
                          None, flops, peak, note="skipped: would hold > 10 GiB of scores")
                     for name in skipped]
    return rows


def _mha_pair(batch, length):
    dim = HEADS * HEAD_DIM
    x = _rng_tensor((batch, length, dim))
    ours = attnkit.layers.MultiHeadAttention(HEADS, HEAD_DIM)
    theirs = keras.layers.MultiHeadAttention(HEADS, HEAD_DIM)
    ours(x[:1, :8], x[:1, :8])
    theirs(x[:1, :8], x[:1, :8])
    theirs.set_weights(ours.get_weights())
    return x, ours, theirs


def mha_suite(lengths, tokens, max_backward_length, repeats, peak):
    rows = []
    for length in lengths:
        batch = max(1, tokens // length)
        x, ours, theirs = _mha_pair(batch, length)
        projected = ops.zeros((batch, length, HEADS, HEAD_DIM))
        impl = attnkit.ops.explain(projected, projected, projected).implementation
        for passes in ("fwd", "fwd+bwd"):
            if passes == "fwd+bwd" and length > max_backward_length:
                continue
            if _materialized_bytes(batch, length, passes) > MATERIALIZED_LIMIT:
                continue
            backward = passes == "fwd+bwd"
            runners = {
                "attnkit MHA": _harness.runner(lambda x: ours(x, x), [x],
                                               ours.trainable_variables, backward),
                "keras MHA": _harness.runner(lambda x: theirs(x, x), [x],
                                             theirs.trainable_variables, backward),
            }
            times = _harness.time_side_by_side(runners, repeats=repeats)
            flops = _flops(batch, length, passes)
            for name, seconds in times.items():
                rows.append(_row("mha", name, impl if "attnkit" in name else "keras",
                                 length, batch, passes, seconds, flops, peak))
    return rows


def shaw_layers(batch, length, clip=16):
    """attnkit's Shaw attention and a gather implementation sharing weights.

    The gather implementation builds the (L, L, H) tables `a^K_ij`, `a^V_ij`
    by indexing, as Shaw et al.'s equations read.
    """
    x = _rng_tensor((batch, length, HEADS * HEAD_DIM))
    layer = attnkit.layers.MultiHeadAttention(
        HEADS, HEAD_DIM, position=attnkit.layers.ShawRelativePosition(clip))
    layer(x[:1, :8], x[:1, :8])
    distance = np.arange(length)[None, :] - np.arange(length)[:, None]
    index = ops.convert_to_tensor(np.clip(distance, -clip, clip) + clip, "int32")
    scale = 1.0 / math.sqrt(HEAD_DIM)

    def gather(x):
        q = layer.query_dense(x)  # (B, L, N, H)
        k = layer.key_dense(x)
        v = layer.value_dense(x)
        a_k = ops.take(layer.position.key_embeddings, index, axis=0)  # (L, L, H)
        a_v = ops.take(layer.position.value_embeddings, index, axis=0)
        logits = (ops.einsum("btnh,bsnh->bnts", q, k)
                  + ops.einsum("btnh,tsh->bnts", q, a_k)) * scale
        w = ops.softmax(logits, axis=-1)
        out = ops.einsum("bnts,bsnh->btnh", w, v) + ops.einsum("bnts,tsh->btnh", w, a_v)
        return layer.output_dense(out)

    return x, layer, gather


# Relative self-attention through the layer on the chunked path, for the
# memory suite: every term computed by the core, recomputed in the backward.
POSITION_LAYERS = {
    "attnkit MHA": lambda: None,  # the layer's own cost, for comparison
    "attnkit MHA Shaw": lambda: attnkit.layers.ShawRelativePosition(16, use_relative_values=True),
    "attnkit MHA T5": lambda: attnkit.layers.T5RelativeBias(bidirectional=False),
    "attnkit MHA ALiBi": lambda: attnkit.layers.AlibiBias(),
}


def position_layer(batch, length, competitor):
    """(x, causal self-attention fn, its variables) for a POSITION_LAYERS case."""
    x = _rng_tensor((batch, length, HEADS * HEAD_DIM))
    layer = attnkit.layers.MultiHeadAttention(
        HEADS, HEAD_DIM, position=POSITION_LAYERS[competitor](), implementation="chunked")
    layer(x[:1, :8], x[:1, :8])
    return x, (lambda x: layer(x, x, use_causal_mask=True)), layer.trainable_variables


def relative_suite(length, batch, repeats, peak):
    x, layer, gather = shaw_layers(batch, length)
    rows = []
    for passes in ("fwd", "fwd+bwd"):
        backward = passes == "fwd+bwd"
        runners = {
            "attnkit Shaw": _harness.runner(lambda x: layer(x, x), [x],
                                            layer.trainable_variables, backward),
            "gather Shaw": _harness.runner(gather, [x], layer.trainable_variables, backward),
        }
        times = _harness.time_side_by_side(runners, repeats=repeats)
        for name, seconds in times.items():
            rows.append(_row("relative", name, "chunked" if "attnkit" in name else "gather",
                             length, batch, passes, seconds, _flops(batch, length, passes),
                             peak))
    return rows


def decoding_suite(steps, units, layers, repeats, torch_compile=False):
    """Greedy decoding of `steps` tokens: with the self-attention caches vs
    recomputing the decoder over the whole prefix at every step.

    Both run the same `TransformerDecoderBlock`s (Shaw relative attention)
    against a 32-token encoder memory. TensorFlow and JAX compile each whole
    greedy loop once; PyTorch loops in Python over steps compiled with
    `torch.compile` when `torch_compile` is set (otherwise eager, recomputing
    on the exact prefix). The recomputation otherwise runs on a fixed
    `steps`-long buffer (causal, so the unused tail does not change the
    prefix).
    """
    from attnkit.models.transformer_seq2seq import TransformerDecoderBlock

    vocab, heads = 1000, 8
    embed = keras.layers.Embedding(vocab, units)
    blocks = [TransformerDecoderBlock(units, heads, 2 * units, dropout=0.0)
              for _ in range(layers)]
    head = keras.layers.Dense(vocab)
    memory = _rng_tensor((1, 32, units))
    backend = keras.backend.backend()

    def full(tokens):
        y = embed(tokens)
        for block in blocks:
            y, _ = block(y, memory)
        return head(y)  # (1, L, V)

    full(ops.zeros((1, steps), "int32"))  # build

    def cached_step(token, caches, index):
        y = embed(ops.reshape(token, (1, 1)))
        new = []
        for block, cache in zip(blocks, caches):
            y, _, cache = block(y, memory, cache=cache, cache_update_index=index)
            new.append(cache)
        return ops.argmax(head(y)[0, 0], axis=-1), new

    def recompute_step(tokens, index):
        logits = full(tokens)
        return ops.argmax(ops.take(logits[0], index, axis=0), axis=-1)

    def empty_caches():
        return [ops.zeros((1, 2, steps, heads, units // heads)) for _ in blocks]

    if backend != "torch":
        # The whole greedy loop in one compiled function (a `fori_loop`), as
        # a user decodes in production: TensorFlow and JAX then run 256
        # steps without returning to Python between them.
        decode_cached, decode_recompute = _compiled_loops(cached_step, full, empty_caches, steps)
    else:
        decode_cached, decode_recompute = _python_loops(
            cached_step, recompute_step, empty_caches, steps, torch_compile)
    same = decode_cached() == decode_recompute()
    times = _harness.time_side_by_side(
        {"cached": decode_cached, "recompute": decode_recompute}, repeats=repeats)
    note = "same tokens" if same else "TOKENS DIFFER"
    if backend == "torch":
        note += "; torch.compile" if torch_compile else "; eager"
    return [dict(suite="decoding", competitor=name, implementation=name, length=steps,
                 batch=1, passes="decode", ms=seconds * 1e3, gflops=None,
                 peak_fraction=None, memory_mib=None, note=note)
            for name, seconds in times.items()]


def _compiled_loops(cached_step, full, empty_caches, steps):
    """(decode_cached, decode_recompute): each whole loop compiled once."""
    def cached_loop():
        def body(i, carry):
            token, caches, out = carry
            token, caches = cached_step(token, caches, i)
            token = ops.cast(token, "int32")
            return token, caches, ops.slice_update(out, [i], ops.reshape(token, (1,)))

        init = (ops.convert_to_tensor(np.int32(1)), empty_caches(), ops.zeros((steps,), "int32"))
        return ops.fori_loop(0, steps, body, init)[2]

    def recompute_loop():
        def body(i, carry):
            tokens, out = carry
            logits = full(tokens)
            token = ops.cast(ops.argmax(ops.take(logits[0], i, axis=0), axis=-1), "int32")
            token = ops.reshape(token, (1,))
            # The last step has no next position: it rewrites the last one,
            # which nothing reads again.
            tokens = ops.slice_update(tokens, [0, ops.minimum(i + 1, steps - 1)],
                                      ops.reshape(token, (1, 1)))
            return tokens, ops.slice_update(out, [i], token)

        tokens = ops.convert_to_tensor(np.eye(1, steps, dtype="int32"))  # token 1 first
        return ops.fori_loop(0, steps, body, (tokens, ops.zeros((steps,), "int32")))[1]

    cached_fn, recompute_fn = (_harness.compiled(f) for f in (cached_loop, recompute_loop))
    return (lambda: ops.convert_to_numpy(cached_fn()).tolist(),
            lambda: ops.convert_to_numpy(recompute_fn()).tolist())


def _python_loops(cached_step, recompute_step, empty_caches, steps, torch_compile):
    """(decode_cached, decode_recompute): Python loops over compiled steps."""
    cached_fn, recompute_fn = (_harness.compiled(f, torch_compile)
                               for f in (cached_step, recompute_step))
    exact_prefix = not torch_compile

    def decode_cached():
        caches = empty_caches()
        token, out = ops.convert_to_tensor(np.int32(1)), []
        for i in range(steps):
            token, caches = cached_fn(token, caches, ops.convert_to_tensor(np.int32(i)))
            out.append(int(ops.convert_to_numpy(token)))
        return out

    def decode_recompute():
        tokens = np.zeros((1, steps), "int32")
        tokens[0, 0] = 1
        out = []
        for i in range(steps):
            prefix = tokens[:, :i + 1] if exact_prefix else tokens
            token = int(ops.convert_to_numpy(recompute_fn(
                ops.convert_to_tensor(prefix), ops.convert_to_tensor(np.int32(i)))))
            out.append(token)
            if i + 1 < steps:
                tokens[0, i + 1] = token
        return out

    return decode_cached, decode_recompute


def _row(suite, competitor, implementation, length, batch, passes, seconds, flops, peak,
         note=""):
    gflops = None if seconds is None else flops / seconds / 1e9
    return dict(
        suite=suite, competitor=competitor, implementation=implementation, length=length,
        batch=batch, passes=passes, ms=None if seconds is None else seconds * 1e3,
        gflops=gflops, peak_fraction=None if gflops is None else gflops / peak,
        memory_mib=None, note=note)


def memory_case(suite, competitor, length, batch, passes):
    """One case in this fresh process: (first-run extra MiB, steady extra MiB,
    steady seconds).

    The first run compiles; its peak (`ru_maxrss`) includes compilation.
    The steady figure samples resident memory during a second run, above
    the level just before it: what every training step costs.
    """
    backward = passes.startswith("fwd+bwd")  # "fwd+bwd eager": op by op
    if competitor in POSITION_LAYERS:
        x, fn, variables = position_layer(batch, length, competitor)
        inputs = [x]
    elif suite == "relative":
        x, layer, gather = shaw_layers(batch, length)
        fn = (lambda x: layer(x, x)) if competitor == "attnkit Shaw" else gather
        variables, inputs = layer.trainable_variables, [x]
    else:
        inputs = [_rng_tensor((batch, length, HEADS, HEAD_DIM), i) for i in range(3)]
        fn = ops_competitors(inputs[0])[competitor][0]
        variables = ()
    before = _harness.rss_peak_mib()
    run = _harness.runner(fn, inputs, variables, backward, eager=passes.endswith("eager"))
    run()
    first = _harness.rss_peak_mib() - before
    start = time.perf_counter()
    steady = _harness.steady_peak_mib(run)
    return first, steady, time.perf_counter() - start
