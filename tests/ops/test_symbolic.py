"""`attnkit.ops.attention` and `relative_attention` on `keras.Input` tensors:
a keras Operation in the functional model, with unknown batch and lengths,
that predicts what the eager call computes and saves with the model."""

import keras
import numpy as np
import pytest

import attnkit.ops as ak
from tests.helpers import to_numpy

N, H = 4, 8


def data(t=7, s=9, seed=0):
    g = np.random.default_rng(seed)
    return (g.normal(size=(2, t, N, H)).astype("float32"),
            g.normal(size=(2, s, 2, H)).astype("float32"))


CALLS = {
    "plain": lambda q, kv: ak.attention(q, kv, kv),
    "causal_alibi": lambda q, kv: ak.attention(q, kv, kv, is_causal=True, q_offset=2,
                                               score_mod=ak.alibi(N)),
    "document": lambda q, kv: ak.attention(
        q, kv, kv, mask_mod=ak.document_mask(np.array([[0] * 5 + [1] * 6] * 2, "int32"))),
    "shaw": lambda q, kv: ak.relative_attention(
        q, kv, kv, np.linspace(-1, 1, 5 * H).reshape(5, H).astype("float32"),
        np.linspace(1, -1, 5 * H).reshape(5, H).astype("float32"), clip_distance=2),
    "t5": lambda q, kv: ak.relative_attention(
        q, kv, kv, buckets=ak.T5Buckets(8, 5),
        bias_table=np.linspace(-1, 1, 8 * N).reshape(8, N).astype("float32")),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_functional_model_equals_the_eager_call(name, tmp_path):
    q_in = keras.Input((None, N, H))
    kv_in = keras.Input((None, 2, H))
    out = CALLS[name](q_in, kv_in)
    assert isinstance(out, keras.KerasTensor)
    assert tuple(out.shape) == (None, None, N, H)
    model = keras.Model([q_in, kv_in], out)
    q, kv = data()
    want = to_numpy(CALLS[name](q, kv))
    np.testing.assert_allclose(model.predict([q, kv], verbose=0), want, rtol=1e-5, atol=1e-5)
    q2, kv2 = data(t=3, s=11, seed=1)  # other lengths through the same model
    np.testing.assert_allclose(model.predict([q2, kv2], verbose=0),
                               to_numpy(CALLS[name](q2, kv2)), rtol=1e-5, atol=1e-5)
    path = str(tmp_path / "op.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict([q, kv], verbose=0), want, rtol=1e-6, atol=1e-6)


def test_symbolic_weights_have_the_cross_attention_shape():
    q_in = keras.Input((5, N, H))
    kv_in = keras.Input((9, 2, H))
    out, weights = ak.attention(q_in, kv_in, kv_in, return_weights=True)
    assert tuple(out.shape) == (None, 5, N, H)
    assert tuple(weights.shape) == (None, N, 5, 9)


def test_symbolic_calls_are_checked_when_the_model_is_built():
    q_in = keras.Input((5, 3, H))
    kv_in = keras.Input((9, 2, H))
    with pytest.raises(ValueError, match="multiple of the number of key/value heads"):
        ak.attention(q_in, kv_in, kv_in)
    with pytest.raises(ValueError, match="sliding_window"):
        ak.attention(kv_in, kv_in, kv_in, sliding_window=0)
