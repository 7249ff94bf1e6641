"""An RNN encoder-decoder with attention.

Shape legend: B batch, S source length, T target length, V target
vocabulary, U decoder units.
"""

import keras
from keras import layers

from attnkit.layers import AdditiveAttention
from attnkit.layers import AttentionDecoder
from attnkit.layers import CoverageAttention
from attnkit.layers import DotProductAttention
from attnkit.layers import LocationSensitiveAttention
from attnkit.layers import MonotonicAttention

ATTENTION_KINDS = ("additive", "dot", "scaled", "general", "cosine",
                   "monotonic", "mocha", "location", "coverage")
# Monotonic kinds have no weights to normalize: they stop by a sigmoid.
_MONOTONIC = ("monotonic", "mocha")


def _attention(kind, units, normalizer):
    if kind not in ATTENTION_KINDS:
        raise ValueError(
            f"`attention` must be one of {ATTENTION_KINDS}. Received: {kind!r}.")
    if kind in _MONOTONIC and normalizer != "softmax":
        raise ValueError(
            f"attention={kind!r} normalizes by its own stopping probabilities; it takes no "
            f"`normalizer`. Received: normalizer={normalizer!r}.")
    if kind == "additive":
        return AdditiveAttention(units, normalizer=normalizer, name="attention")
    if kind in _MONOTONIC:
        # Small data, short training: the stopping probabilities do not
        # become 0 or 1 in a few thousand updates, so decode with the
        # expected alignment the model trained on (hard decisions stay a
        # layer option), and start r at -1 rather than the paper's -4.
        return MonotonicAttention(units, chunk_size=3 if kind == "mocha" else 1,
                                  score_bias_init=-1.0, inference="soft", name="attention")
    if kind == "location":
        return LocationSensitiveAttention(units, filters=16, kernel_size=7,
                                          normalizer=normalizer, name="attention")
    if kind == "coverage":
        return CoverageAttention(units, normalizer=normalizer, name="attention")
    return DotProductAttention(kind, normalizer=normalizer, name="attention")


def build_rnn_seq2seq(source_vocab_size: int, target_vocab_size: int, *,
                      attention: str = "additive", style: str = "bahdanau", units: int = 128,
                      embedding_dim: int = 64, normalizer: str = "softmax"):
    """A bidirectional-GRU encoder and an attention GRU decoder.

    Inputs `[source_ids (B, S), decoder_input_ids (B, T)]` (ids, 0 =
    padding), outputs logits `(B, T, V)` and the alignments `(B, T, S)`.
    The decoder starts from a projection of the encoder's final states.
    Layers are named so that `attnkit.models.greedy_decode` and
    `beam_search_decode` can drive a saved model. `attention`: one of
    `ATTENTION_KINDS`: `"additive"` (Bahdanau), Luong's `"dot"`,
    `"general"`, `"scaled"`, `"cosine"`, or one that reads its earlier
    alignments: `"monotonic"` (Raffel et al. 2017; decoded with the expected
    alignment, score bias from -1), `"mocha"` (the same, chunks of 3),
    `"location"` (location-sensitive, 16 filters of width 7), `"coverage"`.
    `normalizer`: the attention's `"softmax"`, `"sparsemax"` or
    `"entmax15"` (not for the monotonic kinds).
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
        layers.GRUCell(2 * units), _attention(attention, units, normalizer), style=style,
        name="decoder")
    target_embedded = layers.Embedding(target_vocab_size, embedding_dim,
                                       name="target_embedding")(target_in)
    outputs, alignments = decoder(target_embedded, memory, initial_state=[state])
    logits = layers.Dense(target_vocab_size, name="logits")(outputs)
    return keras.Model([source, target_in], [logits, alignments], name="rnn_seq2seq")
