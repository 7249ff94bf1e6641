"""`weights_mod`, the hook on the weights after the normalizer, against a
float64 NumPy reference (talking-heads mixing of the heads' weights)."""

import numpy as np
import pytest
from keras import ops

import attnkit.ops as ak
from attnkit.testing import attention_reference
from tests.helpers import to_numpy

B, T, S, N, H, HV = 2, 3, 5, 4, 6, 7
MIX = np.random.default_rng(3).normal(size=(N, N))  # (from head, to head)


def _qkv():
    rng = np.random.default_rng(11)
    return (rng.normal(size=(B, T, N, H)).astype("float32"),
            rng.normal(size=(B, S, N, H)).astype("float32"),
            rng.normal(size=(B, S, N, HV)).astype("float32"))


def talking_heads(weights):
    return ops.einsum("bnts,nm->bmts", weights, ops.convert_to_tensor(MIX, weights.dtype))


def _reference(q, k, v, mask):
    _, weights = attention_reference(q, k, v, mask=mask)  # (B, N, T, S), float64
    mixed = np.einsum("bnts,nm->bmts", weights, MIX)
    return np.einsum("bnts,bsnh->btnh", mixed, v.astype("float64")), mixed


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "causal_and_padding"])
def test_weights_mod_mixes_the_normalized_weights(masked):
    q, k, v = _qkv()
    lengths = np.array([5, 3])
    visible = (np.arange(S)[None, None, None, :] <= np.arange(T)[None, None, :, None] + 2) & \
        (np.arange(S)[None, None, None, :] < lengths[:, None, None, None]) if masked else None
    want_out, want_weights = _reference(q, k, v, visible)
    out, weights = ak.attention(q, k, v, mask=visible, weights_mod=talking_heads,
                                return_weights=True)
    np.testing.assert_allclose(to_numpy(out), want_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_numpy(weights), want_weights, rtol=1e-4, atol=1e-5)


def test_weights_mod_runs_on_the_math_path_and_refuses_the_others():
    q, k, v = _qkv()
    assert ak.explain(q, k, v, weights_mod=talking_heads).implementation == "math"
    for implementation in ("chunked", "fused"):
        with pytest.raises(ValueError, match="weights"):
            ak.attention(q, k, v, weights_mod=talking_heads, implementation=implementation)
    with pytest.raises(TypeError, match="weights_mod"):
        ak.attention(q, k, v, weights_mod="mix")
