"""A small Transformer encoder-decoder with relative positions, decoded
with the cache.

Shape legend: B batch, S source length, T target length, V target
vocabulary, D model width, N heads.
"""

import keras
from keras import layers
from keras import ops

from attnkit import _checks
from attnkit.layers import AlibiBias
from attnkit.layers import MultiHeadAttention
from attnkit.layers import RelativePositionalAttention
from attnkit.layers import RotaryEmbedding
from attnkit.layers import T5RelativeBias
from attnkit.layers._masking import masks_hidden
from attnkit.types import Tensor

POSITION_KINDS = ("relative", "t5", "alibi", "rotary")


def _self_attention(position, num_heads, key_dim, clip_distance, dropout, normalizer,
                    alibi_split_directions=False):
    if position == "relative":
        return RelativePositionalAttention(
            num_heads, key_dim, clip_distance=clip_distance,
            dropout=dropout, normalizer=normalizer, name="self_attention")
    # T5's table starts as ALiBi's distance penalty: drawn near zero, as in
    # T5, it learned word order too slowly for a few thousand pairs.
    schemes = {"t5": lambda: T5RelativeBias(embeddings_initializer="distance_decay"),
               "alibi": lambda: AlibiBias(split_directions=alibi_split_directions),
               "rotary": RotaryEmbedding}
    if position not in schemes:
        raise ValueError(
            f"`position` must be one of {POSITION_KINDS}. Received: {position!r}."
        )
    return MultiHeadAttention(num_heads, key_dim, dropout=dropout, normalizer=normalizer,
                              position=schemes[position](), name="self_attention")


class _Block(keras.layers.Layer):
    """Shared plumbing: post-norm residual sub-layers and the feed-forward."""

    def __init__(self, units, num_heads, ff_units, clip_distance=None,
                 dropout=0.1, position="relative", max_relative_position=None,
                 normalizer="softmax", alibi_split_directions=False, **kwargs):
        super().__init__(**kwargs)
        clip_distance = _checks.renamed_argument(
            "clip_distance", clip_distance, "max_relative_position", max_relative_position)
        clip_distance = 16 if clip_distance is None else clip_distance
        if units % num_heads:
            raise ValueError(
                f"`units` must be a multiple of `num_heads`. Received: "
                f"units={units}, num_heads={num_heads}."
            )
        self.units = units
        self.num_heads = num_heads
        self.ff_units = ff_units
        self.clip_distance = clip_distance
        self.dropout = dropout
        self.position = position
        self.normalizer = normalizer
        self.alibi_split_directions = bool(alibi_split_directions)
        self.supports_masking = True
        self.self_attention = _self_attention(
            position, num_heads, units // num_heads, clip_distance, dropout, normalizer,
            self.alibi_split_directions)
        self.expand = layers.Dense(ff_units, activation="relu", name="expand")
        self.contract = layers.Dense(units, name="contract")
        self.drop = layers.Dropout(dropout)
        self.add = layers.Add()

    def feed_forward(self, x):
        return self.contract(self.expand(x))

    def build_feed_forward(self, input_shape):
        self.expand.build(input_shape)
        self.contract.build(tuple(input_shape[:-1]) + (self.ff_units,))

    def residual(self, x, update, norm, training):
        return norm(self.add([x, self.drop(update, training=training)]))

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units, "num_heads": self.num_heads, "ff_units": self.ff_units,
            "clip_distance": self.clip_distance, "dropout": self.dropout,
            "position": self.position, "normalizer": self.normalizer,
        })
        config["alibi_split_directions"] = self.alibi_split_directions
        return config


@keras.saving.register_keras_serializable(package="attnkit")
class TransformerEncoderBlock(_Block):
    """Relative self-attention and a feed-forward, each with a residual and
    layer norm. `call(inputs (B, S, D), mask=None) -> (B, S, D)`."""

    def __init__(self, units: int, num_heads: int, ff_units: int, **kwargs):
        super().__init__(units, num_heads, ff_units, **kwargs)
        self.norm1 = layers.LayerNormalization(name="norm1")
        self.norm2 = layers.LayerNormalization(name="norm2")

    def build(self, input_shape):
        self.self_attention.build(input_shape, input_shape)
        self.build_feed_forward(input_shape)
        for norm in (self.norm1, self.norm2):
            norm.build(input_shape)

    def call(self, inputs, mask=None, training=None):
        attended = self.self_attention(inputs, inputs, query_mask=mask, value_mask=mask,
                                       training=training)
        x = self.residual(inputs, attended, self.norm1, training)
        return self.residual(x, self.feed_forward(x), self.norm2, training)


@keras.saving.register_keras_serializable(package="attnkit")
class TransformerDecoderBlock(_Block):
    """Causal relative self-attention, cross-attention over the encoder, a
    feed-forward.

    `call(inputs (B, T, D), memory (B, S, D), memory_mask=None, cache=None,
    cache_update_index=None, memory_cache=None)` returns `(outputs,
    cross-attention weights (B, T, S) averaged over heads)`, and the updated
    self-attention cache `(B, 2, T_max, N, D/N)` when one is given.
    `memory_cache`: `project_memory(memory)`, the cross-attention's keys and
    values made once for every decoding step.
    """

    def __init__(self, units: int, num_heads: int, ff_units: int, **kwargs):
        if kwargs.get("alibi_split_directions"):
            raise ValueError(
                "A decoder block's self-attention is causal: split ALiBi heads would "
                "leave the odd ones only their own position. Received: "
                "alibi_split_directions=True.")
        super().__init__(units, num_heads, ff_units, **kwargs)
        self.cross_attention = MultiHeadAttention(
            num_heads, units // num_heads, dropout=self.dropout, normalizer=self.normalizer,
            name="cross_attention")
        self.norm1 = layers.LayerNormalization(name="norm1")
        self.norm2 = layers.LayerNormalization(name="norm2")
        self.norm3 = layers.LayerNormalization(name="norm3")

    def build(self, inputs_shape, memory_shape):
        self.self_attention.build(inputs_shape, inputs_shape)
        self.cross_attention.build(inputs_shape, memory_shape)
        self.build_feed_forward(inputs_shape)
        for norm in (self.norm1, self.norm2, self.norm3):
            norm.build(inputs_shape)

    def call(self, inputs, memory, inputs_mask=None, memory_mask=None, cache=None,
             cache_update_index=None, training=None, memory_cache=None):
        if cache is None:
            attended = self.self_attention(inputs, inputs, query_mask=inputs_mask,
                                           value_mask=inputs_mask, use_causal_mask=True,
                                           training=training)
        else:
            attended, cache = self.self_attention(
                inputs, inputs, cache=cache, cache_update_index=cache_update_index,
                use_causal_mask=True, training=training)
        x = self.residual(inputs, attended, self.norm1, training)
        # With `memory_cache` the memory's keys and values come from it.
        context, scores = self.cross_attention(
            x, memory, query_mask=inputs_mask, value_mask=memory_mask,
            return_attention_scores=True, training=training, cache=memory_cache)[:2]
        x = self.residual(x, context, self.norm2, training)
        x = self.residual(x, self.feed_forward(x), self.norm3, training)
        alignment = ops.mean(scores, axis=1)  # (B, T, S)
        return (x, alignment) if cache is None else (x, alignment, cache)

    def project_memory(self, memory: Tensor) -> Tensor:
        """The cross-attention's keys and values of `memory` `(B, S, D)`,
        stacked as a `(B, 2, S, N, D/N)` cache: made once per input, passed
        as `memory_cache` at every decoding step."""
        attention = self.cross_attention
        with masks_hidden(memory):  # the keys and values of padding are masked in the call
            return ops.stack([attention._key_dense(memory), attention._value_dense(memory)],
                             axis=1)

    def compute_output_spec(self, inputs, memory, inputs_mask=None, memory_mask=None,
                            cache=None, cache_update_index=None, training=None,
                            memory_cache=None):
        out = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        alignment = keras.KerasTensor(inputs.shape[:2] + memory.shape[1:2],
                                      dtype=self.compute_dtype)
        if cache is None:
            return out, alignment
        return out, alignment, keras.KerasTensor(cache.shape, dtype=cache.dtype)

    def compute_mask(self, inputs, previous_mask):
        return None


@keras.saving.register_keras_serializable(package="attnkit")
class TransformerSeq2Seq(keras.Model):
    """A Transformer encoder-decoder with relative positions.

    No absolute positions anywhere: encoder and decoder self-attention are
    `RelativePositionalAttention` (Shaw et al.; `position="relative"`) or
    `MultiHeadAttention` with `T5RelativeBias`, `AlibiBias` or
    `RotaryEmbedding` (`"t5"`, `"alibi"`, `"rotary"`; T5's table starts as
    ALiBi's distance penalty, `T5DistanceDecay`); cross-attention is
    plain `MultiHeadAttention`. Inputs `[source_ids (B, S), decoder_input_ids
    (B, T)]` (0 = padding in the source), outputs logits `(B, T, V)` and
    the last decoder block's cross-attention `(B, T, S)`, like `RNNSeq2Seq`,
    so the same decoding and plotting code drives both. Decodes one token at
    a time through `encode` (the memory, and every decoder block's
    cross-attention keys and values, made once) and `decode_step` (the
    self-attention caches). `clip_distance` (default 16) is Shaw's clip for
    `position="relative"`; `max_relative_position` is its deprecated name.
    `normalizer`: every attention's `"softmax"`, `"sparsemax"` or
    `"entmax15"`. `alibi_split_directions` (with `position="alibi"`): the
    encoder's heads look one way each, even heads left and odd heads right
    (`AlibiBias(split_directions=True)`); with symmetric ALiBi, the
    default of models saved before it existed, an encoder reads a word and
    its mirror image alike.
    """

    def __init__(self, source_vocab_size: int, target_vocab_size: int, *, units: int = 64,
                 num_heads: int = 4, num_layers: int = 2, ff_units: int = 128,
                 clip_distance: int | None = None, dropout: float = 0.1,
                 position: str = "relative", max_relative_position: int | None = None,
                 normalizer: str = "softmax", alibi_split_directions: bool = True,
                 **kwargs):
        clip_distance = _checks.renamed_argument(
            "clip_distance", clip_distance, "max_relative_position", max_relative_position)
        source = keras.Input((None,), dtype="int32", name="source_ids")
        target_in = keras.Input((None,), dtype="int32", name="decoder_input_ids")
        options = dict(units=units, num_heads=num_heads, ff_units=ff_units,
                       clip_distance=clip_distance, dropout=dropout,
                       position=position, normalizer=normalizer)
        # Each layer made and called in turn, as 0.1 did: a seed gives the
        # same model as before.
        source_embedding = layers.Embedding(source_vocab_size, units, mask_zero=True,
                                            name="source_embedding")
        x = source_embedding(source)
        encoders = []
        for i in range(num_layers):
            encoders.append(TransformerEncoderBlock(
                name=f"encoder_{i}", **options,
                alibi_split_directions=bool(alibi_split_directions) and position == "alibi"))
            x = encoders[-1](x)
        target_embedding = layers.Embedding(target_vocab_size, units, name="target_embedding")
        y = target_embedding(target_in)
        decoders = []
        for i in range(num_layers):
            decoders.append(TransformerDecoderBlock(name=f"decoder_{i}", **options))
            y, alignment = decoders[-1](y, x)
        to_logits = layers.Dense(target_vocab_size, name="logits")
        kwargs.setdefault("name", "transformer_seq2seq")
        super().__init__([source, target_in], [to_logits(y), alignment], **kwargs)
        self.source_vocab_size, self.target_vocab_size = source_vocab_size, target_vocab_size
        self.units, self.num_heads, self.num_layers = units, num_heads, num_layers
        self.ff_units, self.clip_distance, self.dropout = ff_units, clip_distance, dropout
        self.position, self.normalizer = position, normalizer
        self.alibi_split_directions = bool(alibi_split_directions)
        self.source_embedding, self.encoders = source_embedding, encoders
        self.target_embedding, self.decoders = target_embedding, decoders
        self.to_logits = to_logits

    def encode(self, source_ids: Tensor, steps: int) -> dict:
        """The decoding state for `source_ids` `(B, S)`: the encoder's
        memory, its mask, each decoder block's cross-attention keys and
        values `(B, 2, S, N, D/N)` and an empty self-attention cache
        `(B, 2, steps, N, D/N)` for up to `steps` tokens."""
        mask = ops.not_equal(source_ids, 0)
        memory = self.source_embedding(source_ids)
        for block in self.encoders:
            memory = block(memory, mask=mask)
        b, heads = ops.shape(source_ids)[0], self.num_heads
        empty = (b, 2, steps, heads, self.units // heads)
        return {"memory": memory, "memory_mask": mask,
                "memory_caches": [block.project_memory(memory) for block in self.decoders],
                "caches": [ops.zeros(empty, memory.dtype) for _ in self.decoders]}

    def decode_step(self, token: Tensor, state: dict, index: Tensor | int):
        """One token `(B,)` at position `index` -> `(logits (B, V),
        alignment (B, S), state)`, the last block's cross-attention."""
        y = self.target_embedding(ops.expand_dims(token, 1))  # (B, 1, D)
        caches = []
        for block, cache, memory_cache in zip(self.decoders, state["caches"],
                                              state["memory_caches"]):
            y, alignment, cache = block(
                y, state["memory"], memory_mask=state["memory_mask"], cache=cache,
                cache_update_index=index, memory_cache=memory_cache)
            caches.append(cache)
        return self.to_logits(y[:, 0]), alignment[:, 0], {**state, "caches": caches}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "source_vocab_size": self.source_vocab_size,
                "target_vocab_size": self.target_vocab_size, "units": self.units,
                "num_heads": self.num_heads, "num_layers": self.num_layers,
                "ff_units": self.ff_units, "clip_distance": self.clip_distance,
                "dropout": self.dropout, "position": self.position,
                "normalizer": self.normalizer,
                "alibi_split_directions": self.alibi_split_directions}

    @classmethod
    def from_config(cls, config):
        # Saved before the argument existed: symmetric ALiBi, as trained.
        config = {"alibi_split_directions": False, **config}
        return cls(**config)


def build_transformer_seq2seq(source_vocab_size: int, target_vocab_size: int, *, units: int = 64,
                              num_heads: int = 4, num_layers: int = 2, ff_units: int = 128,
                              clip_distance: int | None = None, dropout: float = 0.1,
                              position: str = "relative", max_relative_position: int | None = None,
                              normalizer: str = "softmax",
                              alibi_split_directions: bool = True) -> TransformerSeq2Seq:
    """`TransformerSeq2Seq(...)`: a Transformer encoder-decoder with
    relative positions (see `TransformerSeq2Seq` for the arguments)."""
    return TransformerSeq2Seq(
        source_vocab_size, target_vocab_size, units=units, num_heads=num_heads,
        num_layers=num_layers, ff_units=ff_units, clip_distance=clip_distance, dropout=dropout,
        position=position, max_relative_position=max_relative_position, normalizer=normalizer,
        alibi_split_directions=alibi_split_directions)
