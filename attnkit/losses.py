"""Losses on the attention weights of a seq2seq model.

Both read alignments `(B, T, S)`, the attention of each target step over the
source, as `AttentionDecoder` and the attnkit seq2seq models return them
(their second output), and take the target ids `(B, T)` as `y_true` where
they need only to know which steps are real (id 0 is padding). They are
ordinary keras losses: give one per output in `compile`, with
`loss_weights`.

Shape legend: B batch, T target steps, S source positions.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="attnkit")
class CoverageLoss(keras.losses.Loss):
    """See et al. 2017's coverage loss: `sum_i min(a_ti, c_ti)` per target
    step, `c_t = sum_{t' < t} a_t'` the coverage before step `t`, averaged
    over the real target steps of the batch. It penalises attending again
    to source positions already attended, the cause of repeated output.

    `y_true`: the target ids `(B, T)` (0 = padding, ignored); `y_pred`: the
    alignments `(B, T, S)`.

    Example:

        >>> alignments = keras.ops.convert_to_tensor([[[1.0, 0.0], [1.0, 0.0]]])
        >>> float(attnkit.losses.CoverageLoss()(keras.ops.ones((1, 2)), alignments))
        0.5
    """

    def __init__(self, name: str = "coverage_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        alignments = ops.cast(y_pred, "float32")
        coverage = ops.cumsum(alignments, axis=1) - alignments  # before each step
        per_step = ops.sum(ops.minimum(alignments, coverage), axis=-1)  # (B, T)
        return _mean_over_real_steps(per_step, y_true)


@keras.saving.register_keras_serializable(package="attnkit")
class GuidedAlignmentLoss(keras.losses.Loss):
    """Guided alignment (as in OpenNMT; Chen et al. 2016): the alignments
    pulled towards given ones, e.g. from an external aligner or a diagonal
    prior.

    `y_true`: reference alignments `(B, T, S)` (rows of a padded target
    step all zero, ignored); `y_pred`: the model's alignments `(B, T, S)`.
    `kind="ce"`: `-sum_i ref_ti log(a_ti)`; `kind="mse"`:
    `sum_i (a_ti - ref_ti) ** 2`; averaged over the steps with a
    reference.

    Example:

        >>> reference = keras.ops.convert_to_tensor([[[1.0, 0.0]]])
        >>> predicted = keras.ops.convert_to_tensor([[[0.5, 0.5]]])
        >>> round(float(attnkit.losses.GuidedAlignmentLoss("mse")(reference, predicted)), 3)
        0.5
    """

    def __init__(self, kind: str = "ce", name: str = "guided_alignment_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in ("ce", "mse"):
            raise ValueError(f"`kind` must be 'ce' or 'mse'. Received: kind={kind!r}.")
        self.kind = kind

    def call(self, y_true, y_pred):
        reference = ops.cast(y_true, "float32")
        alignments = ops.cast(y_pred, "float32")
        if self.kind == "ce":
            # Where the reference is 0 the term is 0 whatever the alignment
            # (also 0, as sparse attention gives): no log(0) there.
            safe = ops.where(reference > 0, alignments, 1.0)
            per_step = -ops.sum(reference * ops.log(ops.maximum(safe, 1e-12)), axis=-1)
        else:
            per_step = ops.sum((alignments - reference) ** 2, axis=-1)
        has_reference = ops.any(ops.not_equal(reference, 0), axis=-1)  # (B, T)
        return _mean_over_real_steps(per_step, has_reference)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


def _mean_over_real_steps(per_step, real):
    """The mean of `per_step` (B, T) over the real steps of the whole batch,
    as one value per sequence (keras averages those: the mean again)."""
    keep = ops.cast(ops.not_equal(ops.cast(real, "float32"), 0), "float32")
    total = ops.sum(per_step * keep) / ops.maximum(ops.sum(keep), 1.0)
    return ops.ones_like(per_step[:, 0]) * total
