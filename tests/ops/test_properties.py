"""Property-based tests: random shapes, masks and flags against the reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import attnkit.ops as ak
from attnkit.testing import attention_reference
from tests.helpers import to_numpy


@st.composite
def problems(draw):
    b = draw(st.integers(1, 3))
    t = draw(st.integers(1, 6))
    s = draw(st.integers(1, 7))
    k = draw(st.integers(1, 3))
    n = k * draw(st.integers(1, 3))
    h = draw(st.integers(1, 5))
    hv = draw(st.sampled_from([h, draw(st.integers(1, 4))]))
    seed = draw(st.integers(0, 2**16))
    g = np.random.default_rng(seed)
    q = g.normal(size=(b, t, n, h)).astype("float32")
    key = g.normal(size=(b, s, k, h)).astype("float32")
    value = g.normal(size=(b, s, k, hv)).astype("float32")
    kwargs = {}
    mask_shape = draw(st.sampled_from([None, (t, s), (1, t, s), (n, t, s), (b, 1, 1, s), (b, n, t, s)]))
    if mask_shape is not None:
        kwargs["mask"] = g.random(mask_shape) > draw(st.sampled_from([0.2, 0.6, 1.0]))
    if draw(st.booleans()):
        kwargs["bias"] = g.normal(size=draw(st.sampled_from([(t, s), (b, n, t, s)]))).astype("float32")
    kwargs["is_causal"] = draw(st.booleans())
    kwargs["q_offset"] = draw(st.integers(-2, 4))
    kwargs["sliding_window"] = draw(st.sampled_from([None, 1, 2, 4]))
    kwargs["logit_soft_cap"] = draw(st.sampled_from([None, 3.0]))
    implementation = draw(st.sampled_from([None, "math", "fused", "chunked"]))
    blocks = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return q, key, value, kwargs, implementation, blocks


@pytest.mark.slow
@given(problems())
def test_any_problem_matches_the_reference(problem):
    q, k, v, kwargs, implementation, (qb, kb) = problem
    expected, _ = attention_reference(q, k, v, **kwargs)
    why = ak.explain(q, k, v, implementation=implementation, **kwargs)
    if implementation in why.ineligible:
        implementation = None
    with ak.block_sizes(query=qb, key=kb):
        out = ak.attention(q, k, v, implementation=implementation, **kwargs)
    out = to_numpy(out)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, expected, rtol=5e-5, atol=5e-5)
