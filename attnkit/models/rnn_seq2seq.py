"""An RNN encoder-decoder with attention.

Shape legend: B batch, S source length, T target length, V target
vocabulary, U decoder units.
"""

import contextlib
import sys

import keras
from keras import layers
from keras import ops

from attnkit.layers import AdditiveAttention
from attnkit.layers import AttentionDecoder
from attnkit.layers import CoverageAttention
from attnkit.layers import DotProductAttention
from attnkit.layers import LocationSensitiveAttention
from attnkit.layers import MonotonicAttention
from attnkit.types import Tensor

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


@contextlib.contextmanager
def _tensorflow_unasked():
    """keras's `Bidirectional` copies its layer through keras's serializer,
    which asks whether TensorFlow is installed by importing it (2.5 s on
    JAX or PyTorch, most of a short `attnkit translate`) to test whether a
    config value is a TensorFlow shape or dtype. No TensorFlow object can
    exist before TensorFlow is imported, so while it is not, the answer
    "not available" changes nothing; keras asks again afterwards."""
    lazy = None
    if "tensorflow" not in sys.modules:
        try:
            from keras.src.utils import module_utils

            lazy = module_utils.tensorflow
        except (ImportError, AttributeError):  # another keras: it imports TensorFlow
            pass
    if lazy is None or getattr(lazy, "_available", True) is not None:
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = None


@keras.saving.register_keras_serializable(package="attnkit")
class RNNSeq2Seq(keras.Model):
    """A bidirectional-GRU encoder and an attention GRU decoder.

    Inputs `[source_ids (B, S), decoder_input_ids (B, T)]` (ids, 0 =
    padding), outputs logits `(B, T, V)` and the alignments `(B, T, S)`.
    The decoder starts from a projection of the encoder's final states.
    Decodes one token at a time through `encode` and `decode_step`, the
    contract `attnkit.models.greedy_decode` and `beam_search_decode` drive.
    `attention`: one of `ATTENTION_KINDS`: `"additive"` (Bahdanau), Luong's
    `"dot"`, `"general"`, `"scaled"`, `"cosine"`, or one that reads its
    earlier alignments: `"monotonic"` (Raffel et al. 2017; decoded with the
    expected alignment, score bias from -1), `"mocha"` (the same, chunks of
    3), `"location"` (location-sensitive, 16 filters of width 7),
    `"coverage"`. `normalizer`: the attention's `"softmax"`, `"sparsemax"`
    or `"entmax15"` (not for the monotonic kinds).
    """

    def __init__(self, source_vocab_size: int, target_vocab_size: int, *,
                 attention: str = "additive", style: str = "bahdanau", units: int = 128,
                 embedding_dim: int = 64, normalizer: str = "softmax", **kwargs):
        # Made and called in the order 0.1 did (keras layers draw their
        # initializers' seeds when made, attnkit's when built), so a seed
        # gives the same model as before.
        source = keras.Input((None,), dtype="int32", name="source_ids")
        target_in = keras.Input((None,), dtype="int32", name="decoder_input_ids")
        source_embedding = layers.Embedding(source_vocab_size, embedding_dim, mask_zero=True,
                                            name="source_embedding")
        with _tensorflow_unasked():
            encoder = layers.Bidirectional(
                layers.GRU(units, return_sequences=True, return_state=True), name="encoder")
        bridge = layers.Dense(2 * units, activation="tanh", name="bridge")
        concatenate = layers.Concatenate(name="encoder_state")
        cell = layers.GRUCell(2 * units)
        decoder = AttentionDecoder(cell, _attention(attention, units, normalizer), style=style,
                                   name="decoder")
        target_embedding = layers.Embedding(target_vocab_size, embedding_dim,
                                            name="target_embedding")
        memory, forward, backward = encoder(source_embedding(source))  # (B, S, 2U)
        state = bridge(concatenate([forward, backward]))
        outputs, alignments = decoder(target_embedding(target_in), memory,
                                      initial_state=[state])
        to_logits = layers.Dense(target_vocab_size, name="logits")
        kwargs.setdefault("name", "rnn_seq2seq")
        super().__init__([source, target_in], [to_logits(outputs), alignments], **kwargs)
        self.source_vocab_size, self.target_vocab_size = source_vocab_size, target_vocab_size
        self.attention, self.style, self.units = attention, style, units
        self.embedding_dim, self.normalizer = embedding_dim, normalizer
        self.source_embedding, self.encoder, self.bridge = source_embedding, encoder, bridge
        self.decoder, self.target_embedding = decoder, target_embedding
        self.to_logits = to_logits

    def encode(self, source_ids: Tensor, steps: int) -> dict:
        """The decoding state for `source_ids` `(B, S)`: the encoder's
        memory `(B, S, 2U)`, its mask, the decoder's first states and the
        attention's projection of the memory, made once.
        `steps` (the most tokens to decode) does not change it."""
        mask = ops.not_equal(source_ids, 0)
        memory, forward, backward = self.encoder(self.source_embedding(source_ids), mask=mask)
        first = self.bridge(ops.concatenate([forward, backward], -1))
        states = self.decoder.get_initial_state(ops.shape(source_ids)[0], [first],
                                                memory=memory, memory_mask=mask)
        state = {"states": list(states), "memory": memory, "memory_mask": mask}
        keys = self.decoder._project_keys(memory)
        if keys is not None:
            state["keys"] = keys
        return state

    def decode_step(self, token: Tensor, state: dict, index: Tensor | int):
        """One token `(B,)` -> `(logits (B, V), alignment (B, S), state)`;
        `index` (the step) is not needed by a recurrent decoder."""
        out, alignment, states = self.decoder.step(
            self.target_embedding(token), state["states"], state["memory"],
            state["memory_mask"], keys=state.get("keys"))
        return self.to_logits(out), alignment, {**state, "states": list(states)}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "source_vocab_size": self.source_vocab_size,
                "target_vocab_size": self.target_vocab_size, "attention": self.attention,
                "style": self.style, "units": self.units,
                "embedding_dim": self.embedding_dim, "normalizer": self.normalizer}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_rnn_seq2seq(source_vocab_size: int, target_vocab_size: int, *,
                      attention: str = "additive", style: str = "bahdanau", units: int = 128,
                      embedding_dim: int = 64, normalizer: str = "softmax") -> RNNSeq2Seq:
    """`RNNSeq2Seq(...)`: a bidirectional-GRU encoder and an attention GRU
    decoder (see `RNNSeq2Seq` for the arguments)."""
    return RNNSeq2Seq(source_vocab_size, target_vocab_size, attention=attention, style=style,
                      units=units, embedding_dim=embedding_dim, normalizer=normalizer)
