"""Positions: the `PositionScheme` plug-ins a `MultiHeadAttention` takes as
`position=` (rotary, ALiBi, Shaw, T5) and the layers that add positions to
embeddings before attention."""

from attnkit.layers.positions.alibi_bias import AlibiBias
from attnkit.layers.positions.position_embedding import PositionEmbedding
from attnkit.layers.positions.position_scheme import PositionScheme
from attnkit.layers.positions.rotary_embedding import RotaryEmbedding
from attnkit.layers.positions.shaw_relative_position import ShawRelativePosition
from attnkit.layers.positions.sinusoidal_position_encoding import SinusoidalPositionEncoding
from attnkit.layers.positions.t5_relative_bias import T5DistanceDecay
from attnkit.layers.positions.t5_relative_bias import T5RelativeBias

__all__ = ["AlibiBias", "PositionEmbedding", "PositionScheme", "RotaryEmbedding",
           "ShawRelativePosition", "SinusoidalPositionEncoding", "T5DistanceDecay",
           "T5RelativeBias"]
