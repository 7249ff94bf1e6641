"""ShawRelativePosition: learned relative-position embeddings for keys and
values (Shaw, Uszkoreit, Vaswani 2018).

Shape legend: N query heads, H key head dim, Hv value head dim,
R = 2k + 1 clipped distances.
"""

import keras

import attnkit.ops as ak
from attnkit import _checks
from attnkit.layers._arguments import clone_initializer
from attnkit.layers.positions.position_scheme import PositionScheme


@keras.saving.register_keras_serializable(package="attnkit")
class ShawRelativePosition(PositionScheme):
    """Relative attention of Shaw et al. 2018, keys and (optionally) values.

    Query `i` and key `j` see the distance `clip(j - i, -k, k)` through two
    learned tables `a^K`, `a^V` of `2k + 1` rows (equations 3-5):
    `e_ij = q_i . (k_j + a^K_ij) * scale` and
    `z_i = sum_j w_ij (v_j + a^V_ij)`.

    The tables go to the core (`attnkit.ops.relative_attention` with
    `attnkit.ops.ClippedBuckets(k)`), which works in blocks of
    `(t, s, 2k + 1)` buckets and, unless the weights are asked for or
    dropped out, holds neither the weights nor a `(T, S)` relative tensor,
    forward or backward.

    Args:
        clip_distance: `k`, the largest distance told apart.
        use_relative_values: also learn the value table `a^V` (equation 3),
            as `RelativePositionalAttention(use_relative_values=)`.
        per_head: one table per head instead of one shared by all heads
            (the paper shares them).
        embeddings_initializer: the initializer of both tables.
        embeddings_regularizer: the regularizer of both tables.
        max_relative_position: deprecated name of `clip_distance`.
        use_values: deprecated name of `use_relative_values`.

    Example:

        >>> layer = attnkit.layers.MultiHeadAttention(
        ...     num_heads=2, key_dim=8,
        ...     position=attnkit.layers.ShawRelativePosition(4))
        >>> x = keras.random.normal((1, 6, 16))
        >>> tuple(layer(x, x).shape)
        (1, 6, 16)

    References:
        Shaw, Uszkoreit, Vaswani 2018, "Self-Attention with Relative Position
        Representations".
    """

    def __init__(self, clip_distance: int | None = None, use_relative_values: bool | None = None,
                 per_head: bool = False,
                 embeddings_initializer: str | keras.initializers.Initializer = "glorot_uniform",
                 embeddings_regularizer: str | keras.regularizers.Regularizer | None = None,
                 max_relative_position: int | None = None, use_values: bool | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        clip_distance = _checks.renamed_argument(
            "clip_distance", clip_distance, "max_relative_position", max_relative_position)
        _checks.check_positive_int("clip_distance", clip_distance)
        self.clip_distance = clip_distance
        use_relative_values = _checks.renamed_argument(
            "use_relative_values", use_relative_values, "use_values", use_values)
        self.use_relative_values = True if use_relative_values is None else bool(use_relative_values)
        self.per_head = bool(per_head)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.embeddings_regularizer = keras.regularizers.get(embeddings_regularizer)
        self.buckets = ak.ClippedBuckets(clip_distance)

    def build_heads(self, num_heads: int, key_dim: int, value_dim: int | None):
        rows = self.buckets.num_buckets
        heads = (num_heads,) if self.per_head else ()
        self.key_embeddings = self._table("key_embeddings", (rows,) + heads + (key_dim,))
        if self.use_relative_values:
            self.value_embeddings = self._table(
                "value_embeddings", (rows,) + heads + (value_dim,))
        super().build_heads(num_heads, key_dim, value_dim)

    def _table(self, name, shape):
        return self.add_weight(name=name, shape=shape,
                               initializer=clone_initializer(self.embeddings_initializer),
                               regularizer=self.embeddings_regularizer)

    def attention_terms(self):
        terms = {"buckets": self.buckets, "key_table": self.key_embeddings}
        if self.use_relative_values:
            terms["value_table"] = self.value_embeddings
        return terms

    def get_config(self):
        config = super().get_config()
        config.update({
            "clip_distance": self.clip_distance,
            "use_relative_values": self.use_relative_values,
            "per_head": self.per_head,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": keras.regularizers.serialize(self.embeddings_regularizer),
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "use_values" in config:  # saved before the rename: load it quietly
            config["use_relative_values"] = config.pop("use_values")
        return cls(**config)
