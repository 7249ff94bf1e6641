"""Bucketed relative terms (Shaw, T5, both at once) on every path against
the float64 reference of `attnkit.testing`, values and gradients of the
inputs and of every table.

The buckets of each (query, key) pair come from NumPy definitions written
here (Shaw's clip) and in `mha_reference` (T5's log buckets); small blocks
make the chunked path cross blocks wholly past the saturation distance.
"""

import numpy as np
import pytest
from keras import ops

import attnkit.ops as ak
from attnkit.ops import _chunked
from attnkit.testing import relative_attention_reference
from attnkit.testing import relative_attention_reference_grads
from tests.helpers import grads
from tests.helpers import to_numpy
from tests.layers import mha_reference as ref

B, T, S, N, K, H = 2, 11, 13, 4, 2, 3
CLIP = 2
T5 = dict(num_buckets=8, max_distance=5)


def pair_buckets(scheme, q_offset):
    rel = np.arange(S)[None, :] - (q_offset + np.arange(T))[:, None]  # (T, S) key - query
    if scheme.startswith("shaw"):
        return np.clip(rel, -CLIP, CLIP) + CLIP
    return ref.t5_bucket(rel, T5["num_buckets"], T5["max_distance"],
                         bidirectional=scheme != "t5_causal")


def problem(scheme, seed=0):
    g = np.random.default_rng(seed)
    q = g.normal(size=(B, T, N, H)).astype("float32")
    k = g.normal(size=(B, S, K, H)).astype("float32")
    v = g.normal(size=(B, S, K, H + 2)).astype("float32")
    tables, buckets = {}, None
    if scheme.startswith("shaw"):
        r = 2 * CLIP + 1
        heads = (N,) if scheme == "shaw_per_head" else ()
        if scheme != "shaw_values_only":
            tables["key_table"] = g.normal(size=(r,) + heads + (H,)).astype("float32")
        tables["value_table"] = g.normal(size=(r,) + heads + (H + 2,)).astype("float32")
        buckets = ak.ClippedBuckets(CLIP)
    else:
        bidirectional = scheme != "t5_causal"
        heads = () if scheme == "t5_shared" else (N,)
        tables["bias_table"] = g.normal(size=(T5["num_buckets"],) + heads).astype("float32")
        if scheme == "t5_with_keys":  # a bias and a key table in the same buckets
            tables["key_table"] = g.normal(size=(T5["num_buckets"], H)).astype("float32")
        buckets = ak.T5Buckets(**T5, bidirectional=bidirectional)
    return q, k, v, tables, buckets


SCHEMES = ["shaw", "shaw_per_head", "shaw_values_only", "t5", "t5_causal", "t5_shared",
           "t5_with_keys"]
CASES = {
    "plain": dict(),
    "causal_offset": dict(is_causal=True, q_offset=3),
    "soft_cap": dict(logit_soft_cap=1.5),
}


def mask_case():
    mask = np.ones((B, 1, T, S), bool)
    mask[1, 0, 4] = False  # a query that sees nothing
    mask[0, 0, :, 6:9] = False
    return mask


@pytest.mark.parametrize("implementation", ["math", "chunked"])
@pytest.mark.parametrize("case", sorted(CASES) + ["mask"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_values_match_the_reference(scheme, case, implementation):
    q, k, v, tables, buckets = problem(scheme)
    kwargs = dict(mask=mask_case()) if case == "mask" else dict(CASES[case])
    with ak.block_sizes(query=2, key=3):
        out = ak.relative_attention(q, k, v, buckets=buckets, implementation=implementation,
                                    **tables, **kwargs)
    want, _ = relative_attention_reference(
        q, k, v, pair_buckets(scheme, kwargs.get("q_offset", 0)), **tables, **kwargs)
    np.testing.assert_allclose(to_numpy(out), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", ["math", "chunked"])
@pytest.mark.parametrize("case", ["causal_offset", "soft_cap", "mask"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_gradients_match_the_reference(scheme, case, implementation):
    q, k, v, tables, buckets = problem(scheme, seed=1)
    kwargs = dict(mask=mask_case()) if case == "mask" else dict(CASES[case])
    names = sorted(tables)
    d_out = np.random.default_rng(5).normal(size=(B, T, N, H + 2)).astype("float32")

    def loss(q, k, v, *values):
        with ak.block_sizes(query=2, key=3):
            out = ak.relative_attention(q, k, v, buckets=buckets, implementation=implementation,
                                        **dict(zip(names, values)), **kwargs)
        return ops.sum(out * ops.convert_to_tensor(d_out))

    got = grads(loss, q, k, v, *[tables[name] for name in names])
    want = relative_attention_reference_grads(
        q, k, v, pair_buckets(scheme, kwargs.get("q_offset", 0)), d_out, **tables, **kwargs)
    for name, g in zip(["query", "key", "value"] + names, got):
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, want[name], rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("position", ["t5", "alibi", "shaw"])
def test_chunked_training_recomputes_blocks_instead_of_autodiff(position, monkeypatch):
    """T5, ALiBi and Shaw run the recomputing backward (FlashAttention-2's),
    so training holds no more than the forward does."""
    calls = []
    backward = _chunked._backward
    monkeypatch.setattr(_chunked, "_backward",
                        lambda *args: calls.append(1) or backward(*args))
    q, k, v, tables, buckets = problem("t5" if position == "t5" else "shaw")
    if position == "alibi":
        def loss(q, k, v):
            return ops.sum(ak.attention(q, k, v, score_mod=ak.alibi(N), is_causal=True,
                                        implementation="chunked"))
    else:
        def loss(q, k, v):
            return ops.sum(ak.relative_attention(q, k, v, buckets=buckets, is_causal=True,
                                                 implementation="chunked", **tables))
    grads(loss, q, k, v)
    assert calls, "the chunked backward did not run"


def test_buckets_saturate_where_they_say():
    """Past `saturation()` every pair shares one bucket: the chunked path
    relies on it to treat far blocks at a row's cost."""
    rel = ops.convert_to_tensor(np.arange(-400, 401).astype("int32"))
    for buckets in (ak.ClippedBuckets(3), ak.T5Buckets(32, 128), ak.T5Buckets(8, 5),
                    ak.T5Buckets(16, 20, bidirectional=False)):
        got = to_numpy(buckets(ops.zeros((), "int32"), rel))
        (low, low_bucket), (high, high_bucket) = buckets.saturation()
        values = np.arange(-400, 401)
        assert np.all(got[values <= low] == low_bucket), buckets
        assert np.all(got[values >= high] == high_bucket), buckets
        assert got.min() >= 0 and got.max() < buckets.num_buckets


@pytest.mark.parametrize("call, error, match", [
    (lambda q: ak.relative_attention(q, q, q, np.zeros((5, 3), "float32")), ValueError,
     "exactly one of `buckets`"),
    (lambda q: ak.relative_attention(q, q, q, buckets="clip"), TypeError, "RelativeBuckets"),
    (lambda q: ak.relative_attention(q, q, q, buckets=ak.ClippedBuckets(2)), ValueError,
     "at least one of"),
    (lambda q: ak.relative_attention(q, q, q, buckets=ak.T5Buckets(8, 5),
                                     bias_table=np.zeros((8, 3), "float32")), ValueError,
     r"bias_table.*\(8,\) or \(8, 4\)"),
    (lambda q: ak.T5Buckets(32, 8), ValueError, "must exceed the 8 exact buckets"),
])
def test_bad_relative_arguments_raise(call, error, match):
    q = np.zeros((1, 3, 4, 3), "float32")
    with pytest.raises(error, match=match):
        call(q)


def test_old_name_of_clip_distance_still_works_with_a_warning():
    q, k, v, tables, _ = problem("shaw")
    want = to_numpy(ak.relative_attention(q, k, v, clip_distance=CLIP, **tables))
    with pytest.warns(DeprecationWarning, match="clip_distance"):
        got = to_numpy(ak.relative_attention(q, k, v, max_distance=CLIP, **tables))
    np.testing.assert_array_equal(got, want)
