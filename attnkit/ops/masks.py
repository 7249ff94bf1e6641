"""Mask builders in the FlexAttention style.

Each builder returns a mask term (`attnkit.ops.terms`), a saveable object
called as `mask_mod(b, h, q_idx, kv_idx) -> bool` for the `mask_mod=`
argument of `attnkit.ops.attention`: True = may attend, the index arguments
are int32 tensors broadcasting against `(B, N, t, s)` (`q_idx` absolute, the
query offset included). Combine them with `and_masks` and `or_masks`, or
turn one into a dense tensor with `materialize_mask`.

Shape legend: B batch, T query length, S key length, N query heads.
"""

from collections.abc import Callable

from keras import ops

from attnkit.ops import terms
from attnkit.types import Tensor


def causal_mask():
    """Query `q` sees keys `kv <= q`."""
    return terms.CausalMask()


def sliding_window_mask(window: int, causal: bool = False):
    """Keys with `|q - kv| < window`; with `causal`, `q - window < kv <= q`."""
    return terms.SlidingWindowMask(window, causal)


def padding_mask(mask: Tensor | None = None, lengths: Tensor | None = None):
    """Hides padded keys, from a keras mask `(B, S)` or `lengths` `(B,)`.

    Give exactly one of them. `mask` is what `Embedding(mask_zero=True)`
    produces (True = real token); `lengths[b]` keys of row `b` are real.
    """
    return terms.PaddingMask(mask, lengths)


def prefix_lm_mask(prefix_length: int | Tensor):
    """Prefix-LM: every query sees the first `prefix_length` keys, and the
    rest causally. `prefix_length` is an int or an int tensor `(B,)`."""
    return terms.PrefixLMMask(prefix_length)


def document_mask(segment_ids: Tensor, kv_segment_ids: Tensor | None = None):
    """Queries see only keys of the same document (packed sequences).

    `segment_ids` `(B, L)` gives the document of each absolute query position;
    `kv_segment_ids` `(B, S)` that of each key (default: the same table, for
    self-attention). Positions past a table's end are hidden.
    """
    return terms.DocumentMask(segment_ids, kv_segment_ids)


def and_masks(*mask_mods):
    """Visible where every one of `mask_mods` says visible."""
    return terms.AndMasks(*mask_mods)


def or_masks(*mask_mods):
    """Visible where any one of `mask_mods` says visible."""
    return terms.OrMasks(*mask_mods)


def materialize_mask(mask_mod: Callable | None, batch: int, num_heads: int, q_len: int,
                     kv_len: int, q_offset: int | Tensor = 0):
    """Evaluates `mask_mod` into a dense bool tensor `(B, N, T, S)`."""
    b = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1, 1))
    h = ops.reshape(ops.arange(num_heads, dtype="int32"), (1, -1, 1, 1))
    q = ops.reshape(q_offset + ops.arange(q_len, dtype="int32"), (1, 1, -1, 1))
    kv = ops.reshape(ops.arange(kv_len, dtype="int32"), (1, 1, 1, -1))
    visible = ops.cast(mask_mod(b, h, q, kv), "bool")
    return ops.broadcast_to(visible, (batch, num_heads, q_len, kv_len))
