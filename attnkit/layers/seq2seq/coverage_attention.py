"""CoverageAttention: Tu et al. 2016's coverage model, See et al. 2017's form.

Shape legend: B batch, S memory length, D query features, Dk key features,
Dv value features, U units.
"""

import keras
from keras import ops

from attnkit import _checks
from attnkit.layers.seq2seq.stateful_attention import AdditiveEnergy
from attnkit.layers.seq2seq.stateful_attention import StatefulAttention
from attnkit.ops.weights import attention_weights
from attnkit.types import Tensor


@keras.saving.register_keras_serializable(package="attnkit")
class CoverageAttention(StatefulAttention):
    """Additive attention that knows how much each memory position has been
    attended so far: `e[j] = v^T tanh(W_q q + W_k k[j] + w_c c[j] + b)`,
    where the coverage `c` sums the earlier alignments.

    Seeing the coverage lets the model stop attending to (translating,
    pronouncing) a source position twice and notice positions it skipped;
    pair it with `attnkit.losses.CoverageLoss` (See et al. 2017) to
    penalise repeated attention directly, or with beam search's
    `coverage_penalty`.

    With `fertility=N`, the coverage is Tu et al.'s linguistic coverage with
    fertility: `c[j] += a[j] / phi[j]`, `phi[j] = N sigmoid(u_f . k[j])`,
    the number of outputs position `j` is expected to produce (learned,
    at most `N`).

    Args:
        units: `U`, the hidden size of the energy.
        fertility: None (the plain sum of alignments) or `N`, a positive
            number.
        normalizer: `"softmax"`, `"sparsemax"` or `"entmax15"`.
        kernel_initializer: the initializer of the kernels.
        kernel_regularizer: the regularizer of the kernels.
        kernel_constraint: the constraint of the kernels.

    Call arguments and returns: as `attnkit.layers.StatefulAttention`; the
    state is `[coverage]` `(B, S)`, zeros before the first step.

    Example:

        >>> attention = attnkit.layers.CoverageAttention(16)
        >>> memory = keras.random.normal((2, 7, 24))    # (B, S, Dv)
        >>> states = attention.get_initial_state(memory)
        >>> for _ in range(3):
        ...     context, alignment, states = attention(
        ...         keras.random.normal((2, 32)), memory, states)
        >>> print(keras.ops.convert_to_numpy(keras.ops.sum(states[0], -1)).round(3))
        [3. 3.]

    References:
        Tu, Lu, Liu, Liu, Li 2016, "Modeling Coverage for Neural Machine
        Translation"; See, Liu, Manning 2017, "Get To The Point".
    """

    def __init__(self, units: int, fertility: int | None = None, normalizer: str = "softmax",
                 kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
                 kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
                 kernel_constraint: str | keras.constraints.Constraint | None = None, **kwargs):
        super().__init__(units, kernel_initializer=kernel_initializer,
                         kernel_regularizer=kernel_regularizer,
                         kernel_constraint=kernel_constraint, **kwargs)
        _checks.check_positive_number("fertility", fertility, allow_none=True)
        _checks.check_normalizer(normalizer)
        self.fertility = None if fertility is None else float(fertility)
        self.normalizer = normalizer
        self._energy = AdditiveEnergy(self)

    def _build_weights(self, query_dim, key_dim):
        self._energy.build(query_dim, key_dim, self.units)
        self.coverage_kernel = self._kernel("coverage_kernel", (self.units,))
        if self.fertility is not None:
            self.fertility_kernel = self._kernel("fertility_kernel", (key_dim,))

    def project_keys(self, value: Tensor):
        keys = self._energy.keys(value)
        if self.fertility is None:
            return keys, None
        logits = ops.tensordot(value, ops.cast(self.fertility_kernel, value.dtype), 1)
        return keys, self.fertility * ops.sigmoid(logits)  # (B, S, U), phi (B, S)

    def _attend(self, query, keys, states, mask, training):
        keys, fertility = keys
        coverage = ops.cast(states[0], keys.dtype)
        extra = ops.expand_dims(coverage, -1) * ops.cast(self.coverage_kernel, keys.dtype)
        alignment = attention_weights(self._energy(query, keys, extra), mask, self.normalizer)
        added = alignment if fertility is None else alignment / fertility
        return alignment, [coverage + added]

    def get_config(self):
        config = super().get_config()
        config.update({"fertility": self.fertility, "normalizer": self.normalizer})
        return config
