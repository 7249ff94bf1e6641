"""PositionScheme: the extension point behind `MultiHeadAttention(position=)`.

Shape legend: B batch, P positions, N query heads, H key head dim,
Hv value head dim, R relative buckets.
"""

import keras

from attnkit.types import Tensor


@keras.saving.register_keras_serializable(package="attnkit")
class PositionScheme(keras.layers.Layer):
    """Base class of the position objects that plug into attention layers.

    A scheme changes attention in at most two places, each a method to
    override (the defaults change nothing):

    - `rotate(x, positions)`: queries and keys before the dot product
      (rotary embeddings). `x` is `(B, P, heads, H)`, `positions` int32
      `(P,)` absolute positions (the cache index included when decoding).
    - `attention_terms()`: the terms the attention core adds, as keyword
      arguments of `attnkit.ops.relative_attention`: `buckets` (an
      `attnkit.ops.RelativeBuckets`) with any of `key_table` `(R, H)` or
      `(R, N, H)`, `value_table` `(R, Hv)` or `(R, N, Hv)`, `bias_table`
      `(R, N)`; and/or a `score_mod`, applied before the layer's own; and/or
      a `mask_mod`, combined with the layer's. The core computes them on every path
      (chunked with a recomputing backward, math with returned weights).

    Create weights in `build_heads(num_heads, key_dim, value_dim)`, which the
    attention layer calls from its own `build`. A scheme is a keras layer:
    it is saved with the attention layer that owns it.

    Example, a learned bias per head for each clipped distance:

    >>> @keras.saving.register_keras_serializable(package="docs")
    ... class ClippedBias(attnkit.layers.PositionScheme):
    ...     def build_heads(self, num_heads, key_dim, value_dim):
    ...         self.buckets = attnkit.ops.ClippedBuckets(8)
    ...         self.table = self.add_weight(
    ...             shape=(self.buckets.num_buckets, num_heads),
    ...             initializer="zeros", name="table")
    ...         super().build_heads(num_heads, key_dim, value_dim)
    ...     def attention_terms(self):
    ...         return {"buckets": self.buckets, "bias_table": self.table}
    >>> layer = attnkit.layers.MultiHeadAttention(2, 8, position=ClippedBias())
    >>> tuple(layer(keras.ops.ones((1, 5, 16)), keras.ops.ones((1, 5, 16))).shape)
    (1, 5, 16)
    """

    def build_heads(self, num_heads: int, key_dim: int, value_dim: int | None):
        """Creates the scheme's weights for the attention layer's heads."""
        self.num_heads = num_heads
        self.built = True

    def rotate(self, x: Tensor, positions: Tensor):
        """`x` `(B, P, heads, H)` at int positions `(P,)`, rotated."""
        return x

    def attention_terms(self):
        """Keyword arguments for `attnkit.ops.relative_attention` (a dict,
        empty when the scheme adds nothing to the scores)."""
        return {}
