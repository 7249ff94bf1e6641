"""Position math for attention: T5 buckets and rotary embeddings (RoPE).

`t5_bucket` lives in `attnkit.ops.terms` with the bucket objects and is
re-exported here. Pure functions on `keras.ops`; the position layers in
`attnkit.layers` hold the weights and call these.

Shape legend: B batch, P positions, H head dim.
"""

import math
import numbers

from keras import ops

from attnkit.ops import _plan
from attnkit.ops.terms import t5_bucket  # noqa: F401
from attnkit.types import Tensor


def check_max_wavelength(max_wavelength: float):
    if (isinstance(max_wavelength, bool) or not isinstance(max_wavelength, numbers.Real)
            or not max_wavelength > 1 or max_wavelength == float("inf")):
        raise ValueError(
            "`max_wavelength` must be a finite number > 1. Received: "
            f"max_wavelength={max_wavelength!r}."
        )


def rotary_angles(positions: Tensor, dim: int, max_wavelength: float = 10000.0,
                  dtype: str = "float32"):
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


def apply_rotary(x: Tensor, positions: Tensor, max_wavelength: float = 10000.0):
    """Rotates `x` `(B, P, heads, H)` to its int positions `(P,)` (RoPE,
    Su et al. 2021): pair `(x[f], x[f + H/2])` turns by `pos * freq[f]`.
    Computed in float32 (float64 for float64 `x`), returned in `x`'s dtype."""
    dim = x.shape[-1]
    dtype = _plan.compute_dtype_for(x.dtype)
    cos, sin = rotary_angles(positions, dim, max_wavelength, dtype)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # (1, P, 1, H)
    x32 = ops.cast(x, dtype)
    first, second = x32[..., : dim // 2], x32[..., dim // 2:]
    turned = ops.concatenate([-second, first], axis=-1)
    return ops.cast(x32 * cos + turned * sin, x.dtype)
