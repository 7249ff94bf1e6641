"""RelativePositionalAttention: multi-head attention with Shaw et al.'s
relative positions built in."""

import keras

from attnkit import _checks
from attnkit.layers.multi_head.multi_head_attention import MultiHeadAttention
from attnkit.layers.positions.shaw_relative_position import ShawRelativePosition


@keras.saving.register_keras_serializable(package="attnkit")
class RelativePositionalAttention(MultiHeadAttention):
    """`MultiHeadAttention` with `ShawRelativePosition` as its position.

    Every argument, call argument and return value of `MultiHeadAttention`
    (masks, grouped heads, the cache, ...) works here; the relative tables
    take the three below.

    Args:
        num_heads: query heads.
        key_dim: size of each query and key head.
        clip_distance: `k`, distances are clipped to `[-k, k]`.
        use_relative_values: also learn relative value embeddings (Shaw's
            equation 3); False keeps only the key term.
        per_head: one table per head instead of one shared table.
        max_relative_position: deprecated name of `clip_distance`.
        **kwargs: any other `MultiHeadAttention` argument.

    Example:

        >>> layer = attnkit.layers.RelativePositionalAttention(
        ...     num_heads=2, key_dim=8, clip_distance=4)
        >>> x = keras.random.normal((2, 7, 16))
        >>> out, scores = layer(x, x, use_causal_mask=True,
        ...                     return_attention_scores=True)
        >>> tuple(out.shape), tuple(scores.shape)
        ((2, 7, 16), (2, 2, 7, 7))

    References:
        Shaw, Uszkoreit, Vaswani 2018, "Self-Attention with Relative Position
        Representations".
    """

    def __init__(self, num_heads: int, key_dim: int, clip_distance: int | None = None,
                 use_relative_values: bool = True, per_head: bool = False,
                 max_relative_position: int | None = None, **kwargs):
        clip_distance = _checks.renamed_argument(
            "clip_distance", clip_distance, "max_relative_position", max_relative_position)
        clip_distance = 16 if clip_distance is None else clip_distance
        kwargs.pop("position", None)  # rebuilt from the arguments below
        position = ShawRelativePosition(
            clip_distance, use_relative_values=use_relative_values,
            per_head=per_head, name="relative_position")
        super().__init__(num_heads, key_dim, position=position, **kwargs)
        self.clip_distance = clip_distance
        self.use_relative_values = use_relative_values
        self.per_head = per_head

    def get_config(self):
        config = super().get_config()
        del config["position"]
        config.update({
            "clip_distance": self.clip_distance,
            "use_relative_values": self.use_relative_values,
            "per_head": self.per_head,
        })
        return config
