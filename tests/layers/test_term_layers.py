"""Terms with weights of their own in MultiHeadAttention: a `ScoreModLayer`
(learned ALiBi slopes) and a keras layer as `weights_mod` (talking heads):
the same answers as the fixed terms, on every path, and they train, save
and load with the attention layer."""

import keras
import numpy as np
import pytest
from keras import ops

import attnkit
import attnkit.ops as ak
from attnkit.layers import MultiHeadAttention
from tests.helpers import to_numpy

B, T, D, N = 2, 9, 12, 4


@keras.saving.register_keras_serializable(package="tests")
class LearnedAlibi(attnkit.layers.ScoreModLayer):
    def build_heads(self, num_heads, key_dim, value_dim):
        slopes = ak.alibi_slopes(num_heads).astype("float32")
        self.slopes = self.add_weight(shape=(num_heads,), name="slopes",
                                      initializer=keras.initializers.Constant(slopes))
        super().build_heads(num_heads, key_dim, value_dim)

    def bias(self, b, h, q_idx, kv_idx):
        distance = ops.cast(ops.abs(q_idx - kv_idx), self.slopes.dtype)
        return -ops.take(self.slopes, h) * distance


@keras.saving.register_keras_serializable(package="tests")
class TalkingHeads(keras.layers.Layer):
    def build(self, weights_shape):
        n = weights_shape[1]
        self.mix = self.add_weight(shape=(n, n), initializer="identity", name="mix")

    def call(self, weights):
        return ops.einsum("bnts,nm->bmts", weights, ops.cast(self.mix, weights.dtype))


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, D)).astype("float32")


@pytest.mark.parametrize("implementation", ["math", "chunked"])
def test_a_score_mod_layer_answers_as_the_fixed_term_on_every_path(implementation):
    x = _x()
    learned = MultiHeadAttention(N, 8, score_mod=LearnedAlibi(), implementation=implementation)
    fixed = MultiHeadAttention(N, 8, score_mod=ak.alibi(N), implementation=implementation)
    learned(x, x)
    fixed(x, x)
    assert len(learned.trainable_weights) == len(fixed.trainable_weights) + 1
    fixed.set_weights([w for w in learned.get_weights() if w.shape != (N,)])
    with ak.block_sizes(query=4, key=4):
        got = learned(x, x, use_causal_mask=True)
        want = fixed(x, x, use_causal_mask=True)
    np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-5, atol=1e-5)


def test_a_weights_mod_layer_mixes_the_returned_weights():
    x = _x(1)
    plain = MultiHeadAttention(N, 8)
    talking = MultiHeadAttention(N, 8, weights_mod=TalkingHeads())
    plain(x, x)
    talking(x, x)
    mix = np.random.default_rng(2).normal(size=(N, N)).astype("float32")
    talking.weights_mod.mix.assign(mix)
    plain.set_weights([w for w in talking.get_weights() if w.shape != (N, N)])
    _, weights = plain(x, x, return_attention_scores=True)
    _, mixed = talking(x, x, return_attention_scores=True)
    want = np.einsum("bnts,nm->bmts", to_numpy(weights).astype("float64"), mix)
    np.testing.assert_allclose(to_numpy(mixed), want, rtol=1e-4, atol=1e-5)


def test_terms_with_weights_train_save_and_load(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((T, D))
    attention = MultiHeadAttention(N, 8, score_mod=LearnedAlibi(), weights_mod=TalkingHeads())
    model = keras.Model(inp, attention(inp, inp, use_causal_mask=True))
    model.compile("adam", "mse")
    x, y = _x(3), _x(4)
    slopes = to_numpy(attention.score_mod.slopes).copy()
    model.fit(x, y, epochs=3, verbose=0)
    assert np.all(to_numpy(attention.score_mod.slopes) != slopes)
    assert not np.allclose(to_numpy(attention.weights_mod.mix), np.eye(N))
    path = str(tmp_path / "terms.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    again = loaded.layers[-1]
    assert isinstance(again.score_mod, LearnedAlibi) and isinstance(again.weights_mod, TalkingHeads)
    np.testing.assert_allclose(to_numpy(again.score_mod.slopes),
                               to_numpy(attention.score_mod.slopes))
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6, atol=1e-6)


def test_flash_attention_refuses_a_weights_mod():
    with pytest.raises(ValueError, match="weights_mod"):
        MultiHeadAttention(N, 8, weights_mod=TalkingHeads(), flash_attention=True)
