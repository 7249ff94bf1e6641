"""AlibiBias: attention with linear biases (Press, Smith, Lewis 2022)."""

import keras

import attnkit.ops as ak
from attnkit.layers.positions.position_scheme import PositionScheme


@keras.saving.register_keras_serializable(package="attnkit")
class AlibiBias(PositionScheme):
    """ALiBi: each head subtracts `slope[n] * |i - j|` from its logits.

    The slopes are fixed, as in the paper for any head count
    (`attnkit.ops.alibi_slopes`): a geometric sequence from `2 ** (-8 / N)`
    for a power of two `N`, interleaved from the next power otherwise. No
    weights; the core adds the bias block by block (`attnkit.ops.alibi`)
    and recomputes it in the chunked backward, so training never holds a
    `(N, T, S)` bias. With a causal mask this is the paper's
    `-slope * (i - j)`.

    Example:

        >>> layer = attnkit.layers.MultiHeadAttention(
        ...     num_heads=4, key_dim=8, position=attnkit.layers.AlibiBias())
        >>> x = keras.random.normal((1, 6, 16))
        >>> tuple(layer(x, x, use_causal_mask=True).shape)
        (1, 6, 16)

    References:
        Press, Smith, Lewis 2022, "Train Short, Test Long: Attention with
        Linear Biases Enables Input Length Extrapolation".
    """

    def build_heads(self, num_heads: int, key_dim: int, value_dim: int | None):
        self._score_mod = ak.alibi(num_heads)
        super().build_heads(num_heads, key_dim, value_dim)

    def attention_terms(self):
        return {"score_mod": self._score_mod}
