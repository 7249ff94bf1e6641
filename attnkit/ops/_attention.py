"""`attnkit.ops.attention`: one attention computation, several implementations.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

import math
import typing

from keras import backend
from keras import ops

from attnkit.ops import _chunked
from attnkit.ops import _fused
from attnkit.ops import _math
from attnkit.ops import _scores
from attnkit.ops import _validation

# When `implementation=None` goes chunked, per backend: from this many keys
# on, or above this many score elements (B * N * T * S). Measured with
# `attnkit bench` on a 2-core CPU (README, "Benchmarks"): on JAX the blocks
# win from 1024 keys (XLA:CPU maps fresh pages for every large buffer); on
# TensorFlow the math path (with TensorFlow's fused softmax) is fastest, and
# from 4096 keys the blocks bound memory (at 4096 keys, B = 1, training adds
# about 100 MiB instead of 1.5 GiB, for 1.7-2x the time). PyTorch takes its
# SDPA kernel whenever it can, and blocks past 2^24 elements when it cannot.
CHUNK_FROM_KEYS = {"tensorflow": 4096, "jax": 1024, "torch": 4096}
CHUNK_THRESHOLD = {"tensorflow": 1 << 28, "jax": 1 << 26, "torch": 1 << 24}


class Explanation(typing.NamedTuple):
    """Which implementation a call takes, and why.

    Attributes:
        implementation: `"math"`, `"fused"` or `"chunked"`.
        reason: one sentence saying why that path was chosen.
        ineligible: maps each path that could not run this call to the
            reason; paths that could are absent.
    """

    implementation: str
    reason: str
    ineligible: dict


def attention(query, key, value, *, bias=None, mask=None, scale=None,
              is_causal=False, q_offset=0, sliding_window=None,
              score_mod=None, mask_mod=None, logit_soft_cap=None,
              dropout_rate=0.0, seed=None, training=False,
              return_weights=False, implementation=None):
    """Scaled dot-product attention with masks, biases and score functions.

    Computes `softmax(visible, scale * q . k + bias -> score_mod -> cap) . v`
    for every query head, with grouped key/value heads, identically on every
    implementation path and backend.

    Args:
        query: `(B, T, N, H)`.
        key: `(B, S, K, H)`; `N` must be a multiple of `K` (grouped-query
            attention; `K == 1` is multi-query attention). Query head `n`
            reads key/value head `n // (N // K)`.
        value: `(B, S, K, Hv)`.
        bias: float tensor added to the scaled logits, broadcastable to
            `(B, N, T, S)` by NumPy rules (a 2D bias is `(T, S)`).
        mask: boolean (or 0/1 integer) tensor, True = may attend,
            broadcastable to `(B, N, T, S)` by NumPy rules.
        scale: multiplies `q . k`; defaults to `1 / sqrt(H)`.
        is_causal: query `i` sits at absolute position `q_offset + i` and
            sees keys `j <= q_offset + i`.
        q_offset: int or scalar int tensor, the absolute position of the first
            query (0 is the top-left alignment of keras and PyTorch; decoding
            with a cache sets it to the cache index).
        sliding_window: positive int `w`: keys with `|q_pos - k_pos| < w` are
            visible (keras's symmetric band); with `is_causal`, the `w` most
            recent keys `q_pos - w < k_pos <= q_pos`.
        score_mod: `score_mod(scores, b, h, q_idx, kv_idx) -> scores` on
            `scores` of shape `(B, N, t, s)` (the whole tensor or a block of
            it) with int32 index tensors broadcasting against it: `b`
            `(B, 1, 1, 1)`, `h` `(1, N, 1, 1)`, `q_idx` `(1, 1, t, 1)` absolute
            (offset included), `kv_idx` `(1, 1, 1, s)`. Written with
            `keras.ops`.
        mask_mod: `mask_mod(b, h, q_idx, kv_idx) -> bool`, same indices.
        logit_soft_cap: `c`: logits become `c * tanh(s / c)`, applied after
            `bias` and `score_mod`.
        dropout_rate: dropout on the attention weights when `training=True`.
        seed: int or `keras.random.SeedGenerator` for the dropout.
        training: enables dropout.
        return_weights: also return the weights `(B, N, T, S)` (before
            dropout).
        implementation: `None` (the fastest eligible path), `"math"`,
            `"fused"` (`keras.ops.dot_product_attention`) or `"chunked"`
            (online softmax over blocks). See `attnkit.ops.explain`.

    Returns:
        `(B, T, N, Hv)` in the inputs' dtype, or `(output, weights)` with
        `return_weights=True`. A query with no visible key gets exactly 0
        output and 0 weights, with finite zero gradients. Logits and softmax
        are float32 for float16/bfloat16 inputs.

    Example:

    >>> q = keras.random.normal((2, 5, 4, 16))
    >>> kv = keras.random.normal((2, 7, 2, 16))
    >>> out = attnkit.ops.attention(q, kv, kv, is_causal=True, q_offset=2)
    >>> tuple(out.shape)
    (2, 5, 4, 16)
    """
    plan = _plan(
        query, key, value, bias=bias, mask=mask, scale=scale,
        is_causal=is_causal, q_offset=q_offset, sliding_window=sliding_window,
        score_mod=score_mod, mask_mod=mask_mod, logit_soft_cap=logit_soft_cap,
        dropout_rate=dropout_rate, seed=seed, training=training,
        return_weights=return_weights, implementation=implementation,
    )
    return _run(plan)


def relative_attention(query, key, value, key_table, value_table=None, *,
                       max_distance, **kwargs):
    """Attention with clipped relative positions (Shaw et al. 2018).

    Query `i` sits at absolute position `q_offset + i`, key `j` at `j`; they
    see each other through bucket `r = clip(j - q_offset - i, -k, k) + k` of
    `2k + 1` learned embeddings:
    `logits_ij = scale * q_i . (k_j + key_table[r])` and
    `out_i = sum_j w_ij (v_j + value_table[r])`.

    Only the `(B, N, T, 2k + 1)` products `q . key_table` are formed, never
    a `(T, S, H)` table; on the chunked path (the default) memory stays at
    one block of scores, forward and backward.

    Args:
        query, key, value: as in `attnkit.ops.attention`.
        key_table: `(2k + 1, H)` shared by all heads, or `(2k + 1, N, H)`.
        value_table: `(2k + 1, Hv)`, `(2k + 1, N, Hv)` or None (keys only).
        max_distance: `k`, the largest distance told apart.
        **kwargs: every keyword argument of `attnkit.ops.attention`. The
            native kernels (`"fused"`) cannot add these terms.

    Returns:
        As `attnkit.ops.attention`.

    Example:

    >>> q = keras.random.normal((1, 6, 2, 8))
    >>> table = keras.random.normal((9, 8))
    >>> out = attnkit.ops.relative_attention(q, q, q, table, table,
    ...                                      max_distance=4, is_causal=True)
    >>> tuple(out.shape)
    (1, 6, 2, 8)
    """
    plan = _plan(query, key, value, **kwargs)
    plan.relative = _relative_terms(plan, key_table, value_table, max_distance)
    return _run(plan)


def _relative_terms(plan, key_table, value_table, max_distance):
    if not isinstance(max_distance, int) or isinstance(max_distance, bool) or max_distance < 1:
        raise ValueError(f"`max_distance` must be a positive int. Received: {max_distance!r}.")
    rows = 2 * max_distance + 1
    n, h, hv = plan.num_heads, plan.query.shape[-1], plan.value.shape[-1]
    tables = []
    for name, table, dim in (("key_table", key_table, h), ("value_table", value_table, hv)):
        if table is None:
            tables.append(None)
            continue
        table = ops.cast(ops.convert_to_tensor(table), plan.compute_dtype)
        if tuple(table.shape) not in ((rows, dim), (rows, n, dim)):
            raise ValueError(
                f"`{name}` must have shape ({rows}, {dim}) or ({rows}, {n}, {dim}) "
                f"(2 * max_distance + 1 rows). Received: {tuple(table.shape)}.")
        tables.append(table)
    key_table, value_table = tables
    if key_table is None:
        raise ValueError("`key_table` is required.")
    heads = _scores.table_axes(key_table)
    qe = ops.einsum(f"btnh,{heads}->bntr", plan.query, key_table)  # (B, N, T, R)
    return _scores.RelativeTerms(qe=qe, value_table=value_table, max_distance=max_distance)


def _run(plan):
    choice, _, ineligible = _choose(plan)
    if choice in ineligible:
        raise ValueError(
            f"implementation={choice!r} cannot compute this call: "
            f"{ineligible[choice]}. Use implementation=None to pick an "
            "eligible path (attnkit.ops.explain shows which)."
        )
    if choice == "math":
        out, weights = _math.math_attention(plan)
    elif choice == "fused":
        out, weights = _fused.fused_attention(plan), None
    else:
        out, weights = _chunked.chunked_attention(plan), None
    out = ops.cast(out, plan.out_dtype)
    if plan.return_weights:
        return out, ops.cast(weights, plan.out_dtype)
    return out


def explain(query, key, value, **kwargs):
    """Says which implementation `attention` would take for a call, and why.

    Takes exactly the arguments of `attnkit.ops.attention` and computes
    nothing.

    Returns:
        An `Explanation(implementation, reason, ineligible)`.

    Example:

    >>> x = keras.random.normal((1, 8, 2, 4))
    >>> attnkit.ops.explain(x, x, x, return_weights=True).implementation
    'math'
    """
    choice, reason, ineligible = _choose(_plan(query, key, value, **kwargs))
    return Explanation(choice, reason, ineligible)


def _plan(query, key, value, *, bias=None, mask=None, scale=None,
          is_causal=False, q_offset=0, sliding_window=None, score_mod=None,
          mask_mod=None, logit_soft_cap=None, dropout_rate=0.0, seed=None,
          training=False, return_weights=False, implementation=None):
    _validation.check_options(
        scale=scale, q_offset=q_offset, sliding_window=sliding_window,
        score_mod=score_mod, mask_mod=mask_mod, logit_soft_cap=logit_soft_cap,
        dropout_rate=dropout_rate, implementation=implementation,
    )
    query, key, value = (ops.convert_to_tensor(x) for x in (query, key, value))
    _validation.check_qkv(query, key, value)
    b, t, n, h = _validation.static_shape(query)
    target = (b, n, t, key.shape[1])
    if mask is not None:
        mask = ops.convert_to_tensor(mask)
        _validation.check_mask_dtype(mask)
        _validation.check_broadcast("mask", mask, target)
        if backend.standardize_dtype(mask.dtype) != "bool":
            mask = ops.not_equal(mask, 0)
        mask = _rank4(mask)
    out_dtype = _result_dtype(query, key, value)
    compute_dtype = "float64" if out_dtype == "float64" else "float32"
    if bias is not None:
        bias = ops.convert_to_tensor(bias)
        _validation.check_bias_dtype(bias)
        _validation.check_broadcast("bias", bias, target)
        bias = _rank4(ops.cast(bias, compute_dtype))
    return _scores.Plan(
        query=ops.cast(query, compute_dtype),
        key=ops.cast(key, compute_dtype),
        value=ops.cast(value, compute_dtype),
        mask=mask, bias=bias,
        scale=1.0 / math.sqrt(h) if scale is None else float(scale),
        is_causal=bool(is_causal), q_offset=q_offset,
        sliding_window=sliding_window, score_mod=score_mod, mask_mod=mask_mod,
        logit_soft_cap=logit_soft_cap, dropout_rate=float(dropout_rate),
        seed=seed, training=bool(training), return_weights=return_weights,
        out_dtype=out_dtype, compute_dtype=compute_dtype,
        num_heads=n, num_kv_heads=key.shape[2], implementation=implementation,
    )


def _result_dtype(*tensors):
    names = {backend.standardize_dtype(x.dtype) for x in tensors}
    # keras 3.15's torch result_type turns float64 into float32: only ask it
    # when the inputs really differ.
    return names.pop() if len(names) == 1 else backend.result_type(*names)


def _rank4(x):
    """Prepend size-1 axes so that `x` has rank 4 (NumPy broadcasting)."""
    missing = 4 - len(x.shape)
    return ops.reshape(x, (1,) * missing + tuple(ops.shape(x))) if missing else x


def _choose(plan):
    """(implementation, reason, ineligible) for a plan."""
    ineligible = {}
    fused_reason = _fused.ineligible_reason(plan)
    if fused_reason:
        ineligible["fused"] = fused_reason
    if plan.return_weights:
        ineligible["chunked"] = "it never holds the full weights to return"
    elif plan.dropout_active:
        ineligible["chunked"] = "dropout during training runs on the math path"
    elif None in (_validation.static_shape(plan.query)[1], _validation.static_shape(plan.key)[1]):
        ineligible["chunked"] = "it needs static query and key lengths"
    if plan.implementation is not None:
        return plan.implementation, "requested by the caller", ineligible
    if plan.relative is not None:
        if "chunked" not in ineligible:
            return "chunked", (
                "relative positions: blocks hold (t, s, 2k + 1) buckets, never "
                "(T, S) scores, forward or backward"), ineligible
        return "math", "relative positions, and the chunked path cannot run this call", ineligible
    name = backend.backend()
    if name == "torch" and "fused" not in ineligible:
        return "fused", "PyTorch's SDPA kernel is the fastest and leanest", ineligible
    size = _validation.score_elements(plan)
    keys = _validation.static_shape(plan.key)[1]
    if size is not None and "chunked" not in ineligible and (
            size > CHUNK_THRESHOLD[name] or keys >= CHUNK_FROM_KEYS[name]):
        return "chunked", (
            f"{keys} keys (chunked from {CHUNK_FROM_KEYS[name]} on {name}) and "
            f"{size} score elements (from {CHUNK_THRESHOLD[name]}): blocks keep "
            "memory at T * block, not T * S"
        ), ineligible
    return "math", "scores fit in memory and the math path is fastest here", ineligible
