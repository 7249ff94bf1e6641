"""Attention terms as saveable objects: every built-in round-trips through
keras serialization, models using them load in a fresh process, and an
unregistered function or class is refused when the model is saved."""

import json

import keras
import numpy as np
import pytest

import attnkit
import attnkit.ops as ak
from tests import fresh_process
from tests.helpers import to_numpy
from tests.ops import user_terms

B, N, T, S = 2, 4, 6, 6
SEGMENTS = np.array([[0, 0, 0, 1, 1, 1], [0, 1, 1, 2, 2, 2]], "int32")

MASKS = {
    "causal": lambda: ak.causal_mask(),
    "window": lambda: ak.sliding_window_mask(3, causal=True),
    "padding_lengths": lambda: ak.padding_mask(lengths=np.array([4, 6], "int32")),
    "padding_mask": lambda: ak.padding_mask(np.arange(S)[None] < np.array([[3], [5]])),
    "prefix": lambda: ak.prefix_lm_mask(np.array([2, 3], "int32")),
    "document": lambda: ak.document_mask(SEGMENTS),
    "and": lambda: ak.and_masks(ak.causal_mask(), ak.document_mask(SEGMENTS)),
    "or": lambda: ak.or_masks(ak.prefix_lm_mask(2), ak.sliding_window_mask(2)),
}
SCORES = {
    "alibi": lambda: ak.alibi(N),
    "soft_cap": lambda: ak.soft_cap(2.0),
    "chain": lambda: ak.chain_score_mods(ak.alibi(N), user_terms.DistancePenalty(0.5)),
    "user_function": lambda: user_terms.halve_far_scores,
    "user_class": lambda: user_terms.DistancePenalty(0.25),
}


def grid():
    return (np.arange(B).reshape(B, 1, 1, 1), np.arange(N).reshape(1, N, 1, 1),
            np.arange(T).reshape(1, 1, T, 1) + 1, np.arange(S).reshape(1, 1, 1, S))


def round_trip(term):
    config = ak.serialize_term(term)
    json.dumps(config)  # what a .keras file stores
    return ak.deserialize_term(config)


@pytest.mark.parametrize("name", sorted(MASKS))
def test_mask_terms_round_trip(name):
    term = MASKS[name]()
    again = round_trip(term)
    assert type(again) is type(term)
    idx = [keras.ops.convert_to_tensor(x.astype("int32")) for x in grid()]
    np.testing.assert_array_equal(to_numpy(again(*idx)), to_numpy(term(*idx)))


@pytest.mark.parametrize("name", sorted(SCORES))
def test_score_terms_round_trip(name):
    term = SCORES[name]()
    again = round_trip(term)
    assert type(again) is type(term)
    scores = keras.ops.convert_to_tensor(
        np.random.default_rng(0).normal(size=(B, N, T, S)).astype("float32"))
    idx = [keras.ops.convert_to_tensor(x.astype("int32")) for x in grid()]
    np.testing.assert_array_equal(to_numpy(again(scores, *idx)), to_numpy(term(scores, *idx)))


def test_bucket_terms_round_trip():
    for term in (ak.ClippedBuckets(5), ak.T5Buckets(16, 40, bidirectional=False)):
        again = round_trip(term)
        assert again.get_config() == term.get_config()
        assert again.saturation() == term.saturation()


def test_an_unregistered_function_is_refused_at_save_time(tmp_path):
    def closure(scores, b, h, q_idx, kv_idx):
        return scores * 2.0

    inp = keras.Input((T, 8))
    out = attnkit.layers.MultiHeadAttention(2, 4, score_mod=closure)(inp, inp)
    model = keras.Model(inp, out)
    path = tmp_path / "closure.keras"
    with pytest.raises(ValueError, match="register_keras_serializable") as error:
        model.save(str(path))
    assert "score_mod" in str(error.value) and "closure" in str(error.value)
    # keras opens the file before it serializes: what is left holds nothing
    assert not path.exists() or path.stat().st_size == 0


class UnregisteredScheme(attnkit.layers.PositionScheme):
    """A position scheme nobody registered with keras."""


class UnregisteredAttention(attnkit.layers.MonotonicAttention):
    """A stateful attention nobody registered with keras."""


@pytest.mark.parametrize("build, name", [
    (lambda: attnkit.layers.MultiHeadAttention(2, 4, position=UnregisteredScheme()),
     "position"),
    (lambda: attnkit.layers.AttentionDecoder(
        keras.layers.GRUCell(8), UnregisteredAttention(8)), "attention")],
    ids=["position_scheme", "decoder_attention"])
def test_an_unregistered_class_is_refused_at_save_time(build, name):
    # Before, the file saved and failed at load with "Could not locate class".
    layer = build()
    with pytest.raises(ValueError, match="register_keras_serializable") as error:
        layer.get_config()
    assert f"`{name}` is the class" in str(error.value)
    assert "Unregistered" in str(error.value) and "closure" not in str(error.value)


def test_keras_own_classes_and_registered_ones_serialize():
    decoder = attnkit.layers.AttentionDecoder(keras.layers.GRUCell(8),
                                              attnkit.layers.MonotonicAttention(8))
    config = decoder.get_config()
    assert config["cell"]["class_name"] == "GRUCell"
    again = attnkit.layers.AttentionDecoder.from_config(config)
    assert type(again.attention) is attnkit.layers.MonotonicAttention
    layer = attnkit.layers.MultiHeadAttention(2, 4, position=attnkit.layers.AlibiBias())
    again = attnkit.layers.MultiHeadAttention.from_config(layer.get_config())
    assert type(again.position) is attnkit.layers.AlibiBias


def test_alibi_with_the_wrong_head_count_says_so():
    q = np.zeros((1, 3, 4, 8), "float32")
    with pytest.raises(ValueError, match=r"alibi\(3\).*4 query heads"):
        ak.attention(q, q, q, score_mod=ak.alibi(3))


def all_terms_model():
    """A functional model using every built-in term and a user's own."""
    inp = keras.Input((T, 16), batch_size=B)
    heads = [
        dict(position=attnkit.layers.AlibiBias(), mask_mod=ak.causal_mask()),
        dict(position=attnkit.layers.T5RelativeBias(num_buckets=8, max_distance=5),
             mask_mod=ak.document_mask(SEGMENTS)),
        dict(position=attnkit.layers.ShawRelativePosition(2, use_relative_values=True),
             mask_mod=ak.prefix_lm_mask(2)),
        dict(position=attnkit.layers.RotaryEmbedding(), sliding_window=3,
             score_mod=ak.soft_cap(3.0)),
        dict(mask_mod=ak.and_masks(ak.sliding_window_mask(2), ak.padding_mask(
            lengths=np.array([4, 6], "int32"))), score_mod=user_terms.halve_far_scores),
        dict(score_mod=ak.chain_score_mods(ak.alibi(N), user_terms.DistancePenalty(0.1)),
             mask_mod=ak.or_masks(ak.causal_mask(), ak.prefix_lm_mask(3))),
    ]
    outs = [attnkit.layers.MultiHeadAttention(N, 4, **kwargs)(inp, inp) for kwargs in heads]
    q = keras.layers.Reshape((T, N, 4))(inp)
    outs.append(keras.layers.Reshape((T, 16))(ak.relative_attention(
        q, q, q, buckets=ak.T5Buckets(8, 5), bias_table=np.linspace(-1, 1, 8 * N).reshape(
            8, N).astype("float32"), is_causal=True, score_mod=ak.alibi(N))))
    return keras.Model(inp, keras.layers.Concatenate()(outs))


@fresh_process.case("every_term")
def every_term_case(folder):
    x = np.random.default_rng(0).normal(size=(B, T, 16)).astype("float32")
    return all_terms_model(), x, ["tests.ops.user_terms"]  # registers the user's terms


def test_a_model_with_every_term_loads_in_a_fresh_process(fresh_loads):
    loaded = fresh_loads["every_term"]
    np.testing.assert_array_equal(loaded.got[0], loaded.want[0])
