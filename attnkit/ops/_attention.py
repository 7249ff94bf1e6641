"""`attnkit.ops.attention`: one attention computation, several implementations.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

import typing
from collections.abc import Callable

import keras
from keras import ops

from attnkit import _checks
from attnkit.ops import _chunked
from attnkit.ops._blockmask import BlockMask
from attnkit.ops.spec import AttentionSpec
from attnkit.ops import _fused
from attnkit.ops import _math
from attnkit.ops import _plan
from attnkit.ops import positions
from attnkit.ops import terms
from attnkit.types import Tensor


class Explanation(typing.NamedTuple):
    """Which implementation a call takes, and why.

    Attributes:
        implementation: `"math"`, `"fused"` or `"chunked"`.
        reason: one sentence saying why that path was chosen.
        ineligible: maps each path that could not run this call to the
            reason; paths that could are absent.
        computed_blocks: on the chunked path, the fraction of (query
            block, key block) pairs it computes (the rest see nothing);
            None on the other paths, or where the masks are known only
            when the data arrive.
    """

    implementation: str
    reason: str
    ineligible: dict
    computed_blocks: float | None = None


def attention(query: Tensor, key: Tensor, value: Tensor, *, bias: Tensor | None = None,
              mask: Tensor | None = None, scale: float | None = None, is_causal: bool = False,
              q_offset: int | Tensor = 0, sliding_window: int | None = None,
              score_mod: Callable | None = None, mask_mod: Callable | None = None,
              logit_soft_cap: float | None = None, dropout_rate: float = 0.0,
              seed: int | None = None, training: bool = False, return_weights: bool = False,
              implementation: str | None = None, normalizer: str = "softmax",
              segment_ids: Tensor | None = None, kv_segment_ids: Tensor | None = None,
              block_mask: BlockMask | None = None, weights_mod: Callable | None = None,
              spec: AttentionSpec | None = None):
    """Scaled dot-product attention with masks, biases and score functions.

    Computes `softmax(visible, scale * q . k + bias -> score_mod -> cap) . v`
    for every query head, with grouped key/value heads, identically on every
    implementation path and backend. `normalizer` replaces the softmax by a
    sparse map.

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
            with a cache sets it to the cache index). It may be negative:
            with `T > S`, `q_offset = S - T` aligns the last query with the
            last key (PyTorch's bottom-right causal alignment), and a causal
            query at a negative position sees no key (its output is 0).
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
        normalizer: `"softmax"`, `"sparsemax"` or `"entmax15"` (see
            `attnkit.ops.sparsemax` and `attnkit.ops.entmax15`): weights
            that are exactly zero for low scores. The sparse maps need whole
            rows of scores, so they run on the math path only (the fused
            kernels compute softmax, the chunked path an online softmax).
        segment_ids: int `(B, L)`, the document of each absolute position
            (packed sequences): a query sees only keys of its own
            document (`attnkit.ops.document_mask` given at call time, so
            it can be a model input). Queries read it at `q_offset + i`,
            keys at `j`, unless `kv_segment_ids` is given.
        kv_segment_ids: int `(B, S)`, the keys' documents where they are
            another sequence than the queries (cross-attention).
        block_mask: an `attnkit.ops.BlockMask` made for this call's
            lengths (`attnkit.ops.create_block_mask`): its mask function
            applies too, and the chunked path takes its block structure
            instead of working it out again.
        weights_mod: `weights_mod(weights) -> weights` on the normalized
            weights `(B, N, T, S)`, before dropout and the weighted sum of
            the values: a hook after the normalizer (talking-heads
            attention mixes the heads' weights here). It needs whole rows
            of weights, so the call runs on the math path; hidden keys must
            stay at 0 for the masks to hold (the function decides).
            Returned weights are its output.
        spec: an `attnkit.ops.AttentionSpec` holding `scale`,
            `sliding_window`, the three `*_mod` functions, `logit_soft_cap`,
            `dropout_rate`, `implementation` and `normalizer`, checked when
            it was made (a layer makes one in its constructor); those
            options are then not given to the call.

    On the chunked path, a pair of query and key blocks in which every
    mask hides everything is never computed, and one in which every pair is
    visible skips the elementwise mask: causal and sliding-window
    attention, documents and prefix-LM masks cost what they let be seen.

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
    options = dict(
        scale=scale, is_causal=is_causal, q_offset=q_offset,
        sliding_window=sliding_window, score_mod=score_mod, mask_mod=mask_mod,
        logit_soft_cap=logit_soft_cap, dropout_rate=dropout_rate, seed=seed,
        training=training, return_weights=return_weights,
        implementation=implementation, normalizer=normalizer, block_mask=block_mask,
        weights_mod=weights_mod, spec=spec,
    )
    tensors = dict(query=query, key=key, value=value, mask=mask, bias=bias,
                   segment_ids=segment_ids, kv_segment_ids=kv_segment_ids)
    return _dispatch(tensors, options)


def relative_attention(query: Tensor, key: Tensor, value: Tensor, key_table: Tensor | None = None,
                       value_table: Tensor | None = None, *,
                       buckets: positions.RelativeBuckets | None = None,
                       bias_table: Tensor | None = None, clip_distance: int | None = None,
                       max_distance: int | None = None, **kwargs):
    """Attention with a bucketed relative-position term.

    Query `i` (at absolute position `q_offset + i`) and key `j` fall in
    bucket `r = buckets(q_offset + i, j)` of `R`; each table is optional:
    `logits_ij += scale * q_i . key_table[r] + bias_table[r, n]` and
    `out_i += sum_j w_ij value_table[r]`. Shaw et al.'s relative attention
    is `ClippedBuckets(k)` with key (and value) tables (the default when
    `clip_distance=k` is given); T5's relative bias is `T5Buckets(...)` with
    a bias table.

    Only `(B, N, T, R)` rows are formed, never a `(T, S, H)` table; on the
    chunked path (the default) memory stays at one block of scores, forward
    and backward, and the backward recomputes the blocks.

    Args:
        query: as in `attnkit.ops.attention`.
        key: as in `attnkit.ops.attention`.
        value: as in `attnkit.ops.attention`.
        key_table: `(R, H)` shared by all heads, or `(R, N, H)`, or None.
        value_table: `(R, Hv)`, `(R, N, Hv)` or None.
        buckets: an `attnkit.ops.RelativeBuckets` (`ClippedBuckets`,
            `T5Buckets` or your own); or give `clip_distance`.
        bias_table: `(R, N)` per head or `(R,)`, added to the logits, or None.
        clip_distance: `k` for `ClippedBuckets(k)`: distances beyond `k`
            share the last bucket on either side.
        max_distance: deprecated name of `clip_distance`.
        **kwargs: every keyword argument of `attnkit.ops.attention`. The
            native kernels (`"fused"`) take key and bias tables as one dense
            bias and refuse a value table.

    Returns:
        As `attnkit.ops.attention`.

    Example:

        >>> q = keras.random.normal((1, 6, 2, 8))
        >>> table = keras.random.normal((9, 8))
        >>> out = attnkit.ops.relative_attention(q, q, q, table, table,
        ...                                      clip_distance=4, is_causal=True)
        >>> tuple(out.shape)
        (1, 6, 2, 8)
    """
    tensors = dict(query=query, key=key, value=value, key_table=key_table,
                   value_table=value_table, bias_table=bias_table)
    options = dict(kwargs, buckets=_buckets(buckets, clip_distance, max_distance))
    return _dispatch(tensors, options)


def _buckets(buckets, clip_distance, max_distance):
    """The bucket function of a relative call, from its three spellings."""
    clip_distance = _checks.renamed_argument(
        "clip_distance", clip_distance, "max_distance", max_distance)
    if (buckets is None) == (clip_distance is None):
        raise ValueError(
            "relative_attention takes exactly one of `buckets` (a RelativeBuckets) "
            f"or `clip_distance` (an int). Received: buckets={buckets!r}, "
            f"clip_distance={clip_distance!r}.")
    return positions.ClippedBuckets(clip_distance) if buckets is None else buckets


def _dispatch(tensors, options):
    """Runs the call, or records it as a keras Operation on symbolic inputs."""
    tensors, options = _split(tensors, options)
    if isinstance(options.get("q_offset"), keras.KerasTensor):
        tensors["q_offset"] = options.pop("q_offset")
    if any(isinstance(x, keras.KerasTensor) for x in tensors.values()):
        return Attention(**options)(**{k: v for k, v in tensors.items() if v is not None})
    return _run(_build(tensors, options))


def _split(tensors, options):
    """(tensors, options) with the tensor keywords moved out of `options`."""
    tensors, options = dict(tensors), dict(options)
    for name in _TENSORS:
        if name in options:
            tensors[name] = options.pop(name)
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"Unexpected keyword arguments: {sorted(unknown)}.")
    return tensors, options


def _build(tensors, options):
    """The checked plan of a call."""
    tensors, options = dict(tensors), dict(options)
    if "q_offset" in tensors:
        options["q_offset"] = tensors.pop("q_offset")
    buckets = options.pop("buckets", None)
    tables = {name: tensors.pop(name, None) for name in _TABLES}
    plan = _plan.make_plan(**tensors, **options)
    if buckets is not None:
        plan.relative = _plan.relative_terms(plan, buckets, **tables)
    elif any(t is not None for t in tables.values()):
        raise ValueError("Relative tables need `buckets` or `clip_distance`.")
    return plan


_TABLES = ("key_table", "value_table", "bias_table")
_TENSORS = ("mask", "bias", "segment_ids", "kv_segment_ids") + _TABLES
_OPTIONS = {
    "scale", "is_causal", "q_offset", "sliding_window", "score_mod", "mask_mod",
    "logit_soft_cap", "dropout_rate", "seed", "training", "return_weights",
    "implementation", "buckets", "normalizer", "block_mask", "weights_mod", "spec",
}


@keras.saving.register_keras_serializable(package="attnkit")
class Attention(keras.Operation):
    """`attnkit.ops.attention` / `relative_attention` as a keras Operation.

    What a call on `keras.Input` tensors records in a functional model: the
    tensors are call arguments, every other option is configuration (saved
    with the model; terms serialize, unregistered functions are refused at
    save time).
    """

    def __init__(self, name: str | None = None, **options):
        super().__init__(name=name)
        options = {k: terms.deserialize_term(v) if k in _TERM_OPTIONS else v
                   for k, v in options.items()}
        _checks.check_options(**{k: options.get(k, v) for k, v in _CHECKED.items()})
        if isinstance(options.get("seed"), keras.random.SeedGenerator):
            raise ValueError(
                "On symbolic inputs give `seed` as an int (a SeedGenerator "
                "cannot be saved with the model).")
        if options.get("block_mask") is not None:
            raise ValueError(
                "A `block_mask` holds one batch's block structure and cannot be "
                "part of a saved model; on symbolic inputs give `segment_ids` "
                "(a model input) and the chunked path finds the blocks itself.")
        self.options = options

    def call(self, query, key, value, mask=None, bias=None, key_table=None,
             value_table=None, bias_table=None, q_offset=None, segment_ids=None,
             kv_segment_ids=None):
        tensors = dict(query=query, key=key, value=value, mask=mask, bias=bias,
                       key_table=key_table, value_table=value_table,
                       bias_table=bias_table, segment_ids=segment_ids,
                       kv_segment_ids=kv_segment_ids)
        if q_offset is not None:
            tensors["q_offset"] = q_offset
        return _run(_build(tensors, self.options))

    def compute_output_spec(self, query, key, value, mask=None, bias=None,
                            key_table=None, value_table=None, bias_table=None,
                            q_offset=None, segment_ids=None, kv_segment_ids=None):
        _checks.check_qkv(query, key, value)
        b, t, n, _ = query.shape
        dtype = _plan.result_dtype(query, key, value)
        out = keras.KerasTensor((b, t, n, value.shape[-1]), dtype=dtype)
        if not self.options.get("return_weights"):
            return out
        return out, keras.KerasTensor((b, n, t, key.shape[1]), dtype=dtype)

    def get_config(self):
        config = {"name": self.name}
        for name, value in self.options.items():
            config[name] = terms.serialize_term(value, name) if name in _TERM_OPTIONS else value
        return config


_TERM_OPTIONS = ("score_mod", "mask_mod", "buckets", "weights_mod", "spec")
_CHECKED = dict(scale=None, q_offset=0, sliding_window=None, score_mod=None, mask_mod=None,
                logit_soft_cap=None, dropout_rate=0.0, implementation=None,
                normalizer="softmax", weights_mod=None)


def _run(plan):
    choice, _, ineligible = _plan.choose(plan)
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


def explain(query: Tensor, key: Tensor, value: Tensor, **kwargs):
    """Says which implementation a call would take, and why.

    Takes exactly the arguments of `attnkit.ops.attention`, or those of
    `attnkit.ops.relative_attention` (its tables, `buckets` or
    `clip_distance` as keywords), and computes nothing.

    Returns:
        An `Explanation(implementation, reason, ineligible)`.

    Example:

        >>> x = keras.random.normal((1, 8, 2, 4))
        >>> attnkit.ops.explain(x, x, x, return_weights=True).implementation
        'math'
    """
    relative = {name: kwargs.pop(name) for name in ("buckets", "clip_distance", "max_distance")
                if name in kwargs}
    if relative or any(kwargs.get(name) is not None for name in _TABLES):
        kwargs["buckets"] = _buckets(relative.get("buckets"), relative.get("clip_distance"),
                                     relative.get("max_distance"))
    tensors, options = _split(dict(query=query, key=key, value=value), kwargs)
    plan = _build(tensors, options)
    choice = _plan.choose(plan)
    fraction = None
    if choice[0] == "chunked":
        fraction = _chunked.schedule(plan).computed_fraction
    return Explanation(*choice, computed_blocks=fraction)
