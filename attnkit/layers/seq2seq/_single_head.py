"""The call plumbing shared by the single-head attention layers.

Shape legend: B batch, T query length, S key length, D query features,
Dk key features, Dv value features. A rank-2 query `(B, D)` is one decoder
step: it is treated as `T = 1` and the axis is dropped again on the way out.
"""

import math

import keras
from keras import ops

import attnkit.ops as ak
from attnkit import _backends
from attnkit import _checks
from attnkit.layers._masking import merge_masks


class SingleHeadAttention(keras.layers.Layer):
    """Base class: subclasses define how a query scores the keys.

    A score that is a scaled dot product defines `_dot_inputs(query, keys)`
    -> `(q (B, T, H), k (B, S, H), scale or None)`: a call that does not ask
    for the weights then goes to `attnkit.ops.attention`, which takes its
    fused or memory-lean paths. Any other score defines `_scores(query,
    keys)` -> `(B, T, S)`; the weights then come from
    `attnkit.ops.attention_weights`, the core's public normalization. Both
    read the keys through `project_keys` (their projection by the layer's
    key weights, the same for every query) unless the call passes them
    projected as `keys`.
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

    def _dot_inputs(self, query, keys):
        """`(q (B, T, H), k (B, S, H), scale or None)` where the score is a
        scaled dot product, else None."""
        return None

    def _scores(self, query, keys):
        """The scores `(B, T, S)` of `query` `(B, T, D)` against `keys`,
        where they are not a scaled dot product."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement _dot_inputs or _scores.")

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
        keys = self.project_keys(key) if keys is None else keys
        dot = self._dot_inputs(query, keys)
        if dot is not None and not return_attention_scores and not step:
            out, weights = self._core(dot, value, mask, use_causal_mask, training), None
        else:
            scores = self._scores(query, keys) if dot is None else _dot_scores(*dot)
            out, weights = self._weighted(scores, value, mask, use_causal_mask, training)
        if step:
            out = out[:, 0]
            weights = None if weights is None else weights[:, 0]
        return (out, weights) if return_attention_scores else out

    def _core(self, dot, value, mask, use_causal_mask, training):
        """The output `(B, T, Dv)` by `attnkit.ops.attention` (one head)."""
        q, k, scale = dot
        out = ak.attention(
            ops.expand_dims(q, 2), ops.expand_dims(k, 2), ops.expand_dims(value, 2),
            mask=None if mask is None else ops.expand_dims(mask, 1),  # (B, 1, T, S)
            scale=scale, is_causal=bool(use_causal_mask), dropout_rate=self.dropout,
            seed=self.seed_generator, training=bool(training), normalizer=self.normalizer)
        return out[:, :, 0]  # (B, T, Dv)

    def _weighted(self, scores, value, mask, use_causal_mask, training):
        """(output (B, T, Dv), weights (B, T, S)) from the scores `(B, T, S)`:
        `attnkit.ops.attention_weights` and the weighted values, a few
        operations (a decoder step's one query included)."""
        t, s = ops.shape(scores)[1], ops.shape(scores)[2]
        if mask is not None:  # boolean: merge_masks casts every part
            _checks.check_broadcast("mask", mask, tuple(scores.shape), "(B, T, S)")
        if use_causal_mask:  # query i sees keys j <= i, top-left as in keras
            causal = ops.arange(t)[:, None] >= ops.arange(s)[None, :]
            mask = causal if mask is None else ops.logical_and(mask, causal)
        weights = ak.attention_weights(scores, mask, self.normalizer)
        dropped = weights
        if training and self.dropout > 0:
            dropped = keras.random.dropout(weights, self.dropout, seed=self.seed_generator)
        dtype = _backends.compute_dtype_for(value.dtype)
        out = ops.einsum("bts,bsd->btd", ops.cast(dropped, dtype), ops.cast(value, dtype))
        return ops.cast(out, value.dtype), weights

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


def _dot_scores(q, k, scale):
    """`scale * q . k` `(B, T, S)` for `q` `(B, T, H)`, `k` `(B, S, H)`;
    `scale` None is the core's `1 / sqrt(H)`."""
    dtype = _backends.compute_dtype_for(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = ops.einsum("bth,bsh->bts", ops.cast(q, dtype), ops.cast(k, dtype)) * scale
    return ops.cast(scores, q.dtype)
