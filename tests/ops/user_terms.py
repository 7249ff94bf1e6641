"""A user's own score function and score-modifier class, registered as a
user of attnkit would register them (imported by the saving tests and by
the fresh process that loads their models)."""

import keras
from keras import ops

import attnkit


@keras.saving.register_keras_serializable(package="attnkit_tests")
def halve_far_scores(scores, b, h, q_idx, kv_idx):
    """Scores of keys more than 3 positions away are halved."""
    far = ops.abs(q_idx - kv_idx) > 3
    return ops.where(far, scores * 0.5, scores)


@keras.saving.register_keras_serializable(package="attnkit_tests")
class DistancePenalty(attnkit.ops.ScoreMod):
    """Subtracts `rate * |i - j|` from every head's scores."""

    def __init__(self, rate):
        self.rate = rate

    def bias(self, b, h, q_idx, kv_idx):
        return -self.rate * ops.cast(ops.abs(q_idx - kv_idx), "float32")

    def get_config(self):
        return {"rate": self.rate}


@keras.saving.register_keras_serializable(package="attnkit_tests")
class EvenHeadsLookBack(attnkit.ops.MaskMod):
    """Even heads see keys `kv <= q`, odd heads every key: a mask of the
    head, with no block visibility of its own (the core evaluates it)."""

    _keyed_by_config = True

    def __call__(self, b, h, q_idx, kv_idx):
        return ops.logical_or(ops.equal(h % 2, 1), q_idx >= kv_idx)
