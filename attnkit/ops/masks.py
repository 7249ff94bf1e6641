"""Composable mask builders in the FlexAttention style.

Each builder returns a `mask_mod(b, h, q_idx, kv_idx) -> bool` for the
`mask_mod=` argument of `attnkit.ops.attention`: True = may attend, the index
arguments are int32 tensors broadcasting against `(B, N, t, s)` (`q_idx`
absolute, the query offset included). Combine them with `and_masks` and
`or_masks`, or turn one into a dense tensor with `materialize_mask`.

Shape legend: B batch, T query length, S key length, N query heads, L the
length of a per-position table.
"""

import numbers

from keras import backend
from keras import ops


def causal_mask():
    """Query `q` sees keys `kv <= q`."""

    def mask_mod(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    return mask_mod


def sliding_window_mask(window, causal=False):
    """Keys with `|q - kv| < window`; with `causal`, `q - window < kv <= q`."""
    _check_positive_int("window", window)

    def mask_mod(b, h, q_idx, kv_idx):
        distance = q_idx - kv_idx
        if causal:
            return ops.logical_and(distance >= 0, distance < window)
        return ops.abs(distance) < window

    return mask_mod


def padding_mask(mask=None, lengths=None):
    """Hides padded keys, from a keras mask `(B, S)` or `lengths` `(B,)`.

    Give exactly one of them. `mask` is what `Embedding(mask_zero=True)`
    produces (True = real token); `lengths[b]` keys of row `b` are real.
    """
    if (mask is None) == (lengths is None):
        raise ValueError(
            "padding_mask takes exactly one of `mask` (B, S) or `lengths` "
            f"(B,). Received mask={_shape(mask)}, lengths={_shape(lengths)}."
        )
    if lengths is not None:
        lengths = ops.convert_to_tensor(lengths)
        _check_rank("lengths", lengths, 1)
        lengths = ops.cast(lengths, "int32")

        def from_lengths(b, h, q_idx, kv_idx):
            return kv_idx < ops.take(lengths, b)

        return from_lengths
    mask = ops.convert_to_tensor(mask)
    _check_rank("mask", mask, 2)
    lookup = _table_lookup(ops.cast(mask, "bool"))

    def from_mask(b, h, q_idx, kv_idx):
        return lookup(b, kv_idx)

    return from_mask


def prefix_lm_mask(prefix_length):
    """Prefix-LM: every query sees the first `prefix_length` keys, and the
    rest causally. `prefix_length` is an int or an int tensor `(B,)`."""
    if isinstance(prefix_length, numbers.Integral):
        prefix = prefix_length
        get_prefix = lambda b: prefix  # noqa: E731
    else:
        prefix = ops.cast(ops.convert_to_tensor(prefix_length), "int32")
        _check_rank("prefix_length", prefix, 1)
        get_prefix = lambda b: ops.take(prefix, b)  # noqa: E731

    def mask_mod(b, h, q_idx, kv_idx):
        return ops.logical_or(kv_idx < get_prefix(b), q_idx >= kv_idx)

    return mask_mod


def document_mask(segment_ids, kv_segment_ids=None):
    """Queries see only keys of the same document (packed sequences).

    `segment_ids` `(B, L)` gives the document of each absolute query position;
    `kv_segment_ids` `(B, S)` that of each key (default: the same table, for
    self-attention). Positions past a table's end are hidden.
    """
    segment_ids = ops.convert_to_tensor(segment_ids)
    _check_rank("segment_ids", segment_ids, 2)
    q_lookup = _table_lookup(segment_ids)
    kv_lookup = q_lookup
    if kv_segment_ids is not None:
        kv_segment_ids = ops.convert_to_tensor(kv_segment_ids)
        _check_rank("kv_segment_ids", kv_segment_ids, 2)
        kv_lookup = _table_lookup(kv_segment_ids)

    def mask_mod(b, h, q_idx, kv_idx):
        q_doc, q_in = q_lookup(b, q_idx, with_range=True)
        kv_doc, kv_in = kv_lookup(b, kv_idx, with_range=True)
        same = ops.equal(q_doc, kv_doc)
        return ops.logical_and(same, ops.logical_and(q_in, kv_in))

    return mask_mod


def and_masks(*mask_mods):
    """Visible where every one of `mask_mods` says visible."""
    return _combine(mask_mods, ops.logical_and, "and_masks")


def or_masks(*mask_mods):
    """Visible where any one of `mask_mods` says visible."""
    return _combine(mask_mods, ops.logical_or, "or_masks")


def materialize_mask(mask_mod, batch, num_heads, q_len, kv_len, q_offset=0):
    """Evaluates `mask_mod` into a dense bool tensor `(B, N, T, S)`."""
    b = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1, 1))
    h = ops.reshape(ops.arange(num_heads, dtype="int32"), (1, -1, 1, 1))
    q = ops.reshape(q_offset + ops.arange(q_len, dtype="int32"), (1, 1, -1, 1))
    kv = ops.reshape(ops.arange(kv_len, dtype="int32"), (1, 1, 1, -1))
    visible = ops.cast(mask_mod(b, h, q, kv), "bool")
    return ops.broadcast_to(visible, (batch, num_heads, q_len, kv_len))


def _combine(mask_mods, op, name):
    if not mask_mods or not all(callable(m) for m in mask_mods):
        raise TypeError(f"{name} takes one or more mask_mod callables.")

    def mask_mod(b, h, q_idx, kv_idx):
        result = ops.cast(mask_mods[0](b, h, q_idx, kv_idx), "bool")
        for other in mask_mods[1:]:
            result = op(result, ops.cast(other(b, h, q_idx, kv_idx), "bool"))
        return result

    return mask_mod


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


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int. Received: {value!r}.")


def _check_rank(name, x, rank):
    if len(x.shape) != rank:
        raise ValueError(
            f"`{name}` must have rank {rank}. Received shape {tuple(x.shape)}."
        )


def _shape(x):
    return None if x is None else tuple(getattr(x, "shape", ()))
