"""Monotonic alignments: the parallel form against the recursive
definition, hard decisions against a scan, MoChA against its definition,
gradients against finite differences, under jit."""

import numpy as np
import pytest
from keras import ops

import attnkit.ops as ak
from attnkit.testing import chunkwise_alignment_reference
from attnkit.testing import hard_monotonic_reference
from attnkit.testing import monotonic_alignment_reference
from tests.helpers import central_differences
from tests.helpers import grads
from tests.helpers import jit
from tests.helpers import to_numpy

B, S = 3, 11


def probabilities(seed=0):
    g = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-3 * g.normal(size=(B, S))))
    p[0, 2] = 1.0 - 1e-6  # near saturation: cumprod(1 - p) small past it
    p[1, 7:] = 0.0  # padding
    previous = g.random((B, S)) ** 3
    previous[1, 7:] = 0.0
    previous /= previous.sum(-1, keepdims=True) * 1.25  # earlier mass ran off the end
    return p.astype("float32"), previous.astype("float32")


@pytest.mark.parametrize("mode", ["exact", "parallel", "recursive"])
def test_expected_alignment_matches_the_recursive_definition(mode):
    p, previous = probabilities()
    if mode == "parallel":  # the closed form holds while cumprod(1 - p) >= 1e-10
        p = np.minimum(p, 0.8)
    got = to_numpy(ak.monotonic_alignment(p, previous, mode))
    want = monotonic_alignment_reference(p, previous)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert np.all(got[1, 7:] == 0)
    assert np.all(got.sum(-1) <= previous.sum(-1) + 1e-6)  # mass never grows
    # From the start (one-hot on position 0) with p = 1 at 0: stop at once.
    start = np.eye(S, dtype="float32")[[0] * B]
    first = to_numpy(ak.monotonic_alignment(np.ones((B, S), "float32"), start, mode))
    np.testing.assert_allclose(first, start, atol=1e-6)


def test_hard_alignment_matches_a_scan():
    g = np.random.default_rng(1)
    p = g.random((6, S)).astype("float32")
    previous = np.zeros((6, S), "float32")
    previous[np.arange(5), [0, 3, 5, 10, 4]] = 1.0  # row 5: already ran off the end
    p[4, 4:] = 0.2  # nothing chooses after the previous stop: zeros
    p[2, :5] = 0.9  # choices before the previous stop do not count
    p[3, 10] = 0.7  # the last position may still choose
    got = to_numpy(ak.monotonic_alignment(p, previous, "hard"))
    want = hard_monotonic_reference(p, previous)
    np.testing.assert_array_equal(got, want)
    assert np.all(want[4] == 0) and np.all(want[5] == 0) and want[:4].sum() == 4


@pytest.mark.parametrize("chunk_size", [1, 2, 4])
def test_chunkwise_alignment_matches_its_definition(chunk_size):
    p, previous = probabilities(2)
    alpha = ak.monotonic_alignment(p, previous)
    u = np.random.default_rng(3).normal(size=(B, S)).astype("float32") * 2
    mask = np.ones((B, S), bool)
    mask[1, 7:] = False
    got = to_numpy(ak.chunkwise_alignment(alpha, u, chunk_size, mask))
    want = chunkwise_alignment_reference(to_numpy(alpha), u, chunk_size, mask)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), to_numpy(alpha).sum(-1), rtol=1e-5)
    # A hard stop: the softmax of u over the window ending there.
    one_hot = np.zeros((1, S), "float32")
    one_hot[0, 6] = 1.0
    hard = to_numpy(ak.chunkwise_alignment(one_hot, u[:1], chunk_size))
    window = u[0, 7 - chunk_size:7].astype("float64")
    np.testing.assert_allclose(hard[0, 7 - chunk_size:7], np.exp(window) / np.exp(window).sum(),
                               rtol=1e-5)
    assert hard[0, :7 - chunk_size].sum() == 0 and hard[0, 7:].sum() == 0


def test_gradients_match_finite_differences():
    p, previous = probabilities(4)
    p = np.clip(p, 0.05, 0.95)  # away from the clipped values
    c = np.random.default_rng(5).normal(size=(B, S))
    u = np.random.default_rng(6).normal(size=(B, S))

    def loss(p_, prev_, u_):
        alpha = ak.monotonic_alignment(p_, prev_)
        beta = ak.chunkwise_alignment(alpha, u_, 3)
        return ops.sum(beta * ops.convert_to_tensor(c, beta.dtype))

    got = grads(loss, p, previous, u.astype("float32"))

    def reference_loss(p_, prev_, u_):
        alpha = monotonic_alignment_reference(p_, prev_)
        return np.sum(chunkwise_alignment_reference(alpha, u_, 3) * c)

    args = [p.astype("float64"), previous.astype("float64"), u]
    for g, want in zip(got, central_differences(reference_loss, args)):
        np.testing.assert_allclose(g, want, rtol=2e-3, atol=2e-4)


def test_saturated_probabilities_stay_finite_and_compile():
    p = np.ones((B, S), "float32")
    p[:, 0] = 0.0
    previous = np.eye(S, dtype="float32")[[0] * B]
    fn = jit(lambda p_, prev_: ak.monotonic_alignment(p_, prev_, "parallel"))
    got = to_numpy(fn(p, previous))
    np.testing.assert_allclose(got, monotonic_alignment_reference(p, previous), atol=1e-6)
    for mode in ("exact", "parallel", "recursive"):
        (g,) = grads(lambda p_: ops.sum(ak.monotonic_alignment(p_, previous, mode)), p)
        assert np.all(np.isfinite(g))
    # Probabilities of exactly 1 and mass spread everywhere: the exact forms
    # stay exact; the closed form (cumprod clipped at 1e-10, as in the
    # paper's code) stays finite.
    p[:, 4] = 1.0
    p[:, 5:] = 0.999
    previous = np.full((B, S), 0.05, "float32")
    for mode in ("exact", "recursive"):
        np.testing.assert_allclose(to_numpy(ak.monotonic_alignment(p, previous, mode)),
                                   monotonic_alignment_reference(p, previous), atol=1e-6)
    assert np.all(np.isfinite(to_numpy(ak.monotonic_alignment(p, previous, "parallel"))))
    np.testing.assert_allclose(to_numpy(ak.safe_cumprod(p[0] * 0.5 + 0.25)),
                               np.cumprod(p[0] * 0.5 + 0.25), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(ak.safe_cumprod(p[0] * 0.5 + 0.25, exclusive=True)),
                               np.cumprod(np.r_[1.0, p[0, :-1] * 0.5 + 0.25]), rtol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: ak.monotonic_alignment(np.ones((2, 3)), np.ones((2, 3)), "soft"), "`mode` must be one of"),
    (lambda: ak.monotonic_alignment(np.ones((2, 3)), np.ones((2, 4))), "same shape"),
    (lambda: ak.chunkwise_alignment(np.ones((2, 3)), np.ones((2, 3)), 0), "`chunk_size` must be"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
