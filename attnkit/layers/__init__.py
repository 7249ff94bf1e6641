"""Attention layers computed through `attnkit.ops`, in three families:

- `attnkit.layers.multi_head`: multi-head attention with keras's contract;
- `attnkit.layers.positions`: position schemes it takes, and position
  encodings added to embeddings;
- `attnkit.layers.seq2seq`: single-head and stateful attention for
  encoder-decoder models, and the decoder that steps them.

Every layer is importable from here too: `attnkit.layers.MultiHeadAttention`.
"""

from attnkit.layers.multi_head import CachedMultiHeadAttention
from attnkit.layers.multi_head import MultiHeadAttention
from attnkit.layers.multi_head import RelativePositionalAttention
from attnkit.layers.multi_head import ScoreModLayer
from attnkit.layers.multi_head import substitute_keras_attention
from attnkit.layers.positions import AlibiBias
from attnkit.layers.positions import PositionEmbedding
from attnkit.layers.positions import PositionScheme
from attnkit.layers.positions import RotaryEmbedding
from attnkit.layers.positions import ShawRelativePosition
from attnkit.layers.positions import SinusoidalPositionEncoding
from attnkit.layers.positions import T5DistanceDecay
from attnkit.layers.positions import T5RelativeBias
from attnkit.layers.seq2seq import AdditiveAttention
from attnkit.layers.seq2seq import AttentionDecoder
from attnkit.layers.seq2seq import CoverageAttention
from attnkit.layers.seq2seq import DotProductAttention
from attnkit.layers.seq2seq import LocationSensitiveAttention
from attnkit.layers.seq2seq import MonotonicAttention
from attnkit.layers.seq2seq import StatefulAttention

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
    "ScoreModLayer",
    "ShawRelativePosition",
    "SinusoidalPositionEncoding",
    "StatefulAttention",
    "T5DistanceDecay",
    "T5RelativeBias",
    "substitute_keras_attention",
]
