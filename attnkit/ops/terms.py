"""Attention terms as objects: mask functions, score modifiers, relative buckets.

Every term is a small keras-serializable object (`get_config` /
`from_config`, registered under the package "attnkit", like keras's
initializers), so a model that uses one saves and loads. Plain functions are
accepted wherever a term is; to save one, register it with
`keras.saving.register_keras_serializable`.

Index convention (FlexAttention's, vectorized): int32 tensors broadcasting
against the scores `(B, N, t, s)` of the whole call or of one block:
`b` `(B, 1, 1, 1)`, `h` `(1, N, 1, 1)`, `q_idx` `(1, 1, t, 1)` absolute (the
query offset included), `kv_idx` `(1, 1, 1, s)`.

Shape legend: B batch, N query heads, t / s a block of queries / keys,
L the length of a per-position table, R relative buckets.
"""

import math
from collections.abc import Callable

import keras
import numpy as np
from keras import backend
from keras import ops

from attnkit import _checks
from attnkit.ops import _blockmask
from attnkit.types import Tensor


def _register(cls):
    return keras.saving.register_keras_serializable(package="attnkit")(cls)


class _Term:
    """Config plumbing shared by the term base classes."""

    # True where the config says everything the term computes (no tensors
    # of its own): compiled graphs are then shared by equal terms.
    _keyed_by_config = False

    def get_config(self):
        return {}

    def cache_key(self):
        """A hashable stand-in for this term in a compiled graph's key, or
        None: its class and config when those say everything it computes."""
        if not self._keyed_by_config:
            return None
        return (type(self).__qualname__, _frozen(self.get_config()))

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        try:
            config = self.get_config()
        except ValueError:  # a term holding a traced tensor has no config
            return f"{type(self).__name__}(...)"
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{type(self).__name__}({args})"


@_register
class MaskMod(_Term):
    """Base class of mask functions: `mask(b, h, q_idx, kv_idx) -> bool`.

    True = may attend. Subclass it, implement `__call__` with `keras.ops`
    and `get_config`, and register the class with
    `keras.saving.register_keras_serializable` to save models that use it.
    """

    def __call__(self, b, h, q_idx, kv_idx):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__.")

    def check_lengths(self, batch: int, q_end: int | None, kv_len: int):
        """Refuses a call it cannot serve: `batch` rows, queries up to
        absolute position `q_end`, `kv_len` keys (each None when unknown)."""

    def block_visibility(self, geometry):
        """Which blocks of a call this mask leaves empty or full, or None to
        have the chunked path evaluate the function itself block row by
        block row (exact, `(B, N, t, S)` at a time).

        Override it to make a mask of your own cheap to skip over:
        `geometry` has the first and last absolute query position of each
        query block (`q_lo`, `q_hi`, `(nq, 1)`), the first and last key of
        each key block (`kv_lo`, `kv_hi`, `(1, nkv)`) and `xp`, the array
        namespace to compute with (NumPy where the positions are known, else
        `keras.ops`); return an `attnkit.ops.Visibility(any, all)` of bool
        arrays broadcastable to `(nq, nkv)` (or `(B, nq, nkv)`): whether
        some pair of the block may attend (True is always safe) and whether
        every pair may (False is always safe). An answer in the safe
        direction only costs time.
        """
        return None


@_register
class ScoreMod(_Term):
    """Base class of score modifiers: `score_mod(scores, b, h, q_idx, kv_idx)`.

    Override `__call__` for any change of the scores. A modifier that only
    adds a term computed from the indices overrides `bias(b, h, q_idx,
    kv_idx)` instead: the chunked path then recomputes that term in its
    backward pass and keeps training memory-lean (ALiBi is one).
    `check_heads(num_heads)` may refuse a head count it cannot serve.
    """

    def bias(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor):
        raise NotImplementedError(
            f"{type(self).__name__} must implement __call__ or bias.")

    def __call__(self, scores, b, h, q_idx, kv_idx):
        return scores + ops.cast(self.bias(b, h, q_idx, kv_idx), scores.dtype)

    @property
    def additive(self):
        """True when the modifier is `scores + bias(indices)`."""
        return type(self).__call__ is ScoreMod.__call__

    def check_heads(self, num_heads: int):
        """Raises a ValueError if this modifier cannot serve `num_heads`."""


@_register
class CausalMask(MaskMod):
    """Query `q` sees keys `kv <= q`."""

    _keyed_by_config = True

    def __call__(self, b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def block_visibility(self, geometry):
        return _blockmask.causal(geometry)


@_register
class SlidingWindowMask(MaskMod):
    """Keys with `|q - kv| < window`; with `causal`, `q - window < kv <= q`."""

    _keyed_by_config = True

    def __init__(self, window: int, causal: bool = False):
        _checks.check_positive_int("window", window)
        self.window = int(window)
        self.causal = bool(causal)

    def __call__(self, b, h, q_idx, kv_idx):
        distance = q_idx - kv_idx
        if self.causal:
            return ops.logical_and(distance >= 0, distance < self.window)
        return ops.abs(distance) < self.window

    def block_visibility(self, geometry):
        near = _blockmask.window(geometry, self.window, self.causal)
        if not self.causal:
            return near
        return _blockmask.and_all([near, _blockmask.causal(geometry)], geometry.xp)

    def get_config(self):
        return {"window": self.window, "causal": self.causal}


@_register
class PaddingMask(MaskMod):
    """Hides padded keys, from a keras mask `(B, S)` or `lengths` `(B,)`.

    Give exactly one. `mask` is what `Embedding(mask_zero=True)` produces
    (True = real token); `lengths[b]` keys of row `b` are real.
    """

    def __init__(self, mask: Tensor | None = None, lengths: Tensor | None = None):
        if (mask is None) == (lengths is None):
            raise ValueError(
                "padding_mask takes exactly one of `mask` (B, S) or `lengths` "
                f"(B,). Received mask={_shape(mask)}, lengths={_shape(lengths)}.")
        if lengths is not None:
            self.mask, self.lengths = None, _int_table("lengths", lengths, 1)
        else:
            self.mask, self.lengths = _table("mask", mask, 2), None
            self._lookup = _table_lookup(ops.cast(self.mask, "bool"))

    def __call__(self, b, h, q_idx, kv_idx):
        if self.lengths is not None:
            return kv_idx < ops.take(self.lengths, b)
        return self._lookup(b, kv_idx)

    def block_visibility(self, geometry):
        g = geometry
        if self.lengths is not None:
            lengths = ops.reshape(self.lengths, (-1, 1, 1))  # (B, 1, 1)
            return _blockmask.Visibility(ops.less(g.kv_lo, lengths),
                                         ops.less(g.kv_hi, lengths))
        return _blockmask.dense_mask(geometry, ops.cast(self.mask, "bool")[:, None, None, :])

    def check_lengths(self, batch: int, q_end: int | None, kv_len: int):
        if self.lengths is not None:
            _check_rows("lengths", self.lengths, batch, exactly=True)
            return
        _check_rows("mask", self.mask, batch)
        if kv_len is not None and self.mask.shape[1] is not None and self.mask.shape[1] != kv_len:
            raise ValueError(
                f"`mask` must have one entry per key: (B, S) with S={kv_len}. "
                f"Received: mask.shape={tuple(self.mask.shape)}.")

    def get_config(self):
        return {"mask": _to_list("mask", self.mask), "lengths": _to_list("lengths", self.lengths)}


@_register
class PrefixLMMask(MaskMod):
    """Every query sees the first `prefix_length` keys, the rest causally.

    `prefix_length` is an int or an int tensor `(B,)`.
    """

    def __init__(self, prefix_length: int | Tensor):
        if _checks.is_int(prefix_length):
            if prefix_length < 0:
                raise ValueError(
                    f"`prefix_length` must be >= 0. Received: prefix_length={prefix_length}.")
            self.prefix_length = int(prefix_length)
        else:
            self.prefix_length = _int_table("prefix_length", prefix_length, 1)

    def __call__(self, b, h, q_idx, kv_idx):
        prefix = self.prefix_length
        if not isinstance(prefix, int):
            prefix = ops.take(prefix, b)
        return ops.logical_or(kv_idx < prefix, q_idx >= kv_idx)

    def block_visibility(self, geometry):
        g, xp = geometry, geometry.xp
        prefix = self.prefix_length
        if not isinstance(prefix, int):
            prefix, xp = ops.reshape(prefix, (-1, 1, 1)), ops  # (B, 1, 1)
        causal = _blockmask.causal(geometry)
        return _blockmask.Visibility(
            xp.logical_or(xp.less(g.kv_lo, prefix), causal.any),
            xp.logical_or(xp.less(g.kv_hi, prefix), causal.all))

    def check_lengths(self, batch: int, q_end: int | None, kv_len: int):
        if not isinstance(self.prefix_length, int):
            _check_rows("prefix_length", self.prefix_length, batch, exactly=True)

    def get_config(self):
        prefix = self.prefix_length
        return {"prefix_length": prefix if isinstance(prefix, int)
                else _to_list("prefix_length", prefix)}


@_register
class DocumentMask(MaskMod):
    """Queries see only keys of the same document (packed sequences).

    `segment_ids` `(B, L)` gives the document of each absolute query
    position; `kv_segment_ids` `(B, S)` that of each key (default: the same
    table, for self-attention). A call whose queries or keys reach past a
    table's end raises a `ValueError` (when the lengths are known at trace
    time); a call with a traced query offset hides positions past the end.
    """

    def __init__(self, segment_ids: Tensor, kv_segment_ids: Tensor | None = None):
        self.segment_ids = _int_table("segment_ids", segment_ids, 2)
        self.kv_segment_ids = None
        if kv_segment_ids is not None:
            self.kv_segment_ids = _int_table("kv_segment_ids", kv_segment_ids, 2)
        self._q_lookup = _table_lookup(self.segment_ids)
        self._kv_lookup = self._q_lookup
        if self.kv_segment_ids is not None:
            self._kv_lookup = _table_lookup(self.kv_segment_ids)

    def __call__(self, b, h, q_idx, kv_idx):
        q_doc, q_in = self._q_lookup(b, q_idx, with_range=True)
        kv_doc, kv_in = self._kv_lookup(b, kv_idx, with_range=True)
        same = ops.equal(q_doc, kv_doc)
        return ops.logical_and(same, ops.logical_and(q_in, kv_in))

    def block_visibility(self, geometry):
        kv_table = self.segment_ids if self.kv_segment_ids is None else self.kv_segment_ids
        return _blockmask.documents(geometry, self.segment_ids, kv_table)

    def tables(self):
        """Its tensors: the queries' ids (and the keys' where given)."""
        return [t for t in (self.segment_ids, self.kv_segment_ids) if t is not None]

    def check_lengths(self, batch: int, q_end: int | None, kv_len: int):
        kv_name = "segment_ids" if self.kv_segment_ids is None else "kv_segment_ids"
        kv_table = self.segment_ids if self.kv_segment_ids is None else self.kv_segment_ids
        for name, table, needed, what in (
                ("segment_ids", self.segment_ids, q_end, "query positions"),
                (kv_name, kv_table, kv_len, "keys")):
            rows, length = table.shape
            if needed is not None and length is not None and length < needed:
                raise ValueError(
                    f"`{name}` has {length} entries per row but this call has "
                    f"{needed} {what}: every position needs a document id. "
                    f"Received: {name}.shape={tuple(table.shape)}.")
            _check_rows(name, table, batch)

    def get_config(self):
        return {"segment_ids": _to_list("segment_ids", self.segment_ids),
                "kv_segment_ids": _to_list("kv_segment_ids", self.kv_segment_ids)}


class _Combined(MaskMod):
    _op = None

    def __init__(self, *mask_mods):
        mask_mods = tuple(deserialize_term(m) if isinstance(m, dict) else m for m in mask_mods)
        if not mask_mods or not all(callable(m) for m in mask_mods):
            raise TypeError(
                f"{_NAMES[type(self).__name__]} takes one or more mask functions. "
                f"Received: {mask_mods!r}.")
        self.mask_mods = mask_mods

    def check_lengths(self, batch, q_end, kv_len):
        for mask_mod in self.mask_mods:
            if hasattr(mask_mod, "check_lengths"):
                mask_mod.check_lengths(batch, q_end, kv_len)

    def cache_key(self):
        parts = tuple(cache_key(m) for m in self.mask_mods)
        return (type(self).__qualname__,) + parts

    def __call__(self, b, h, q_idx, kv_idx):
        result = ops.cast(self.mask_mods[0](b, h, q_idx, kv_idx), "bool")
        for other in self.mask_mods[1:]:
            result = type(self)._op(result, ops.cast(other(b, h, q_idx, kv_idx), "bool"))
        return result

    def block_visibility(self, geometry):
        parts = [_blockmask.of_mask_mod(geometry, m) for m in self.mask_mods]
        return type(self)._combine(parts, _blockmask.namespace_of(parts))

    def get_config(self):
        return {"mask_mods": [serialize_term(m, "mask_mods") for m in self.mask_mods]}

    @classmethod
    def from_config(cls, config):
        return cls(*config["mask_mods"])


@_register
class AndMasks(_Combined):
    """Visible where every one of `mask_mods` says visible."""

    _op = staticmethod(ops.logical_and)
    _combine = staticmethod(_blockmask.and_all)


@_register
class OrMasks(_Combined):
    """Visible where any one of `mask_mods` says visible."""

    _op = staticmethod(ops.logical_or)
    _combine = staticmethod(_blockmask.or_all)


_NAMES = {"AndMasks": "and_masks", "OrMasks": "or_masks"}


@_register
class SoftCap(ScoreMod):
    """`cap * tanh(scores / cap)` (Gemma 2, Grok); the same as `logit_soft_cap`.

    Given alone as `score_mod`, the core runs it as `logit_soft_cap`, whose
    derivative the chunked backward knows.
    """

    _keyed_by_config = True

    def __init__(self, cap: float):
        _checks.check_positive_number("cap", cap)
        self.cap = float(cap)

    def __call__(self, scores, b, h, q_idx, kv_idx):
        return self.cap * ops.tanh(scores / self.cap)

    def get_config(self):
        return {"cap": self.cap}


@_register
class ChainedScoreMods(ScoreMod):
    """Applies `score_mods` one after another (the first one first).

    Additive (and so memory-lean in the chunked backward) when all are.
    """

    def __init__(self, *score_mods):
        score_mods = tuple(deserialize_term(m) if isinstance(m, dict) else m
                           for m in score_mods)
        if not score_mods or not all(callable(m) for m in score_mods):
            raise TypeError(
                f"chain_score_mods takes one or more score functions. Received: {score_mods!r}.")
        self.score_mods = score_mods

    @property
    def additive(self):
        return all(getattr(m, "additive", False) for m in self.score_mods)

    def bias(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor):
        total = self.score_mods[0].bias(b, h, q_idx, kv_idx)
        for other in self.score_mods[1:]:
            total = total + other.bias(b, h, q_idx, kv_idx)
        return total

    def __call__(self, scores, b, h, q_idx, kv_idx):
        for score_mod in self.score_mods:
            scores = score_mod(scores, b, h, q_idx, kv_idx)
        return scores

    def check_heads(self, num_heads: int):
        for score_mod in self.score_mods:
            if hasattr(score_mod, "check_heads"):
                score_mod.check_heads(num_heads)

    def cache_key(self):
        return (type(self).__qualname__,) + tuple(cache_key(m) for m in self.score_mods)

    def get_config(self):
        return {"score_mods": [serialize_term(m, "score_mods") for m in self.score_mods]}

    @classmethod
    def from_config(cls, config):
        return cls(*config["score_mods"])


def chain_score_mods(*score_mods):
    """One score modifier applying `score_mods` in order; None entries are
    skipped, and a single one is returned as it is."""
    score_mods = [m for m in score_mods if m is not None]
    if len(score_mods) <= 1:
        return score_mods[0] if score_mods else None
    return ChainedScoreMods(*score_mods)


def alibi_slopes(num_heads: int):
    """ALiBi's per-head slopes (Press et al. 2022) as a float64 NumPy array.

    For a power of two `n`, the geometric sequence starting at and with ratio
    `2 ** (-8 / n)`; otherwise the slopes of the nearest lower power of two
    followed by every other slope of the next one, as in the paper's code.
    """
    _checks.check_positive_int("num_heads", num_heads)

    def power_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = power_of_two(closest)
    if closest != num_heads:
        slopes += power_of_two(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(slopes, dtype="float64")


@_register
class Alibi(ScoreMod):
    """ALiBi: subtracts `slope[h] * |q_idx - kv_idx|` from the scores.

    For causal attention this is the paper's `-slope * (i - j)`; for
    bidirectional attention the distance is symmetric. The slopes are those
    of `alibi_slopes(num_heads)`; the attention must have `num_heads`
    query heads.
    """

    _keyed_by_config = True

    def __init__(self, num_heads: int):
        _checks.check_positive_int("num_heads", num_heads)
        self.num_heads = int(num_heads)
        self._slopes = ops.convert_to_tensor(alibi_slopes(num_heads), "float32")

    def bias(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor):
        slope = ops.take(self._slopes, h)  # (1, N, 1, 1)
        return -slope * ops.cast(ops.abs(q_idx - kv_idx), "float32")

    def check_heads(self, num_heads: int):
        if num_heads is not None and num_heads != self.num_heads:
            raise ValueError(
                f"alibi({self.num_heads}) has one slope per head and needs "
                f"{self.num_heads} query heads. Received: {num_heads} query heads; "
                f"build it with alibi({num_heads}).")

    def get_config(self):
        return {"num_heads": self.num_heads}


@_register
class RelativeBuckets(_Term):
    """Base class of relative bucket functions: `(q_idx, kv_idx) -> bucket`.

    A bucket function maps every (query, key) pair of absolute positions to
    one of `num_buckets` rows of a learned table; `attnkit.ops.
    relative_attention` adds the rows of the pairs' buckets to the logits
    (and, with a value table, to the output). `saturation()` says where
    every pair far enough apart shares one bucket, which lets the chunked
    path treat a whole block at a row's cost.
    """

    num_buckets = None

    def __call__(self, q_idx, kv_idx):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__.")

    def saturation(self):
        """`((low, low_bucket), (high, high_bucket))`: every pair with
        `kv - q <= low` is in `low_bucket`, every pair with `kv - q >= high`
        in `high_bucket`; or None where no such bounds exist."""
        return None


@_register
class ClippedBuckets(RelativeBuckets):
    """Shaw et al.'s clipped distances: bucket `clip(kv - q, -k, k) + k`.

    `clip_distance` is `k`, the largest distance told apart; there are
    `2k + 1` buckets.
    """

    _keyed_by_config = True

    def __init__(self, clip_distance: int | None):
        _checks.check_positive_int("clip_distance", clip_distance)
        self.clip_distance = int(clip_distance)
        self.num_buckets = 2 * self.clip_distance + 1

    def __call__(self, q_idx, kv_idx):
        k = self.clip_distance
        return ops.clip(kv_idx - q_idx, -k, k) + k

    def saturation(self):
        k = self.clip_distance
        return (-k, 0), (k, 2 * k)

    def get_config(self):
        return {"clip_distance": self.clip_distance}


@_register
class T5Buckets(RelativeBuckets):
    """T5's buckets (Raffel et al. 2020) of `kv - q`.

    Exact buckets for small distances, logarithmically wider ones up to
    `max_distance`, one last bucket beyond; with `bidirectional`, half the
    `num_buckets` for keys after the query. The logarithm is float32, as in
    T5.
    """

    _keyed_by_config = True

    def __init__(self, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        self.bidirectional = bool(bidirectional)
        minimum = 4 if self.bidirectional else 2
        for name, value in (("num_buckets", num_buckets), ("max_distance", max_distance)):
            if not _checks.is_int(value) or value < minimum:
                raise ValueError(
                    f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}.")
        exact = num_buckets // (4 if self.bidirectional else 2)
        if max_distance <= exact:
            raise ValueError(
                f"`max_distance` must exceed the {exact} exact buckets "
                f"(num_buckets={num_buckets}, bidirectional={self.bidirectional}). "
                f"Received: max_distance={max_distance}.")
        self.num_buckets = int(num_buckets)
        self.max_distance = int(max_distance)

    def __call__(self, q_idx, kv_idx):
        return t5_bucket(kv_idx - q_idx, self.num_buckets, self.max_distance,
                         self.bidirectional)

    def saturation(self):
        far = self.max_distance
        if self.bidirectional:
            return (-far, self.num_buckets // 2 - 1), (far, self.num_buckets - 1)
        return (-far, self.num_buckets - 1), (0, 0)

    def get_config(self):
        return {"num_buckets": self.num_buckets, "max_distance": self.max_distance,
                "bidirectional": self.bidirectional}


def t5_bucket(relative_position: Tensor, num_buckets: int = 32, max_distance: int = 128,
              bidirectional: bool = True):
    """T5's bucket of `relative_position = key - query` (int32, any shape)."""
    rel = ops.cast(relative_position, "int32")
    bucket = ops.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + ops.cast(ops.greater(rel, 0), "int32") * num_buckets
        distance = ops.abs(rel)
    else:
        distance = ops.maximum(-rel, 0)
    max_exact = num_buckets // 2
    ratio = ops.cast(ops.maximum(distance, 1), "float32") / float(max_exact)
    large = max_exact + ops.cast(
        ops.log(ratio) / math.log(max_distance / max_exact)
        * float(num_buckets - max_exact), "int32")
    large = ops.minimum(large, num_buckets - 1)
    return bucket + ops.where(ops.less(distance, max_exact), distance, large)


def serialize_term(term: Callable | None, name: str = "term"):
    """A term's keras config, or a ValueError saying how to make it savable.

    Objects of registered classes and registered functions serialize; an
    unregistered function or closure would save a file that cannot load, so
    it is refused here, at save time.
    """
    if term is None:
        return None
    target = term if callable(term) and not hasattr(term, "get_config") else type(term)
    registered = keras.saving.get_registered_name(target)
    if keras.saving.get_registered_object(registered) is not target:
        what = "function" if target is term else "class"
        raise ValueError(
            f"`{name}` is the {what} {getattr(target, '__qualname__', target)!r}, "
            "which keras cannot load back from a saved model. Decorate it with "
            "@keras.saving.register_keras_serializable(package=\"my_package\") "
            "(a closure cannot be registered: write a class with __call__ and "
            "get_config, or use an attnkit.ops term such as attnkit.ops.alibi).")
    return keras.saving.serialize_keras_object(term)


def _frozen(value):
    """A config as nested tuples (hashable; plain Python, so TorchDynamo
    traces it where it would not trace `json`)."""
    if isinstance(value, dict):
        return tuple((k, _frozen(value[k])) for k in sorted(value))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def cache_key(term):
    """A hashable stand-in for `term` (a term object or function) in a
    compiled graph's key: its own `cache_key()`, else its identity (the
    cache keeps the term alive, so the identity is not reused)."""
    if term is None:
        return None
    own = getattr(term, "cache_key", None)
    key = own() if callable(own) else None
    return key if key is not None else ("id", getattr(term, "__qualname__", ""), id(term))


def deserialize_term(config: dict | Callable | None):
    """The inverse of `serialize_term`; passes callables and None through."""
    if config is None or callable(config):
        return config
    return keras.saving.deserialize_keras_object(config)


def _check_rows(name, table, batch, exactly=False):
    """A table read at the batch index must have B rows (or 1, unless `exactly`)."""
    rows = table.shape[0]
    allowed = (batch,) if exactly else (1, batch)
    if batch is not None and rows is not None and rows not in allowed:
        expected = f"B={batch}" if exactly else f"1 or B={batch}"
        raise ValueError(
            f"`{name}` must have {expected} rows, one per batch row. Received: "
            f"{name}.shape={tuple(table.shape)}.")


def _table(name, x, rank):
    if isinstance(x, (list, tuple)):
        try:
            x = np.asarray(x)
        except ValueError as error:  # rows of different lengths
            raise ValueError(
                f"`{name}` must be a rectangular table of rank {rank}; its rows "
                f"have different lengths. Received: {x!r}.") from error
        if x.dtype == object:
            raise ValueError(
                f"`{name}` must be a rectangular table of rank {rank}; its rows "
                f"have different lengths. Received: {x.tolist()!r}.")
    x = _checks.as_tensor(name, x, "a numeric")
    _checks.check_rank(name, x, rank)
    return x


def _int_table(name, x, rank):
    x = _table(name, x, rank)
    dtype = backend.standardize_dtype(x.dtype)
    if "int" not in dtype:
        raise TypeError(f"`{name}` must hold integers. Received dtype {dtype}.")
    return ops.cast(x, "int32")


def _to_list(name, x):
    """A tensor held by a term as nested lists for its config."""
    if x is None:
        return None
    try:
        return np.asarray(ops.convert_to_numpy(x)).tolist()
    except Exception as error:  # a traced tensor has no value to save
        raise ValueError(
            f"`{name}` is a traced tensor; a term holding it cannot be saved. "
            "Build the term from concrete values to save it.") from error


def _table_lookup(table):
    """Returns lookup(b, pos) -> table[b, pos] for broadcasting index tensors.

    Positions outside [0, L) read a clipped entry; `with_range=True` also
    returns whether the position was inside, and a bool table reads False.
    """
    length = table.shape[1]
    flat = ops.reshape(table, (-1,))

    def lookup(b, pos, with_range=False):
        inside = ops.logical_and(pos >= 0, pos < length)
        value = ops.take(flat, b * length + ops.clip(pos, 0, length - 1))
        if with_range:
            return value, inside
        if backend.standardize_dtype(value.dtype) == "bool":
            return ops.logical_and(value, inside)
        return value

    return lookup


def _shape(x):
    return None if x is None else tuple(getattr(x, "shape", ()))

