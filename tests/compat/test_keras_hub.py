"""KerasHub as a client: its models and layers built on attnkit's layers give
the same results as with keras's.

Each model or layer is built twice from the same seed, once as KerasHub
builds it and once inside `attnkit.layers.substitute_keras_attention()`; the
weights are copied from the first to the second, so any difference comes
from the attention layers alone.
"""

import keras
import numpy as np
import pytest
from keras import ops

import attnkit

# KerasHub is installed by `make install` (the dev extra); elsewhere these
# tests skip instead of stopping the collection of the whole suite.
keras_hub = pytest.importorskip("keras_hub")

_VOCAB = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3, "Ġ": 4, "Ġa": 5, "Ġb": 6, "ab": 7}


def _twice(build):
    keras.utils.set_random_seed(0)
    theirs = build()
    with attnkit.layers.substitute_keras_attention():
        ours = build()
    return theirs, ours


def _attention_classes(model):
    return {type(layer) for layer in model._flatten_layers()
            if "Attention" in type(layer).__name__}


def _gpt2():
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=len(_VOCAB), num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=32, dropout=0.0)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def test_gpt2_causal_lm_logits_and_generate_match_keras():
    theirs, ours = _twice(_gpt2)
    assert _attention_classes(ours) == {attnkit.layers.CachedMultiHeadAttention}
    assert not any(issubclass(c, attnkit.layers.MultiHeadAttention)
                   for c in _attention_classes(theirs))
    ours.set_weights(theirs.get_weights())
    inputs = {"token_ids": np.array([[1, 2, 3, 5, 6, 7, 0, 0], [3, 3, 1, 0, 0, 0, 0, 0]]),
              "padding_mask": np.array([[1] * 6 + [0] * 2, [1] * 3 + [0] * 5])}
    np.testing.assert_allclose(ops.convert_to_numpy(ours(inputs)),
                               ops.convert_to_numpy(theirs(inputs)), atol=2e-5)
    prompt = {"token_ids": np.array([[1, 2, 3, 5] + [0] * 8]),
              "padding_mask": np.array([[1] * 4 + [0] * 8])}
    for model in (theirs, ours):
        model.compile(sampler="greedy")
    expected = theirs.generate(prompt, stop_token_ids=None)["token_ids"]
    got = ours.generate(prompt, stop_token_ids=None)["token_ids"]
    np.testing.assert_array_equal(got, expected)


def test_transformer_encoder_with_float_padding_mask_matches_keras():
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype="float32")

    def build():  # the encoder makes its attention layer at its first call
        layer = keras_hub.layers.TransformerEncoder(intermediate_dim=16, num_heads=2)
        return layer, layer(x, padding_mask=mask)

    (theirs, expected), (ours, _) = _twice(build)
    assert isinstance(ours._self_attention_layer, attnkit.layers.MultiHeadAttention)
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(ours(x, padding_mask=mask)),
                               ops.convert_to_numpy(expected), atol=2e-5)


def test_cached_attention_decoding_matches_keras_hub():
    """KerasHub's cached layer and attnkit's, step by step with a float mask."""
    keras.utils.set_random_seed(0)
    theirs = keras_hub.layers.CachedMultiHeadAttention(num_heads=2, key_dim=4)
    ours = attnkit.layers.CachedMultiHeadAttention(num_heads=2, key_dim=4)
    x = np.random.default_rng(1).normal(size=(2, 4, 8)).astype("float32")
    theirs(x, x)
    ours(x, x)
    ours.set_weights(theirs.get_weights())
    caches = [np.zeros((2, 2, 4, 2, 4), "float32")] * 2
    for i in range(4):
        mask = (np.arange(4)[None, None, :] <= i).astype("float32").repeat(2, axis=0)
        outs = []
        for n, layer in enumerate((theirs, ours)):
            out, scores, caches[n] = layer(
                x[:, i:i + 1], x[:, i:i + 1], attention_mask=mask, cache=caches[n],
                cache_update_index=i, return_attention_scores=True)
            outs.append([ops.convert_to_numpy(t) for t in (out, scores, caches[n])])
        for got, expected in zip(outs[1], outs[0]):
            np.testing.assert_allclose(got, expected, atol=2e-5)


def test_substitution_is_undone_on_exit():
    from keras_hub.src.layers.modeling import transformer_decoder

    before = (keras.layers.MultiHeadAttention, transformer_decoder.CachedMultiHeadAttention)
    with attnkit.layers.substitute_keras_attention():
        assert keras.layers.MultiHeadAttention is attnkit.layers.MultiHeadAttention
        assert transformer_decoder.CachedMultiHeadAttention is \
            attnkit.layers.CachedMultiHeadAttention
    assert (keras.layers.MultiHeadAttention,
            transformer_decoder.CachedMultiHeadAttention) == before


def test_readme_keras_hub_example_builds_on_attnkit():
    from tests.test_readme import run_block

    namespace, _ = run_block("GPT2Backbone")
    assert _attention_classes(namespace["backbone"]) == {attnkit.layers.CachedMultiHeadAttention}
