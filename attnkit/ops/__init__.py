"""The functional attention core, on `keras.ops` only."""

from attnkit.ops._attention import Explanation
from attnkit.ops._attention import attention
from attnkit.ops._attention import explain
from attnkit.ops._attention import relative_attention
from attnkit.ops._blockmask import BlockMask
from attnkit.ops._blockmask import Visibility
from attnkit.ops._blockmask import create_block_mask
from attnkit.ops._chunked import block_sizes
from attnkit.ops.masks import AndMasks
from attnkit.ops.masks import CausalMask
from attnkit.ops.masks import DocumentMask
from attnkit.ops.masks import OrMasks
from attnkit.ops.masks import PaddingMask
from attnkit.ops.masks import PrefixLMMask
from attnkit.ops.masks import SlidingWindowMask
from attnkit.ops.masks import SplitDirectionsMask
from attnkit.ops.masks import and_masks
from attnkit.ops.masks import causal_mask
from attnkit.ops.masks import document_mask
from attnkit.ops.masks import materialize_mask
from attnkit.ops.masks import or_masks
from attnkit.ops.masks import padding_mask
from attnkit.ops.masks import prefix_lm_mask
from attnkit.ops.masks import sliding_window_mask
from attnkit.ops.masks import split_directions_mask
from attnkit.ops.monotonic import chunkwise_alignment
from attnkit.ops.monotonic import monotonic_alignment
from attnkit.ops.monotonic import safe_cumprod
from attnkit.ops.normalizers import entmax15
from attnkit.ops.normalizers import sparsemax
from attnkit.ops.positions import ClippedBuckets
from attnkit.ops.positions import RelativeBuckets
from attnkit.ops.positions import T5Buckets
from attnkit.ops.score_mods import Alibi
from attnkit.ops.score_mods import ChainedScoreMods
from attnkit.ops.score_mods import SoftCap
from attnkit.ops.score_mods import alibi
from attnkit.ops.score_mods import alibi_slopes
from attnkit.ops.score_mods import chain_score_mods
from attnkit.ops.score_mods import soft_cap
from attnkit.ops.spec import AttentionSpec
from attnkit.ops.terms import MaskMod
from attnkit.ops.terms import ScoreMod
from attnkit.ops.terms import deserialize_term
from attnkit.ops.terms import serialize_term
from attnkit.ops.weights import attention_weights

__all__ = [
    "Alibi",
    "AndMasks",
    "AttentionSpec",
    "BlockMask",
    "CausalMask",
    "ChainedScoreMods",
    "ClippedBuckets",
    "DocumentMask",
    "Explanation",
    "MaskMod",
    "OrMasks",
    "PaddingMask",
    "PrefixLMMask",
    "RelativeBuckets",
    "ScoreMod",
    "SlidingWindowMask",
    "SoftCap",
    "SplitDirectionsMask",
    "T5Buckets",
    "Visibility",
    "alibi",
    "alibi_slopes",
    "and_masks",
    "attention",
    "attention_weights",
    "block_sizes",
    "causal_mask",
    "chain_score_mods",
    "chunkwise_alignment",
    "create_block_mask",
    "deserialize_term",
    "document_mask",
    "entmax15",
    "explain",
    "materialize_mask",
    "monotonic_alignment",
    "or_masks",
    "padding_mask",
    "prefix_lm_mask",
    "relative_attention",
    "safe_cumprod",
    "serialize_term",
    "sliding_window_mask",
    "soft_cap",
    "sparsemax",
    "split_directions_mask",
]
