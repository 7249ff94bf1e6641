"""Sparse normalizers: sparsemax and 1.5-entmax against sort-based and
bisection references, their gradients against finite differences, and
attention with them against the float64 reference."""

import keras
import numpy as np
import pytest
from keras import ops

import attnkit.ops as ak
from attnkit.testing import attention_reference
from attnkit.testing import attention_reference_grads
from attnkit.testing import entmax15_reference
from attnkit.testing import sparsemax_reference
from tests.helpers import grads
from tests.helpers import jit
from tests.helpers import to_numpy

MAPS = {"sparsemax": (ak.sparsemax, sparsemax_reference),
        "entmax15": (ak.entmax15, entmax15_reference)}


def reference_rows(reference, z, visible):
    out = np.zeros(z.shape)
    for index in np.ndindex(*z.shape[:-1]):
        row = visible[index]
        if row.any():
            out[index][row] = reference(z[index][row])
    return out


def logits_and_mask(seed=0, shape=(5, 9)):
    g = np.random.default_rng(seed)
    z = g.normal(size=shape) * 3
    mask = g.random(shape) > 0.3
    mask[0] = False  # nothing visible: zeros
    mask[1] = True
    z[2, 4] = -np.inf  # hidden by its logit
    return z.astype("float32"), mask


@pytest.mark.parametrize("name", sorted(MAPS))
def test_normalizers_match_their_references(name):
    fn, reference = MAPS[name]
    z, mask = logits_and_mask()
    got = to_numpy(fn(z, mask=mask))
    want = reference_rows(reference, z.astype("float64"), mask & np.isfinite(z))
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert got.dtype == np.float32
    assert np.all(got[0] == 0) and np.all(got[~mask] == 0)
    np.testing.assert_allclose(got[1:].sum(-1), 1.0, rtol=1e-6)
    assert (got[1] == 0).sum() >= 3  # sparse: scores 3 apart leave keys out
    # Another axis: the same rows, transposed.
    np.testing.assert_allclose(to_numpy(fn(z.T, axis=0, mask=mask.T)), got.T, atol=1e-7)
    # Shift invariance, large scores.
    np.testing.assert_allclose(to_numpy(fn(z + 1e4, mask=mask)), got, atol=2e-3)


@pytest.mark.parametrize("name", sorted(MAPS))
def test_normalizer_gradients_match_finite_differences(name):
    fn, reference = MAPS[name]
    g = np.random.default_rng(1)
    z = g.normal(size=(4, 7))
    c = g.normal(size=(4, 7))
    mask = np.ones((4, 7), bool)
    mask[3, :2] = False

    def loss(x):
        return ops.sum(fn(x, mask=mask) * ops.convert_to_tensor(c, x.dtype))

    (got,) = grads(loss, z.astype("float32"))

    def reference_loss(x):
        return np.sum(reference_rows(reference, x, mask) * c)

    want = np.zeros_like(z)
    eps = 1e-6
    for index in np.ndindex(*z.shape):
        up, down = z.copy(), z.copy()
        up[index] += eps
        down[index] -= eps
        want[index] = (reference_loss(up) - reference_loss(down)) / (2 * eps)
    np.testing.assert_allclose(got, want, atol=2e-4)
    assert np.all(got[3, :2] == 0)
    assert np.count_nonzero(np.abs(want) < 1e-9) > 0  # some scores off the support


@pytest.mark.parametrize("name", sorted(MAPS))
def test_normalizers_compile(name):
    fn, reference = MAPS[name]
    z, mask = logits_and_mask(2)
    got = to_numpy(jit(lambda x, m: fn(x, mask=m))(z, mask))
    want = reference_rows(reference, z.astype("float64"), mask & np.isfinite(z))
    np.testing.assert_allclose(got, want, atol=2e-6)


def attention_inputs(seed=3):
    g = np.random.default_rng(seed)
    q = (g.normal(size=(2, 5, 4, 8)) * 1.5).astype("float32")
    k = (g.normal(size=(2, 7, 2, 8)) * 1.5).astype("float32")
    v = g.normal(size=(2, 7, 2, 6)).astype("float32")
    mask = g.random((2, 1, 5, 7)) > 0.25
    mask[0, 0, 1] = False  # a query with no visible key
    return q, k, v, mask


@pytest.mark.parametrize("name", sorted(MAPS))
def test_attention_with_a_sparse_normalizer_matches_the_reference(name):
    q, k, v, mask = attention_inputs()
    kwargs = dict(mask=mask, is_causal=True, q_offset=2)
    out, weights = ak.attention(q, k, v, normalizer=name, return_weights=True, **kwargs)
    want_out, want_weights = attention_reference(q, k, v, normalizer=name, **kwargs)
    np.testing.assert_allclose(to_numpy(weights), want_weights, atol=2e-6)
    np.testing.assert_allclose(to_numpy(out), want_out, atol=2e-5)
    assert np.mean(want_weights == 0) > 0.4
    d_out = np.random.default_rng(4).normal(size=want_out.shape).astype("float32")

    def loss(q, k, v):
        return ops.sum(ak.attention(q, k, v, normalizer=name, **kwargs)
                       * ops.convert_to_tensor(d_out))

    got = grads(loss, q, k, v)
    want = attention_reference_grads(q, k, v, d_out, normalizer=name, **kwargs)[:3]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=5e-5)


@pytest.mark.parametrize("name", sorted(MAPS))
def test_sparse_normalizers_run_on_the_math_path_only(name):
    q, k, v, _ = attention_inputs()
    why = ak.explain(q, k, v, normalizer=name)
    assert why.implementation == "math"
    assert set(why.ineligible) >= {"fused", "chunked"}
    for implementation in ("fused", "chunked"):
        with pytest.raises(ValueError, match=f"implementation='{implementation}'.*{name}"):
            ak.attention(q, k, v, normalizer=name, implementation=implementation)
    with pytest.raises(ValueError, match="normalizer"):
        ak.attention(q, k, v, normalizer="softermax")
    # Relative positions too (the math path forms the rows).
    table = np.random.default_rng(5).normal(size=(5, 8)).astype("float32")
    out = ak.relative_attention(q, k, v, table, clip_distance=2, normalizer=name)
    assert out.shape == (2, 5, 4, 6)


def test_a_symbolic_call_saves_its_normalizer(tmp_path):
    x = keras.Input((5, 2, 8))
    model = keras.Model(x, ak.attention(x, x, x, normalizer="sparsemax", is_causal=True))
    path = str(tmp_path / "sparse.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    data = np.random.default_rng(6).normal(size=(3, 5, 2, 8)).astype("float32") * 3
    want, _ = attention_reference(data, data, data, normalizer="sparsemax", is_causal=True)
    np.testing.assert_allclose(to_numpy(loaded(data)), want, atol=2e-5)
