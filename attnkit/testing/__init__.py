"""Test helpers: an independent float64 NumPy reference for attention."""

from attnkit.testing.reference import attention_reference
from attnkit.testing.reference import attention_reference_grads
from attnkit.testing.reference import chunkwise_alignment_reference
from attnkit.testing.reference import entmax15_reference
from attnkit.testing.reference import hard_monotonic_reference
from attnkit.testing.reference import monotonic_alignment_reference
from attnkit.testing.reference import relative_attention_reference
from attnkit.testing.reference import relative_attention_reference_grads
from attnkit.testing.reference import sparsemax_reference
from attnkit.testing.reference import visibility_reference

__all__ = [
    "attention_reference",
    "attention_reference_grads",
    "chunkwise_alignment_reference",
    "entmax15_reference",
    "hard_monotonic_reference",
    "monotonic_alignment_reference",
    "relative_attention_reference",
    "relative_attention_reference_grads",
    "sparsemax_reference",
    "visibility_reference",
]
