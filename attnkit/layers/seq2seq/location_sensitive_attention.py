"""LocationSensitiveAttention: Chorowski et al. 2015, as in Tacotron 2.

Shape legend: B batch, S memory length, D query features, Dk key features,
Dv value features, U units, F location filters.
"""

import keras
from keras import ops

from attnkit import _checks
from attnkit._checks import check_positive_int
from attnkit.layers.seq2seq.stateful_attention import AdditiveEnergy
from attnkit.layers.seq2seq.stateful_attention import StatefulAttention
from attnkit.ops.weights import attention_weights
from attnkit.types import Tensor


@keras.saving.register_keras_serializable(package="attnkit")
class LocationSensitiveAttention(StatefulAttention):
    """Additive attention that also sees where it attended before:
    `e[j] = v^T tanh(W_q q + W_k k[j] + U_f f[j] + b)` with location
    features `f = conv(previous alignment [; cumulative alignment])`.

    The features let the energies prefer positions next to the previous
    focus (and, with the cumulative alignment, avoid positions already
    attended), which keeps long alignments from jumping or stalling, the
    failure Tacotron 2 added the cumulative channel against.

    Args:
        units: `U`, the hidden size of the energy.
        filters: `F`, number of convolution filters over the alignments.
        kernel_size: width of those filters (odd keeps them centred).
        cumulative: also convolve the sum of all earlier alignments
            (Tacotron 2); False gives Chorowski et al.'s previous alignment
            only.
        normalizer: `"softmax"`, `"sparsemax"` or `"entmax15"`.
        kernel_initializer: the initializer of the energy's kernels and the convolution.
        kernel_regularizer: the regularizer of the energy's kernels and the convolution.
        kernel_constraint: the constraint of the energy's kernels and the convolution.

    Call arguments and returns: as `attnkit.layers.StatefulAttention`; the
    state is `[previous alignment, cumulative alignment]` (the first alone
    without `cumulative`), zeros before the first step.

    Example:

        >>> attention = attnkit.layers.LocationSensitiveAttention(16, filters=4, kernel_size=5)
        >>> memory = keras.random.normal((2, 7, 24))    # (B, S, Dv)
        >>> states = attention.get_initial_state(memory)
        >>> context, alignment, states = attention(
        ...     keras.random.normal((2, 32)), memory, states)
        >>> tuple(context.shape), len(states)
        ((2, 24), 2)

    References:
        Chorowski, Bahdanau, Serdyuk, Cho, Bengio 2015, "Attention-Based
        Models for Speech Recognition"; Shen et al. 2018 (Tacotron 2).
    """

    def __init__(self, units: int, filters: int = 32, kernel_size: int = 31,
                 cumulative: bool = True, normalizer: str = "softmax",
                 kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
                 kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
                 kernel_constraint: str | keras.constraints.Constraint | None = None, **kwargs):
        super().__init__(units, kernel_initializer=kernel_initializer,
                         kernel_regularizer=kernel_regularizer,
                         kernel_constraint=kernel_constraint, **kwargs)
        check_positive_int("filters", filters)
        check_positive_int("kernel_size", kernel_size)
        _checks.check_normalizer(normalizer)
        self.filters = filters
        self.kernel_size = kernel_size
        self.cumulative = bool(cumulative)
        self.normalizer = normalizer
        self._energy = AdditiveEnergy(self)

    def _build_weights(self, query_dim, key_dim):
        self._energy.build(query_dim, key_dim, self.units)
        channels = 2 if self.cumulative else 1
        self.location_kernel = self._kernel(
            "location_kernel", (self.kernel_size, channels, self.filters))
        self.location_projection = self._kernel(
            "location_projection", (self.filters, self.units))

    @property
    def state_count(self):
        return 2 if self.cumulative else 1

    def project_keys(self, value: Tensor):
        return self._energy.keys(value)

    def _attend(self, query, keys, states, mask, training):
        dtype = keys.dtype
        features = ops.stack([ops.cast(s, dtype) for s in states], axis=-1)  # (B, S, 1 or 2)
        features = ops.conv(features, ops.cast(self.location_kernel, dtype),
                            padding="same")  # (B, S, F)
        location = ops.matmul(features, ops.cast(self.location_projection, dtype))  # (B, S, U)
        scores = self._energy(query, keys, location)  # (B, S)
        alignment = attention_weights(scores, mask, self.normalizer)
        new_states = [alignment]
        if self.cumulative:
            new_states.append(ops.cast(states[1], alignment.dtype) + alignment)
        return alignment, new_states

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "cumulative": self.cumulative,
            "normalizer": self.normalizer,
        })
        return config
