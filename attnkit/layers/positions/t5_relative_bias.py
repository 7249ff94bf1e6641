"""T5RelativeBias: a learned per-head bias over bucketed distances
(Raffel et al. 2020).

Shape legend: N query heads, R = num_buckets.
"""

import keras
from keras import ops

import attnkit.ops as ak
from attnkit.layers._arguments import clone_initializer
from attnkit.layers.positions.position_scheme import PositionScheme
from attnkit.ops.positions import t5_bucket


@keras.saving.register_keras_serializable(package="attnkit")
class T5DistanceDecay(keras.initializers.Initializer):
    """Starts a T5 bias table `(num_buckets, N)` as ALiBi's distance penalty:
    head n's bucket holds `-slope_n * d`, with `d` the shortest distance in
    the bucket and ALiBi's slopes (Press et al. 2022). Each head starts out
    looking near, over its own range, and learns the table from there; a
    table drawn near zero gives no sense of order at first and, moving
    about a learning rate per update, learns it slowly on small data.

    Args: the buckets' settings, as `T5RelativeBias`'s.
    """

    def __init__(self, num_buckets: int = 32, max_distance: int = 128,
                 bidirectional: bool = True):
        self.buckets = ak.T5Buckets(num_buckets, max_distance, bidirectional)

    def __call__(self, shape, dtype=None):
        rows, heads = shape
        if rows != self.buckets.num_buckets:
            raise ValueError(f"The table has {self.buckets.num_buckets} buckets; "
                             f"received shape {tuple(shape)}.")
        far = self.buckets.max_distance
        relative = ops.arange(-far, far + 1, dtype="int32")
        buckets = t5_bucket(relative, rows, far, self.buckets.bidirectional)
        here = ops.equal(buckets[None, :], ops.arange(rows, dtype="int32")[:, None])
        distance = ops.min(ops.where(here, ops.abs(relative)[None, :], far), axis=1)
        slopes = ops.convert_to_tensor(ak.alibi_slopes(heads), "float32")
        table = -ops.cast(distance, "float32")[:, None] * slopes[None, :]
        return ops.cast(table, dtype or "float32")

    def get_config(self):
        return self.buckets.get_config()


@keras.saving.register_keras_serializable(package="attnkit")
class T5RelativeBias(PositionScheme):
    """T5's relative attention bias: `logits[n, i, j] += table[bucket(j - i), n]`.

    Distances below `num_buckets / 4` (bidirectional) each get a bucket;
    longer ones share logarithmically wider buckets up to `max_distance`,
    and all beyond share the last (`attnkit.ops.T5Buckets`). The core adds
    the bias block by block and recomputes it in the chunked backward, so
    it never holds a `(N, T, S)` tensor.

    Args:
        num_buckets: buckets in all (half per direction if bidirectional).
        max_distance: distance from which every key shares the last bucket.
        bidirectional: tell keys before and after the query apart (encoder);
            False for causal decoders (keys after the query share bucket 0).
        embeddings_initializer: for the `(num_buckets, N)` table;
            `"distance_decay"` starts it as ALiBi's distance penalty
            (`T5DistanceDecay`), which learns order much sooner on small
            data than the default, small random values as in T5.

    Example:

        >>> layer = attnkit.layers.MultiHeadAttention(
        ...     num_heads=2, key_dim=8, position=attnkit.layers.T5RelativeBias())
        >>> x = keras.random.normal((1, 6, 16))
        >>> tuple(layer(x, x, use_causal_mask=True).shape)
        (1, 6, 16)

    References:
        Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
        Unified Text-to-Text Transformer".
    """

    def __init__(self, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True,
                 embeddings_initializer: str | keras.initializers.Initializer = "random_normal",
                 **kwargs):
        super().__init__(**kwargs)
        self.buckets = ak.T5Buckets(num_buckets, max_distance, bidirectional)
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bool(bidirectional)
        if embeddings_initializer == "distance_decay":
            embeddings_initializer = T5DistanceDecay(num_buckets, max_distance, bidirectional)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build_heads(self, num_heads: int, key_dim: int, value_dim: int | None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.num_buckets, num_heads),
            initializer=clone_initializer(self.embeddings_initializer))
        super().build_heads(num_heads, key_dim, value_dim)

    def attention_terms(self):
        return {"buckets": self.buckets, "bias_table": self.embeddings}

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_buckets": self.num_buckets,
            "max_distance": self.max_distance,
            "bidirectional": self.bidirectional,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        })
        return config
