"""attnkit.ops.attention against the float64 NumPy reference, every path."""

import keras
import numpy as np
import pytest

import attnkit.ops as ak
from attnkit.testing import attention_reference
from attnkit.testing import attention_reference_grads
from attnkit.testing import visibility_reference
from tests.helpers import grads
from tests.helpers import to_numpy
from tests.ops.cases import B
from tests.ops.cases import CASES
from tests.ops.cases import H
from tests.ops.cases import HEADS
from tests.ops.cases import make_case
from tests.ops.cases import make_qkv

IMPLEMENTATIONS = [None, "math", "fused", "chunked"]


def run(q, k, v, implementation, **kwargs):
    """Calls attention, with small blocks so the chunked path loops."""
    with ak.block_sizes(query=2, key=2):
        return ak.attention(q, k, v, implementation=implementation, **kwargs)


def check(q, k, v, implementation, expected, tol=2e-5, **kwargs):
    """Asserts the path matches `expected`, or refuses when ineligible.

    Returns the output as NumPy, or None when the path refused.
    """
    why = ak.explain(q, k, v, implementation=implementation, **kwargs)
    if implementation in why.ineligible:
        with pytest.raises(ValueError, match=implementation):
            run(q, k, v, implementation, **kwargs)
        return None
    out = to_numpy(run(q, k, v, implementation, **kwargs))
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    return out


def fully_masked_rows(t, s, n, ref_kwargs):
    ref_kwargs = {k: v for k, v in ref_kwargs.items() if k in (
        "mask", "is_causal", "q_offset", "sliding_window", "mask_mod")}
    visible = visibility_reference((B, n, t, s), **ref_kwargs)
    return ~visible.any(axis=-1)  # (B, N, T)


@pytest.mark.parametrize("heads", sorted(HEADS))
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_matches_reference(implementation, case, heads):
    n, kv_heads = HEADS[heads]
    lib, ref, logit_scale = make_case(case, n)
    q, k, v = make_qkv(n, kv_heads, logit_scale=logit_scale)
    expected, _ = attention_reference(q, k, v, **ref)
    out = check(q, k, v, implementation, expected, **lib)
    if out is None:
        return
    empty = fully_masked_rows(q.shape[1], k.shape[1], n, ref)
    empty = np.transpose(empty, (0, 2, 1))  # (B, T, N)
    assert np.all(out[empty] == 0.0)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("implementation", [None, "math"])
def test_returned_weights_match_reference(implementation, case):
    n, kv_heads = HEADS["gqa"]
    lib, ref, logit_scale = make_case(case, n)
    q, k, v = make_qkv(n, kv_heads, logit_scale=logit_scale)
    expected_out, expected_w = attention_reference(q, k, v, **ref)
    out, weights = ak.attention(
        q, k, v, return_weights=True, implementation=implementation, **lib
    )
    np.testing.assert_allclose(to_numpy(out), expected_out, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(to_numpy(weights), expected_w, rtol=2e-5, atol=2e-6)
    assert ak.explain(q, k, v, return_weights=True, **lib).implementation == "math"


@pytest.mark.parametrize("t, s", [(1, 1), (1, 5), (3, 1), (7, 2)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_degenerate_lengths(implementation, causal, t, s):
    q, k, v = make_qkv(3, 1, t=t, s=s, h=5, hv=2)
    expected, _ = attention_reference(q, k, v, is_causal=causal)
    check(q, k, v, implementation, expected, is_causal=causal)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_paths_agree_with_each_other(implementation):
    n, kv_heads = HEADS["gqa"]
    lib, _, _ = make_case("bias_2d_and_mask", n)
    q, k, v = make_qkv(n, kv_heads, t=9, s=11)
    lib["bias"] = np.random.default_rng(3).normal(size=(9, 11)).astype("float32")
    lib["mask"] = np.random.default_rng(4).random((B, 1, 1, 11)) > 0.3
    math_out = to_numpy(ak.attention(q, k, v, implementation="math", **lib))
    check(q, k, v, implementation, math_out, tol=1e-5, **lib)


def test_chunked_block_sizes_do_not_change_the_answer():
    q, k, v = make_qkv(6, 2, t=13, s=17)
    expected, _ = attention_reference(q, k, v, is_causal=True, q_offset=3)
    for qb, kb in [(1, 1), (4, 3), (13, 17), (64, 64)]:
        with ak.block_sizes(query=qb, key=kb):
            out = ak.attention(q, k, v, is_causal=True, q_offset=3,
                               implementation="chunked")
        np.testing.assert_allclose(to_numpy(out), expected, rtol=2e-5, atol=2e-5)


def test_garbage_in_masked_keys_changes_nothing():
    q, k, v = make_qkv(7, 7, hv=11)  # Hv == H: every path is eligible
    mask = np.ones((B, 1, 1, 5), dtype=bool)
    mask[:, :, :, 3:] = False
    for implementation in ["math", "fused", "chunked"]:
        clean = to_numpy(run(q, k, v, implementation, mask=mask))
        k2, v2 = k.copy(), v.copy()
        k2[:, 3:] = 1e4
        v2[:, 3:] = 1e30
        dirty = to_numpy(run(q, k2, v2, implementation, mask=mask))
        np.testing.assert_array_equal(dirty, clean)


def test_causal_flag_equals_explicit_tril():
    q, k, v = make_qkv(7, 7, t=5, s=5, hv=11)  # Hv == H: every path is eligible
    tril = np.tril(np.ones((5, 5), dtype=bool))
    for implementation in IMPLEMENTATIONS:
        a = to_numpy(run(q, k, v, implementation, is_causal=True))
        b = to_numpy(run(q, k, v, implementation, mask=tril))
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_explain_reports_choice_and_reasons():
    q, k, v = make_qkv(6, 2)
    why = ak.explain(q, k, v, score_mod=lambda s, b, h, qi, ki: s * 2.0)
    assert isinstance(why, ak.Explanation)
    assert why.implementation in ("math", "chunked")
    assert "score_mod" in why.ineligible["fused"]
    assert why.reason
    # soft_cap as a score_mod runs as logit_soft_cap (its derivative is known)
    why = ak.explain(q, k, v, score_mod=ak.soft_cap(3.0))
    assert "soft cap" in why.ineligible["fused"]
    why = ak.explain(q, k, v, return_weights=True)
    assert why.implementation == "math"
    assert "weights" in why.ineligible["chunked"]
    why = ak.explain(q, k, v, implementation="chunked")
    assert (why.implementation, why.reason) == ("chunked", "requested by the caller")


def test_large_inputs_choose_a_memory_lean_path():
    q = np.zeros((1, 8192, 2, 4), "float32")
    kv = np.zeros((1, 8192, 2, 4), "float32")
    why = ak.explain(q, kv, kv)
    assert why.implementation in ("chunked", "fused")
    assert why.implementation == "fused" or "elements" in why.reason


def test_fused_takes_a_bias_together_with_the_causal_flag():
    """Regression: PyTorch's SDPA refuses an explicit mask beside
    is_causal=True; a bias with a causal mask (or an additive score term,
    which reaches the kernel as a bias) still gives the math path's answer."""
    q, k, v = make_qkv(4, 2, hv=H)
    t, s = q.shape[1], k.shape[1]
    bias = np.random.default_rng(3).normal(size=(t, s)).astype("float32")
    for kwargs in (dict(bias=bias), dict(score_mod=ak.alibi(4))):
        want = to_numpy(ak.attention(q, k, v, is_causal=True, implementation="math", **kwargs))
        got = to_numpy(ak.attention(q, k, v, is_causal=True, implementation="fused", **kwargs))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("is_causal", [False, True])
def test_fused_path_on_long_sequences(is_causal):
    """From 1024 keys PyTorch's kernel gets contiguous copies of its inputs
    (`attnkit._backends.TORCH_CONTIGUOUS_FROM_KEYS`): the answer and gradients
    stay the reference's there too."""
    g = np.random.default_rng(11)
    q, k, v, d_out = (g.normal(size=(1, 1030, 2, 4)).astype("float32") for _ in range(4))
    want, _ = attention_reference(q, k, v, is_causal=is_causal)
    got = ak.attention(q, k, v, is_causal=is_causal, implementation="fused")
    np.testing.assert_allclose(to_numpy(got), want, rtol=2e-5, atol=2e-5)

    def loss(q, k, v):
        out = ak.attention(q, k, v, is_causal=is_causal, implementation="fused")
        return keras.ops.sum(out * keras.ops.convert_to_tensor(d_out))

    expected = attention_reference_grads(q, k, v, d_out, is_causal=is_causal)[:3]
    for name, got, want in zip(["query", "key", "value"], grads(loss, q, k, v), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
