"""RotaryEmbedding: rotary position embedding of queries and keys
(Su et al. 2021)."""

import keras

from attnkit.layers.positions.position_scheme import PositionScheme
from attnkit.ops import positions as P
from attnkit.types import Tensor


@keras.saving.register_keras_serializable(package="attnkit")
class RotaryEmbedding(PositionScheme):
    """RoPE: queries and keys are rotated to their absolute positions, so
    that `q_i . k_j` depends on `j - i` only.

    Feature pairs `(f, f + H/2)` turn by `position * max_wavelength **
    (-2f / H)` (the half-split pairing of GPT-NeoX, Llama and KerasHub).
    With a cache, keys are stored rotated and new queries and keys are
    rotated to `cache_update_index + i`. Needs an even key head dim.

    Args:
        max_wavelength: the longest wavelength, 10000 in the paper.

    Example:

        >>> layer = attnkit.layers.MultiHeadAttention(
        ...     num_heads=2, key_dim=8, position=attnkit.layers.RotaryEmbedding())
        >>> x = keras.random.normal((1, 6, 16))
        >>> tuple(layer(x, x, use_causal_mask=True).shape)
        (1, 6, 16)

    References:
        Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
        Embedding".
    """

    def __init__(self, max_wavelength: float = 10000, **kwargs):
        super().__init__(**kwargs)
        P.check_max_wavelength(max_wavelength)
        self.max_wavelength = max_wavelength

    def build_heads(self, num_heads: int, key_dim: int, value_dim: int | None):
        if key_dim % 2:
            raise ValueError(
                "RotaryEmbedding rotates pairs of features and needs an even "
                f"key_dim. Received: key_dim={key_dim}."
            )
        super().build_heads(num_heads, key_dim, value_dim)

    def rotate(self, x: Tensor, positions: Tensor):
        return P.apply_rotary(x, positions, self.max_wavelength)

    def get_config(self):
        config = super().get_config()
        config["max_wavelength"] = self.max_wavelength
        return config
