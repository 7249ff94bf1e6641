"""Position math for attention: relative indices, the skew, T5 buckets, RoPE.

`t5_bucket` lives in `attnkit.ops.terms` with the bucket objects and is
re-exported here.

Pure functions on `keras.ops`; the position layers in `attnkit.layers` hold
the weights and call these.

Shape legend: B batch, T query length, S key length, L = T = S for
self-attention, N heads, H head dim, R = 2k + 1 clipped relative distances.
"""

import math
import numbers

from keras import backend
from keras import ops

from attnkit.ops.terms import t5_bucket  # noqa: F401


def relative_index(query_positions, key_positions, clip_distance):
    """`clip(j_pos - i_pos, -k, k) + k` as int32 `(T, S)`: an index into a
    table of the `2k + 1` clipped distances (Shaw et al. 2018)."""
    k = int(clip_distance)
    q = ops.cast(ops.convert_to_tensor(query_positions), "int32")
    kv = ops.cast(ops.convert_to_tensor(key_positions), "int32")
    distance = ops.expand_dims(kv, 0) - ops.expand_dims(q, 1)  # (T, S)
    return ops.clip(distance, -k, k) + k


def full_relative_index(length, clip_distance):
    """The table row of each distance `-(L-1) .. L-1`, int32 `(2L - 1,)`,
    for `skew`."""
    k = int(clip_distance)
    return ops.clip(ops.arange(-(length - 1), length, dtype="int32"), -k, k) + k


def skew(x):
    """Relative to absolute: `y[..., i, j] = x[..., i, j - i + L - 1]`.

    `x` is `(..., L, 2L - 1)` indexed by the distance `j - i` (offset by
    `L - 1`); `y` is `(..., L, L)`. Only reshapes and slices (the "skewing"
    of Huang et al. 2018, generalised to both directions): row `i` of `y`
    starts `L - 1 - i` columns into row `i` of `x`, which is one fixed
    stride of `2L - 2` in the flattened tensor.
    """
    shape = list(ops.shape(x))
    length = shape[-2]
    if length == 1:
        return x
    lead = shape[:-2]
    flat = ops.reshape(x, lead + [length * (2 * length - 1)])
    flat = flat[..., length - 1: length - 1 + length * (2 * length - 2)]
    return ops.reshape(flat, lead + [length, 2 * length - 2])[..., :length]


def unskew(y):
    """Absolute to relative, the transpose of `skew`.

    `y` is `(..., L, L)`; returns `x` `(..., L, 2L - 1)` with
    `x[..., i, j - i + L - 1] = y[..., i, j]` and zeros where `j` would fall
    outside `0 .. L-1`.
    """
    shape = list(ops.shape(y))
    length = shape[-1]
    if length == 1:
        return y
    lead = shape[:-2]
    rank = len(shape)
    wide = ops.pad(y, [[0, 0]] * (rank - 1) + [[0, length - 2]])  # (..., L, 2L-2)
    flat = ops.reshape(wide, lead + [length * (2 * length - 2)])
    flat = ops.pad(flat, [[0, 0]] * (rank - 2) + [[length - 1, 1]])
    return ops.reshape(flat, lead + [length, 2 * length - 1])


def check_max_wavelength(max_wavelength):
    if (isinstance(max_wavelength, bool) or not isinstance(max_wavelength, numbers.Real)
            or max_wavelength <= 1):
        raise ValueError(
            "`max_wavelength` must be a number > 1. Received: "
            f"max_wavelength={max_wavelength!r}."
        )


def rotary_angles(positions, dim, max_wavelength=10000.0, dtype="float32"):
    """`(cos, sin)` of RoPE's angles, float32 `(P, dim)` for int positions
    `(P,)`: frequency `f` is `max_wavelength ** (-2f / dim)`, repeated for
    the two halves of the head (the half-split pairing of GPT-NeoX, Llama
    and KerasHub)."""
    half = dim // 2
    exponent = ops.arange(half, dtype=dtype) * (-2.0 * math.log(max_wavelength) / dim)
    inverse = ops.exp(exponent)  # max_wavelength ** (-2f / dim)
    angles = ops.cast(positions, dtype)[:, None] * inverse[None, :]  # (P, dim/2)
    angles = ops.concatenate([angles, angles], axis=-1)  # (P, dim)
    return ops.cos(angles), ops.sin(angles)


def apply_rotary(x, positions, max_wavelength=10000.0):
    """Rotates `x` `(B, P, heads, H)` to its int positions `(P,)` (RoPE,
    Su et al. 2021): pair `(x[f], x[f + H/2])` turns by `pos * freq[f]`.
    Computed in float32 (float64 for float64 `x`), returned in `x`'s dtype."""
    dim = x.shape[-1]
    dtype = "float64" if backend.standardize_dtype(x.dtype) == "float64" else "float32"
    cos, sin = rotary_angles(positions, dim, max_wavelength, dtype)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # (1, P, 1, H)
    x32 = ops.cast(x, dtype)
    first, second = x32[..., : dim // 2], x32[..., dim // 2:]
    turned = ops.concatenate([-second, first], axis=-1)
    return ops.cast(x32 * cos + turned * sin, x.dtype)
