"""ScoreModLayer: a score modifier with weights of its own.

Shape legend: B batch, N query heads, t / s a block of queries / keys.
"""

import keras
from keras import ops

from attnkit.types import Tensor


@keras.saving.register_keras_serializable(package="attnkit")
class ScoreModLayer(keras.layers.Layer):
    """Base class of score modifiers that learn: `MultiHeadAttention(score_mod=...)`.

    A plain `attnkit.ops.ScoreMod` holds no weights. Subclass this instead
    when the term has some (learned ALiBi slopes, a learned distance
    penalty): the attention layer that takes it as `score_mod` builds it,
    trains its weights and saves them with its own. Override:

    - `build_heads(num_heads, key_dim, value_dim)`: create the weights with
      `add_weight`; the attention layer calls it from its own `build`.
    - `bias(b, h, q_idx, kv_idx)`: a term added to the scores, from the
      indices (the `attnkit.ops.attention` convention: int32 tensors
      broadcasting against the scores `(B, N, t, s)`, `q_idx` absolute).
      Such a term runs on every path, the chunked one included, where the
      backward pass recomputes it and stays memory-lean;
    - or `score(scores, b, h, q_idx, kv_idx)` for any other change of the
      scores (a multiplicative gate, a cap); the fused kernels then cannot
      run it.

    Register the subclass with `keras.saving.register_keras_serializable`
    and give `get_config` its arguments, as for any keras layer. Mask
    functions hold no weights (they say visible or not); a hook on the
    weights after the normalizer is `weights_mod`, which any keras layer
    serves.

    Example, ALiBi with a learned slope per head:

    >>> @keras.saving.register_keras_serializable(package="docs")
    ... class LearnedAlibi(attnkit.layers.ScoreModLayer):
    ...     def build_heads(self, num_heads, key_dim, value_dim):
    ...         self.slopes = self.add_weight(
    ...             shape=(num_heads,), initializer="ones", name="slopes")
    ...         super().build_heads(num_heads, key_dim, value_dim)
    ...     def bias(self, b, h, q_idx, kv_idx):
    ...         distance = ops.cast(ops.abs(q_idx - kv_idx), self.slopes.dtype)
    ...         return -ops.take(self.slopes, h) * distance
    >>> layer = attnkit.layers.MultiHeadAttention(4, 8, score_mod=LearnedAlibi())
    >>> x = keras.ops.ones((1, 6, 16))
    >>> tuple(layer(x, x).shape), len(layer.trainable_weights)
    ((1, 6, 16), 9)
    """

    def build_heads(self, num_heads: int, key_dim: int, value_dim: int | None):
        """Creates the term's weights for the attention layer's heads."""
        self.num_heads = num_heads
        self.built = True

    def bias(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor):
        raise NotImplementedError(
            f"{type(self).__name__} must implement bias or score.")

    def score(self, scores: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor):
        """The scores `(B, N, t, s)` changed; by default plus `bias(...)`."""
        return scores + ops.cast(self.bias(b, h, q_idx, kv_idx), scores.dtype)

    def __call__(self, scores, b, h, q_idx, kv_idx):
        # Called by the attention core as a score_mod, never as a keras layer.
        return self.score(scores, b, h, q_idx, kv_idx)

    @property
    def additive(self):
        """True when the modifier is `scores + bias(indices)`."""
        return type(self).score is ScoreModLayer.score

    def check_heads(self, num_heads: int):
        """Raises a ValueError if this modifier cannot serve `num_heads`."""
