"""Attention for encoder-decoder models: the single-head layers (Luong's
and Bahdanau's scores, one query against a memory), the stateful layers
that read their own earlier alignments (monotonic, location-sensitive,
coverage), and the recurrent `AttentionDecoder` that steps them."""

from attnkit.layers.seq2seq.additive_attention import AdditiveAttention
from attnkit.layers.seq2seq.attention_decoder import AttentionDecoder
from attnkit.layers.seq2seq.coverage_attention import CoverageAttention
from attnkit.layers.seq2seq.dot_product_attention import DotProductAttention
from attnkit.layers.seq2seq.location_sensitive_attention import LocationSensitiveAttention
from attnkit.layers.seq2seq.monotonic_attention import MonotonicAttention
from attnkit.layers.seq2seq.stateful_attention import StatefulAttention

__all__ = ["AdditiveAttention", "AttentionDecoder", "CoverageAttention",
           "DotProductAttention", "LocationSensitiveAttention", "MonotonicAttention",
           "StatefulAttention"]
