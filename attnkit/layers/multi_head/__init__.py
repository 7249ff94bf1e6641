"""Multi-head attention with keras's contract: `MultiHeadAttention` and
what is built on it. Each takes a position scheme from
`attnkit.layers.positions` and computes through `attnkit.ops.attention`."""

from attnkit.layers.multi_head.cached_multi_head_attention import CachedMultiHeadAttention
from attnkit.layers.multi_head.cached_multi_head_attention import substitute_keras_attention
from attnkit.layers.multi_head.multi_head_attention import MultiHeadAttention
from attnkit.layers.multi_head.relative_positional_attention import RelativePositionalAttention
from attnkit.layers.multi_head.score_mod_layer import ScoreModLayer

__all__ = ["CachedMultiHeadAttention", "MultiHeadAttention", "RelativePositionalAttention",
           "ScoreModLayer", "substitute_keras_attention"]
