"""The plan of one attention call, and the one place that chooses its path.

`make_plan` checks and normalizes every argument before any computation;
`choose` decides which implementation runs it and why (what
`attnkit.ops.explain` reports).

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim, R relative buckets.
"""

import dataclasses
import math
import warnings
from typing import Any

import keras
from keras import backend
from keras import ops

from attnkit import _checks
from attnkit import _backends
from attnkit.ops import _blockmask
from attnkit.ops import _fused
from attnkit.ops import _thresholds
from attnkit.ops import masks
from attnkit.ops import positions
from attnkit.ops import score_mods
from attnkit.ops import terms
from attnkit.ops.spec import DEFAULTS as SPEC_DEFAULTS


@dataclasses.dataclass
class RelativeTerms:
    """A bucketed relative term: `R` buckets of `(q_pos, k_pos)`.

    Query `i` and key `j` (absolute positions) fall in bucket
    `buckets(i, j)`; the logits gain `rows[b, n, i, bucket]` and the output
    gains `sum_j w_ij value_table[bucket]`. The rows are
    `scale * q_i . key_table[r]` (Shaw's keys) plus `bias[n, r]` (T5's
    table); they are formed per block of queries (`_blocks.relative_rows`),
    never for the whole sequence.
    """

    buckets: Any  # an attnkit.ops.positions.RelativeBuckets
    key_table: Any  # (R, H) or (R, N, H), compute dtype, or None
    bias: Any  # (1, 1, 1, R) or (1, N, 1, R), compute dtype, or None
    value_table: Any  # (R, Hv) or (R, N, Hv), compute dtype, or None

    TENSORS = ("key_table", "bias", "value_table")

    @property
    def num_buckets(self):
        return self.buckets.num_buckets

    @property
    def has_rows(self):
        """Whether the term adds to the logits (a key or bias table)."""
        return self.key_table is not None or self.bias is not None

    def tensors(self):
        """The term's tensors that gradients flow to, in `TENSORS` order."""
        return [getattr(self, name) for name in self.TENSORS
                if getattr(self, name) is not None]

    def with_tensors(self, tensors):
        """This term reading its tensors from `tensors` (as from `tensors()`)."""
        tensors = iter(tensors)
        return dataclasses.replace(self, **{
            name: next(tensors) for name in self.TENSORS if getattr(self, name) is not None})


@dataclasses.dataclass
class Plan:
    """Validated, normalized arguments shared by every implementation."""

    query: Any  # (B, T, N, H), compute dtype
    key: Any  # (B, S, K, H)
    value: Any  # (B, S, K, Hv)
    mask: Any  # bool, rank 4 broadcastable to (B, N, T, S), or None
    bias: Any  # compute dtype, rank 4, or None
    scale: float
    is_causal: bool
    q_offset: Any  # int or scalar int tensor
    sliding_window: Any
    score_mod: Any
    mask_mod: Any
    logit_soft_cap: Any
    dropout_rate: float
    seed: Any
    training: bool
    return_weights: bool
    out_dtype: str
    compute_dtype: str
    num_heads: int
    num_kv_heads: int
    implementation: Any = None
    relative: Any = None  # RelativeTerms or None
    normalizer: str = "softmax"  # or "sparsemax", "entmax15"
    documents: Any = None  # masks.DocumentMask of call-time segment ids, or None
    block_mask: Any = None  # a BlockMask given by the caller, or None
    weights_mod: Any = None  # weights_mod(weights) after the normalizer, or None

    @property
    def mask_mods(self):
        """Every mask function of the call: its own, the documents of its
        segment ids, the block mask's."""
        found = [self.mask_mod, self.documents,
                 None if self.block_mask is None else self.block_mask.mask_mod]
        return [m for m in found if m is not None]

    @property
    def groups(self):
        return self.num_heads // self.num_kv_heads

    @property
    def dropout_active(self):
        return bool(self.training) and self.dropout_rate > 0

    @property
    def additive_score_mod(self):
        """True when score_mod only adds a term of the indices (or is None)."""
        return self.score_mod is None or bool(getattr(self.score_mod, "additive", False))


def make_plan(query, key, value, *, bias=None, mask=None, scale=None,
              is_causal=False, q_offset=0, sliding_window=None, score_mod=None,
              mask_mod=None, logit_soft_cap=None, dropout_rate=0.0, seed=None,
              training=False, return_weights=False, implementation=None,
              normalizer="softmax", segment_ids=None, kv_segment_ids=None, block_mask=None,
              weights_mod=None, spec=None):
    for name, x in (("query", query), ("key", key), ("value", value)):
        if x is None:
            raise TypeError(f"`{name}` must be a tensor. Received: {name}=None.")
    given = dict(scale=scale, sliding_window=sliding_window, score_mod=score_mod,
                 mask_mod=mask_mod, weights_mod=weights_mod, logit_soft_cap=logit_soft_cap,
                 dropout_rate=dropout_rate, implementation=implementation,
                 normalizer=normalizer)
    if spec is None:
        _checks.check_options(q_offset=q_offset, **given)
    else:  # checked when the spec was made
        _checks.check_q_offset(q_offset)
        twice = sorted(n for n, v in given.items() if v is not SPEC_DEFAULTS[n]
                       and v != SPEC_DEFAULTS[n])
        if twice:
            raise ValueError(
                f"{', '.join(twice)} given beside `spec`, which holds them: give "
                "them in the spec (spec.replace(...)) or leave `spec` out.")
        (scale, sliding_window, score_mod, mask_mod, weights_mod, logit_soft_cap,
         dropout_rate, implementation, normalizer) = (getattr(spec, n) for n in given)
    query, key, value = (_checks.as_tensor(name, x) for name, x in
                         (("query", query), ("key", key), ("value", value)))
    _checks.check_qkv(query, key, value)
    b, t, n, h = _checks.static_shape(query)
    if hasattr(score_mod, "check_heads"):
        score_mod.check_heads(n)
    documents = _documents(segment_ids, kv_segment_ids)
    q_end = q_offset + t if _checks.is_int(q_offset) and t is not None else None
    for term in (mask_mod, documents):
        if hasattr(term, "check_lengths"):
            term.check_lengths(b, q_end, key.shape[1])
    if bool(is_causal) and _has_prefix_lm(mask_mod):
        warnings.warn(
            "`is_causal=True` (a layer's `use_causal_mask=True`) with a prefix-LM "
            "mask is plain causal attention: the prefix keys the mask shows to "
            "earlier queries are later than them. Drop `is_causal` to let the "
            "prefix see itself both ways.", UserWarning, stacklevel=3)
    if block_mask is not None:
        _blockmask.check_block_mask(block_mask, t, key.shape[1], q_offset)
    if isinstance(score_mod, score_mods.SoftCap) and logit_soft_cap is None:
        # The same function, run where the chunked backward knows its derivative.
        score_mod, logit_soft_cap = None, score_mod.cap
    target = (b, n, t, key.shape[1])
    if mask is not None:
        mask = _checks.as_tensor("mask", mask, "a boolean")
        _checks.check_mask_dtype(mask)
        _checks.check_broadcast("mask", mask, target)
        if backend.standardize_dtype(mask.dtype) != "bool":
            mask = ops.not_equal(mask, 0)
        mask = _rank4(mask)
    out_dtype = result_dtype(query, key, value)
    compute_dtype = _backends.compute_dtype_for(out_dtype)
    if bias is not None:
        bias = _checks.as_tensor("bias", bias)
        _checks.check_bias_dtype(bias)
        _checks.check_broadcast("bias", bias, target)
        bias = _rank4(ops.cast(bias, compute_dtype))
    return Plan(
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
        normalizer=normalizer, documents=documents, block_mask=block_mask,
        weights_mod=weights_mod,
    )


def _has_prefix_lm(mask_mod):
    """Whether `mask_mod` is a prefix-LM mask or an AND with one in it."""
    if isinstance(mask_mod, masks.PrefixLMMask):
        return True
    return isinstance(mask_mod, masks.AndMasks) and any(
        _has_prefix_lm(m) for m in mask_mod.mask_mods)


def _documents(segment_ids, kv_segment_ids):
    """The DocumentMask of call-time segment ids, or None."""
    if segment_ids is None:
        if kv_segment_ids is not None:
            raise ValueError(
                "`kv_segment_ids` gives the keys' documents beside the queries' "
                "`segment_ids`; give `segment_ids` too. Received: segment_ids=None.")
        return None
    return masks.DocumentMask(segment_ids, kv_segment_ids)


def relative_terms(plan, buckets, key_table, value_table, bias_table):
    """The plan's `RelativeTerms` from a bucket function and its tables."""
    if not isinstance(buckets, positions.RelativeBuckets):
        raise TypeError(
            "`buckets` must be an attnkit.ops.RelativeBuckets (e.g. "
            f"attnkit.ops.ClippedBuckets(16)). Received: {buckets!r}.")
    if key_table is None and value_table is None and bias_table is None:
        raise ValueError(
            "Relative attention needs at least one of `key_table`, `value_table` "
            "or `bias_table`. Received none.")
    r, n = buckets.num_buckets, plan.num_heads
    h, hv = plan.query.shape[-1], plan.value.shape[-1]
    key_table = _table("key_table", key_table, plan, ((r, h), (r, n, h)))
    value_table = _table("value_table", value_table, plan, ((r, hv), (r, n, hv)))
    bias_table = _table("bias_table", bias_table, plan, ((r,), (r, n)))
    if bias_table is not None:
        per_head = ops.transpose(bias_table) if len(bias_table.shape) == 2 else bias_table
        bias_table = ops.reshape(per_head, (1, -1, 1, r))
    return RelativeTerms(buckets=buckets, key_table=key_table, bias=bias_table,
                         value_table=value_table)


def _table(name, table, plan, shapes):
    if table is None:
        return None
    table = _checks.as_tensor(name, table)
    if not backend.is_float_dtype(table.dtype):
        raise TypeError(f"`{name}` must be a floating tensor. Received dtype {table.dtype}.")
    table = ops.cast(table, plan.compute_dtype)
    if tuple(table.shape) not in shapes:
        expected = " or ".join(str(s) for s in shapes)
        raise ValueError(
            f"`{name}` must have shape {expected} (one row per relative bucket). "
            f"Received: {name}.shape={tuple(table.shape)}.")
    return table


def result_dtype(*tensors):
    names = {backend.standardize_dtype(x.dtype) for x in tensors}
    # keras 3.15's torch result_type turns float64 into float32: only ask it
    # when the inputs really differ.
    return names.pop() if len(names) == 1 else backend.result_type(*names)


def _rank4(x):
    """Prepend size-1 axes so that `x` has rank 4 (NumPy broadcasting)."""
    missing = 4 - len(x.shape)
    return ops.reshape(x, (1,) * missing + tuple(ops.shape(x))) if missing else x


def score_elements(plan):
    """B * N * T * S of a plan's scores, or None where a length is unknown."""
    b, t, n, _ = _checks.static_shape(plan.query)
    s = _checks.static_shape(plan.key)[1]
    if None in (b, t, s):
        return None
    return b * n * t * s


def recomputes(plan):
    """Whether the chunked backward recomputes blocks instead of autodiff.

    It differentiates q, k, v and the relative tables; a `bias` tensor, a
    non-additive `score_mod` or one that reads trainable weights (a
    learned slope, say) would need autodiff through every block. Not
    while `torch.compile` traces the call: keras's custom gradient on
    PyTorch is a torch.autograd.Function that TorchDynamo cannot compile.
    """
    return (plan.bias is None and plan.additive_score_mod
            and not reads_weights(plan.score_mod, plan.num_heads)
            and _backends.custom_gradient_traceable())


class _ReadRecorder(keras.StatelessScope):
    """A stateless scope that records every variable read inside it and
    answers with the enclosing scope's value (a jitted train step maps
    the variables to its own tensors)."""

    def __init__(self):
        super().__init__(initialize_variables=False)
        self.read = []

    def get_current_value(self, variable):
        self.read.append(variable)
        outer = self.original_scope
        return None if outer is None else outer.get_current_value(variable)


# Kept on the term itself: a global table of terms is read inside traced
# calls, and TorchDynamo guards on its entries, which go as terms are freed.
_READS_WEIGHTS = "_attnkit_reads_weights"


def reads_weights(term, num_heads):
    """Whether `term` (a score function) reads a trainable keras variable:
    called once on one score per head, with its reads recorded."""
    if term is None:
        return False
    known = getattr(term, _READS_WEIGHTS, None)
    if known is not None:
        return known
    index = ops.zeros((1, 1, 1, 1), "int32")
    heads = ops.reshape(ops.arange(num_heads, dtype="int32"), (1, -1, 1, 1))
    with _ReadRecorder() as recorder:
        term(ops.zeros((1, num_heads, 1, 1), "float32"), index, heads, index, index)
    found = any(getattr(v, "trainable", False) for v in recorder.read)
    try:
        setattr(term, _READS_WEIGHTS, found)
    except (AttributeError, TypeError):  # no attributes of its own: asked again next time
        pass
    return found


def signature(plan, inputs, *extra):
    """A hashable key of what a compiled graph of `plan` depends on besides
    the values of `inputs` (their shapes and dtypes, every option, the
    terms by `terms.cache_key`), and `extra`."""
    specs = tuple((tuple(x.shape), backend.standardize_dtype(x.dtype)) for x in inputs)
    relative = None
    if plan.relative is not None:
        relative = (terms.cache_key(plan.relative.buckets),
                    tuple(getattr(plan.relative, name) is not None
                          for name in RelativeTerms.TENSORS))
    offset = plan.q_offset if isinstance(plan.q_offset, int) else "tensor"
    return specs + (
        plan.scale, plan.is_causal, offset, plan.sliding_window,
        terms.cache_key(plan.score_mod), terms.cache_key(plan.mask_mod), plan.logit_soft_cap,
        terms.cache_key(plan.weights_mod),
        plan.compute_dtype, plan.out_dtype, plan.num_heads, plan.num_kv_heads,
        plan.mask is not None, relative, plan.documents is not None,
        None if plan.block_mask is None else ("id", id(plan.block_mask)),
        backend.backend()) + extra


def choose(plan):
    """(implementation, reason, ineligible) for a plan."""
    ineligible = {}
    fused_reason = _fused.ineligible_reason(plan)
    if fused_reason:
        ineligible["fused"] = fused_reason
    if plan.normalizer != "softmax":
        ineligible["chunked"] = (
            f"{plan.normalizer} needs whole rows of scores (its threshold depends on "
            "every score of a row), blocks give an online softmax")
        if plan.implementation is None:
            return "math", f"{plan.normalizer} runs on the math path only", ineligible
    elif plan.weights_mod is not None:
        ineligible["chunked"] = (
            "weights_mod needs whole rows of weights, blocks give an online softmax")
        if plan.implementation is None:
            return "math", "weights_mod runs on the math path only", ineligible
    elif plan.return_weights:
        ineligible["chunked"] = "it never holds the full weights to return"
    elif plan.dropout_active:
        ineligible["chunked"] = "dropout during training runs on the math path"
    elif None in (_checks.static_shape(plan.query)[1], _checks.static_shape(plan.key)[1]):
        ineligible["chunked"] = "it needs static query and key lengths"
    if plan.implementation is not None:
        return plan.implementation, "requested by the caller", ineligible
    if plan.relative is not None:
        if "chunked" not in ineligible:
            return "chunked", (
                "relative positions: blocks hold (t, s, R) buckets, never "
                "(T, S) scores, forward or backward"), ineligible
        return "math", "relative positions, and the chunked path cannot run this call", ineligible
    name = _backends.name()
    size = score_elements(plan)
    keys = _checks.static_shape(plan.key)[1]
    threshold, from_keys = _thresholds.CHUNK_THRESHOLD[name], _thresholds.CHUNK_FROM_KEYS[name]
    sparse = plan.sliding_window is not None or plan.documents is not None or \
        plan.block_mask is not None
    if sparse and "chunked" not in ineligible and keys is not None and \
            keys >= _thresholds.SPARSE_CHUNK_FROM_KEYS:
        return "chunked", (
            f"a window, documents or a block mask over {keys} keys: the blocks "
            "skip what no query sees"), ineligible
    # SDPA holds no scores for plain and causal attention; any other mask
    # reaches it as a dense (B?, N?, T, S) tensor.
    lean = plan.mask is None and plan.sliding_window is None and not plan.mask_mods and \
        (not plan.is_causal or _fused._is_plain_causal(plan))
    if name == "torch" and "fused" not in ineligible and not _fused.materializes(plan) and (
            lean or size is None or size <= threshold or "chunked" in ineligible):
        return "fused", "PyTorch's SDPA kernel is the fastest and leanest", ineligible
    if size is not None and "chunked" not in ineligible and (
            size > threshold or keys >= from_keys):
        return "chunked", (
            f"{keys} keys (chunked from {from_keys} on {name}) and "
            f"{size} score elements (from {threshold}): blocks keep "
            "memory at T * block, not T * S"
        ), ineligible
    return "math", "scores fit in memory and the math path is fastest here", ineligible
