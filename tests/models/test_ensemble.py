"""`attnkit.models.Ensemble` against the float64 mean of its members'
teacher-forced distributions, computed here in NumPy."""

import keras
import numpy as np
import pytest

from attnkit.models import Ensemble
from attnkit.models import RNNSeq2Seq
from attnkit.models import beam_search_decode
from attnkit.models import build_rnn_seq2seq
from attnkit.models import build_transformer_seq2seq
from attnkit.models import greedy_decode
from tests import fresh_process
from tests.helpers import to_numpy

V_SRC, V_TGT = 11, 7


def sharpened(model, scale=6.0):
    """Random weights with logits scaled up: confident distributions, so
    that argmax and beam decisions are not near ties."""
    logits = model.get_layer("logits")
    logits.kernel.assign(logits.kernel * scale)
    return model


@pytest.fixture(scope="module")
def members():
    keras.utils.set_random_seed(1)
    rnn = sharpened(build_rnn_seq2seq(V_SRC, V_TGT, units=8, embedding_dim=8))
    transformer = sharpened(build_transformer_seq2seq(
        V_SRC, V_TGT, units=8, num_heads=2, num_layers=1, ff_units=16))
    source = np.random.RandomState(0).randint(3, V_SRC, (5, 6)).astype("int32")
    source[1, 4:] = 0  # padded
    return [rnn, transformer], source


def mean_probs(models, source, tokens):
    """(B, T, V) float64 mean of the models' softmax, teacher-forced on
    `tokens` (fed after the start token)."""
    fed = np.concatenate([np.ones((len(source), 1), "int32"), tokens[:, :-1]], axis=1)
    probs = []
    for model in models:
        logits = to_numpy(model([source, fed])[0]).astype("float64")
        e = np.exp(logits - logits.max(-1, keepdims=True))
        probs.append(e / e.sum(-1, keepdims=True))
    return np.mean(probs, axis=0)


def log_prob(models, source, tokens, end_id=2):
    """Log-probability of `tokens` under the mean distribution, up to and
    with `end_id`."""
    picked = np.log(np.take_along_axis(mean_probs(models, source, tokens),
                                       tokens[..., None], -1)[..., 0])
    ended = np.cumsum(tokens == end_id, axis=1) - (tokens == end_id) > 0
    return np.where(ended, 0.0, picked).sum(1)


def test_its_output_is_the_log_of_the_members_mean_distribution(members):
    models, source = members
    tokens = np.random.RandomState(1).randint(3, V_TGT, (len(source), 4)).astype("int32")
    fed = np.concatenate([np.ones((len(source), 1), "int32"), tokens[:, :-1]], axis=1)
    logits, alignments = Ensemble(models)([source, fed])
    np.testing.assert_allclose(to_numpy(logits), np.log(mean_probs(models, source, tokens)),
                               rtol=1e-5, atol=1e-5)
    expected = np.mean([to_numpy(m([source, fed])[1]) for m in models], axis=0)
    np.testing.assert_allclose(to_numpy(alignments), expected, rtol=1e-5, atol=1e-6)


def test_greedy_decoding_follows_the_mean_distribution(members):
    """Each greedy token is the argmax of the members' mean distribution
    given the tokens before it (here not what the RNN alone decodes)."""
    models, source = members
    tokens, alignments = greedy_decode(Ensemble(models), source, 5)
    np.testing.assert_array_equal(np.argmax(mean_probs(models, source, tokens), -1), tokens)
    alone = [greedy_decode(m, source, 5)[0] for m in models]
    assert not np.array_equal(tokens, alone[0])
    assert np.all(alignments[1, :, 4:] == 0)  # padding unseen
    one, _ = greedy_decode(Ensemble(models[:1]), source, 5)  # an ensemble of one is its model
    np.testing.assert_array_equal(one, alone[0])


def test_beam_search_finds_the_best_sequence_of_the_mean_distribution(members):
    """Width V over 2 steps keeps every prefix: the best of all V**2
    sequences under the mean distribution, checked by brute force."""
    models, source = members
    best, score = beam_search_decode(Ensemble(models), source, 2, beam_width=V_TGT)
    np.testing.assert_allclose(score, log_prob(models, source, best), rtol=1e-5, atol=1e-5)
    pairs = np.array([(a, b if a != 2 else 0) for a in range(V_TGT) for b in range(V_TGT)])
    every = log_prob(models, np.repeat(source, len(pairs), 0), np.tile(pairs, (len(source), 1)))
    np.testing.assert_allclose(score, every.reshape(len(source), -1).max(1), rtol=1e-5,
                               atol=1e-5)


def test_an_ensemble_saves_and_loads_with_its_members(members, tmp_path):
    models, source = members
    ensemble = Ensemble(models)
    ensemble.save(tmp_path / "ensemble.keras")
    loaded = keras.saving.load_model(tmp_path / "ensemble.keras", compile=False)
    assert isinstance(loaded, Ensemble) and len(loaded.members) == 2
    tokens, _ = greedy_decode(ensemble, source, 4)
    fed = np.concatenate([np.ones((len(source), 1), "int32"), tokens[:, :-1]], axis=1)
    np.testing.assert_allclose(to_numpy(loaded([source, fed])[0]),
                               to_numpy(ensemble([source, fed])[0]), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(greedy_decode(loaded, source, 4)[0], tokens)


@fresh_process.case("ensemble")
def ensemble_case(folder):
    keras.utils.set_random_seed(2)
    models = [sharpened(build_rnn_seq2seq(V_SRC, V_TGT, units=8, embedding_dim=8)),
              sharpened(build_transformer_seq2seq(V_SRC, V_TGT, units=8, num_heads=2,
                                                  num_layers=1, ff_units=16))]
    rng = np.random.default_rng(3)
    source = rng.integers(3, V_SRC, (3, 5)).astype("int32")
    fed = rng.integers(1, V_TGT, (3, 4)).astype("int32")
    return Ensemble(models), [source, fed]


def test_an_ensemble_loads_in_a_fresh_process(fresh_loads):
    loaded = fresh_loads["ensemble"]
    assert loaded.layers == [["attnkit.models.rnn_seq2seq", "RNNSeq2Seq"],
                             ["attnkit.models.transformer_seq2seq", "TransformerSeq2Seq"]]
    for got, want in zip(loaded.got, loaded.want):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_members_of_attnkit_0_1_and_of_mixed_precision_take_part(members):
    """A functional model with 0.1's layer names (no `decode_step`) and a
    model computing in float16 are members like the others: the ensemble
    decodes as the float64 mean of their distributions."""
    models, source = members
    functional = keras.Model(models[0].inputs, models[0].outputs)
    assert not hasattr(functional, "decode_step")
    tokens, _ = greedy_decode(Ensemble([functional, models[1]]), source, 5)
    np.testing.assert_array_equal(tokens, greedy_decode(Ensemble(models), source, 5)[0])
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(3)
        half = sharpened(build_rnn_seq2seq(V_SRC, V_TGT, units=8, embedding_dim=8))
    finally:
        keras.config.set_dtype_policy("float32")
    ensemble = Ensemble([half, models[1]])
    tokens, _ = greedy_decode(ensemble, source, 5)
    want = mean_probs([half, models[1]], source, tokens)
    fed = np.concatenate([np.ones((len(source), 1), "int32"), tokens[:, :-1]], axis=1)
    got = to_numpy(ensemble([source, fed])[0])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.log(want), rtol=2e-2, atol=2e-2)  # float16 logits
    np.testing.assert_array_equal(np.argmax(want, -1), tokens)


def test_members_must_be_models_that_decode():
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])
    with pytest.raises(TypeError, match="keras models"):
        Ensemble(["model.keras"])
    plain = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(TypeError, match="cannot be decoded"):
        Ensemble([plain])
    keras.utils.set_random_seed(0)
    small = RNNSeq2Seq(V_SRC, V_TGT, units=8, embedding_dim=8, name="small")
    large = RNNSeq2Seq(V_SRC, V_TGT + 2, units=8, embedding_dim=8, name="large")
    with pytest.raises(ValueError, match=r"7 \(member 0, 'small'\), 9 \(member 1, 'large'\)"):
        Ensemble([small, large])
