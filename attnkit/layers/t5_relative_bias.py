"""T5RelativeBias: a learned per-head bias over bucketed distances
(Raffel et al. 2020).

Shape legend: B batch, N heads, t / s a block of queries / keys.
"""

import keras
from keras import ops

from attnkit.layers._arguments import clone_initializer
from attnkit.layers.position_scheme import PositionScheme
from attnkit.ops import positions as P


@keras.saving.register_keras_serializable(package="attnkit")
class T5RelativeBias(PositionScheme):
    """T5's relative attention bias: `logits[n, i, j] += table[bucket(j - i), n]`.

    Distances below `num_buckets / 4` (bidirectional) each get a bucket;
    longer ones share logarithmically wider buckets up to `max_distance`,
    and all beyond share the last. The bias is computed block by block
    inside the attention kernel (a `score_mod`), so it never holds a
    `(N, T, S)` tensor.

    Args:
        num_buckets: buckets in all (half per direction if bidirectional).
        max_distance: distance from which every key shares the last bucket.
        bidirectional: tell keys before and after the query apart (encoder);
            False for causal decoders (keys after the query share bucket 0).
        embeddings_initializer: for the `(num_buckets, N)` table.

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

    def __init__(self, num_buckets=32, max_distance=128, bidirectional=True,
                 embeddings_initializer="random_normal", **kwargs):
        super().__init__(**kwargs)
        minimum = 4 if bidirectional else 2
        for name, value in (("num_buckets", num_buckets), ("max_distance", max_distance)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"`{name}` must be an int >= {minimum}. Received: {name}={value!r}."
                )
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bool(bidirectional)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build_heads(self, num_heads, key_dim, value_dim):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.num_buckets, num_heads),
            initializer=clone_initializer(self.embeddings_initializer))
        super().build_heads(num_heads, key_dim, value_dim)

    def score_terms(self, query, query_positions, key_positions, scale, aligned):
        table = self.embeddings

        def score_mod(scores, b, h, q_idx, kv_idx):
            bucket = P.t5_bucket(kv_idx - q_idx, self.num_buckets,
                                 self.max_distance, self.bidirectional)  # (1, 1, t, s)
            t, s = ops.shape(bucket)[2], ops.shape(bucket)[3]
            bias = ops.take(ops.cast(table, scores.dtype), ops.reshape(bucket, (-1,)), axis=0)
            bias = ops.transpose(ops.reshape(bias, (t, s, self.num_heads)), (2, 0, 1))
            return scores + bias[None]  # (1, N, t, s)

        return None, score_mod

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_buckets": self.num_buckets,
            "max_distance": self.max_distance,
            "bidirectional": self.bidirectional,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        })
        return config
