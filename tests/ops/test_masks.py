"""Mask builders and score modifiers against NumPy definitions."""

import numpy as np
import pytest

import attnkit.ops as ak
from attnkit.testing import attention_reference
from tests.helpers import to_numpy

B, N, T, S = 2, 3, 5, 7


def grid(offset=0):
    return (
        np.arange(B).reshape(B, 1, 1, 1),
        np.arange(N).reshape(1, N, 1, 1),
        offset + np.arange(T).reshape(1, 1, T, 1),
        np.arange(S).reshape(1, 1, 1, S),
    )


LENGTHS = np.array([3, 7], dtype="int32")
KERAS_MASK = np.arange(S)[None, :] < LENGTHS[:, None]  # (B, S)
SEGMENTS = np.array([[0, 0, 1, 1, 1, 2, 2], [0, 1, 1, 1, 2, 2, 2]], dtype="int32")
PREFIX = np.array([2, 4], dtype="int32")


def _np_expected(name, b, h, q, k):
    if name == "causal":
        return k <= q
    if name == "window":
        return np.abs(q - k) < 2
    if name == "causal_window":
        return (k <= q) & (q - k < 3)
    if name in ("padding_lengths", "padding_keras"):
        return k < LENGTHS[b]
    if name == "prefix_int":
        return (k < 2) | (k <= q)
    if name == "prefix_tensor":
        return (k < PREFIX[b]) | (k <= q)
    if name == "document":
        inside = (q >= 0) & (q < S)
        return inside & (SEGMENTS[b, np.clip(q, 0, S - 1)] == SEGMENTS[b, k])
    if name == "and":
        return (k <= q) & (k < LENGTHS[b])
    if name == "or":
        return (np.abs(q - k) < 2) | (k < PREFIX[b]) | (k <= q)  # prefix-LM is causal past the prefix
    raise KeyError(name)


def _builder(name):
    return {
        "causal": lambda: ak.causal_mask(),
        "window": lambda: ak.sliding_window_mask(2),
        "causal_window": lambda: ak.sliding_window_mask(3, causal=True),
        "padding_lengths": lambda: ak.padding_mask(lengths=LENGTHS),
        "padding_keras": lambda: ak.padding_mask(KERAS_MASK),
        "prefix_int": lambda: ak.prefix_lm_mask(2),
        "prefix_tensor": lambda: ak.prefix_lm_mask(PREFIX),
        "document": lambda: ak.document_mask(SEGMENTS),
        "and": lambda: ak.and_masks(ak.causal_mask(), ak.padding_mask(lengths=LENGTHS)),
        "or": lambda: ak.or_masks(ak.sliding_window_mask(2), ak.prefix_lm_mask(PREFIX)),
    }[name]()


NAMES = ["causal", "window", "causal_window", "padding_lengths", "padding_keras",
         "prefix_int", "prefix_tensor", "document", "and", "or"]


@pytest.mark.parametrize("offset", [0, 2])
@pytest.mark.parametrize("name", NAMES)
def test_materialized_builder_matches_numpy_definition(name, offset):
    got = to_numpy(ak.materialize_mask(_builder(name), B, N, T, S, q_offset=offset))
    want = np.broadcast_to(_np_expected(name, *grid(offset)), (B, N, T, S))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("implementation", [None, "math", "fused", "chunked"])
@pytest.mark.parametrize("name", NAMES)
def test_mask_mod_equals_dense_mask_in_attention(name, implementation):
    g = np.random.default_rng(5)
    q = g.normal(size=(B, T, N, 4)).astype("float32")
    k = g.normal(size=(B, S, 1, 4)).astype("float32")
    v = g.normal(size=(B, S, 1, 4)).astype("float32")
    dense = np.broadcast_to(_np_expected(name, *grid()), (B, N, T, S))
    expected, _ = attention_reference(q, k, v, mask=dense)
    with ak.block_sizes(query=2, key=3):
        via_mod = ak.attention(q, k, v, mask_mod=_builder(name), implementation=implementation)
        via_mask = ak.attention(q, k, v, mask=dense, implementation=implementation)
    np.testing.assert_allclose(to_numpy(via_mod), expected, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(to_numpy(via_mask), expected, rtol=2e-5, atol=2e-5)


def test_keras_mask_and_lengths_give_the_same_padding():
    a = to_numpy(ak.materialize_mask(ak.padding_mask(KERAS_MASK), B, N, T, S))
    b = to_numpy(ak.materialize_mask(ak.padding_mask(lengths=LENGTHS), B, N, T, S))
    np.testing.assert_array_equal(a, b)


def test_soft_cap_modifier_equals_the_flag():
    g = np.random.default_rng(6)
    q = (g.normal(size=(B, T, N, 4)) * 10).astype("float32")
    k = g.normal(size=(B, S, N, 4)).astype("float32")
    expected, _ = attention_reference(q, k, k, logit_soft_cap=2.5)
    for out in (ak.attention(q, k, k, score_mod=ak.soft_cap(2.5)),
                ak.attention(q, k, k, logit_soft_cap=2.5)):
        np.testing.assert_allclose(to_numpy(out), expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("n, expected", [
    (8, [2.0 ** -(i + 1) for i in range(8)]),
    (4, [2.0 ** -(2 * (i + 1)) for i in range(4)]),
    # 6 heads: the 4-head slopes, then slopes 1 and 3 of the 8-head series.
    (6, [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]),
])
def test_alibi_slopes_follow_the_paper(n, expected):
    np.testing.assert_allclose(ak.alibi_slopes(n), expected, rtol=1e-12)


@pytest.mark.parametrize("call, error, message", [
    (lambda: ak.padding_mask(), ValueError, "exactly one"),
    (lambda: ak.padding_mask(KERAS_MASK, lengths=LENGTHS), ValueError, "exactly one"),
    (lambda: ak.padding_mask(lengths=LENGTHS[None]), ValueError, "`lengths` must have rank 1"),
    (lambda: ak.sliding_window_mask(0), ValueError, "`window` must be a positive int"),
    (lambda: ak.document_mask(SEGMENTS[0]), ValueError, "`segment_ids` must have rank 2"),
    (lambda: ak.and_masks(), TypeError, "one or more"),
    (lambda: ak.or_masks(ak.causal_mask(), 3), TypeError, "one or more"),
    (lambda: ak.soft_cap(0), ValueError, "`cap` must be a finite positive"),
    (lambda: ak.alibi_slopes(0), ValueError, "`num_heads` must be a positive"),
])
def test_builders_reject_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def _qkv():
    rng = np.random.default_rng(5)
    return (rng.normal(size=(B, T, N, 4)).astype("float32"),
            rng.normal(size=(B, S, N, 4)).astype("float32"),
            rng.normal(size=(B, S, N, 6)).astype("float32"))


@pytest.mark.parametrize("mask_mod, union, padded", [
    (ak.prefix_lm_mask(3), lambda b, q, k: (k < 3) | (k <= q), False),
    (ak.and_masks(ak.prefix_lm_mask(PREFIX), ak.padding_mask(lengths=LENGTHS)),
     lambda b, q, k: ((k < PREFIX[b]) | (k <= q)) & (k < LENGTHS[b]), True)],
    ids=["prefix", "and_prefix"])
def test_a_prefix_lm_mask_under_is_causal_warns_and_is_causal_attention(mask_mod, union, padded):
    # The AND with causal hides every prefix key a query precedes: plain
    # causal attention (with the padding), which the user did not ask for.
    q, k, v = _qkv()
    with pytest.warns(UserWarning, match="plain causal attention"):
        got = ak.attention(q, k, v, mask_mod=mask_mod, is_causal=True)
    b, _, qi, ki = grid()
    want, _ = attention_reference(q, k, v, mask=np.broadcast_to(
        (ki <= qi) & union(b, qi, ki), (B, N, T, S)))
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-5)
    padding = (ki < LENGTHS[b]) if padded else True
    causal, _ = attention_reference(q, k, v, mask=np.broadcast_to((ki <= qi) & padding,
                                                                  (B, N, T, S)))
    np.testing.assert_allclose(want, causal)  # the prefix changed nothing


def test_a_prefix_lm_mask_alone_or_in_an_or_does_not_warn():
    q, k, v = _qkv()
    ak.attention(q, k, v, mask_mod=ak.prefix_lm_mask(3))
    ak.attention(q, k, v, mask_mod=ak.or_masks(ak.prefix_lm_mask(3), ak.sliding_window_mask(2)),
                 is_causal=True)
