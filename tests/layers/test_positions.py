"""Position schemes, the decoding cache, translation invariance, saving."""


import keras
import numpy as np
import pytest
from keras import ops

import attnkit
from attnkit.layers import MultiHeadAttention
from attnkit.layers import PositionEmbedding
from attnkit.layers import RelativePositionalAttention
from attnkit.layers import SinusoidalPositionEncoding
from attnkit.ops import positions as P
from tests import fresh_process
from tests.helpers import jit
from tests.helpers import to_numpy
from tests.layers import mha_reference as ref

B, L, D = 2, 6, 8
RELATIVE = {
    "shaw": lambda: attnkit.layers.ShawRelativePosition(2),
    "t5": lambda: attnkit.layers.T5RelativeBias(num_buckets=8, max_distance=5),
    "alibi": lambda: attnkit.layers.AlibiBias(),
    "rotary": lambda: attnkit.layers.RotaryEmbedding(),
}
KINDS = dict(RELATIVE, none=lambda: None)


def tokens(seed=0, length=L):
    return np.random.default_rng(seed).normal(size=(B, length, D)).astype("float32")


def make(kind, **kwargs):
    layer = MultiHeadAttention(4, 4, num_key_value_heads=2, position=KINDS[kind](), **kwargs)
    layer.build((B, L, D), (B, L, D))
    g = np.random.default_rng(11)
    layer.set_weights([g.normal(size=w.shape).astype("float32") * 0.5 for w in layer.weights])
    return layer


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_and_rotary_match_their_definitions(bidirectional):
    rel = np.arange(-300, 301)
    for buckets, distance in [(32, 128), (8, 5)]:
        got = to_numpy(P.t5_bucket(ops.convert_to_tensor(rel), buckets, distance, bidirectional))
        np.testing.assert_array_equal(got, ref.t5_bucket(rel, buckets, distance, bidirectional))
    x = np.random.default_rng(0).normal(size=(2, 7, 3, 6)).astype("float32")
    positions = np.arange(7) + 50
    got = to_numpy(P.apply_rotary(ops.convert_to_tensor(x), ops.convert_to_tensor(positions)))
    np.testing.assert_allclose(got, ref.rotate(x.astype("float64"), positions), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_distance_decay_starts_the_table_as_alibi(bidirectional):
    heads, far = 4, 20
    rel = np.arange(-far - 5, far + 6)
    buckets = ref.t5_bucket(rel, 16, far, bidirectional)
    expected = np.zeros((16, heads))
    for bucket in range(16):  # the nearest distance of each bucket, or `far`
        near = np.abs(rel[buckets == bucket]).min(initial=far)
        expected[bucket] = -near * ref.alibi_slopes(heads)
    layer = attnkit.layers.T5RelativeBias(16, far, bidirectional,
                                          embeddings_initializer="distance_decay")
    MultiHeadAttention(heads, 4, position=layer).build((B, L, D), (B, L, D))
    np.testing.assert_allclose(to_numpy(layer.embeddings), expected, rtol=1e-6)
    assert expected[0, 0] == 0 and expected[1, 0] == -ref.alibi_slopes(heads)[0]
    # Saved and loaded with its settings; a table of other shape is refused.
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert again.embeddings_initializer.get_config() == {
        "num_buckets": 16, "max_distance": far, "bidirectional": bidirectional}
    with pytest.raises(ValueError, match="16 buckets"):
        attnkit.layers.T5DistanceDecay(16, far, bidirectional)((8, heads))


def decode(layer, x, start=0, size=12, prefill=1, mask_before=False):
    """Feeds `x` through the cache from `start`: `prefill` tokens, then one
    at a time. Returns (outputs, cache)."""
    cache = ops.zeros((B, 2, size, 2, 4))
    outs, index = [], start
    steps = [(0, prefill)] + [(i, i + 1) for i in range(prefill, x.shape[1])]
    for a, b in steps:
        kwargs = {}
        if mask_before:  # hide the slots before `start`
            visible = np.arange(size)[None, None, :] >= start
            kwargs["attention_mask"] = np.broadcast_to(visible, (B, b - a, size))
        out, cache = layer(x[:, a:b], x[:, a:b], cache=cache, cache_update_index=index,
                           use_causal_mask=True, **kwargs)
        outs.append(to_numpy(out))
        index += b - a
    return np.concatenate(outs, axis=1), cache


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_cached_decoding_equals_the_full_causal_forward(kind):
    layer = make(kind)
    x = tokens()
    full = to_numpy(layer(x, x, use_causal_mask=True))
    for prefill in (1, 3):
        out, cache = decode(layer, x, prefill=prefill)
        np.testing.assert_allclose(out, full, rtol=2e-5, atol=2e-5)
    # The cache holds the (rotated) projected keys and the values.
    w = ref.layer_weights(layer)
    keys = ref.project(x.astype("float64"), w, "key")
    if kind == "rotary":
        keys = ref.rotate(keys, np.arange(L))
    np.testing.assert_allclose(to_numpy(cache)[:, 0, :L], keys, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(cache)[:, 1, :L],
                               ref.project(x.astype("float64"), w, "value"), rtol=1e-5, atol=1e-5)
    assert np.all(to_numpy(cache)[:, :, L:] == 0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_cached_decoding_runs_in_a_jitted_loop(kind):
    # Three steps: TorchDynamo unrolls the loop, and each step costs seconds
    # to trace; the cache's contents at every length are checked above.
    steps = 3
    layer = make(kind)
    x = tokens()[:, :steps]
    full = to_numpy(layer(x, x, use_causal_mask=True))

    def run(x):
        def body(i, carry):
            cache, outs = carry
            step = ops.slice(x, (0, i, 0), (B, 1, D))
            out, cache = layer(step, step, cache=cache, cache_update_index=i,
                               use_causal_mask=True)
            return cache, ops.slice_update(outs, (0, i, 0), out)

        start = (ops.zeros((B, 2, steps, 2, 4)), ops.zeros((B, steps, D)))
        return ops.fori_loop(0, steps, body, start)[1]

    np.testing.assert_allclose(to_numpy(jit(run)(x)), full, rtol=2e-5, atol=2e-5)


def absolute_inputs(kind, x, start):
    if kind == "sinusoidal":
        return x + to_numpy(SinusoidalPositionEncoding()(x, start_index=start))
    table = PositionEmbedding(16, initializer="random_normal")
    table.build(x.shape)
    table.set_weights([np.random.default_rng(5).normal(size=(16, D)).astype("float32")])
    return x + to_numpy(table(x, start_index=start))


@pytest.mark.parametrize("kind", sorted(RELATIVE) + ["sinusoidal", "learned"])
def test_translation_invariance(kind):
    """The same tokens at c .. c+L-1 (earlier positions masked, or reached
    through the cache index) give the outputs they give at 0 .. L-1 for
    relative positions, and other outputs for absolute ones."""
    c = 4
    x = tokens()
    garbage = np.random.default_rng(9).normal(size=(B, c, D)).astype("float32") * 5
    shifted = np.concatenate([garbage, x], axis=1)
    layer = make(kind if kind in RELATIVE else "none")
    if kind not in RELATIVE:
        x, shifted = absolute_inputs(kind, x, 0), absolute_inputs(kind, shifted, 0)
    value_mask = np.arange(c + L)[None].repeat(B, 0) >= c
    base = to_numpy(layer(x, x))
    moved = to_numpy(layer(shifted, shifted, value_mask=value_mask))[:, c:]
    causal = to_numpy(layer(x, x, use_causal_mask=True))
    if kind not in RELATIVE:
        x = x - absolute_inputs(kind, np.zeros_like(x), 0) + absolute_inputs(kind, np.zeros_like(x), c)
    cached, _ = decode(layer, x, start=c, prefill=L, mask_before=True)
    if kind in RELATIVE:
        np.testing.assert_allclose(moved, base, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(cached, causal, rtol=2e-5, atol=2e-5)
    else:
        assert not np.allclose(moved, base, atol=1e-3)
        assert not np.allclose(cached, causal, atol=1e-3)


def test_absolute_encodings_match_their_definitions():
    x = tokens(length=5)
    got = to_numpy(SinusoidalPositionEncoding(max_wavelength=100)(x, start_index=3))
    pos = np.arange(3, 8)[:, None]
    f = np.arange(D)[None]
    angle = pos / 100.0 ** (2 * (f // 2) / D)
    want = np.where(f % 2 == 0, np.sin(angle), np.cos(angle))
    np.testing.assert_allclose(got, np.broadcast_to(want, x.shape), rtol=1e-5, atol=1e-5)
    table = PositionEmbedding(9)
    rows = to_numpy(table(x, start_index=2))
    np.testing.assert_array_equal(rows[1], to_numpy(table.embeddings)[2:7])
    embedded = keras.layers.Embedding(5, D, mask_zero=True)(np.array([[1, 2, 0, 0, 0]]))
    from keras.src.backend.common.masking import get_keras_mask
    assert get_keras_mask(SinusoidalPositionEncoding()(embedded)) is not None
    with pytest.raises(ValueError, match="exceed sequence_length=9"):
        table(x, start_index=5)


def test_relative_positional_attention_is_mha_with_shaw():
    x = tokens()
    layer = RelativePositionalAttention(4, 4, clip_distance=2, num_key_value_heads=2,
                                        dropout=0.1, seed=1)
    layer.build(x.shape, x.shape)
    twin = make("shaw", dropout=0.1, seed=1)
    layer.set_weights(twin.get_weights())
    np.testing.assert_allclose(to_numpy(layer(x, x, use_causal_mask=True)),
                               to_numpy(twin(x, x, use_causal_mask=True)), rtol=1e-6, atol=1e-6)
    config = layer.get_config()
    assert config["clip_distance"] == 2 and "position" not in config
    assert RelativePositionalAttention.from_config(config).get_config() == config


@pytest.mark.parametrize("split", [False, True])
def test_bidirectional_alibi_tells_left_from_right_only_when_split(split):
    """Symmetric ALiBi with no mask is mirror-equivariant: reversing the
    tokens reverses the outputs, whatever the weights; split heads break it."""
    layer = MultiHeadAttention(4, 4, position=attnkit.layers.AlibiBias(split_directions=split))
    layer.build((B, L, D), (B, L, D))
    g = np.random.default_rng(11)
    layer.set_weights([g.normal(size=w.shape).astype("float32") * 0.5 for w in layer.weights])
    x = tokens()
    mirrored = to_numpy(layer(x[:, ::-1], x[:, ::-1]))[:, ::-1]
    if split:
        assert np.abs(mirrored - to_numpy(layer(x, x))).max() > 0.1
    else:
        np.testing.assert_allclose(mirrored, to_numpy(layer(x, x)), rtol=1e-5, atol=1e-5)
    config = layer.position.get_config()
    assert config.get("split_directions", False) is split
    assert attnkit.layers.AlibiBias.from_config(config).split_directions is split


BAD = [
    (lambda: MultiHeadAttention(1, 4, position=attnkit.layers.AlibiBias(split_directions=True))(
        tokens(), tokens()), "needs 2 heads or more"),
    (lambda: attnkit.layers.ShawRelativePosition(0), "clip_distance"),
    (lambda: attnkit.layers.T5RelativeBias(num_buckets=2), "num_buckets"),
    (lambda: attnkit.layers.RotaryEmbedding(max_wavelength=1), "max_wavelength"),
    (lambda: SinusoidalPositionEncoding(max_wavelength="x"), "max_wavelength"),
    (lambda: PositionEmbedding(0), "sequence_length"),
    (lambda: SinusoidalPositionEncoding()(np.zeros((2, 3), "float32")), r"\(B, T, D\)"),
]


@pytest.mark.parametrize("call, message", BAD)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@fresh_process.case("positions")
def positions_case(folder):
    inp = keras.Input((L, D))
    x = keras.layers.Add()([inp, SinusoidalPositionEncoding()(inp)])
    x = keras.layers.Add()([x, PositionEmbedding(L)(x)])
    outs = [MultiHeadAttention(4, 4, num_key_value_heads=2, position=make_position())(
        x, x, use_causal_mask=True) for make_position in KINDS.values()]
    outs.append(attnkit.layers.MultiHeadAttention(
        2, 4, position=attnkit.layers.ShawRelativePosition(3, per_head=True))(x, x))
    outs.append(RelativePositionalAttention(2, 4, clip_distance=3)(x, x))
    outs.append(MultiHeadAttention(
        4, 4, position=attnkit.layers.AlibiBias(split_directions=True))(x, x))
    return keras.Model(inp, keras.layers.Concatenate()(outs)), tokens()


def test_saved_model_loads_in_a_fresh_process(fresh_loads, tmp_path):
    loaded = fresh_loads["positions"]
    classes = {name for _, name in loaded.layers}
    assert {"MultiHeadAttention", "RelativePositionalAttention", "PositionEmbedding",
            "SinusoidalPositionEncoding"} <= classes
    np.testing.assert_allclose(loaded.got[0], loaded.want[0], rtol=1e-6, atol=1e-6)
    model, (x,) = loaded.model, loaded.inputs
    want = loaded.want[0]
    weights_path = str(tmp_path / "w.weights.h5")
    model.save_weights(weights_path)
    for w in model.weights:
        w.assign(np.zeros(w.shape, "float32"))
    model.load_weights(weights_path)
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-6, atol=1e-6)


def test_flash_attention_with_a_term_it_cannot_run_raises_at_construction():
    with pytest.raises(ValueError, match="flash_attention=True.*ShawRelativePosition"):
        MultiHeadAttention(2, 4, flash_attention=True,
                           position=attnkit.layers.ShawRelativePosition(3))
    with pytest.raises(ValueError, match="flash_attention=True.*logit_soft_cap"):
        MultiHeadAttention(2, 4, flash_attention=True, logit_soft_cap=5.0)


@pytest.mark.parametrize("position", [
    lambda: attnkit.layers.ShawRelativePosition(3, use_relative_values=False),
    lambda: attnkit.layers.T5RelativeBias(num_buckets=8, max_distance=5),
    lambda: attnkit.layers.AlibiBias(),
])
def test_flash_attention_runs_terms_the_kernel_can_take_as_a_bias(position):
    """Relative logits and ALiBi reach the fused kernel as a dense bias and
    give what the default (chunked) path gives."""
    x = tokens()
    fused = MultiHeadAttention(4, 4, flash_attention=True, position=position())
    default = MultiHeadAttention(4, 4, position=position())
    fused.build(x.shape, x.shape)
    default.build(x.shape, x.shape)
    default.set_weights(fused.get_weights())
    np.testing.assert_allclose(to_numpy(fused(x, x, use_causal_mask=True)),
                               to_numpy(default(x, x, use_causal_mask=True)),
                               rtol=1e-5, atol=1e-5)


def test_old_names_of_clip_distance_warn_and_still_work():
    with pytest.warns(DeprecationWarning, match="clip_distance"):
        shaw = attnkit.layers.ShawRelativePosition(max_relative_position=3)
    assert shaw.clip_distance == 3 and shaw.get_config()["clip_distance"] == 3
    with pytest.warns(DeprecationWarning, match="clip_distance"):
        layer = RelativePositionalAttention(2, 4, max_relative_position=5)
    assert layer.clip_distance == 5
    with pytest.raises(ValueError, match="give one"):
        attnkit.layers.ShawRelativePosition(2, max_relative_position=3)


def test_use_values_is_the_old_name_of_use_relative_values():
    with pytest.warns(DeprecationWarning, match="use_relative_values"):
        shaw = attnkit.layers.ShawRelativePosition(3, use_values=False)
    assert shaw.use_relative_values is False
    assert "use_values" not in shaw.get_config()
    assert shaw.get_config()["use_relative_values"] is False
    assert attnkit.layers.ShawRelativePosition(3).use_relative_values is True
    # A config saved before the rename loads without a word.
    old = dict(shaw.get_config())
    old["use_values"] = old.pop("use_relative_values")
    assert attnkit.layers.ShawRelativePosition.from_config(old).use_relative_values is False
    with pytest.raises(ValueError, match="give one"):
        attnkit.layers.ShawRelativePosition(3, use_relative_values=True, use_values=False)
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    layer = MultiHeadAttention(2, 4, position=attnkit.layers.ShawRelativePosition(
        2, use_relative_values=False))
    layer(x, x)
    assert not hasattr(layer.position, "value_embeddings")
