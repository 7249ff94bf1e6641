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

    Without a causal mask the bias is symmetric: a head cannot tell a key
    `d` places to the left from one `d` places to the right, and an
    encoder with no other position signal reads a sequence and its mirror
    image alike. `split_directions=True` is for such attention: even heads
    see only keys at or before the query, odd heads only keys at or after
    it (`attnkit.ops.split_directions_mask`), each pair of heads with one
    of the slopes of `ceil(num_heads / 2)` heads, so with an even head
    count every slope looks both ways (with an odd one the last head looks
    left). Heads that look one way are what ALiBi's author suggests for
    encoders (in the issues of the paper's code repository,
    ofirpress/attention_with_linear_biases); do not combine it with a
    causal mask, which leaves odd heads only the query's own position.

    Args:
        split_directions: point half the heads left and half right (needs
            2 heads or more).

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

    def __init__(self, split_directions: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.split_directions = bool(split_directions)

    def build_heads(self, num_heads: int, key_dim: int, value_dim: int | None):
        if self.split_directions and num_heads < 2:
            raise ValueError(
                "AlibiBias(split_directions=True) points half the heads each way "
                f"and needs 2 heads or more. Received: num_heads={num_heads}.")
        self._score_mod = ak.alibi(num_heads, split_directions=self.split_directions)
        self._mask_mod = ak.split_directions_mask() if self.split_directions else None
        super().build_heads(num_heads, key_dim, value_dim)

    def attention_terms(self):
        if self._mask_mod is None:
            return {"score_mod": self._score_mod}
        return {"score_mod": self._score_mod, "mask_mod": self._mask_mod}

    def get_config(self):
        return {**super().get_config(), "split_directions": self.split_directions}
