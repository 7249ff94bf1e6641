"""The Transformer encoder-decoder's ALiBi encoder: which way a key lies."""

import keras
import numpy as np
import pytest

from attnkit.models import TransformerSeq2Seq
from attnkit.models.transformer_seq2seq import TransformerDecoderBlock
from attnkit.models import build_transformer_seq2seq
from tests.helpers import to_numpy


def memories(model, source):
    """The encoder's memory of `source` and, mirrored back, of its reverse."""
    forward = to_numpy(model.encode(source, 1)["memory"])
    backward = to_numpy(model.encode(source[:, ::-1].copy(), 1)["memory"])[:, ::-1]
    return forward, backward


@pytest.mark.parametrize("split", [True, False])
def test_alibi_encoder_reads_a_word_and_its_mirror_image_apart_only_when_split(split):
    """Symmetric ALiBi and no other position signal: the memory of a
    reversed source is the reversed memory, whatever the weights, so the
    decoder cannot tell which end of a word is which."""
    keras.utils.set_random_seed(0)
    model = build_transformer_seq2seq(20, 20, units=16, num_heads=4, num_layers=2,
                                      ff_units=16, position="alibi",
                                      alibi_split_directions=split)
    forward, backward = memories(model, np.array([[3, 5, 7, 9, 11, 13, 2]], "int32"))
    if split:
        assert np.abs(forward - backward).max() > 0.1
    else:
        np.testing.assert_allclose(backward, forward, rtol=1e-4, atol=1e-4)


def test_a_config_saved_before_split_directions_loads_with_symmetric_alibi():
    model = build_transformer_seq2seq(20, 20, units=16, num_heads=4, position="alibi")
    config = model.get_config()
    assert config["alibi_split_directions"] is True
    assert model.encoders[0].self_attention.position.split_directions
    assert not model.decoders[0].self_attention.position.split_directions  # causal there
    del config["alibi_split_directions"]
    old = TransformerSeq2Seq.from_config(config)
    assert not old.alibi_split_directions
    assert not old.encoders[0].self_attention.position.split_directions


def test_only_an_alibi_encoder_is_split():
    relative = build_transformer_seq2seq(20, 20, units=16, num_heads=4, num_layers=1)
    assert not relative.encoders[0].alibi_split_directions
    assert relative.encoders[0].get_config()["alibi_split_directions"] is False
    with pytest.raises(ValueError, match="decoder block's self-attention is causal"):
        TransformerDecoderBlock(16, 4, 16, position="alibi", alibi_split_directions=True)
