"""Test helpers: an independent float64 NumPy reference for attention."""

from attnkit.testing.reference import attention_reference
from attnkit.testing.reference import attention_reference_grads
from attnkit.testing.reference import relative_attention_reference
from attnkit.testing.reference import relative_attention_reference_grads
from attnkit.testing.reference import visibility_reference

__all__ = [
    "attention_reference",
    "attention_reference_grads",
    "relative_attention_reference",
    "relative_attention_reference_grads",
    "visibility_reference",
]
