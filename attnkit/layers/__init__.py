"""attnkit.layers: attention layers computed through `attnkit.ops`."""

from attnkit.layers.additive_attention import AdditiveAttention
from attnkit.layers.attention_decoder import AttentionDecoder
from attnkit.layers.dot_product_attention import DotProductAttention

__all__ = ["AdditiveAttention", "AttentionDecoder", "DotProductAttention"]
