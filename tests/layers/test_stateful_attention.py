"""Stateful attention (monotonic, MoChA, location-sensitive, coverage):
each step against a float64 NumPy re-implementation from the papers'
equations, in AttentionDecoder step by step equal to teacher-forced,
masks, precision, saving, bad input."""


import keras
import numpy as np
import pytest

from attnkit.layers import AttentionDecoder
from attnkit.layers import CoverageAttention
from attnkit.layers import LocationSensitiveAttention
from attnkit.layers import MonotonicAttention
from attnkit.testing import chunkwise_alignment_reference
from attnkit.testing import hard_monotonic_reference
from attnkit.testing import monotonic_alignment_reference
from tests import fresh_process
from tests.helpers import to_numpy

B, T, S, D, DV, U = 2, 4, 7, 5, 11, 13
KINDS = {
    "monotonic": lambda: MonotonicAttention(U, score_bias_init=0.5, noise_std=0.0),
    "monotonic-luong": lambda: MonotonicAttention(U, energy="luong", score_bias_init=0.5,
                                                  noise_std=0.0),
    "mocha": lambda: MonotonicAttention(U, chunk_size=3, score_bias_init=0.5, noise_std=0.0),
    "location": lambda: LocationSensitiveAttention(U, filters=3, kernel_size=5),
    "location-previous": lambda: LocationSensitiveAttention(U, filters=3, kernel_size=4,
                                                            cumulative=False),
    "coverage": lambda: CoverageAttention(U),
    "fertility": lambda: CoverageAttention(U, fertility=2.0, normalizer="sparsemax"),
}
MASK = np.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], bool)


def data(seed=0):
    g = np.random.default_rng(seed)
    return g.normal(size=(T, B, D)).astype("float32"), g.normal(size=(B, S, DV)).astype("float32")


def weights(layer):
    return {w.path.split("/")[-1]: to_numpy(w).astype("float64") for w in layer.weights}


def softmax(x, mask):
    x = np.where(mask, x, -np.inf)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sparsemax_rows(x, mask):
    from attnkit.testing import sparsemax_reference
    out = np.zeros(x.shape)
    for b in range(x.shape[0]):
        out[b, mask[b]] = sparsemax_reference(x[b, mask[b]])
    return out


def additive(w, q, memory, extra=0.0, prefix=""):
    hidden = np.tanh((q @ w[prefix + "query_kernel"])[:, None] + memory @ w[prefix + "key_kernel"]
                     + extra + w[prefix + "bias"])  # (B, S, U)
    return hidden, w[prefix + "score_kernel"]


def conv_same(x, kernel):
    """keras 'same' 1-D convolution: (B, S, C) * (K, C, F), left pad (K-1)//2."""
    k = kernel.shape[0]
    left = (k - 1) // 2
    padded = np.pad(x, [(0, 0), (left, k - 1 - left), (0, 0)])
    return np.stack([np.einsum("bkc,kcf->bf", padded[:, j:j + k], kernel)
                     for j in range(x.shape[1])], axis=1)


def reference_step(layer, w, q, memory, states, mask, training):
    """One step of `layer` from its weights: (alignment, new states)."""
    if isinstance(layer, MonotonicAttention):
        if layer.energy == "bahdanau":
            hidden, v = additive(w, q, memory)
            e = hidden @ (v / np.linalg.norm(v))
        else:
            e = np.einsum("bd,bsd->bs", q, memory @ w["key_kernel"])
        p = np.where(mask, 1 / (1 + np.exp(-(w["gain"] * e + w["score_bias"]))), 0.0)
        alpha = (monotonic_alignment_reference(p, states[0]) if training
                 else hard_monotonic_reference(p, states[0]))
        out = alpha
        if layer.chunk_size > 1:
            hidden, v = additive(w, q, memory, prefix="chunk_")
            out = chunkwise_alignment_reference(alpha, hidden @ v, layer.chunk_size, mask)
        return out, [alpha]
    if isinstance(layer, LocationSensitiveAttention):
        f = conv_same(np.stack(states, -1), w["location_kernel"]) @ w["location_projection"]
        hidden, v = additive(w, q, memory, f)
        a = softmax(hidden @ v, mask)
        return a, [a, states[1] + a] if layer.cumulative else [a]
    hidden, v = additive(w, q, memory, states[0][..., None] * w["coverage_kernel"])
    scores = hidden @ v
    a = sparsemax_rows(scores, mask) if layer.normalizer == "sparsemax" else softmax(scores, mask)
    if layer.fertility is None:
        return a, [states[0] + a]
    phi = layer.fertility / (1 + np.exp(-(memory @ w["fertility_kernel"])))
    return a, [states[0] + a / phi]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_steps_match_the_papers_equations(kind, training):
    queries, memory = data()
    layer = KINDS[kind]()
    states = layer.get_initial_state(memory, MASK)
    layer(queries[0], memory, states, value_mask=MASK)  # builds
    w = weights(layer)
    ref_states = [to_numpy(s).astype("float64") for s in states]
    for t in range(T):
        context, alignment, states = layer(queries[t], memory, states, value_mask=MASK,
                                           training=training)
        want, ref_states = reference_step(layer, w, queries[t].astype("float64"),
                                          memory.astype("float64"), ref_states, MASK, training)
        np.testing.assert_allclose(to_numpy(alignment), want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(to_numpy(context), np.einsum("bs,bsv->bv", want, memory),
                                   rtol=1e-4, atol=1e-5)
        for got, ref in zip(states, ref_states):
            np.testing.assert_allclose(to_numpy(got), ref, rtol=1e-4, atol=1e-5)
        assert np.all(to_numpy(alignment)[0, 5:] == 0)
    if isinstance(layer, MonotonicAttention) and not training:
        assert to_numpy(alignment).sum() > 0  # the hard scan still attends somewhere


STYLES = [("bahdanau", True), ("luong", True), ("luong", False)]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("style, feeding", STYLES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decoder_step_by_step_equals_teacher_forced(kind, style, feeding, training):
    queries, memory = data(1)
    x = np.transpose(queries, (1, 0, 2))  # (B, T, E)
    decoder = AttentionDecoder(keras.layers.GRUCell(U), KINDS[kind](), style=style,
                               input_feeding=feeding)
    outputs, alignments, final = decoder(x, memory, memory_mask=MASK, return_state=True,
                                         training=training)
    states = decoder.get_initial_state(B, memory=memory, memory_mask=MASK)
    for t in range(T):
        out, align, states = decoder.step(x[:, t], states, memory, MASK, training=training)
        np.testing.assert_allclose(to_numpy(out), to_numpy(outputs)[:, t], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(to_numpy(align), to_numpy(alignments)[:, t], rtol=1e-5,
                                   atol=1e-5)
    assert len(states) == len(final)
    for a, b in zip(states, final):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-5)
    spec = decoder.compute_output_spec(keras.KerasTensor(x.shape), keras.KerasTensor(memory.shape),
                                       return_state=True)
    assert [tuple(s.shape) for s in spec[2]] == [tuple(s.shape) for s in final]


def test_noise_only_in_training_and_seeded():
    queries, memory = data(2)
    make = lambda seed: MonotonicAttention(U, noise_std=1.0, seed=seed)  # noqa: E731
    runs = []
    for seed in (3, 3, 4):
        keras.utils.set_random_seed(0)
        layer = make(seed)
        states = layer.get_initial_state(memory)
        runs.append([to_numpy(layer(queries[0], memory, states, training=flag)[1])
                     for flag in (True, False)])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert not np.allclose(runs[0][0], runs[2][0])
    np.testing.assert_array_equal(runs[0][1], runs[2][1])  # no noise at inference


@pytest.mark.parametrize("kind", ["mocha", "location", "fertility"])
def test_garbage_in_hidden_memory_changes_nothing(kind):
    queries, memory = data(3)
    layer = KINDS[kind]()
    noisy = memory.copy()
    noisy[0, 5:] = 1e4
    results = []
    for m in (memory, noisy):
        states = layer.get_initial_state(m, MASK)
        for t in range(T):
            context, alignment, states = layer(queries[t], m, states, value_mask=MASK)
        results.append((to_numpy(context), to_numpy(alignment)))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("kind", ["mocha", "location", "coverage"])
def test_mixed_precision(kind, policy):
    queries, memory = data(4)
    layer = KINDS[kind]()
    layer = layer.__class__.from_config({**layer.get_config(), "dtype": policy})
    decoder = AttentionDecoder(keras.layers.GRUCell(U, dtype=policy), layer, dtype=policy)
    outputs, alignments = decoder(np.transpose(queries, (1, 0, 2)), memory * 100)
    assert keras.backend.standardize_dtype(outputs.dtype) == policy.split("_")[1]
    assert np.all(np.isfinite(to_numpy(keras.ops.cast(outputs, "float32"))))
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)


def test_config_round_trip():
    queries, memory = data()
    for make in KINDS.values():
        layer = make()
        layer(queries[0], memory, layer.get_initial_state(memory))
        clone = layer.__class__.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        clone(queries[0], memory, clone.get_initial_state(memory))
        assert [w.path.split("/")[-1] for w in clone.weights] == \
            [w.path.split("/")[-1] for w in layer.weights]


def stateful_case(kind):
    def build(folder):
        queries, memory = data(5)
        x = np.transpose(queries, (1, 0, 2))
        x_in, m_in = keras.Input((T, D)), keras.Input((S, DV))
        outputs, alignments = AttentionDecoder(keras.layers.LSTMCell(U), KINDS[kind]())(x_in, m_in)
        model = keras.Model([x_in, m_in], [keras.layers.Dense(3)(outputs), alignments])
        model.compile("adam", ["mse", None])
        history = model.fit([x, memory], [np.ones((B, T, 3)), np.zeros((B, T, S))], verbose=0)
        return model, [x, memory], [], history

    return fresh_process.case(f"stateful_{kind}")(build)


STATEFUL_SAVED = {kind: stateful_case(kind) for kind in ("mocha", "location", "fertility")}


@pytest.mark.parametrize("kind", sorted(STATEFUL_SAVED))
def test_fit_and_fresh_process_load(kind, fresh_loads):
    loaded = fresh_loads[f"stateful_{kind}"]
    history = loaded.build_result[3]
    assert np.isfinite(history.history["loss"][0])
    np.testing.assert_allclose(loaded.got[0], loaded.want[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: MonotonicAttention(4, energy="dot"), "`energy` must be one of"),
    (lambda: MonotonicAttention(4, mode="hard"), "`mode` must be one of"),
    (lambda: MonotonicAttention(4, inference="beam"), "`inference` must be one of"),
    (lambda: MonotonicAttention(4, chunk_size=0), "`chunk_size` must be a positive int"),
    (lambda: MonotonicAttention(4, noise_std=-1), "`noise_std` must be a number >= 0"),
    (lambda: LocationSensitiveAttention(4, kernel_size=0), "`kernel_size` must be a positive int"),
    (lambda: CoverageAttention(0), "`units` must be a positive int"),
    (lambda: CoverageAttention(4, fertility=0), "`fertility` must be"),
    (lambda: CoverageAttention(4, normalizer="relu"), "normalizer"),
    (lambda: CoverageAttention(4)(np.zeros((2, 3, 5)), np.zeros((2, 7, 5)), [np.zeros((2, 7))]),
     "`query` must be one decoder step"),
    (lambda: AttentionDecoder(keras.layers.GRUCell(4), CoverageAttention(4)).get_initial_state(2),
     "pass `memory`"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
