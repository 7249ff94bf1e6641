"""AdditiveAttention: Bahdanau et al. 2015, exactly.

Shape legend: B batch, T query length, S key length, D query features,
Dk key features, Dv value features, U units.
"""

import keras
from keras import ops

from attnkit._checks import check_positive_int
from attnkit.layers._arguments import clone_initializer
from attnkit.layers.seq2seq._single_head import SingleHeadAttention
from attnkit.types import Tensor


@keras.saving.register_keras_serializable(package="attnkit")
class AdditiveAttention(SingleHeadAttention):
    """Bahdanau attention: `score(q, k) = v^T tanh(W_q q + W_k k + b)`.

    Unlike `keras.layers.AdditiveAttention`, which adds query and key as they
    are, this layer learns the projections `W_q` `(D, U)` and `W_k` `(Dk, U)`
    and the vector `v` `(U,)` of the paper, so query and key sizes may differ.

    Args:
        units: `U`, the size of the hidden layer of the alignment model.
        use_bias: add a learned bias `b` `(U,)` inside the `tanh`.
        dropout: dropout rate on the attention weights during training.
        kernel_initializer: the initializer of `W_q`, `W_k` and `v`.
        kernel_regularizer: the regularizer of `W_q`, `W_k` and `v`.
        kernel_constraint: the constraint of `W_q`, `W_k` and `v`.
        bias_initializer: the initializer of `b`.
        bias_regularizer: the regularizer of `b`.
        bias_constraint: the constraint of `b`.
        seed: seed of the dropout.
        normalizer: `"softmax"`, or `"sparsemax"` / `"entmax15"` for
            weights that are exactly zero on low scores.

    Call arguments and returns: as `attnkit.layers.DotProductAttention`
    (rank-2 query for one decoder step, keras masks, `attention_mask`,
    `use_causal_mask`, `return_attention_scores`).

    Example:

        >>> encoder = keras.random.normal((4, 9, 64))   # (B, S, Dv)
        >>> state = keras.random.normal((4, 32))        # one decoder step
        >>> layer = attnkit.layers.AdditiveAttention(units=16)
        >>> tuple(layer(state, encoder).shape)
        (4, 64)

    References:
        Bahdanau, Cho, Bengio 2015, "Neural Machine Translation by Jointly
        Learning to Align and Translate", appendix A.1.2.
    """

    def __init__(self, units: int, use_bias: bool = True, dropout: float = 0.0,
                 kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
                 kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
                 kernel_constraint: str | keras.constraints.Constraint | None = None,
                 bias_initializer: str | keras.initializers.Initializer = "zeros",
                 bias_regularizer: str | keras.regularizers.Regularizer | None = None,
                 bias_constraint: str | keras.constraints.Constraint | None = None,
                 seed: int | None = None, normalizer: str = "softmax", **kwargs):
        super().__init__(dropout=dropout, seed=seed, normalizer=normalizer, **kwargs)
        check_positive_int("units", units)
        self.units = units
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def _kernel(self, name, shape):
        return self.add_weight(
            name=name, shape=shape,
            initializer=clone_initializer(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )

    def _build_weights(self, query_dim, key_dim):
        self.query_kernel = self._kernel("query_kernel", (query_dim, self.units))
        self.key_kernel = self._kernel("key_kernel", (key_dim, self.units))
        self.score_kernel = self._kernel("score_kernel", (self.units,))
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def project_keys(self, key):
        return ops.matmul(key, ops.cast(self.key_kernel, key.dtype))  # (B, S, U)

    def _scores(self, query, keys):
        dtype = query.dtype
        q = ops.matmul(query, ops.cast(self.query_kernel, dtype))  # (B, T, U)
        bias = ops.cast(self.bias, dtype) if self.use_bias else None
        hidden = additive_hidden(q, keys, bias)  # (B, T, S, U)
        return ops.tensordot(hidden, ops.cast(self.score_kernel, dtype), 1)  # (B, T, S)

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        })
        return config


def additive_hidden(q: Tensor, k: Tensor, bias: Tensor | None = None):
    """The alignment model's hidden layer `tanh(W_q q_t + W_k k_s + b)`
    `(B, T, S, U)` from the projected queries `(B, T, U)` and keys
    `(B, S, U)`; the energies are its product with `v`."""
    hidden = ops.expand_dims(q, 2) + ops.expand_dims(k, 1)  # (B, T, S, U)
    if bias is not None:
        hidden = hidden + bias
    return ops.tanh(hidden)
