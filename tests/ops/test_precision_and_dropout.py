"""float16/bfloat16 with large logits, and dropout on the weights."""

import numpy as np
import pytest
from keras import ops

import attnkit.ops as ak
from attnkit.testing import attention_reference
from tests.helpers import dtype_name
from tests.helpers import to_numpy


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("implementation", [None, "math", "fused", "chunked"])
def test_low_precision_large_logits_stay_finite(implementation, dtype):
    g = np.random.default_rng(0)
    # Unscaled logits reach ~1e5, above float16's maximum of 65504.
    q = ops.cast(g.normal(size=(2, 3, 6, 11)) * 150, dtype)
    k = ops.cast(g.normal(size=(2, 5, 2, 11)) * 150, dtype)
    v = ops.cast(g.normal(size=(2, 5, 2, 11)), dtype)
    mask = np.ones((2, 1, 3, 5), dtype=bool)
    mask[1, 0, 2] = False  # one fully-masked row
    with ak.block_sizes(query=2, key=2):
        out = ak.attention(q, k, v, mask=mask, scale=1.0, implementation=implementation)
    assert dtype_name(out) == dtype
    exact = [to_numpy(ops.cast(x, "float32")) for x in (q, k, v)]
    logits = np.einsum("btnh,bsnh->bnts", exact[0], np.repeat(exact[1], 3, axis=2))
    assert np.abs(logits).max() > 65504
    expected, _ = attention_reference(*exact, mask=mask, scale=1.0)
    got = to_numpy(ops.cast(out, "float32"))
    assert np.all(np.isfinite(got))
    # The low-precision gap: rounding the float64 answer to `dtype`.
    tol = 1e-2 if dtype == "bfloat16" else 2e-3
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    assert np.all(got[1, 2] == 0)


def test_float64_inputs_compute_in_float64():
    g = np.random.default_rng(1)
    q, k, v = (g.normal(size=(2, 3, 2, 5)) for _ in range(3))
    expected, _ = attention_reference(q, k, v, is_causal=True)
    # JAX keeps float64 off unless jax_enable_x64 is set: then it is float32.
    native = dtype_name(ops.convert_to_tensor(q))
    tol = 1e-12 if native == "float64" else 2e-6
    for implementation in ["math", "chunked"]:
        out = ak.attention(q, k, v, is_causal=True, implementation=implementation)
        assert dtype_name(out) == native
        np.testing.assert_allclose(to_numpy(out), expected, rtol=tol, atol=tol)


def _identity_values(b, s, k):
    """value[b, j, k] = e_j, so the output row is the (dropped) weight row."""
    return np.broadcast_to(np.eye(s, dtype="float32")[None, :, None, :], (b, s, k, s)).copy()


def test_dropout_drops_and_rescales_weights():
    g = np.random.default_rng(2)
    b, t, n, s, rate = 2, 64, 4, 16, 0.25
    q = g.normal(size=(b, t, n, 8)).astype("float32")
    k = g.normal(size=(b, s, n, 8)).astype("float32")
    v = _identity_values(b, s, n)
    _, weights = attention_reference(q, k, v)
    out = to_numpy(ak.attention(q, k, v, dropout_rate=rate, seed=3, training=True))
    dropped = np.transpose(out, (0, 2, 1, 3))  # (B, N, T, S)
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], weights[kept] / (1 - rate), rtol=1e-5)
    assert abs((~kept).mean() - rate) < 0.03


def test_dropout_is_reproducible_with_seed_and_off_outside_training():
    g = np.random.default_rng(3)
    q, k, v = (g.normal(size=(2, 7, 3, 5)).astype("float32") for _ in range(3))
    kwargs = dict(dropout_rate=0.5, training=True)
    a = to_numpy(ak.attention(q, k, v, seed=11, **kwargs))
    b = to_numpy(ak.attention(q, k, v, seed=11, **kwargs))
    c = to_numpy(ak.attention(q, k, v, seed=12, **kwargs))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    expected, _ = attention_reference(q, k, v)
    off = ak.attention(q, k, v, dropout_rate=0.5, seed=11, training=False)
    np.testing.assert_allclose(to_numpy(off), expected, rtol=2e-5, atol=2e-5)
    why = ak.explain(q, k, v, dropout_rate=0.5, training=True)
    assert why.implementation == "math"
    assert "dropout" in why.ineligible["fused"] and "dropout" in why.ineligible["chunked"]
    # Outside training every path is open again.
    assert ak.explain(q, k, v, dropout_rate=0.5, implementation="chunked").ineligible == {}
