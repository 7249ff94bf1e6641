"""AttentionDecoder: step-by-step equals teacher-forced, wiring follows the
papers, masks, fit, saving, bad input."""


import keras
import numpy as np
import pytest

from attnkit.layers import AdditiveAttention
from attnkit.layers import AttentionDecoder
from attnkit.layers import DotProductAttention
from tests import fresh_process
from tests.helpers import to_numpy

B, T, S, E, DV, U = 2, 3, 5, 7, 11, 13
CELLS = {"gru": lambda: keras.layers.GRUCell(U), "lstm": lambda: keras.layers.LSTMCell(U)}
ATTENTIONS = {"additive": lambda: AdditiveAttention(17), "general": lambda: DotProductAttention("general"),
              "sparsemax": lambda: AdditiveAttention(17, normalizer="sparsemax"),
              "entmax15": lambda: DotProductAttention("general", normalizer="entmax15")}
STYLES = [("bahdanau", True), ("luong", True), ("luong", False)]


def data(seed=0):
    g = np.random.default_rng(seed)
    return (g.normal(size=(B, T, E)).astype("float32"),
            g.normal(size=(B, S, DV)).astype("float32"))


def make(cell, attention, style, feeding):
    return AttentionDecoder(CELLS[cell](), ATTENTIONS[attention](), style=style,
                            input_feeding=feeding)


@pytest.mark.parametrize("style, feeding", STYLES)
@pytest.mark.parametrize("attention", sorted(ATTENTIONS))
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_step_by_step_equals_teacher_forced(cell, attention, style, feeding):
    x, memory = data()
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    decoder = make(cell, attention, style, feeding)
    outputs, alignments, final = decoder(x, memory, memory_mask=mask, return_state=True)
    states = decoder.get_initial_state(B)
    for t in range(T):
        out, align, states = decoder.step(x[:, t], states, memory, mask)
        np.testing.assert_allclose(to_numpy(out), to_numpy(outputs)[:, t], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(to_numpy(align), to_numpy(alignments)[:, t], rtol=1e-5, atol=1e-6)
    for a, b in zip(states, final):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6)
    assert np.all(to_numpy(alignments)[0, :, 3:] == 0)
    np.testing.assert_allclose(to_numpy(alignments).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("style, feeding", STYLES)
def test_wiring_follows_the_papers(style, feeding):
    """A hand-written loop from the decoder's own cell, attention and W_c."""
    x, memory = data(1)
    decoder = make("lstm", "additive", style, feeding)
    outputs, alignments = decoder(x, memory)
    h = [np.zeros((B, U), "float32"), np.zeros((B, U), "float32")]
    a_prev = np.zeros((B, U), "float32")
    for t in range(T):
        if style == "bahdanau":  # attend from h[t-1], feed the context in
            context, align = decoder.attention(h[0], memory, return_attention_scores=True)
            out, h = decoder.cell(np.concatenate([x[:, t], to_numpy(context)], -1), h)
            want = np.concatenate([to_numpy(out), to_numpy(context)], -1)
        else:  # run the cell, attend from h[t], a[t] = tanh(W_c [c; h])
            cell_in = np.concatenate([x[:, t], a_prev], -1) if feeding else x[:, t]
            out, h = decoder.cell(cell_in, h)
            context, align = decoder.attention(out, memory, return_attention_scores=True)
            w_c = to_numpy(decoder.projection.kernel)
            want = np.tanh(np.concatenate([to_numpy(context), to_numpy(out)], -1) @ w_c)
            a_prev = want
        h = [to_numpy(s) for s in h]
        np.testing.assert_allclose(to_numpy(outputs)[:, t], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(to_numpy(alignments)[:, t], to_numpy(align), rtol=1e-5, atol=1e-6)


def test_implicit_memory_mask_equals_explicit_and_initial_state_is_used():
    tokens = np.array([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5]])
    embed = keras.layers.Embedding(9, DV, mask_zero=True)
    memory = embed(tokens)
    x, _ = data()
    decoder = make("gru", "additive", "bahdanau", True)
    implicit = decoder(x, memory)
    explicit = decoder(x, memory, memory_mask=tokens != 0)
    for a, b in zip(implicit, explicit):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-6)
    start = [np.ones((B, U), "float32")]
    other = decoder(x, memory, initial_state=start)
    assert not np.allclose(to_numpy(other[0]), to_numpy(implicit[0]))


@fresh_process.case("attention_decoder")
def attention_decoder_case(folder):
    x_in, m_in = keras.Input((T, E)), keras.Input((S, DV))
    outputs, alignments = make("lstm", "general", "luong", True)(x_in, m_in)
    model = keras.Model([x_in, m_in], [keras.layers.Dense(4)(outputs), alignments])
    model.compile("adam", ["mse", None])
    x, memory = data()
    history = model.fit([x, memory], [np.zeros((B, T, 4)), np.zeros((B, T, S))], verbose=0)
    return model, [x, memory], [], history


def test_fit_step_and_fresh_process_load(fresh_loads):
    loaded = fresh_loads["attention_decoder"]
    assert np.isfinite(loaded.build_result[3].history["loss"][0])
    np.testing.assert_allclose(loaded.got[0], loaded.want[0], rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    decoder = make("gru", "additive", "luong", False)
    x, memory = data()
    decoder(x, memory)
    clone = AttentionDecoder.from_config(decoder.get_config())
    assert clone.get_config() == decoder.get_config()
    clone(x, memory)
    assert len(clone.weights) == len(decoder.weights)


@pytest.mark.parametrize("call, message", [
    (lambda: AttentionDecoder(keras.layers.GRUCell(4), AdditiveAttention(3), style="nmt"), "`style` must be one of"),
    (lambda: AttentionDecoder(keras.layers.Dense(4), AdditiveAttention(3)), "`cell` must be a keras RNN cell"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("style, feeding", STYLES)
def test_symbolic_spec_equals_eager(style, feeding):
    x, memory = data()
    decoder = make("lstm", "additive", style, feeding)
    eager = decoder(x, memory, return_state=True)
    spec = decoder.compute_output_spec(keras.KerasTensor(x.shape), keras.KerasTensor(memory.shape),
                                       return_state=True)
    flat = lambda r: [tuple(r[0].shape), tuple(r[1].shape)] + [tuple(s.shape) for s in r[2]]  # noqa: E731
    assert flat(eager) == flat(spec)
