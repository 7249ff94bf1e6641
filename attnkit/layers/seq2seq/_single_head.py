"""The call plumbing shared by the single-head attention layers.

Shape legend: B batch, T query length, S key length, D query features,
Dk key features, Dv value features. A rank-2 query `(B, D)` is one decoder
step: it is treated as `T = 1` and the axis is dropped again on the way out.
"""

import math

import keras
from keras import ops

import attnkit.ops as ak
from attnkit import _checks
from attnkit.layers._masking import merge_masks


class SingleHeadAttention(keras.layers.Layer):
    """Base class: subclasses define `_score_inputs(query, key)`.

    `_score_inputs` returns `(q, k, bias, scale)` for `attnkit.ops.attention`
    with `q` `(B, T, 1, H)`, `k` `(B, S, 1, H)`, `bias` `(B, 1, T, S)` or None
    and a Python float `scale`; it reads the keys through `project_keys`
    (their projection by the layer's key weights, the same for every query)
    unless the call passes them projected as `keys`.
    """

    def __init__(self, dropout=0.0, seed=None, normalizer="softmax", **kwargs):
        super().__init__(**kwargs)
        if not 0 <= dropout < 1:
            raise ValueError(
                f"`dropout` must be in [0, 1). Received: dropout={dropout!r}."
            )
        _checks.check_normalizer(normalizer)
        self.dropout = dropout
        self.normalizer = normalizer
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if dropout > 0 else None
        self.supports_masking = True

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        _check_shapes(query_shape, value_shape, key_shape)
        self._build_weights(query_shape[-1], key_shape[-1])

    def _build_weights(self, query_dim, key_dim):
        """Creates the layer's weights for D = query_dim, Dk = key_dim."""

    def project_keys(self, key):
        """`key` `(B, S, Dk)` as the layer's scores read it, made once for
        many decoder steps and passed to each call as `keys`."""
        return key

    def __call__(self, *args, **kwargs):
        _checks.check_layer_call(args, kwargs, ("query", "value", "key?"),
                                 masks=("query_mask", "value_mask", "attention_mask"))
        return super().__call__(*args, **kwargs)

    def call(self, query, value, key=None, query_mask=None, value_mask=None,
             attention_mask=None, return_attention_scores=False,
             training=None, use_causal_mask=False, keys=None):
        key = value if key is None else key
        _check_shapes(query.shape, value.shape, key.shape)
        step = len(query.shape) == 2
        if step:
            query = ops.expand_dims(query, 1)  # (B, 1, D)
            if query_mask is not None and len(query_mask.shape) == 1:
                query_mask = ops.expand_dims(query_mask, 1)
            if attention_mask is not None and len(attention_mask.shape) == 2:
                attention_mask = ops.expand_dims(attention_mask, 1)
        mask = merge_masks(query_mask, value_mask, None, attention_mask)
        q, k, bias, scale = self._score_inputs(
            query, self.project_keys(key) if keys is None else keys)
        if step and not use_causal_mask and _fits(mask, query.shape[0], key.shape[1]):
            out, weights = self._step(q, k, value, bias, scale, mask, training)
            return (out, weights) if return_attention_scores else out
        out, weights = ak.attention(
            q, k, ops.expand_dims(value, 2),
            bias=bias,
            mask=None if mask is None else ops.expand_dims(mask, 1),  # (B, 1, T, S)
            scale=scale, is_causal=bool(use_causal_mask),
            dropout_rate=self.dropout, seed=self.seed_generator,
            training=bool(training), return_weights=True, normalizer=self.normalizer,
        )  # (B, T, 1, Dv), (B, 1, T, S)
        out, weights = out[:, :, 0], weights[:, 0]
        if step:
            out, weights = out[:, 0], weights[:, 0]
        if return_attention_scores:
            return out, weights
        return out

    def _step(self, q, k, value, bias, scale, mask, training):
        """One decoder step `(B, D)` -> (output (B, Dv), weights (B, S)):
        the scores, `attnkit.ops.attention_weights` and the weighted values,
        a few operations where the core's path takes dozens for one query.
        `q` `(B, 1, 1, H)`, `k` `(B, S, 1, H)`, `bias` `(B, 1, 1, S)`, `mask`
        `(B, 1, S)` or None."""
        scores = None
        if q.shape[-1] != 0:
            if scale is None:  # the core's default, 1 / sqrt(H)
                scale = 1.0 / math.sqrt(q.shape[-1])
            scores = ops.einsum("bh,bsh->bs", q[:, 0, 0], k[:, :, 0]) * scale
        if bias is not None:
            bias = ops.cast(bias[:, 0, 0], q.dtype)
            scores = bias if scores is None else scores + bias
        weights = ak.attention_weights(
            scores, None if mask is None else mask[:, 0], self.normalizer)
        dropped = weights
        if training and self.dropout > 0:
            dropped = keras.random.dropout(weights, self.dropout, seed=self.seed_generator)
        out = ops.einsum("bs,bsd->bd", ops.cast(dropped, value.dtype), value)
        return out, weights

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        return tuple(query_shape[:-1]) + (value_shape[-1],)

    def compute_output_spec(self, query, value, key=None, query_mask=None,
                            value_mask=None, attention_mask=None,
                            return_attention_scores=False, training=None,
                            use_causal_mask=False, keys=None):
        dtype = self.compute_dtype
        out = keras.KerasTensor(
            self.compute_output_shape(query.shape, value.shape), dtype=dtype
        )
        if not return_attention_scores:
            return out
        if len(query.shape) == 2:
            scores_shape = (query.shape[0], value.shape[1])
        else:
            scores_shape = (query.shape[0], query.shape[1], value.shape[1])
        return out, keras.KerasTensor(scores_shape, dtype=dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"dropout": self.dropout, "seed": self.seed,
                       "normalizer": self.normalizer})
        return config


def _fits(mask, batch, keys):
    """Whether a merged step mask `(B, 1, S)` (or None) has shapes a step's
    short path can broadcast; any other goes to the core, which says what
    is wrong with it."""
    if mask is None:
        return True
    shape = tuple(mask.shape)
    return len(shape) == 3 and shape[1] == 1 and all(
        n == 1 or n is None or want is None or n == want
        for n, want in ((shape[0], batch), (shape[2], keys)))


def _check_shapes(query_shape, value_shape, key_shape):
    if len(query_shape) not in (2, 3):
        raise ValueError(
            "`query` must be (B, T, D) or one decoder step (B, D). "
            f"Received: query.shape={tuple(query_shape)}."
        )
    for name, shape in (("value", value_shape), ("key", key_shape)):
        if len(shape) != 3:
            raise ValueError(
                f"`{name}` must be (B, S, features). Received: "
                f"{name}.shape={tuple(shape)}."
            )
    _checks.check_same_batch(query=query_shape, value=value_shape, key=key_shape)
    s_key, s_value = key_shape[1], value_shape[1]
    if s_key is not None and s_value is not None and s_key != s_value:
        raise ValueError(
            "`key` and `value` must have the same length S. Received: "
            f"key.shape={tuple(key_shape)}, value.shape={tuple(value_shape)}."
        )
