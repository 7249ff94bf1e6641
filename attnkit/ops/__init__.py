"""attnkit.ops: the functional attention core, on `keras.ops` only."""

from attnkit.ops._chunked import block_sizes
from attnkit.ops._attention import Explanation
from attnkit.ops._attention import attention
from attnkit.ops._attention import explain
from attnkit.ops._attention import relative_attention
from attnkit.ops.masks import and_masks
from attnkit.ops.masks import causal_mask
from attnkit.ops.masks import document_mask
from attnkit.ops.masks import materialize_mask
from attnkit.ops.masks import or_masks
from attnkit.ops.masks import padding_mask
from attnkit.ops.masks import prefix_lm_mask
from attnkit.ops.masks import sliding_window_mask
from attnkit.ops.score_mods import alibi
from attnkit.ops.score_mods import alibi_slopes
from attnkit.ops.score_mods import soft_cap

__all__ = [
    "Explanation",
    "alibi",
    "alibi_slopes",
    "and_masks",
    "attention",
    "block_sizes",
    "causal_mask",
    "document_mask",
    "explain",
    "materialize_mask",
    "or_masks",
    "padding_mask",
    "prefix_lm_mask",
    "relative_attention",
    "sliding_window_mask",
    "soft_cap",
]
