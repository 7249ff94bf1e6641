"""DotProductAttention: Luong-style single-head attention.

Shape legend: B batch, T query length, S key length, D query features,
Dk key features, Dv value features.
"""

import math

import keras
from keras import ops

from attnkit.layers._arguments import clone_initializer
from attnkit.layers.seq2seq._single_head import SingleHeadAttention

SCORE_MODES = ("dot", "scaled", "general", "cosine")


@keras.saving.register_keras_serializable(package="attnkit")
class DotProductAttention(SingleHeadAttention):
    """Single-head dot-product attention, for encoder-decoder models.

    A rank-2 query `(B, D)` (one decoder
    step) attends over its own batch row only, and every score form of Luong
    et al. 2015 is available:

    - `"dot"`: `q . k` (Luong's dot; keras's `Attention` default).
    - `"scaled"`: `q . k / sqrt(D)` (Vaswani et al. 2017).
    - `"general"`: `q W k` with a learned `W` `(D, Dk)` (Luong's general);
      `D` may differ from `Dk`.
    - `"cosine"`: `t * cos(q, k)` with a learned temperature `t`, initialised
      to `initial_temperature`.

    Args:
        score_mode: one of `"dot"`, `"scaled"`, `"general"`, `"cosine"`.
        dropout: dropout rate on the attention weights during training.
        initial_temperature: start value of the cosine temperature.
        kernel_initializer: the initializer of the `"general"` kernel `W`.
        kernel_regularizer: the regularizer of the `"general"` kernel `W`.
        kernel_constraint: the constraint of the `"general"` kernel `W`.
        seed: seed of the dropout.
        normalizer: `"softmax"`, or `"sparsemax"` / `"entmax15"` for
            weights that are exactly zero on low scores.

    Call arguments:
        query: `(B, T, D)`, or `(B, D)` for one decoder step.
        value: `(B, S, Dv)`.
        key: `(B, S, Dk)`; defaults to `value`.
        query_mask: `(B, T)`; hidden query rows give 0. Read from `query`'s
            keras mask when not given.
        value_mask: `(B, S)`, hidden keys. Read from `value`'s keras mask.
        attention_mask: `(B, T, S)` (or `(B, S)` for a rank-2 query),
            True = may attend.
        return_attention_scores: also return the weights.
        training: enables dropout.
        use_causal_mask: query `i` sees keys `j <= i`.

    Returns:
        `(B, T, Dv)` (or `(B, Dv)`), plus weights `(B, T, S)` (or `(B, S)`)
        with `return_attention_scores=True`. The output carries `query`'s
        keras mask. A query with no visible key gives exactly 0.

    Example:

        >>> encoder = keras.random.normal((4, 9, 32))   # (B, S, Dv)
        >>> state = keras.random.normal((4, 32))        # one decoder step
        >>> layer = attnkit.layers.DotProductAttention("general")
        >>> context, weights = layer(state, encoder, return_attention_scores=True)
        >>> tuple(context.shape), tuple(weights.shape)
        ((4, 32), (4, 9))

    References:
        Luong, Pham, Manning 2015, "Effective Approaches to Attention-based
        Neural Machine Translation"; Vaswani et al. 2017.
    """

    def __init__(self, score_mode: str = "scaled", dropout: float = 0.0,
                 initial_temperature: float = 10.0,
                 kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
                 kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
                 kernel_constraint: str | keras.constraints.Constraint | None = None,
                 seed: int | None = None, normalizer: str = "softmax", **kwargs):
        super().__init__(dropout=dropout, seed=seed, normalizer=normalizer, **kwargs)
        if score_mode not in SCORE_MODES:
            raise ValueError(
                f"`score_mode` must be one of {SCORE_MODES}. Received: "
                f"score_mode={score_mode!r}."
            )
        if not initial_temperature > 0:
            raise ValueError(
                "`initial_temperature` must be positive. Received: "
                f"initial_temperature={initial_temperature!r}."
            )
        self.score_mode = score_mode
        self.initial_temperature = float(initial_temperature)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)

    def _build_weights(self, d, dk):
        if self.score_mode in ("dot", "scaled", "cosine") and d != dk:
            raise ValueError(
                f"score_mode={self.score_mode!r} needs query and key features "
                f"to match. Received: query D={d}, key Dk={dk}; use "
                "score_mode='general' to learn a (D, Dk) map."
            )
        if self.score_mode == "general":
            self.kernel = self.add_weight(
                name="kernel", shape=(d, dk),
                initializer=clone_initializer(self.kernel_initializer),
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
        if self.score_mode == "cosine":
            self.log_temperature = self.add_weight(
                name="log_temperature", shape=(),
                initializer=keras.initializers.Constant(math.log(self.initial_temperature)),
            )

    def project_keys(self, key):
        return _unit(key) if self.score_mode == "cosine" else key

    def _dot_inputs(self, query, keys):
        scale = None  # "scaled": the core's 1 / sqrt(Dk)
        if self.score_mode == "dot":
            scale = 1.0
        elif self.score_mode == "general":
            query = ops.matmul(query, ops.cast(self.kernel, query.dtype))  # (B, T, Dk)
            scale = 1.0
        elif self.score_mode == "cosine":
            query = _unit(query) * ops.cast(ops.exp(self.log_temperature), query.dtype)
            scale = 1.0
        return query, keys, scale

    def get_config(self):
        config = super().get_config()
        config.update({
            "score_mode": self.score_mode,
            "initial_temperature": self.initial_temperature,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
        })
        return config


def _unit(x):
    """x / ||x|| over the last axis, with 0 for a zero vector."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
    return x / ops.maximum(norm, ops.cast(1e-12, x.dtype))
