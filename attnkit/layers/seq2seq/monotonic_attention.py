"""MonotonicAttention: Raffel et al. 2017, and MoChA (Chiu & Raffel 2018).

Shape legend: B batch, S memory length, D query features, Dk key features,
Dv value features, U units.
"""

import math

import keras
from keras import ops

from attnkit._checks import check_positive_int
from attnkit.layers.seq2seq.stateful_attention import AdditiveEnergy
from attnkit.layers.seq2seq.stateful_attention import StatefulAttention
from attnkit.layers.seq2seq.stateful_attention import checked_memory
from attnkit.ops.monotonic import chunkwise_alignment
from attnkit.ops.monotonic import monotonic_alignment
from attnkit.types import Tensor

ENERGIES = ("bahdanau", "luong")
TRAINING_MODES = ("exact", "parallel", "recursive")
INFERENCE_MODES = ("hard", "soft")


@keras.saving.register_keras_serializable(package="attnkit")
class MonotonicAttention(StatefulAttention):
    """Monotonic attention: each output step attends at or after where the
    previous one did, so alignments only move forward.

    At step `i` the layer scans the memory from its previous stop and stops
    at `j` with probability `p[i, j] = sigmoid(e[i, j] + noise)`. Training
    (`training=True`) uses the expected alignment, computed in parallel over
    the memory (`attnkit.ops.monotonic_alignment`); inference uses hard decisions
    `p > 0.5` (linear time, online), or the expected alignment with
    `inference="soft"`. A step where the scan runs off the end of the memory
    gets a zero context, as in the paper.

    Energies (section 2.4 of the paper):

    - `"bahdanau"`: `e = g v^T / ||v|| tanh(W_q q + W_k k + b) + r`, with
      `g` initialised to `1 / sqrt(U)`.
    - `"luong"`: `e = g q^T W_k k + r`, with `g` initialised to 1
      (`W_k` `(Dk, D)`; `units` is unused).

    With `chunk_size=w > 1` the layer is MoChA: the monotonic stop is spread
    over the `w` positions ending there by a softmax of a second, additive
    energy with its own weights (`attnkit.ops.chunkwise_alignment`).

    Args:
        units: `U`, hidden size of the additive energies.
        energy: `"bahdanau"` or `"luong"`.
        chunk_size: `w`; 1 is plain monotonic attention.
        noise_std: standard deviation of the Gaussian noise added to the
            energies before the sigmoid during training (the paper uses 1),
            which pushes the probabilities towards 0 or 1 so that hard
            decisions at inference match training.
        score_bias_init: initial value of the scalar `r` (the paper uses
            -4): a negative start keeps early steps from stopping at once.
        mode: how the expected alignment is computed in training:
            `"exact"`, `"parallel"` (the paper's closed form) or
            `"recursive"`; see `attnkit.ops.monotonic_alignment`.
        inference: `"hard"` or `"soft"`, when `training` is not True.
        kernel_initializer: the initializer of the energies' kernels.
        kernel_regularizer: the regularizer of the energies' kernels.
        kernel_constraint: the constraint of the energies' kernels.
        seed: seed of the noise.

    Call arguments and returns: as `attnkit.layers.StatefulAttention`; the
    state is the monotonic alignment `alpha` `(B, S)`, a one-hot on the
    first memory position before the first step. The alignment returned is
    `alpha`, or MoChA's chunkwise alignment.

    Example:

        >>> attention = attnkit.layers.MonotonicAttention(16)
        >>> memory = keras.random.normal((2, 7, 24))    # (B, S, Dv)
        >>> states = attention.get_initial_state(memory)
        >>> context, alignment, states = attention(
        ...     keras.random.normal((2, 32)), memory, states)
        >>> tuple(context.shape), tuple(alignment.shape)
        ((2, 24), (2, 7))

        In a decoder: `attnkit.layers.AttentionDecoder(keras.layers.GRUCell(64),
        attnkit.layers.MonotonicAttention(32))`.

    References:
        Raffel, Luong, Liu, Weiss, Eck 2017, "Online and Linear-Time
        Attention by Enforcing Monotonic Alignments"; Chiu & Raffel 2018,
        "Monotonic Chunkwise Attention".
    """

    def __init__(self, units: int, energy: str = "bahdanau", chunk_size: int | None = 1,
                 noise_std: float = 1.0, score_bias_init: float = -4.0, mode: str = "exact",
                 inference: str = "hard",
                 kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
                 kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
                 kernel_constraint: str | keras.constraints.Constraint | None = None,
                 seed: int | None = None, **kwargs):
        super().__init__(units, kernel_initializer=kernel_initializer,
                         kernel_regularizer=kernel_regularizer,
                         kernel_constraint=kernel_constraint, **kwargs)
        for name, value, allowed in (("energy", energy, ENERGIES),
                                     ("mode", mode, TRAINING_MODES),
                                     ("inference", inference, INFERENCE_MODES)):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}. Received: {name}={value!r}.")
        check_positive_int("chunk_size", chunk_size)
        if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or noise_std < 0:
            raise ValueError(f"`noise_std` must be a number >= 0. Received: {noise_std!r}.")
        if isinstance(score_bias_init, bool) or not isinstance(score_bias_init, (int, float)):
            raise ValueError(f"`score_bias_init` must be a number. Received: {score_bias_init!r}.")
        self.energy = energy
        self.chunk_size = chunk_size
        self.noise_std = float(noise_std)
        self.score_bias_init = float(score_bias_init)
        self.mode = mode
        self.inference = inference
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if noise_std > 0 else None
        self._additive = AdditiveEnergy(self) if energy == "bahdanau" else None
        self._chunk = AdditiveEnergy(self, "chunk_") if chunk_size > 1 else None

    def _build_weights(self, query_dim, key_dim):
        if self._additive is not None:
            self._additive.build(query_dim, key_dim, self.units)
            gain = 1.0 / math.sqrt(self.units)
        else:
            self.key_kernel = self._kernel("key_kernel", (key_dim, query_dim))
            gain = 1.0
        self.gain = self.add_weight(name="gain", shape=(),
                                    initializer=keras.initializers.Constant(gain))
        self.score_bias = self.add_weight(
            name="score_bias", shape=(),
            initializer=keras.initializers.Constant(self.score_bias_init))
        if self._chunk is not None:
            self._chunk.build(query_dim, key_dim, self.units)

    def get_initial_state(self, value: Tensor, value_mask: Tensor | None = None):
        value = checked_memory(value)
        length = ops.shape(value)[1]
        start = ops.one_hot(ops.zeros(ops.shape(value)[:1], "int32"), length,
                            dtype=self.compute_dtype)  # (B, S)
        return [start]

    def project_keys(self, value: Tensor):
        if self._additive is not None:
            keys = self._additive.keys(value)
        else:
            keys = ops.matmul(value, ops.cast(self.key_kernel, value.dtype))  # (B, S, D)
        chunk_keys = self._chunk.keys(value) if self._chunk is not None else None
        return keys, chunk_keys

    def _energies(self, query, keys):
        dtype = keys.dtype
        if self._additive is not None:
            v = ops.cast(self._additive.score_kernel, dtype)
            hidden = self._additive.hidden(query, keys)  # (B, S, U)
            scores = ops.tensordot(hidden, v / ops.sqrt(ops.sum(v * v)), 1)
        else:
            scores = ops.einsum("bd,bsd->bs", query, keys)
        return ops.cast(self.gain, dtype) * scores + ops.cast(self.score_bias, dtype)

    def _attend(self, query, keys, states, mask, training):
        keys, chunk_keys = keys
        energies = ops.cast(self._energies(query, keys), "float32")  # (B, S)
        if training and self.noise_std > 0:
            energies = energies + self.noise_std * keras.random.normal(
                ops.shape(energies), seed=self.seed_generator)
        p_choose = ops.sigmoid(energies)
        if mask is not None:
            p_choose = ops.where(mask, p_choose, 0.0)
        mode = self.mode if training or self.inference == "soft" else "hard"
        alpha = monotonic_alignment(p_choose, ops.cast(states[0], "float32"), mode)
        alignment = alpha
        if self._chunk is not None:
            chunk_energies = ops.cast(self._chunk(query, chunk_keys), "float32")
            alignment = chunkwise_alignment(alpha, chunk_energies, self.chunk_size, mask)
        dtype = self.compute_dtype
        return ops.cast(alignment, dtype), [ops.cast(alpha, dtype)]

    def get_config(self):
        config = super().get_config()
        config.update({
            "energy": self.energy,
            "chunk_size": self.chunk_size,
            "noise_std": self.noise_std,
            "score_bias_init": self.score_bias_init,
            "mode": self.mode,
            "inference": self.inference,
            "seed": self.seed,
        })
        return config
