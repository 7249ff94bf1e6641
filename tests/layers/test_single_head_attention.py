"""DotProductAttention and AdditiveAttention against a NumPy reference, and
the reliability checklist (saving, dtypes, masks, edge cases) for both."""


import keras
import numpy as np
import pytest
from keras import ops

import attnkit
from attnkit.layers import AdditiveAttention
from attnkit.layers import DotProductAttention
from attnkit.testing import attention_reference
from attnkit.testing import attention_reference_grads
from tests import fresh_process
from tests.helpers import dtype_name
from tests.helpers import grads
from tests.helpers import to_numpy

B, T, S, D, DV = 2, 3, 5, 7, 11
CONFIGS = {
    "dot": lambda: DotProductAttention("dot"),
    "scaled": lambda: DotProductAttention("scaled"),
    "general": lambda: DotProductAttention("general"),
    "cosine": lambda: DotProductAttention("cosine", initial_temperature=4.0),
    "additive": lambda: AdditiveAttention(units=13),
}
# Trainable weights each layer creates for D=7 queries and Dk keys.
WEIGHT_COUNTS = {"dot": 0, "scaled": 0, "general": 1, "cosine": 1, "additive": 4}


def inputs(seed=0, dk=D):
    g = np.random.default_rng(seed)
    return (g.normal(size=(B, T, D)).astype("float32"),
            g.normal(size=(B, S, DV)).astype("float32"),
            g.normal(size=(B, S, dk)).astype("float32"))


def np_scores(name, layer, q, k):
    """Scores (B, T, S) from the layer's weights, written from the papers."""
    w = {v.path.split("/")[-1]: to_numpy(v).astype("float64") for v in layer.weights}
    q, k = q.astype("float64"), k.astype("float64")
    if name == "dot":
        return q @ k.transpose(0, 2, 1)
    if name == "scaled":
        return q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    if name == "general":
        return q @ w["kernel"] @ k.transpose(0, 2, 1)
    if name == "cosine":
        qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
        kn = k / np.linalg.norm(k, axis=-1, keepdims=True)
        return np.exp(w["log_temperature"]) * qn @ kn.transpose(0, 2, 1)
    hidden = (q @ w["query_kernel"])[:, :, None] + (k @ w["key_kernel"])[:, None] + w["bias"]
    return np.tanh(hidden) @ w["score_kernel"]


def expected(name, layer, q, v, k, mask=None, causal=False, normalizer="softmax"):
    """Reference output and weights with the scores as the only logits."""
    scores = np_scores(name, layer, q, k)[:, None]  # (B, 1, T, S)
    empty_q = np.zeros(q.shape[:2] + (1, 0))
    empty_k = np.zeros(k.shape[:2] + (1, 0))
    out, weights = attention_reference(
        empty_q, empty_k, v[:, :, None], bias=scores, scale=1.0,
        mask=None if mask is None else mask[:, None], is_causal=causal,
        normalizer=normalizer)
    return out[:, :, 0], weights[:, 0]


@pytest.mark.parametrize("normalizer", ["sparsemax", "entmax15"])
@pytest.mark.parametrize("name", ["additive", "general"])
def test_sparse_normalizers_match_reference_and_save(name, normalizer, tmp_path):
    q, v, k = inputs(4)
    layer = {"additive": lambda: AdditiveAttention(13, normalizer=normalizer),
             "general": lambda: DotProductAttention("general", normalizer=normalizer)}[name]()
    value_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    layer(q, v, k)
    g = np.random.default_rng(5)  # the same spread scores on every backend
    layer.set_weights([g.normal(size=w.shape).astype("float32") for w in layer.weights])
    out, w = layer(q * 3, v, k * 3, value_mask=value_mask, return_attention_scores=True)
    merged = np.broadcast_to(value_mask[:, None], (B, T, S))
    want_out, want_w = expected(name, layer, q * 3, v, k * 3, mask=merged,
                                normalizer=normalizer)
    np.testing.assert_allclose(to_numpy(w), want_w, atol=2e-5)
    np.testing.assert_allclose(to_numpy(out), want_out, atol=2e-5)
    assert np.mean(want_w == 0) > 0.4  # the scores are spread: sparse weights
    # One decoder step (rank-2 query) and a saved model keep the normalizer.
    step = layer(q[:, 0] * 3, v, k * 3, value_mask=value_mask)
    np.testing.assert_allclose(to_numpy(step), want_out[:, 0], atol=2e-5)
    inputs_ = [keras.Input((T, D)), keras.Input((S, DV)), keras.Input((S, D))]
    model = keras.Model(inputs_, layer(*inputs_))
    model.save(tmp_path / "sparse.keras")
    loaded = keras.saving.load_model(tmp_path / "sparse.keras")
    np.testing.assert_allclose(to_numpy(loaded([q * 3, v, k * 3])),
                               to_numpy(model([q * 3, v, k * 3])), atol=1e-6)
    assert loaded.layers[-1].normalizer == normalizer
    with pytest.raises(ValueError, match="normalizer"):
        DotProductAttention(normalizer="softermax")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_reference_with_every_mask(name):
    q, v, k = inputs()
    layer = CONFIGS[name]()
    g = np.random.default_rng(1)
    query_mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    value_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    attention_mask = g.random((B, T, S)) > 0.3
    attention_mask[1, 0] = False  # a fully masked row
    out, w = layer(q, v, k, query_mask=query_mask, value_mask=value_mask,
                   attention_mask=attention_mask, use_causal_mask=True,
                   return_attention_scores=True)
    merged = query_mask[:, :, None] & value_mask[:, None] & attention_mask
    want_out, want_w = expected(name, layer, q, v, k, mask=merged, causal=True)
    np.testing.assert_allclose(to_numpy(out), want_out, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(to_numpy(w), want_w, rtol=2e-5, atol=2e-5)
    assert np.all(to_numpy(out)[0, 2] == 0) and np.all(to_numpy(out)[1, 0] == 0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_without_the_weights_matches_the_reference(name):
    # A dot-product score without the weights asked for goes to the core's
    # eligible paths; the output is the same.
    q, v, k = inputs()
    layer = CONFIGS[name]()
    value_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    out = layer(q, v, k, value_mask=value_mask, use_causal_mask=True)
    merged = np.broadcast_to(value_mask[:, None], (B, T, S))
    want_out, _ = expected(name, layer, q, v, k, mask=merged, causal=True)
    np.testing.assert_allclose(to_numpy(out), want_out, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rank2_query_is_one_decoder_step_per_batch_row(name):
    """Regression: a rank-2 query must not attend across the batch (as a
    `matmul` of a (B, D) query with (B, S, D) keys does)."""
    q, v, k = inputs()
    layer = CONFIGS[name]()
    step = q[:, 0]  # (B, D)
    out, w = layer(step, v, k, return_attention_scores=True)
    assert tuple(out.shape) == (B, DV) and tuple(w.shape) == (B, S)
    want_out, want_w = expected(name, layer, q[:, :1], v, k)
    np.testing.assert_allclose(to_numpy(out), want_out[:, 0], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(to_numpy(w), want_w[:, 0], rtol=2e-5, atol=2e-5)
    v2, k2 = v.copy(), k.copy()
    v2[1], k2[1] = 100.0, -3.0  # another batch row changes
    out2 = to_numpy(layer(step, v2, k2))
    np.testing.assert_array_equal(out2[0], to_numpy(out)[0])


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("normalizer", ["softmax", "sparsemax", "entmax15"])
def test_a_decoder_step_with_masks_matches_the_reference(name, normalizer):
    q, v, k = inputs(3)
    layer = CONFIGS[name]()
    layer.normalizer = normalizer
    value_mask = np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0]], bool)  # row 1 sees nothing
    query_mask = np.array([True, True])
    out, w = layer(q[:, 0], v, k, query_mask=query_mask, value_mask=value_mask,
                   return_attention_scores=True)
    merged = np.broadcast_to(value_mask[:, None], (B, 1, S))
    want_out, want_w = expected(name, layer, q[:, :1], v, k, mask=merged,
                                normalizer=normalizer)
    np.testing.assert_allclose(to_numpy(out), want_out[:, 0], rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(to_numpy(w), want_w[:, 0], rtol=2e-5, atol=2e-5)
    assert np.all(to_numpy(out)[1] == 0) and np.all(to_numpy(w)[1] == 0)
    # Keys projected once (as a decoder does for every step) change nothing.
    again, w_again = layer(q[:, 0], v, k, query_mask=query_mask, value_mask=value_mask,
                           return_attention_scores=True,
                           keys=layer.project_keys(keras.ops.convert_to_tensor(k)))
    np.testing.assert_allclose(to_numpy(again), to_numpy(out), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to_numpy(w_again), to_numpy(w), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_implicit_keras_masks_equal_explicit_masks(name):
    tokens = np.array([[3, 5, 2, 0, 0], [4, 1, 6, 7, 2]])
    embed = keras.layers.Embedding(9, D, mask_zero=True)
    layer = CONFIGS[name]()
    x = embed(tokens)
    implicit = layer(x, x)
    keras_mask = tokens != 0
    explicit = layer(x, x, query_mask=keras_mask, value_mask=keras_mask)
    np.testing.assert_allclose(to_numpy(implicit), to_numpy(explicit), rtol=1e-6, atol=1e-6)
    # The output carries the query's keras mask into the next layer.
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(9, D, mask_zero=True)(inp)
    symbolic = CONFIGS[name]()(h, h)
    assert symbolic._keras_mask is not None


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_round_trip_and_weight_counts(name):
    layer = CONFIGS[name]()
    q, v, k = inputs()
    layer(q, v, k)
    assert len(layer.trainable_weights) == WEIGHT_COUNTS[name]
    assert len(layer.non_trainable_weights) == 0
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is type(layer) and again.get_config() == layer.get_config()


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("rank2", [False, True])
def test_symbolic_shapes_equal_eager_shapes(name, rank2):
    q, v, k = inputs()
    if rank2:
        q = q[:, 0]
    layer = CONFIGS[name]()
    eager = layer(q, v, k, return_attention_scores=True)
    sym = layer.compute_output_spec(
        keras.KerasTensor(q.shape), keras.KerasTensor(v.shape), keras.KerasTensor(k.shape),
        return_attention_scores=True)
    assert [tuple(e.shape) for e in eager] == [tuple(s.shape) for s in sym]
    assert tuple(layer.compute_output_shape(q.shape, v.shape, k.shape)) == tuple(eager[0].shape)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_one_fit_step_and_jit_predict(name):
    # keras's jit on torch is inductor, ~1 minute a model on 2 cores: one
    # configuration proves the layers compile there; the others fit eagerly.
    jit = keras.backend.backend() != "torch" or name == "scaled"
    q_in, v_in, k_in = keras.Input((T, D)), keras.Input((S, DV)), keras.Input((S, D))
    out = CONFIGS[name]()(q_in, v_in, k_in, use_causal_mask=True)
    model = keras.Model([q_in, v_in, k_in], keras.layers.Dense(1)(out))
    model.compile("adam", "mse", jit_compile=jit)
    q, v, k = inputs()
    history = model.fit([q, v, k], np.ones((B, T, 1)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    eager = model([q, v, k])
    np.testing.assert_allclose(model.predict([q, v, k], verbose=0), to_numpy(eager),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_dtype_policies(name, policy):
    layer = CONFIGS[name]()
    layer.dtype_policy = keras.DTypePolicy(policy)
    q, v, k = inputs()
    big = q * 300  # large logits stay finite
    out = layer(big, v, k)
    compute = keras.DTypePolicy(policy).compute_dtype
    variable = keras.DTypePolicy(policy).variable_dtype
    assert dtype_name(out) == compute
    assert all(dtype_name(w) == variable for w in layer.weights)
    assert np.all(np.isfinite(to_numpy(ops.cast(out, "float32"))))


def test_gradients_match_reference():
    q, v, k = inputs()
    layer = DotProductAttention("scaled")
    d_out = np.random.default_rng(4).normal(size=(B, T, DV)).astype("float32")

    def loss(q, v, k):
        return ops.sum(layer(q, v, k, use_causal_mask=True) * ops.convert_to_tensor(d_out))

    got = grads(loss, q, v, k)
    d_q, d_k, d_v, _ = attention_reference_grads(
        q[:, :, None], k[:, :, None], v[:, :, None], d_out[:, :, None], is_causal=True)
    for g, w in zip(got, (d_q[:, :, 0], d_v[:, :, 0], d_k[:, :, 0])):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_dropout_is_deterministic_outside_training_and_seeded_inside():
    q, v, k = inputs()
    a = DotProductAttention(dropout=0.5, seed=3)
    b = DotProductAttention(dropout=0.5, seed=3)
    np.testing.assert_array_equal(to_numpy(a(q, v, k)), to_numpy(a(q, v, k)))
    np.testing.assert_array_equal(to_numpy(a(q, v, k, training=True)),
                                  to_numpy(b(q, v, k, training=True)))
    assert not np.allclose(to_numpy(a(q, v, k, training=True)), to_numpy(a(q, v, k)))


BAD = [
    (lambda: DotProductAttention("luong"), ValueError, "`score_mode` must be one of"),
    (lambda: DotProductAttention(initial_temperature=0), ValueError, "`initial_temperature` must be positive"),
    (lambda: DotProductAttention(dropout=1.0), ValueError, "`dropout` must be in"),
    (lambda: AdditiveAttention(0), ValueError, "`units` must be a positive int"),
    (lambda: DotProductAttention()(np.zeros((2, 3, 4, 7), "float32"), np.zeros((2, 5, 7), "float32")), ValueError, "`query` must be"),
    (lambda: DotProductAttention()(np.zeros((2, 3, 7), "float32"), np.zeros((2, 5), "float32")), ValueError, "`value` must be"),
    (lambda: DotProductAttention()(np.zeros((2, 3, 7), "float32"), np.zeros((2, 5, 7), "float32"), np.zeros((2, 4, 7), "float32")), ValueError, "same length S"),
    (lambda: DotProductAttention("dot")(np.zeros((2, 3, 6), "float32"), np.zeros((2, 5, 7), "float32")), ValueError, "score_mode='general'"),
]


@pytest.mark.parametrize("call, error, message", BAD)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


@fresh_process.case("single_head")
def single_head_case(folder):
    q_in, v_in, k_in = keras.Input((T, D)), keras.Input((S, DV)), keras.Input((S, D))
    outs = [CONFIGS[name]()(q_in, v_in, k_in) for name in sorted(CONFIGS)]
    return keras.Model([q_in, v_in, k_in], keras.layers.Concatenate()(outs)), list(inputs())


def test_saved_model_loads_in_a_fresh_process(fresh_loads, tmp_path):
    loaded = fresh_loads["single_head"]
    assert ["attnkit.layers.seq2seq.additive_attention", "AdditiveAttention"] in loaded.layers
    np.testing.assert_allclose(loaded.got[0], loaded.want[0], rtol=1e-6, atol=1e-6)
    weights_path = str(tmp_path / "w.weights.h5")
    loaded.model.save_weights(weights_path)
    loaded.model.load_weights(weights_path)
    assert attnkit.layers.DotProductAttention is DotProductAttention
