"""Masks: which keys a query may see, as saveable mask functions.

A mask term is called as `mask_mod(b, h, q_idx, kv_idx) -> bool` (True =
may attend) with int32 indices broadcasting against `(B, N, t, s)` (`q_idx`
absolute, the query offset included); the `attnkit.ops.terms` protocol
says how to write one. Build the common ones with `causal_mask`,
`sliding_window_mask`, `padding_mask`, `prefix_lm_mask` and
`document_mask`, combine them with `and_masks` / `or_masks`, and turn one
into a dense tensor with `materialize_mask`.

Shape legend: B batch, T query length, S key length, N query heads,
L the length of a per-position table.
"""

from collections.abc import Callable

import numpy as np
from keras import backend
from keras import ops

from attnkit import _checks
from attnkit.ops import _blockmask
from attnkit.ops.terms import MaskMod
from attnkit.ops.terms import cache_key
from attnkit.ops.terms import deserialize_term
from attnkit.ops.terms import register
from attnkit.ops.terms import serialize_term
from attnkit.types import Tensor


@register
class CausalMask(MaskMod):
    """Query `q` sees keys `kv <= q`."""

    _keyed_by_config = True

    def __call__(self, b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def block_visibility(self, geometry):
        return _blockmask.causal(geometry)


@register
class SplitDirectionsMask(MaskMod):
    """Even heads see keys `kv <= q`, odd heads keys `kv >= q`.

    For bidirectional attention whose scores are symmetric in distance (as
    ALiBi's): each head then knows which side a key lies on.
    """

    _keyed_by_config = True

    def __call__(self, b, h, q_idx, kv_idx):
        return ops.where(ops.equal(h % 2, 0), q_idx >= kv_idx, q_idx <= kv_idx)

    def block_visibility(self, geometry):
        # Over every head at once: a block is seen by the heads of one side
        # or the other, and fully only where it is seen fully by both.
        g, xp = geometry, geometry.xp
        left = _blockmask.causal(geometry)
        right = _blockmask.Visibility(xp.less_equal(g.q_lo, g.kv_hi),
                                      xp.less_equal(g.q_hi, g.kv_lo))
        return _blockmask.Visibility(xp.logical_or(left.any, right.any),
                                     xp.logical_and(left.all, right.all))


@register
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


@register
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


@register
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


@register
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


@register
class AndMasks(_Combined):
    """Visible where every one of `mask_mods` says visible."""

    _op = staticmethod(ops.logical_and)
    _combine = staticmethod(_blockmask.and_all)


@register
class OrMasks(_Combined):
    """Visible where any one of `mask_mods` says visible."""

    _op = staticmethod(ops.logical_or)
    _combine = staticmethod(_blockmask.or_all)


_NAMES = {"AndMasks": "and_masks", "OrMasks": "or_masks"}


def causal_mask():
    """Query `q` sees keys `kv <= q`."""
    return CausalMask()


def split_directions_mask():
    """Even heads see keys at or before the query, odd heads keys at or
    after it (`SplitDirectionsMask`)."""
    return SplitDirectionsMask()


def sliding_window_mask(window: int, causal: bool = False):
    """Keys with `|q - kv| < window`; with `causal`, `q - window < kv <= q`."""
    return SlidingWindowMask(window, causal)


def padding_mask(mask: Tensor | None = None, lengths: Tensor | None = None):
    """Hides padded keys, from a keras mask `(B, S)` or `lengths` `(B,)`.

    Give exactly one of them. `mask` is what `Embedding(mask_zero=True)`
    produces (True = real token); `lengths[b]` keys of row `b` are real.
    """
    return PaddingMask(mask, lengths)


def prefix_lm_mask(prefix_length: int | Tensor):
    """Prefix-LM: every query sees the first `prefix_length` keys, and the
    rest causally. `prefix_length` is an int or an int tensor `(B,)`.

    Give it without `is_causal=True` (a layer's `use_causal_mask`): the two
    together are plain causal attention, and the core warns."""
    return PrefixLMMask(prefix_length)


def document_mask(segment_ids: Tensor, kv_segment_ids: Tensor | None = None):
    """Queries see only keys of the same document (packed sequences).

    `segment_ids` `(B, L)` gives the document of each absolute query position;
    `kv_segment_ids` `(B, S)` that of each key (default: the same table, for
    self-attention). Positions past a table's end are hidden.
    """
    return DocumentMask(segment_ids, kv_segment_ids)


def and_masks(*mask_mods):
    """Visible where every one of `mask_mods` says visible."""
    return AndMasks(*mask_mods)


def or_masks(*mask_mods):
    """Visible where any one of `mask_mods` says visible."""
    return OrMasks(*mask_mods)


def materialize_mask(mask_mod: Callable | None, batch: int, num_heads: int, q_len: int,
                     kv_len: int, q_offset: int | Tensor = 0):
    """Evaluates `mask_mod` into a dense bool tensor `(B, N, T, S)`."""
    b = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1, 1))
    h = ops.reshape(ops.arange(num_heads, dtype="int32"), (1, -1, 1, 1))
    q = ops.reshape(q_offset + ops.arange(q_len, dtype="int32"), (1, 1, -1, 1))
    kv = ops.reshape(ops.arange(kv_len, dtype="int32"), (1, 1, 1, -1))
    visible = ops.cast(mask_mod(b, h, q, kv), "bool")
    return ops.broadcast_to(visible, (batch, num_heads, q_len, kv_len))


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


