"""Position math for attention: relative buckets and rotary embeddings (RoPE).

Relative buckets map a (query, key) pair of positions to a row of a learned
table (`ClippedBuckets`, Shaw et al.'s; `T5Buckets`, T5's) and are saveable
terms (`attnkit.ops.terms`); the rotary functions are pure functions on
`keras.ops`. The position layers in `attnkit.layers.positions` hold the
weights and call these.

Shape legend: B batch, P positions, H head dim.
"""

import math
import numbers

from keras import ops

from attnkit import _checks
from attnkit import _backends
from attnkit.ops.terms import Term
from attnkit.ops.terms import register
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
    dtype = _backends.compute_dtype_for(x.dtype)
    cos, sin = rotary_angles(positions, dim, max_wavelength, dtype)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # (1, P, 1, H)
    x32 = ops.cast(x, dtype)
    first, second = x32[..., : dim // 2], x32[..., dim // 2:]
    turned = ops.concatenate([-second, first], axis=-1)
    return ops.cast(x32 * cos + turned * sin, x.dtype)


@register
class RelativeBuckets(Term):
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


@register
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


@register
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
