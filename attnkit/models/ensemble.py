"""Several encoder-decoder models decoded as one.

Shape legend: B batch, S source length, T target length, V target vocabulary.
"""

import math

import keras
from keras import ops

from attnkit.models.decoding import as_decoder
from attnkit.types import Tensor


@keras.saving.register_keras_serializable(package="attnkit")
class Ensemble(keras.Model):
    """Encoder-decoder models that share their vocabularies, decoded as one
    model: the next-token distribution is the mean of the members'
    distributions, `log((1/N) sum_n softmax(logits_n))`, which the ensemble
    gives as its logits (already normalized), and its alignment is the mean
    of theirs. Each member keeps its own decoding state.

    It implements the stepping contract of `attnkit.models.decoding`, so
    `greedy_decode`, `beam_search_decode`, `attnkit.serving.export` and
    `attnkit.app.training.load(folder, other_folder, ...)` take it as one
    model. Members may differ in kind (an RNN and a Transformer) as long as
    their source and target token ids mean the same.

    Args:
        members: the models, each with `encode` / `decode_step` (or saved by
            attnkit 0.1), called as `model([source_ids, decoder_input_ids])
            -> [logits, alignments]`.
    """

    def __init__(self, members: list[keras.Model], **kwargs):
        members = list(members)
        if not members:
            raise ValueError("An `Ensemble` needs at least one member model.")
        for member in members:
            if not isinstance(member, keras.Model):
                raise TypeError("An `Ensemble`'s members are keras models. "
                                f"Received: {type(member).__name__}.")
            as_decoder(member)  # refuses a model that cannot be decoded
        sizes = {i: _target_vocab_size(m) for i, m in enumerate(members)}
        known = {i: size for i, size in sizes.items() if size is not None}
        if len(set(known.values())) > 1:
            raise ValueError(
                "An `Ensemble`'s members must share their target vocabulary (train them on "
                "the same pairs); their logits have "
                + ", ".join(f"{size} (member {i}, {members[i].name!r})"
                            for i, size in known.items()) + " entries.")
        super().__init__(**kwargs)
        self.members = members
        self.built = all(member.built for member in members)

    def call(self, inputs, training=None):
        """`[source_ids (B, S), decoder_input_ids (B, T)]` -> `[log of the
        mean probabilities (B, T, V), mean alignments (B, T, S)]`."""
        outputs = [member(inputs, training=training) for member in self.members]
        return [self._mean_log_probs([logits for logits, _ in outputs]),
                ops.mean(ops.stack([ops.cast(a, "float32") for _, a in outputs]), axis=0)]

    def encode(self, source_ids: Tensor, steps: int) -> list:
        """The members' decoding states, in order."""
        return [as_decoder(member).encode(source_ids, steps) for member in self.members]

    def decode_step(self, token: Tensor, state: list, index: Tensor | int):
        """One token `(B,)` -> `(log of the mean probabilities (B, V), mean
        alignment (B, S), the members' states)`."""
        stepped = [as_decoder(member).decode_step(token, member_state, index)
                   for member, member_state in zip(self.members, state)]
        logits = self._mean_log_probs([logits for logits, _, _ in stepped])
        alignment = ops.mean(ops.stack([ops.cast(a, "float32") for _, a, _ in stepped]), 0)
        return logits, alignment, [member_state for _, _, member_state in stepped]

    def _mean_log_probs(self, logits):
        log_probs = ops.stack([ops.log_softmax(ops.cast(x, "float32"), axis=-1) for x in logits])
        return ops.logsumexp(log_probs, axis=0) - math.log(len(logits))

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "members": [keras.saving.serialize_keras_object(m) for m in self.members]}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        members = [keras.saving.deserialize_keras_object(m) for m in config.pop("members")]
        return cls(members, **config)


def _target_vocab_size(model):
    """The size of a model's next-token logits, where it says (attnkit's
    models, a functional model's first output), else None."""
    size = getattr(model, "target_vocab_size", None)
    if size is None:
        try:
            size = model.outputs[0].shape[-1]
        except (AttributeError, IndexError, TypeError, ValueError):
            return None
    return None if size is None else int(size)
