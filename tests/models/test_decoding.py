"""Greedy and beam-search decoding of the seq2seq models (the `attnkit`
command is tested in tests/test_cli.py)."""

import keras
import numpy as np
import pytest

from attnkit.datasets import dates
from attnkit.layers import MonotonicAttention
from attnkit.models import beam_search_decode
from attnkit.models import build_rnn_seq2seq
from attnkit.models import build_transformer_seq2seq
from attnkit.models import greedy_decode
from tests import fresh_process
from tests.helpers import to_numpy


def peaked(model):
    """Random weights, logits scaled up: distributions as confident as a
    trained model's, so argmax and beam decisions are not near ties."""
    logits = model.get_layer("logits")
    logits.kernel.assign(logits.kernel * 8.0)
    for layer in model.layers:
        if isinstance(getattr(layer, "attention", None), MonotonicAttention):
            # hard decisions that stop: with r = -4 an untrained one never does
            layer.attention.score_bias.assign(1.0)
    return model


@pytest.mark.parametrize("attention, normalizer", [
    ("additive", "softmax"), ("general", "softmax"), ("additive", "sparsemax"),
    ("mocha", "softmax"), ("location", "softmax"), ("coverage", "entmax15")])
def test_greedy_decoding_equals_argmax_of_the_teacher_forced_model(attention, normalizer):
    """Feeding the greedy tokens back teacher-forced reproduces them."""
    keras.utils.set_random_seed(0)
    data = dates.load_data(200, 10, 10, seed=3)
    src = np.array([data.source_vocab.encode(t, length=40) for t, _ in data.train[:6]], "int32")
    model = peaked(build_rnn_seq2seq(len(data.source_vocab), len(data.target_vocab),
                                     attention=attention, units=8, embedding_dim=8,
                                     normalizer=normalizer))
    tokens, alignments = greedy_decode(model, src, 11)
    fed = np.concatenate([np.ones((6, 1), "int32"), tokens[:, :-1]], axis=1)
    logits, teacher_alignments = model([src, fed])
    np.testing.assert_array_equal(np.argmax(to_numpy(logits), -1), tokens)
    np.testing.assert_allclose(alignments, to_numpy(teacher_alignments), rtol=1e-4, atol=1e-5)
    assert np.all(alignments[src[:, None, :].repeat(11, 1) == 0] == 0)  # padding unseen
    assert alignments.sum() > 0


def test_small_and_large_batches_decode_alike():
    """On JAX a batch of up to `QUICK_COMPILE_ROWS` rows compiles with
    XLA's cheaper settings, a larger one with its full optimization: both
    give the teacher-forced argmax, and the same tokens for the same rows."""
    from attnkit import _backends

    keras.utils.set_random_seed(0)
    data = dates.load_data(200, 10, 10, seed=3)
    rows = _backends.QUICK_COMPILE_ROWS
    src = np.array([data.source_vocab.encode(t, length=40) for t, _ in data.train[:rows + 4]],
                   "int32")
    model = peaked(build_rnn_seq2seq(len(data.source_vocab), len(data.target_vocab),
                                     attention="additive", units=8, embedding_dim=8))
    results = {}
    for size in (2, rows + 4):
        tokens, _ = greedy_decode(model, src[:size], 11)
        fed = np.concatenate([np.ones((size, 1), "int32"), tokens[:, :-1]], axis=1)
        np.testing.assert_array_equal(
            np.argmax(to_numpy(model([src[:size], fed])[0]), -1), tokens)
        results[size] = tokens
    np.testing.assert_array_equal(results[2], results[rows + 4][:2])


@pytest.mark.parametrize("builder", [build_rnn_seq2seq, build_transformer_seq2seq])
def test_a_decoded_model_is_freed_with_its_compiled_loops(builder):
    """The compiled loops live as long as their model, not as long as the
    process: a long-running process that decodes many models (a search
    over settings, a test suite) would otherwise keep every model and every
    program compiled for it, until the system's limit on memory mappings
    ends the process."""
    import gc
    import weakref

    def decode_once():
        model = builder(12, 12, units=8)
        greedy_decode(model, np.ones((2, 5), "int32"), 3)
        beam_search_decode(model, np.ones((2, 5), "int32"), 3, beam_width=2)
        return weakref.ref(model)

    ref = decode_once()
    gc.collect()
    assert ref() is None


def tiny_models(kinds=None):
    """Small peaked models of each kind (or of `kinds`) and five sources."""
    keras.utils.set_random_seed(0)
    data = dates.load_data(200, 10, 10, seed=3)
    src = np.array([data.source_vocab.encode(t, length=40) for t, _ in data.train], "int32")
    v_src, v_tgt = len(data.source_vocab), len(data.target_vocab)
    builders = {
        "rnn": lambda: build_rnn_seq2seq(v_src, v_tgt, units=8, embedding_dim=8),
        "relative": lambda: build_transformer_seq2seq(
            v_src, v_tgt, units=8, num_heads=2, num_layers=2, ff_units=16, clip_distance=4),
        "rotary": lambda: build_transformer_seq2seq(
            v_src, v_tgt, units=8, num_heads=2, num_layers=1, ff_units=16, position="rotary"),
        "alibi": lambda: build_transformer_seq2seq(
            v_src, v_tgt, units=8, num_heads=2, num_layers=1, ff_units=16, position="alibi"),
        "t5-entmax15": lambda: build_transformer_seq2seq(
            v_src, v_tgt, units=8, num_heads=2, num_layers=1, ff_units=16, position="t5",
            normalizer="entmax15"),
    }
    return {name: peaked(build()) for name, build in builders.items()
            if kinds is None or name in kinds}, src[:5]


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


@pytest.mark.parametrize("kind", [
    "relative", pytest.param("rotary", marks=pytest.mark.slow),
    pytest.param("alibi", marks=pytest.mark.slow),
    pytest.param("t5-entmax15", marks=pytest.mark.slow)])
def test_transformer_cached_decoding_equals_the_teacher_forced_model(kind, tiny):
    models, src = tiny
    model = models[kind]
    tokens, alignments = greedy_decode(model, src, 11)
    fed = np.concatenate([np.ones((len(src), 1), "int32"), tokens[:, :-1]], axis=1)
    logits, teacher_alignments = model([src, fed])
    np.testing.assert_array_equal(np.argmax(to_numpy(logits), -1), tokens)
    np.testing.assert_allclose(alignments, to_numpy(teacher_alignments), rtol=1e-4, atol=1e-5)
    assert np.all(alignments[src[:, None, :].repeat(11, 1) == 0] == 0)  # padding unseen


def sequence_log_prob(model, src, tokens, end_id=2):
    """Teacher-forced log-probability of `tokens`, up to and with `end_id`."""
    fed = np.concatenate([np.ones((len(src), 1), "int32"), tokens[:, :-1]], axis=1)
    logits = to_numpy(model([src, fed])[0]).astype("float64")
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, tokens[..., None], -1)[..., 0]
    ended = np.cumsum(tokens == end_id, axis=1) - (tokens == end_id) > 0
    return np.where(ended, 0.0, picked).sum(1)


@pytest.mark.parametrize("kind", ["rnn", pytest.param("relative", marks=pytest.mark.slow)])
def test_beam_search_is_exact_with_enough_beams(kind, tiny):
    """Width 1 is greedy (padded after the end token); width V over 2 steps keeps every prefix, so it
    finds the best of all V**2 sequences (checked by brute force)."""
    models, src = tiny
    model = models[kind]
    greedy, _ = greedy_decode(model, src, 3)
    after_end = np.cumsum(greedy == 2, axis=1) - (greedy == 2) > 0
    narrow, _ = beam_search_decode(model, src, 3, beam_width=1)
    np.testing.assert_array_equal(narrow, np.where(after_end, 0, greedy))  # padded after the end
    vocab = model.get_layer("logits").units
    best, score = beam_search_decode(model, src, 2, beam_width=vocab)
    np.testing.assert_allclose(score, sequence_log_prob(model, src, best), rtol=1e-5, atol=1e-5)
    pairs = np.array([(a, b if a != 2 else 0) for a in range(vocab) for b in range(vocab)])
    # Every (input, pair) in one teacher-forced batch: (len(src) * V^2, 2).
    all_scores = sequence_log_prob(model, np.repeat(src, len(pairs), 0),
                                   np.tile(pairs, (len(src), 1))).reshape(len(src), len(pairs))
    np.testing.assert_allclose(score, all_scores.max(1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="beam_width"):
        beam_search_decode(model, src, 2, beam_width=0)


def test_gnmt_score_is_the_paper_formula():
    from attnkit.models import gnmt_score

    # Two hypotheses of 3 and 7 tokens over a source of 3 positions, the
    # last one padding: lp = ((5 + |Y|) / 6) ** 0.6, cp = 0.2 * sum log min(c, 1).
    log_p = np.array([-2.0, -3.5])
    coverage = np.array([[0.5, 1.7, 9.0], [1.0, 0.25, 0.0]])
    mask = np.array([True, True, False])
    got = gnmt_score(log_p, np.array([3, 7]), coverage, mask, 0.6, 0.2)
    want = [-2.0 / (8 / 6) ** 0.6 + 0.2 * (np.log(0.5) + np.log(1.0)),
            -3.5 / 2 ** 0.6 + 0.2 * (np.log(1.0) + np.log(0.25))]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(gnmt_score(log_p, np.array([3, 7])), log_p)
    floored = gnmt_score(log_p, np.array([3, 7]), coverage, None, 0.0, 1.0)
    np.testing.assert_allclose(floored[1], -3.5 + np.log(0.25) + np.log(1e-10))


@pytest.mark.parametrize("kind", ["rnn", "relative"])
def test_beam_search_penalties_follow_the_gnmt_formulas(kind, tiny):
    """With width V over 2 steps the beam keeps every prefix: its choice is
    the best of all V**2 sequences by log P / lp + cp (Wu et al. 2016,
    eq. 14), computed here from teacher-forced log-probabilities and
    alignments."""
    models, src = tiny
    model = models[kind]
    vocab = model.get_layer("logits").units
    alpha, beta = 1.5, 0.4
    best, log_prob = beam_search_decode(model, src, 2, beam_width=vocab,
                                        length_penalty=alpha, coverage_penalty=beta)
    np.testing.assert_allclose(log_prob, sequence_log_prob(model, src, best), rtol=1e-5,
                               atol=1e-5)

    def gnmt(src, tokens):
        log_p = sequence_log_prob(model, src, tokens)
        length = np.where(tokens[:, 0] == 2, 1, 2)  # tokens up to and with the end
        fed = np.concatenate([np.ones((len(src), 1), "int32"), tokens[:, :-1]], axis=1)
        attention = to_numpy(model([src, fed])[1]).astype("float64")  # (B, 2, S)
        coverage = attention[:, 0] + np.where(length[:, None] == 2, attention[:, 1], 0.0)
        penalty = np.where(src != 0, np.log(np.clip(coverage, 1e-10, 1.0)), 0.0).sum(1)
        return log_p / ((5.0 + length) / 6.0) ** alpha + beta * penalty, log_p

    pairs = np.array([(a, b if a != 2 else 0) for a in range(vocab) for b in range(vocab)])
    every_src = np.tile(src, (len(pairs), 1))  # all candidates of all inputs in one batch
    every, plain = (x.reshape(len(pairs), len(src)).T
                    for x in gnmt(every_src, np.repeat(pairs, len(src), 0)))
    np.testing.assert_allclose(gnmt(src, best)[0], every.max(1), rtol=1e-5, atol=1e-5)
    # Not vacuous: the penalties move the candidates' scores by different amounts.
    assert np.ptp(every - plain, axis=1).min() > 0.1
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search_decode(model, src, 2, length_penalty=-1.0)


def seq2seq_case(kind):
    def build(folder):
        models, src = tiny_models([kind])
        fed = np.random.default_rng(1).integers(1, 8, size=(len(src), 6)).astype("int32")
        return models[kind], [src, fed]

    return fresh_process.case(f"seq2seq_{kind}")(build)


SEQ2SEQ_SAVED = {kind: seq2seq_case(kind) for kind in ("rnn", "relative", "rotary", "t5-entmax15")}


@pytest.mark.parametrize("kind", sorted(SEQ2SEQ_SAVED))
def test_seq2seq_models_load_in_a_fresh_process(kind, fresh_loads):
    """Logits and alignments of the loaded model equal the saved one's."""
    loaded = fresh_loads[f"seq2seq_{kind}"]
    assert len(loaded.got) == 2
    for got, want in zip(loaded.got, loaded.want):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class CountingDecoder(keras.Model):
    """A user's own model implementing only the stepping contract (no
    attnkit layer, no layer names decoding could look for): the next
    token's logits are `embedding(token) @ W + mean(memory) @ U`, and the
    state carries a step counter that the logits do not read."""

    def __init__(self, vocab, width):
        super().__init__()
        self.vocab, self.width = vocab, width
        self.embed = keras.layers.Embedding(vocab, width)
        self.out = keras.layers.Dense(vocab, use_bias=False)
        self.memory_out = keras.layers.Dense(vocab, use_bias=False)
        self.embed.build((None,))
        self.out.build((None, width))
        self.memory_out.build((None, width))

    def encode(self, source_ids, steps):
        memory = keras.ops.cast(self.embed(source_ids), "float32")
        real = keras.ops.cast(keras.ops.not_equal(source_ids, 0), "float32")
        pooled = keras.ops.sum(memory * real[..., None], 1) / keras.ops.sum(real, 1, keepdims=True)
        b = keras.ops.shape(source_ids)[0]
        return {"bias": self.memory_out(pooled), "weights": real / keras.ops.sum(real, 1, keepdims=True),
                "count": keras.ops.zeros((b,), "int32"), "nothing": None}

    def decode_step(self, token, state, index):
        logits = self.out(self.embed(token)) + state["bias"]
        return logits, state["weights"], {**state, "count": state["count"] + 1}


def counting_reference(model, src, steps, start_id=1):
    """Greedy decoding of `CountingDecoder` in float64 NumPy."""
    table = to_numpy(model.embed.embeddings).astype("float64")
    w, u = (to_numpy(layer.kernel).astype("float64") for layer in (model.out, model.memory_out))
    real = (src != 0).astype("float64")
    bias = ((table[src] * real[..., None]).sum(1) / real.sum(1, keepdims=True)) @ u
    token, tokens = np.full(len(src), start_id), []
    for _ in range(steps):
        token = np.argmax(table[token] @ w + bias, -1)
        tokens.append(token)
    return np.stack(tokens, 1), real / real.sum(1, keepdims=True)


def test_a_users_own_model_decodes_through_the_stepping_contract():
    keras.utils.set_random_seed(4)
    model = CountingDecoder(9, 6)
    model.out.kernel.assign(model.out.kernel * 6.0)
    src = np.array([[3, 4, 5, 0], [6, 7, 0, 0], [8, 3, 4, 5]], "int32")
    want, weights = counting_reference(model, src, 5)
    tokens, alignments = greedy_decode(model, src, 5)
    np.testing.assert_array_equal(tokens, want)
    np.testing.assert_allclose(alignments, np.repeat(weights[:, None], 5, 1), rtol=1e-6)
    best, _ = beam_search_decode(model, src, 5, beam_width=1, end_id=-1)
    np.testing.assert_array_equal(best, want)  # width 1 without an end token is greedy
    with pytest.raises(TypeError, match="decode_step"):
        greedy_decode(keras.Sequential([keras.layers.Dense(3)]), src, 2)


def test_decoding_reads_the_weights_as_they_are_now(tiny):
    """The compiled loop is made once per model and reads its variables at
    every call: after the weights change, decoding follows them."""
    models, src = tiny
    model = models["rnn"]
    greedy_decode(model, src, 4)
    logits = model.get_layer("logits")
    before = to_numpy(logits.kernel)
    try:
        logits.kernel.assign(np.roll(before, 3, axis=1))
        tokens, _ = greedy_decode(model, src, 4)
        fed = np.concatenate([np.ones((len(src), 1), "int32"), tokens[:, :-1]], axis=1)
        np.testing.assert_array_equal(np.argmax(to_numpy(model([src, fed])[0]), -1), tokens)
    finally:
        logits.kernel.assign(before)


@pytest.mark.parametrize("kind", ["rnn", "relative"])
def test_decoding_stops_at_the_end_token_and_pads(kind, tiny):
    """With `end_id`, a sequence that emitted it continues with padding and
    zero alignments; the tokens up to the end are those decoded without."""
    models, src = tiny
    model = models[kind]
    full, full_alignments = greedy_decode(model, src, 8)
    end = int(full[0, 1])  # an id the first sequence emits at step 2
    tokens, alignments = greedy_decode(model, src, 8, end_id=end, pad_id=0)
    ended = np.cumsum(full == end, axis=1) - (full == end) > 0
    assert ended.any()
    np.testing.assert_array_equal(tokens, np.where(ended, 0, full))
    np.testing.assert_allclose(alignments, np.where(ended[..., None], 0.0, full_alignments),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["rnn", pytest.param("relative", marks=pytest.mark.slow)])
def test_a_functional_model_saved_by_attnkit_0_1_still_decodes(kind, tiny):
    """A plain functional model with the 0.1 layer names (how 0.1 saved
    seq2seq models, and how a resumed training run rebuilds one) decodes
    to the same tokens as the model it was made from."""
    models, src = tiny
    model = models[kind]
    functional = keras.Model(model.inputs, model.outputs)
    assert not hasattr(functional, "decode_step")
    np.testing.assert_array_equal(greedy_decode(functional, src, 6)[0],
                                  greedy_decode(model, src, 6)[0])
    np.testing.assert_array_equal(beam_search_decode(functional, src, 4, beam_width=3)[0],
                                  beam_search_decode(model, src, 4, beam_width=3)[0])
