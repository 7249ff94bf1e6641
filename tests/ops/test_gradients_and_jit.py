"""Gradients against the analytic float64 reference; jitted equals eager."""

import numpy as np
import pytest
from keras import ops

import attnkit.ops as ak
from attnkit.testing import attention_reference
from attnkit.testing import attention_reference_grads
from tests.helpers import grads
from tests.helpers import jit
from tests.helpers import to_numpy
from tests.ops.cases import HEADS
from tests.ops.cases import doc_ids
from tests.ops.cases import make_case
from tests.ops.cases import make_qkv

GRAD_CASES = [
    "plain", "bias_4d", "mask_4d_fully_masked_rows", "all_masked",
    "causal_offset", "causal_negative_offset", "causal_window_offset",
    "soft_cap_large_logits", "bias_2d_and_mask",
]


def reduce_to(full, shape):
    """Sums a (B, N, T, S) gradient down to a broadcast operand's shape."""
    full = full.sum(axis=tuple(range(full.ndim - len(shape))))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and full.shape[i] != 1)
    return full.sum(axis=axes, keepdims=True)


@pytest.mark.parametrize("heads", ["mha", "gqa", "mqa"])
@pytest.mark.parametrize("case", GRAD_CASES)
@pytest.mark.parametrize("implementation", ["math", "fused", "chunked"])
def test_gradients_match_reference(implementation, case, heads):
    n, kv_heads = HEADS[heads]
    lib, ref, logit_scale = make_case(case, n)
    q, k, v = make_qkv(n, kv_heads, logit_scale=logit_scale, hv=11)
    d_out = np.random.default_rng(7).normal(size=q.shape).astype("float32")
    bias = lib.pop("bias", None)
    ref.pop("bias", None)
    if implementation == "fused" and "logit_soft_cap" in lib:
        return  # fused refuses soft caps (tested in test_attention)

    def loss(q, k, v, *bias_arg):
        with ak.block_sizes(query=2, key=2):
            out = ak.attention(q, k, v, bias=bias_arg[0] if bias_arg else None,
                               implementation=implementation, **lib)
        return ops.sum(out * ops.convert_to_tensor(d_out))

    args = (q, k, v) + (() if bias is None else (bias,))
    got = grads(loss, *args)
    want = attention_reference_grads(q, k, v, d_out, bias=bias, **ref)
    names = ["query", "key", "value", "bias"]
    for name, g, w in zip(names, got, want):
        if name == "bias":
            w = reduce_to(w, bias.shape)
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("case", ["mask_4d_fully_masked_rows", "causal_window_offset",
                                  "score_mod_alibi", "mask_mod_document", "bias_2d_and_mask",
                                  "alibi_split_directions", "alibi_split_and_window",
                                  "mask_mod_by_head_in_and_masks"])
@pytest.mark.parametrize("implementation", [None, "math", "fused", "chunked"])
def test_jit_equals_eager(implementation, case):
    n, kv_heads = HEADS["gqa"]
    lib, _, _ = make_case(case, n)
    q, k, v = make_qkv(n, kv_heads, hv=11)
    if implementation in ak.explain(q, k, v, implementation=implementation, **lib).ineligible:
        return  # refusing is tested in test_attention; nothing to compile
    # Constants closed over by a compiled function are tensors, as in a model.
    lib = {key: ops.convert_to_tensor(val) if isinstance(val, np.ndarray) else val
           for key, val in lib.items()}

    def fn(q, k, v):
        with ak.block_sizes(query=2, key=2):
            return ak.attention(q, k, v, implementation=implementation, **lib)

    eager = to_numpy(fn(q, k, v))
    compiled = to_numpy(jit(fn)(q, k, v))
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", ["math", "fused", "chunked"])
def test_jit_with_tensor_query_offset(implementation):
    """Decoding passes the cache index as a tensor: one trace serves all."""
    q, k, v = make_qkv(6, 2, t=1, s=5, hv=11)

    def fn(q, k, v, offset):
        with ak.block_sizes(query=2, key=2):
            return ak.attention(q, k, v, is_causal=True, q_offset=offset,
                                implementation=implementation)

    compiled = jit(fn)
    for offset in range(5):
        expected, _ = attention_reference(q, k, v, is_causal=True, q_offset=offset)
        out = compiled(q, k, v, np.asarray(offset, dtype="int32"))
        np.testing.assert_allclose(to_numpy(out), expected, rtol=2e-5, atol=2e-5)


def _alibi_bias(n, t, s):
    distance = np.abs(np.arange(t)[:, None] - np.arange(s)[None, :])
    return -ak.alibi_slopes(n)[:, None, None] * distance  # (N, T, S)


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("implementation", ["math", "chunked"])
def test_gradients_through_score_mod_and_mask_mod(implementation, split):
    """ALiBi as a score_mod is a fixed bias; a document mask_mod is a dense
    mask: the analytic reference with those must give the same gradients.
    Split: each pair of heads with the slope of n/2 heads, even heads
    looking left and odd heads right, a mask per head."""
    n, kv_heads = HEADS["gqa"]
    q, k, v = make_qkv(n, kv_heads, hv=11)
    t, s = q.shape[1], k.shape[1]
    segments = doc_ids()
    dense = segments[:, None, :t, None] == segments[:, None, None, :]  # (B, 1, T, S)
    bias = _alibi_bias(n, t, s)
    score_mod, mask_mod = ak.alibi(n), ak.document_mask(segments)
    if split:
        distance = np.abs(np.arange(t)[:, None] - np.arange(s)[None, :])
        slopes = ak.alibi_slopes(n // 2)[np.arange(n) // 2]
        bias = -slopes[:, None, None] * distance
        left = (np.arange(n) % 2 == 0)[:, None, None]
        keys, queries = np.arange(s)[None, None, :], np.arange(t)[None, :, None]
        dense = dense & np.where(left, keys <= queries, keys >= queries)[None]
        score_mod = ak.alibi(n, split_directions=True)
        mask_mod = ak.and_masks(mask_mod, ak.split_directions_mask())
    d_out = np.random.default_rng(8).normal(size=q.shape).astype("float32")

    def loss(q, k, v):
        with ak.block_sizes(query=2, key=2):
            out = ak.attention(q, k, v, score_mod=score_mod, mask_mod=mask_mod,
                               implementation=implementation)
        return ops.sum(out * ops.convert_to_tensor(d_out))

    got = grads(loss, q, k, v)
    want = attention_reference_grads(q, k, v, d_out, bias=bias, mask=dense)
    for name, g, w in zip(["query", "key", "value"], got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("implementation", ["math", "fused", "chunked"])
def test_causal_output_has_no_gradient_from_future_keys(implementation):
    q, k, v = make_qkv(6, 2, t=5, s=5, hv=11)
    for i in range(5):

        def loss(q, k, v):
            with ak.block_sizes(query=2, key=2):
                out = ak.attention(q, k, v, is_causal=True, implementation=implementation)
            return ops.sum(out[:, i])

        d_q, d_k, d_v = grads(loss, q, k, v)
        assert np.all(d_k[:, i + 1:] == 0) and np.all(d_v[:, i + 1:] == 0)
        assert np.all(d_q[:, np.arange(5) != i] == 0)
        assert np.any(d_v[:, : i + 1] != 0)
