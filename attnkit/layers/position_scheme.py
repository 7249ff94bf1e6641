"""PositionScheme: the extension point behind `MultiHeadAttention(position=)`.

Shape legend: B batch, T query length, S key length, N query heads,
H key head dim, Hv value head dim, P positions.
"""

import keras


@keras.saving.register_keras_serializable(package="attnkit")
class PositionScheme(keras.layers.Layer):
    """Base class of the position objects that plug into attention layers.

    A position scheme may change the attention in three places, each a
    method to override (the defaults change nothing), and may hand its
    tables to the core instead (`relative_tables`):

    - `rotate(x, positions)`: queries and keys before the dot product (RoPE).
    - `score_terms(query, query_positions, key_positions, scale, aligned)`:
      a bias and/or a `score_mod` for `attnkit.ops.attention` (Shaw keys,
      T5, ALiBi).
    - `value_term(weights, query_positions, key_positions, aligned)`: an
      addition to each head's output computed from the attention weights
      (Shaw values); set `uses_weights = True` to receive them.

    Positions are int32 tensors of absolute positions: queries sit at
    `q_offset + arange(T)` (the cache index when decoding) and keys at
    `arange(S)`. `aligned` is True when both are `arange(L)` (self-attention
    without a cache), which lets a scheme use a cheaper layout.

    The attention layer calls `build_heads(num_heads, key_dim, value_dim)`
    from its own `build`; create weights there. A scheme is a keras layer:
    it is saved with the attention layer that owns it.
    """

    uses_weights = False

    def build_heads(self, num_heads, key_dim, value_dim):
        """Creates the scheme's weights for the attention layer's heads."""
        self.num_heads = num_heads
        self.built = True

    def rotate(self, x, positions):
        """`x` `(B, P, heads, H)` at int positions `(P,)`, rotated."""
        return x

    def score_terms(self, query, query_positions, key_positions, scale, aligned):
        """`(bias, score_mod)` for `attnkit.ops.attention`, either None.

        `query` `(B, T, N, H)` is the projected (and rotated) query; `scale`
        is the factor the layer applies to `q . k`.
        """
        return None, None

    def relative_tables(self):
        """`(key_table, value_table, k)` for `attnkit.ops.relative_attention`,
        or None.

        A scheme made of clipped relative-position embeddings returns them
        here; the layer then computes it in the core (chunked, never holding
        the weights) whenever it does not need the weights themselves, and
        uses `score_terms`/`value_term` otherwise.
        """
        return None

    def value_term(self, weights, query_positions, key_positions, aligned):
        """`(B, T, N, Hv)` to add to the heads' outputs, or None.

        `weights` `(B, N, T, S)` are the attention weights (after dropout
        during training).
        """
        return None
