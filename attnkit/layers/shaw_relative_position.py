"""ShawRelativePosition: learned relative-position embeddings for keys and
values (Shaw, Uszkoreit, Vaswani 2018).

Shape legend: B batch, T query length, S key length, L = T = S, N query
heads, H key head dim, Hv value head dim, R = 2k + 1 clipped distances.
"""

import keras
from keras import ops

from attnkit.layers._arguments import check_positive_int
from attnkit.layers._arguments import clone_initializer
from attnkit.layers.position_scheme import PositionScheme
from attnkit.ops import positions as P


@keras.saving.register_keras_serializable(package="attnkit")
class ShawRelativePosition(PositionScheme):
    """Relative attention of Shaw et al. 2018, keys and (optionally) values.

    Query `i` and key `j` see the distance `clip(j - i, -k, k)` through two
    learned tables `a^K`, `a^V` of `2k + 1` rows (equations 3-5):
    `e_ij = q_i . (k_j + a^K_ij) * scale` and
    `z_i = sum_j w_ij (v_j + a^V_ij)`.

    Unless the attention weights are asked for (or dropped out), the layer
    hands the tables to `attnkit.ops.relative_attention`, which works in
    blocks of `(t, s, 2k + 1)` buckets and holds neither the weights nor a
    `(T, S)` relative tensor, forward or backward. With the weights,
    self-attention never builds a `(T, S, H)` tensor: the relative logits
    are `q @ E^T` over the `2L - 1` distances, moved into place by a skew
    (pad-reshape-slice, Huang et al. 2018), and the value term reads the
    weights through the inverse skew. Cross-attention and cached decoding
    (queries at an offset) index the `(B, N, T, R)` logits by explicit
    distances instead; both ways give the same numbers.

    Args:
        max_relative_position: `k`, the largest distance told apart.
        use_values: also learn the value table `a^V` (equation 3).
        per_head: one table per head instead of one shared by all heads
            (the paper shares them).
        embeddings_initializer, embeddings_regularizer: for both tables.

    Example:

    >>> layer = attnkit.layers.MultiHeadAttention(
    ...     num_heads=2, key_dim=8,
    ...     position=attnkit.layers.ShawRelativePosition(4))
    >>> x = keras.random.normal((1, 6, 16))
    >>> tuple(layer(x, x).shape)
    (1, 6, 16)

    References:
        Shaw, Uszkoreit, Vaswani 2018, "Self-Attention with Relative Position
        Representations"; Huang et al. 2018, "Music Transformer".
    """

    def __init__(self, max_relative_position, use_values=True, per_head=False,
                 embeddings_initializer="glorot_uniform",
                 embeddings_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("max_relative_position", max_relative_position)
        self.max_relative_position = max_relative_position
        self.use_values = bool(use_values)
        self.per_head = bool(per_head)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)

    @property
    def uses_weights(self):
        return self.use_values

    def build_heads(self, num_heads, key_dim, value_dim):
        rows = 2 * self.max_relative_position + 1
        heads = (num_heads,) if self.per_head else ()
        self.key_embeddings = self._table("key_embeddings", (rows,) + heads + (key_dim,))
        if self.use_values:
            self.value_embeddings = self._table(
                "value_embeddings", (rows,) + heads + (value_dim,))
        super().build_heads(num_heads, key_dim, value_dim)

    def _table(self, name, shape):
        return self.add_weight(name=name, shape=shape,
                               initializer=clone_initializer(self.embeddings_initializer),
                               regularizer=self.embeddings_regularizer)

    def _heads(self):
        return "rnh" if self.per_head else "rh"

    def relative_tables(self):
        value_table = self.value_embeddings if self.use_values else None
        return self.key_embeddings, value_table, self.max_relative_position

    def score_terms(self, query, query_positions, key_positions, scale, aligned):
        dtype = _float_dtype(query)
        query = ops.cast(query, dtype)
        table = ops.cast(self.key_embeddings, dtype)
        heads = self._heads()
        if aligned:
            length = query.shape[1]
            table = ops.take(table, P.full_relative_index(length, self.max_relative_position), axis=0)
            relative = ops.einsum(f"btnh,{heads}->bntr", query, table)  # (B, N, L, 2L-1)
            return P.skew(relative) * float(scale), None
        relative = ops.einsum(f"btnh,{heads}->bntr", query, table)  # (B, N, T, R)
        index = P.relative_index(query_positions, key_positions, self.max_relative_position)
        b, n, t = ops.shape(relative)[:3]
        index = ops.broadcast_to(index[None, None], (b, n, t, ops.shape(index)[1]))
        return ops.take_along_axis(relative, index, axis=-1) * float(scale), None

    def value_term(self, weights, query_positions, key_positions, aligned):
        if not self.use_values:
            return None
        dtype = _float_dtype(weights)
        weights = ops.cast(weights, dtype)
        table = ops.cast(self.value_embeddings, dtype)
        heads = self._heads()
        if aligned:
            length = weights.shape[-1]
            table = ops.take(table, P.full_relative_index(length, self.max_relative_position), axis=0)
            relative = P.unskew(weights)  # (B, N, L, 2L-1)
        else:
            index = P.relative_index(query_positions, key_positions, self.max_relative_position)
            buckets = ops.one_hot(index, 2 * self.max_relative_position + 1, dtype=dtype)  # (T, S, R)
            relative = ops.einsum("bnts,tsr->bntr", weights, buckets)  # (B, N, T, R)
        return ops.einsum(f"bntr,{heads}->btnh", relative, table)

    def get_config(self):
        config = super().get_config()
        config.update({
            "max_relative_position": self.max_relative_position,
            "use_values": self.use_values,
            "per_head": self.per_head,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": keras.regularizers.serialize(self.embeddings_regularizer),
        })
        return config


def _float_dtype(x):
    """float64 stays float64; everything else computes in float32."""
    return "float64" if keras.backend.standardize_dtype(x.dtype) == "float64" else "float32"
