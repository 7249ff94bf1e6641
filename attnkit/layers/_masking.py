"""Merging keras-style masks into one boolean attention mask.

Shape legend: B batch, T query length, S key length.
"""

import contextlib

from keras import ops
from keras.src.backend.common import masking


def merge_masks(query_mask=None, value_mask=None, key_mask=None,
                attention_mask=None):
    """AND of the given masks as a bool `(B?, T?, S?)` tensor, or None.

    `query_mask` `(B, T)` hides whole query rows (their output is 0),
    `value_mask` / `key_mask` `(B, S)` hide keys, `attention_mask`
    `(B, T, S)` hides pairs; True = may attend, as everywhere in attnkit.
    """
    parts = []
    if query_mask is not None:
        parts.append(ops.expand_dims(ops.cast(query_mask, "bool"), -1))  # (B, T, 1)
    for mask in (value_mask, key_mask):
        if mask is not None:
            parts.append(ops.expand_dims(ops.cast(mask, "bool"), -2))  # (B, 1, S)
    if attention_mask is not None:
        parts.append(ops.cast(attention_mask, "bool"))  # (B, T, S)
    merged = None
    for part in parts:
        merged = part if merged is None else ops.logical_and(merged, part)
    return merged


@contextlib.contextmanager
def masks_hidden(*tensors):
    """Hides the tensors' keras masks while sub-layers run, then restores them.

    A sub-layer without masking support (`EinsumDense`) warns that it
    "will destroy the mask" when called on a masked tensor; keras's own
    MultiHeadAttention clears the caller's masks for good, which silently
    drops them for the caller's later layers. keras has no public API for
    the attribute, hence its own masking module.
    """
    saved = [masking.get_keras_mask(x) for x in tensors]
    for x in tensors:
        masking.set_keras_mask(x, None)
    try:
        yield
    finally:
        for x, mask in zip(tensors, saved):
            if mask is not None:
                masking.set_keras_mask(x, mask)
