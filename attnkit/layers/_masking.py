"""Merging keras-style masks into one boolean attention mask.

Shape legend: B batch, T query length, S key length.
"""

from keras import ops


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
