"""MultiHeadAttention: keras equivalence, the float64 reference, every path,
and the reliability checklist (saving, dtypes, masks, edge cases, bad input)."""

import keras
import numpy as np
import pytest
from keras import ops

import attnkit
from keras.src.backend.common.masking import get_keras_mask
from attnkit.layers import MultiHeadAttention
from tests import fresh_process
from tests.helpers import dtype_name
from tests.helpers import grads
from tests.helpers import to_numpy
from tests.layers import mha_reference as ref

B, T, S, D, DV = 2, 3, 5, 7, 11
BACKEND = keras.backend.backend()


def inputs(seed=0, t=T, s=S):
    g = np.random.default_rng(seed)
    return (g.normal(size=(B, t, D)).astype("float32"),
            g.normal(size=(B, s, DV)).astype("float32"))


def padding_masks():
    query_mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    value_mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    return query_mask, value_mask


KERAS_CONFIGS = {
    "plain": dict(num_heads=3, key_dim=5),
    "gate": dict(num_heads=3, key_dim=5, use_gate=True),
    "shapes": dict(num_heads=2, key_dim=5, value_dim=3, output_shape=13, use_bias=False),
}
MASKINGS = ["none", "causal", "window", "causal_window", "padding", "attention_mask",
            "float_mask"]


def masking_kwargs(masking):
    query_mask, value_mask = padding_masks()
    g = np.random.default_rng(3)
    return {
        "none": {}, "causal": dict(use_causal_mask=True), "window": {},
        "causal_window": dict(use_causal_mask=True),
        "padding": dict(query_mask=query_mask, value_mask=value_mask, key_mask=value_mask),
        "attention_mask": dict(attention_mask=g.random((B, T, S)) > 0.3),
        # keras and KerasHub pass 0/1 float masks: nonzero = may attend
        "float_mask": dict(attention_mask=(g.random((B, T, S)) > 0.3).astype("float32")),
    }[masking]


@pytest.mark.parametrize("masking", MASKINGS)
@pytest.mark.parametrize("config", sorted(KERAS_CONFIGS))
def test_set_weights_from_keras_gives_keras_outputs(config, masking):
    window = 2 if "window" in masking else None
    theirs = keras.layers.MultiHeadAttention(**KERAS_CONFIGS[config], sliding_window=window)
    ours = MultiHeadAttention(**KERAS_CONFIGS[config], sliding_window=window)
    q, v = inputs()
    theirs(q, v, return_attention_scores=True)
    ours(q, v)
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]
    assert [w.path.split("/", 1)[1] for w in ours.weights] == \
        [w.path.split("/", 1)[1] for w in theirs.weights]
    ours.set_weights(theirs.get_weights())
    kwargs = masking_kwargs(masking)
    if "mask" in masking:  # keras's paths disagree on fully-masked rows
        kwargs["attention_mask"][:, :, 0] = True
    want, want_scores = theirs(q, v, return_attention_scores=True, **kwargs)
    got, scores = ours(q, v, return_attention_scores=True, **kwargs)
    # Rows that see no key are keras's defect (nonzero there); ours give 0.
    live = kwargs.get("query_mask", np.ones((B, T), bool))
    np.testing.assert_allclose(to_numpy(got)[live], to_numpy(want)[live], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(scores).transpose(0, 2, 1, 3)[live],
                               to_numpy(want_scores).transpose(0, 2, 1, 3)[live],
                               rtol=1e-5, atol=1e-5)
    assert np.all(to_numpy(scores).transpose(0, 2, 1, 3)[~live] == 0)
    np.testing.assert_allclose(to_numpy(ours(q, v, **kwargs))[live], to_numpy(want)[live],
                               rtol=1e-5, atol=1e-5)


def test_keras_implicit_masks_and_several_attention_axes():
    tokens = np.array([[3, 5, 2, 0, 0], [4, 1, 6, 7, 2]])
    embed = keras.layers.Embedding(9, D, mask_zero=True)
    theirs, ours = keras.layers.MultiHeadAttention(2, 4), MultiHeadAttention(2, 4)
    theirs.build((B, 5, D), (B, 5, D))
    ours.build((B, 5, D), (B, 5, D))
    ours.set_weights(theirs.get_weights())
    want = theirs(embed(tokens), embed(tokens), return_attention_scores=True)[0]
    x = embed(tokens)
    got = ours(x, x)
    live = tokens != 0
    np.testing.assert_allclose(to_numpy(got)[live], to_numpy(want)[live], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(to_numpy(get_keras_mask(got)), live)  # the query's mask
    assert get_keras_mask(x) is not None  # and the caller's tensor keeps its own
    g = np.random.default_rng(0)
    x4 = g.normal(size=(2, 3, 4, 5)).astype("float32")
    masks = {(1, 2): g.random((2, 3, 4, 3, 4)) > 0.2, (2,): g.random((2, 3, 4, 4)) > 0.2}
    masks[(1, 2)][..., 0, 0] = True
    masks[(2,)][..., 0] = True
    for axes, m in masks.items():
        theirs = keras.layers.MultiHeadAttention(2, 3, attention_axes=axes)
        ours = MultiHeadAttention(2, 3, attention_axes=axes)
        theirs(x4, x4, return_attention_scores=True)
        ours(x4, x4)
        ours.set_weights(theirs.get_weights())
        want, want_s = theirs(x4, x4, attention_mask=m, return_attention_scores=True)
        got, got_s = ours(x4, x4, attention_mask=m, return_attention_scores=True)
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(to_numpy(got_s), to_numpy(want_s), rtol=1e-5, atol=1e-5)


HEADS = {"mha": (6, 6), "gqa": (6, 2), "mqa": (6, 1)}
POSITIONS = {
    "none": lambda: (None, None),
    "shaw": lambda: (attnkit.layers.ShawRelativePosition(2, name="relative_position"),
                     ("shaw", {"k": 2})),
    "shaw_keys_per_head": lambda: (
        attnkit.layers.ShawRelativePosition(1, use_relative_values=False, per_head=True),
        ("shaw", {"k": 1})),
    "t5": lambda: (attnkit.layers.T5RelativeBias(num_buckets=8, max_distance=6),
                   ("t5", dict(num_buckets=8, max_distance=6))),
    "alibi": lambda: (attnkit.layers.AlibiBias(), ("alibi", {})),
    "alibi_split": lambda: (attnkit.layers.AlibiBias(split_directions=True),
                            ("alibi", {"split": True})),
    "rotary": lambda: (attnkit.layers.RotaryEmbedding(), ("rotary", {})),
}


def make(position="none", heads="mha", key_dim=4, **kwargs):
    layer_position, ref_position = POSITIONS[position]()
    n, k = HEADS[heads]
    layer = MultiHeadAttention(n, key_dim, num_key_value_heads=k, position=layer_position, **kwargs)
    return layer, ref_position


def randomize(layer):
    """Non-zero biases and tables, so that every weight matters."""
    g = np.random.default_rng(11)
    layer.set_weights([g.normal(size=w.shape).astype("float32") * 0.5 for w in layer.weights])


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("heads", sorted(HEADS))
@pytest.mark.parametrize("position", sorted(POSITIONS))
def test_matches_float64_reference(position, heads, masked):
    layer, ref_position = make(position, heads)
    q, v = inputs(t=S)  # self-attention length: the skew path for Shaw
    layer(q, v)
    randomize(layer)
    kwargs, mask = {}, None
    if masked:
        query_mask, value_mask = padding_masks()
        query_mask = np.concatenate([query_mask, np.ones((B, 2), bool)], 1)
        kwargs = dict(query_mask=query_mask, value_mask=value_mask, use_causal_mask=True)
        mask = query_mask[:, :, None] & value_mask[:, None]
    out, scores = layer(q, v, return_attention_scores=True, **kwargs)
    want, want_scores = ref.mha(layer, q, v, mask=mask, causal=masked, position=ref_position)
    np.testing.assert_allclose(to_numpy(scores), want_scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(out), want, rtol=1e-4, atol=1e-4)
    # Cross-attention (T != S): Shaw's explicit-offset path.
    q3 = q[:, :T]
    out3 = layer(q3, v, **({} if not masked else dict(value_mask=kwargs["value_mask"])))
    want3, _ = ref.mha(layer, q3, v, mask=None if not masked else np.broadcast_to(
        kwargs["value_mask"][:, None], (B, T, S)), position=ref_position)
    np.testing.assert_allclose(to_numpy(out3), want3, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("normalizer", ["sparsemax", "entmax15"])
@pytest.mark.parametrize("position", ["none", "shaw", "t5"])
def test_sparse_normalizers_match_float64_reference(position, normalizer):
    layer, ref_position = make(position, "gqa", normalizer=normalizer)
    q, v = inputs(t=S)
    layer(q, v)
    randomize(layer)
    query_mask, value_mask = padding_masks()
    query_mask = np.concatenate([query_mask, np.ones((B, 2), bool)], 1)
    out, scores = layer(q, v, return_attention_scores=True, query_mask=query_mask,
                        value_mask=value_mask, use_causal_mask=True)
    mask = query_mask[:, :, None] & value_mask[:, None]
    want, want_scores = ref.mha(layer, q, v, mask=mask, causal=True, position=ref_position,
                                normalizer=normalizer)
    np.testing.assert_allclose(to_numpy(scores), want_scores, atol=1e-5)
    np.testing.assert_allclose(to_numpy(out), want, rtol=1e-4, atol=1e-4)
    assert np.mean(want_scores == 0) > 0.5
    again = MultiHeadAttention.from_config(layer.get_config())
    assert again.normalizer == normalizer
    with pytest.raises(ValueError, match="flash_attention"):
        MultiHeadAttention(2, 4, normalizer=normalizer, flash_attention=True)


@pytest.mark.parametrize("position", sorted(POSITIONS))
def test_every_implementation_agrees_with_fully_masked_rows(position):
    q, v = inputs(t=S)
    query_mask, value_mask = padding_masks()
    attention_mask = np.ones((B, S, S), bool)
    attention_mask[1, 2] = False  # a query that sees nothing
    outs = {}
    for implementation in ("math", "chunked", "fused"):
        layer, _ = make(position, "gqa", implementation=implementation, key_dim=6)
        layer.build(q.shape, v.shape)
        randomize(layer)
        try:
            outs[implementation] = to_numpy(layer(
                q, v, value_mask=value_mask, attention_mask=attention_mask,
                use_causal_mask=True))
        except ValueError as error:  # fused cannot run score_mod / weights
            assert "cannot compute this call" in str(error)
            assert position not in ("none", "rotary", "shaw_keys_per_head")
    baseline = outs.pop("math")
    for implementation, out in outs.items():
        np.testing.assert_allclose(out, baseline, rtol=2e-5, atol=2e-5, err_msg=implementation)
    bias = to_numpy(layer.output_dense.bias)
    np.testing.assert_allclose(baseline[1, 2], bias, rtol=0, atol=1e-6)  # attention out is 0


def test_attention_bias_score_mod_mask_mod_and_soft_cap():
    g = np.random.default_rng(5)
    q, v = inputs()
    bias = g.normal(size=(B, T, S)).astype("float32")
    layer = MultiHeadAttention(3, 4, score_mod=attnkit.ops.soft_cap(30.0),
                               mask_mod=attnkit.ops.sliding_window_mask(2),
                               logit_soft_cap=2.0)
    layer(q, v)
    randomize(layer)
    out, scores = layer(q, v, attention_bias=bias, return_attention_scores=True)
    w = ref.layer_weights(layer)
    qq, kk = ref.project(q.astype("float64"), w, "query"), ref.project(v.astype("float64"), w, "key")
    logits = np.einsum("btnh,bsnh->bnts", qq, kk) / 2.0 + bias[:, None]
    logits = 2.0 * np.tanh(30.0 * np.tanh(logits / 30.0) / 2.0)
    dist = np.arange(S)[None] - np.arange(T)[:, None]
    logits = np.where(np.abs(dist) < 2, logits, -np.inf)
    want = np.exp(logits - logits.max(-1, keepdims=True))
    want = want / want.sum(-1, keepdims=True)
    np.testing.assert_allclose(to_numpy(scores), want, rtol=1e-5, atol=1e-5)


def small_shaw_problem(seed):
    """A small GQA layer with Shaw positions, its input and an output gradient."""
    g = np.random.default_rng(seed)
    x = g.normal(size=(1, 4, 3)).astype("float32")
    layer, ref_position = make("shaw", "gqa", key_dim=2)
    layer(x, x)
    randomize(layer)
    return layer, ref_position, x, g.normal(size=(1, 4, 3))


def test_gradients_match_finite_differences_of_the_reference():
    layer, ref_position, q, d_out = small_shaw_problem(2)

    def loss(x):
        return ops.sum(layer(x, x, use_causal_mask=True) * ops.convert_to_tensor(d_out, "float32"))

    (got,) = grads(loss, q)
    want = np.zeros(q.shape)
    eps = 1e-6
    for idx in np.ndindex(q.shape):
        plus, minus = q.astype("float64"), q.astype("float64")
        plus[idx] += eps
        minus[idx] -= eps
        f = [np.sum(ref.mha(layer, x, x, causal=True, position=ref_position)[0] * d_out)
             for x in (plus, minus)]
        want[idx] = (f[0] - f[1]) / (2 * eps)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    # No future leakage: output 1 does not depend on inputs 2, 3.
    (leak,) = grads(lambda x: ops.sum(layer(x, x, use_causal_mask=True)[:, 1]), q)
    assert np.all(leak[:, 2:] == 0)


def test_garbage_in_masked_keys_changes_nothing():
    q, v = inputs()
    _, value_mask = padding_masks()
    layer, _ = make("shaw", "gqa")
    clean = to_numpy(layer(q, v, value_mask=value_mask))
    for garbage in (1e4, 1e30):
        dirty = v.copy()
        dirty[~value_mask] = garbage
        np.testing.assert_array_equal(to_numpy(layer(q, dirty, value_mask=value_mask)), clean)


def test_config_round_trip_weight_counts_and_symbolic_shapes():
    cached = MultiHeadAttention(4, 6, num_key_value_heads=2, dropout=0.1, seed=3,
                                position=attnkit.layers.T5RelativeBias(), use_gate=True,
                                logit_soft_cap=5.0)
    q, v = inputs()
    cached(q, v)
    # query, key, gate, value, attention_output (kernel + bias each), T5 table.
    assert len(cached.trainable_weights) == 11 and len(cached.non_trainable_weights) == 0
    assert len(cached.seed_generator.state.shape) == 1
    config = cached.get_config()
    clone = MultiHeadAttention.from_config(config)
    assert clone.get_config() == config
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(cached))
    assert again.get_config() == config
    layer = MultiHeadAttention(3, 4)
    cache = np.zeros((B, 2, 8, 3, 4), "float32")
    for kwargs, args in [({}, (q, v)), (dict(return_attention_scores=True), (q, v)),
                         (dict(return_attention_scores=True, cache=cache,
                               cache_update_index=0), (q, v))]:
        eager = layer(*args, **kwargs)
        spec_kwargs = {k: keras.KerasTensor(x.shape) if k == "cache" else x
                       for k, x in kwargs.items()}
        sym = layer.compute_output_spec(*(keras.KerasTensor(a.shape) for a in args), **spec_kwargs)
        eager, sym = keras.tree.flatten(eager), keras.tree.flatten(sym)
        assert [tuple(e.shape) for e in eager] == [tuple(s.shape) for s in sym]
    assert tuple(layer(q, v, return_attention_scores=True)[1].shape) == (B, 3, T, S)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "bfloat16"])
def test_dtype_policies_and_large_logits(policy):
    layer = MultiHeadAttention(2, 4, position=attnkit.layers.ShawRelativePosition(2),
                               dtype=policy)
    q, v = inputs(t=S)
    big = q * 3000.0
    out, scores = layer(big, big, return_attention_scores=True)
    compute = keras.DTypePolicy(policy).compute_dtype
    assert dtype_name(out) == compute and dtype_name(scores) == compute
    assert all(dtype_name(w) == keras.DTypePolicy(policy).variable_dtype for w in layer.weights)
    for sub in (layer.query_dense, layer.output_dense, layer.position):
        assert sub.dtype_policy.name == policy
    for x in (out, scores):
        assert np.all(np.isfinite(to_numpy(ops.cast(x, "float32"))))
    want, _ = ref.mha(layer, q, q, position=("shaw", {"k": 2}))
    got = to_numpy(ops.cast(layer(q, q), "float32"))
    np.testing.assert_allclose(got, want, rtol=3e-2, atol=3e-2)  # bfloat16: 8 bits of mantissa


def test_one_fit_step_and_jit_predict():
    jit = BACKEND != "torch"  # inductor compiles take minutes on 2 cores
    inp = keras.Input((S,), dtype="int32")
    x = keras.layers.Embedding(9, 8, mask_zero=True)(inp)
    x = MultiHeadAttention(2, 4, num_key_value_heads=1,
                           position=attnkit.layers.RotaryEmbedding())(x, x, use_causal_mask=True)
    model = keras.Model(inp, keras.layers.Dense(1)(x))
    model.compile("adam", "mse", jit_compile=jit)
    tokens = np.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]])
    history = model.fit(tokens, np.ones((B, S, 1)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    np.testing.assert_allclose(model.predict(tokens, verbose=0), to_numpy(model(tokens)),
                               rtol=1e-5, atol=1e-5)


def test_dropout_is_deterministic_outside_training_and_seeded_inside():
    q, v = inputs(t=S)
    for position in ("none", "shaw"):
        a, _ = make(position, dropout=0.5, seed=3)
        b, _ = make(position, dropout=0.5, seed=3)
        a(q, v)
        b(q, v)
        b.set_weights(a.get_weights())
        np.testing.assert_array_equal(to_numpy(a(q, v)), to_numpy(a(q, v)))
        np.testing.assert_array_equal(to_numpy(a(q, v, training=True)),
                                      to_numpy(b(q, v, training=True)))
        assert not np.allclose(to_numpy(a(q, v, training=True)), to_numpy(a(q, v)))
    keras.utils.set_random_seed(7)
    first = make("shaw")[0]
    first(q, v)
    keras.utils.set_random_seed(7)
    second = make("shaw")[0]
    second(q, v)
    for x, y in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(x, y)


ZQ, ZV = np.zeros((2, 3, 7), "float32"), np.zeros((2, 5, 7), "float32")
BAD = [
    (lambda: MultiHeadAttention(6, 4, num_key_value_heads=4), ValueError, "multiple of `num_key_value_heads`"),
    (lambda: MultiHeadAttention(0, 4), ValueError, "`num_heads` must be a positive int"),
    (lambda: MultiHeadAttention(2, -1), ValueError, "`key_dim` must be a positive int"),
    (lambda: MultiHeadAttention(2, 4, dropout=1.5), ValueError, "`dropout` must be in"),
    (lambda: MultiHeadAttention(2, 4, implementation="flash"), ValueError, "`implementation` must be one of"),
    (lambda: MultiHeadAttention(2, 4, position="rope"), TypeError, "PositionScheme"),
    (lambda: MultiHeadAttention(2, 4, logit_soft_cap=0), ValueError, "logit_soft_cap"),
    (lambda: MultiHeadAttention(2, 3, position=attnkit.layers.RotaryEmbedding())(ZQ, ZV), ValueError, "even key_dim"),
    (lambda: MultiHeadAttention(2, 4)(ZQ, ZV, attention_mask=np.ones((2, 4, 5), bool)), ValueError, r"attention_mask.*\(2, 1, 4, 5\).*\(2, 2, 3, 5\)"),
    (lambda: MultiHeadAttention(2, 4)(ZQ, ZV, attention_bias=np.ones((4, 5), "float32")), ValueError, "attention_bias"),
    (lambda: MultiHeadAttention(2, 4)(ZQ, ZV, value_mask=np.ones((2, 4), bool)), ValueError, "value_mask"),
    (lambda: MultiHeadAttention(2, 4)(ZQ, ZV[:1]), ValueError, "same batch size"),
    (lambda: MultiHeadAttention(2, 4)(ZQ, ZQ, cache_update_index=0), ValueError, "needs a `cache`"),
    (lambda: MultiHeadAttention(2, 4)(ZQ, ZQ, cache=np.zeros((2, 2, 8, 3, 4), "float32"), cache_update_index=0), ValueError, r"cache.*\(2, 2, None, 2, 4\)"),
    (lambda: MultiHeadAttention(2, 4, value_dim=3)(ZQ, ZQ, cache=np.zeros((2, 2, 8, 2, 4), "float32"), cache_update_index=0), ValueError, "value_dim == key_dim"),
]


@pytest.mark.parametrize("call, error, message", BAD)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_mask_forms_agree():
    q, v = inputs()
    layer, _ = make("shaw", "mqa")
    g = np.random.default_rng(8)
    pair = g.random((T, S)) > 0.4
    pair[:, 0] = True
    want = to_numpy(layer(q, v, attention_mask=pair))
    for form in (np.broadcast_to(pair, (B, T, S)), np.broadcast_to(pair, (B, 6, T, S)),
                 pair.astype("int32"), np.broadcast_to(pair, (B, T, S)).astype("int32")):
        np.testing.assert_allclose(to_numpy(layer(q, v, attention_mask=form)), want,
                                   rtol=1e-6, atol=1e-6)
    tril = np.tril(np.ones((T, S), bool))
    np.testing.assert_allclose(to_numpy(layer(q, v, use_causal_mask=True)),
                               to_numpy(layer(q, v, attention_mask=tril)), rtol=1e-6, atol=1e-6)
    _, value_mask = padding_masks()
    merged = tril[None] & value_mask[:, None]
    np.testing.assert_allclose(to_numpy(layer(q, v, use_causal_mask=True, value_mask=value_mask)),
                               to_numpy(layer(q, v, attention_mask=merged)), rtol=1e-6, atol=1e-6)
    for t, s in ((1, 1), (1, S), (T, 1)):  # one query, one key
        out = layer(q[:, :t], v[:, :s])
        want, _ = ref.mha(layer, q[:, :t], v[:, :s], position=("shaw", {"k": 2}))
        np.testing.assert_allclose(to_numpy(out), want, rtol=1e-4, atol=1e-4)


def test_weight_gradients_match_finite_differences_of_the_reference():
    layer, ref_position, x, d_out = small_shaw_problem(4)
    values = [to_numpy(w) for w in layer.trainable_weights]

    def loss(*weights):
        out, _ = layer.stateless_call(list(weights), [], ops.convert_to_tensor(x),
                                      ops.convert_to_tensor(x), use_causal_mask=True)
        return ops.sum(out * ops.convert_to_tensor(d_out, "float32"))

    got = grads(loss, *values)
    base = ref.layer_weights(layer)
    for index, variable in enumerate(layer.trainable_weights):
        name = [k for k in base if variable.path.endswith(k)][0]
        want = np.zeros(base[name].shape)
        for idx in np.ndindex(want.shape):
            f = []
            for sign in (1, -1):
                bumped = dict(base, **{name: base[name].copy()})
                bumped[name][idx] += sign * 1e-6
                out, _ = ref.mha(layer, x, x, causal=True, position=ref_position, weights=bumped)
                f.append(np.sum(out * d_out))
            want[idx] = (f[0] - f[1]) / 2e-6
        np.testing.assert_allclose(got[index], want, rtol=1e-3, atol=1e-4, err_msg=name)


def _packed(seed=0, length=12):
    """Two rows of packed documents: tokens (B, L, D) and ids (B, L)."""
    ids = np.array([[0] * 5 + [1] * 4 + [2] * 3, [0] * 2 + [1] * 10], "int32")[:, :length]
    return inputs(seed, t=length)[0], ids


@fresh_process.case("mha_segment_ids")
def segment_ids_case(folder):
    x_in = keras.Input((None, D))
    ids_in = keras.Input((None,), dtype="int32")
    layer = MultiHeadAttention(2, 4, name="packed")
    out = layer(x_in, x_in, segment_ids=ids_in, use_causal_mask=True)
    return keras.Model([x_in, ids_in], out), list(_packed())


@pytest.mark.parametrize("implementation", [None, "math", "chunked"])
def test_segment_ids_equal_the_dense_attention_mask(fresh_loads, implementation):
    loaded = fresh_loads["mha_segment_ids"]
    np.testing.assert_allclose(loaded.got[0], loaded.want[0], rtol=1e-6, atol=1e-6)
    layer = loaded.model.get_layer("packed")
    x, ids = loaded.inputs
    dense = (ids[:, :, None] == ids[:, None, :]) & np.tril(np.ones((12, 12), bool))
    want = to_numpy(layer(x, x, attention_mask=dense))
    np.testing.assert_allclose(loaded.want[0], want, rtol=1e-5, atol=1e-5)
    same = MultiHeadAttention(2, 4, implementation=implementation)
    same(x, x)
    same.set_weights(layer.get_weights())
    with attnkit.ops.block_sizes(query=3, key=4):  # several blocks per document
        out = to_numpy(same(x, x, segment_ids=ids, use_causal_mask=True))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
