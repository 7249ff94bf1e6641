"""Attention layers computed through `attnkit.ops`."""

from attnkit.layers.additive_attention import AdditiveAttention
from attnkit.layers.alibi_bias import AlibiBias
from attnkit.layers.attention_decoder import AttentionDecoder
from attnkit.layers.cached_multi_head_attention import CachedMultiHeadAttention
from attnkit.layers.cached_multi_head_attention import substitute_keras_attention
from attnkit.layers.coverage_attention import CoverageAttention
from attnkit.layers.dot_product_attention import DotProductAttention
from attnkit.layers.location_sensitive_attention import LocationSensitiveAttention
from attnkit.layers.monotonic_attention import MonotonicAttention
from attnkit.layers.multi_head_attention import MultiHeadAttention
from attnkit.layers.position_embedding import PositionEmbedding
from attnkit.layers.position_scheme import PositionScheme
from attnkit.layers.relative_positional_attention import RelativePositionalAttention
from attnkit.layers.rotary_embedding import RotaryEmbedding
from attnkit.layers.shaw_relative_position import ShawRelativePosition
from attnkit.layers.sinusoidal_position_encoding import SinusoidalPositionEncoding
from attnkit.layers.stateful_attention import StatefulAttention
from attnkit.layers.t5_relative_bias import T5DistanceDecay
from attnkit.layers.t5_relative_bias import T5RelativeBias

__all__ = [
    "AdditiveAttention",
    "AlibiBias",
    "AttentionDecoder",
    "CachedMultiHeadAttention",
    "CoverageAttention",
    "DotProductAttention",
    "LocationSensitiveAttention",
    "MonotonicAttention",
    "MultiHeadAttention",
    "PositionEmbedding",
    "PositionScheme",
    "RelativePositionalAttention",
    "RotaryEmbedding",
    "ShawRelativePosition",
    "SinusoidalPositionEncoding",
    "StatefulAttention",
    "T5DistanceDecay",
    "T5RelativeBias",
    "substitute_keras_attention",
]
