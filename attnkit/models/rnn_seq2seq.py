"""An RNN encoder-decoder with attention, and greedy decoding.

Shape legend: B batch, S source length, T target length, V target
vocabulary, U decoder units.
"""

import keras
import numpy as np
from keras import layers
from keras import ops

from attnkit.layers import AdditiveAttention
from attnkit.layers import AttentionDecoder
from attnkit.layers import DotProductAttention

ATTENTION_KINDS = ("additive", "dot", "scaled", "general", "cosine")


def _attention(kind, units):
    if kind == "additive":
        return AdditiveAttention(units, name="attention")
    if kind in ATTENTION_KINDS:
        return DotProductAttention(kind, name="attention")
    raise ValueError(
        f"`attention` must be one of {ATTENTION_KINDS}. Received: {kind!r}."
    )


def build_rnn_seq2seq(source_vocab_size, target_vocab_size, *,
                      attention="additive", style="bahdanau", units=128,
                      embedding_dim=64):
    """A bidirectional-GRU encoder and an attention GRU decoder.

    Inputs `[source_ids (B, S), decoder_input_ids (B, T)]` (ids, 0 =
    padding), outputs logits `(B, T, V)` and the alignments `(B, T, S)`.
    The decoder starts from a projection of the encoder's final states.
    Layers are named so that `greedy_decode` can drive a saved model.
    """
    source = keras.Input((None,), dtype="int32", name="source_ids")
    target_in = keras.Input((None,), dtype="int32", name="decoder_input_ids")
    embedded = layers.Embedding(source_vocab_size, embedding_dim, mask_zero=True,
                                name="source_embedding")(source)
    memory, forward, backward = layers.Bidirectional(
        layers.GRU(units, return_sequences=True, return_state=True),
        name="encoder")(embedded)  # (B, S, 2U)
    state = layers.Dense(2 * units, activation="tanh", name="bridge")(
        layers.Concatenate(name="encoder_state")([forward, backward]))
    decoder = AttentionDecoder(
        layers.GRUCell(2 * units), _attention(attention, units), style=style,
        name="decoder")
    target_embedded = layers.Embedding(target_vocab_size, embedding_dim,
                                       name="target_embedding")(target_in)
    outputs, alignments = decoder(target_embedded, memory, initial_state=[state])
    logits = layers.Dense(target_vocab_size, name="logits")(outputs)
    return keras.Model([source, target_in], [logits, alignments], name="rnn_seq2seq")


def greedy_decode(model, source_ids, steps, start_id=1):
    """Greedy decoding of `steps` tokens with a model from build_rnn_seq2seq.

    Runs the encoder once, then the decoder one step at a time.

    Returns:
        `(token ids (B, steps), alignments (B, steps, S))` as NumPy arrays.
    """
    source_ids = ops.convert_to_tensor(np.asarray(source_ids, dtype="int32"))
    embedded = model.get_layer("source_embedding")(source_ids)
    mask = ops.not_equal(source_ids, 0)
    memory, forward, backward = model.get_layer("encoder")(embedded, mask=mask)
    state = model.get_layer("bridge")(ops.concatenate([forward, backward], -1))
    decoder = model.get_layer("decoder")
    embed = model.get_layer("target_embedding")
    to_logits = model.get_layer("logits")
    batch = ops.shape(source_ids)[0]
    states = decoder.get_initial_state(batch, [state])
    token = ops.full((batch,), start_id, dtype="int32")
    tokens, alignments = [], []
    for _ in range(steps):
        out, alignment, states = decoder.step(embed(token), states, memory, mask)
        token = ops.cast(ops.argmax(to_logits(out), axis=-1), "int32")
        tokens.append(ops.convert_to_numpy(token))
        alignments.append(ops.convert_to_numpy(alignment))
    return np.stack(tokens, 1), np.stack(alignments, 1)
