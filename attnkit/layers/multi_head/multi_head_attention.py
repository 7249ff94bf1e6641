"""MultiHeadAttention: keras's multi-head attention, a drop-in superset.

Shape legend: B batch, T query length, S key length (S_max with a cache),
N query heads, K key/value heads, H key head dim, Hv value head dim,
D query features, E output features.
"""

import math
from collections.abc import Callable

import keras
from keras import ops

import attnkit.ops as ak
from attnkit import _checks
from attnkit._checks import check_positive_int
from attnkit.distribution import relayout
from attnkit.layers.multi_head import _helpers as M
from attnkit.layers._arguments import clone_initializer
from attnkit.layers._masking import masks_hidden
from attnkit.layers.positions.position_scheme import PositionScheme
from attnkit.layers.positions.shaw_relative_position import ShawRelativePosition


@keras.saving.register_keras_serializable(package="attnkit")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention with the arguments, weights and call of keras's,
    plus grouped heads, positions, score functions and a decoding cache.

    `keras.layers.MultiHeadAttention` code runs unchanged: the constructor
    and `call` take the same arguments with the same meaning, and the
    sub-layers `query`, `key`, `value`, (`gate`,) `attention_output` have
    the same weights in the same order, so
    `ours.set_weights(theirs.get_weights())` gives the same outputs.
    Everything is computed by `attnkit.ops.attention`, so every
    implementation path gives the same answer, a query with nothing to see
    gives exactly 0 (keras gives a uniform row on one path and 0 on the
    other), large logits stay finite under `mixed_float16`, and symbolic
    scores of cross-attention have the right shape `(B, N, T, S)`.

    Args:
        num_heads: `N`, query heads.
        key_dim: `H`, size of each query and key head.
        value_dim: `Hv`, size of each value head; defaults to `key_dim`.
        dropout: dropout rate on the attention weights during training.
        use_bias: whether the projections have biases.
        output_shape: features of the output besides the batch and sequence
            axes; defaults to the query's last dimension.
        attention_axes: axes attended over (keras's meaning); default all
            but batch, heads and features. Several axes work with
            `attention_mask`, `attention_bias`, `score_mod`, `mask_mod`;
            positions, causal masks, windows and the cache need one axis.
        sliding_window: `w`: keys with `|i - j| < w` are visible (with
            `use_causal_mask`, the `w` most recent keys).
        flash_attention: True asks for the backend's fused kernel
            (`implementation="fused"`) and raises at construction if the
            layer's position, `score_mod` or soft cap cannot run there; None
            or False lets attnkit choose (`attnkit.ops.explain`).
        kernel_initializer: the initializer of the projections' kernels.
        bias_initializer: the initializer of the projections' biases.
        kernel_regularizer: the regularizer of the projections' kernels.
        bias_regularizer: the regularizer of the projections' biases.
        activity_regularizer: the regularizer of the layer's output.
        kernel_constraint: the constraint on the projections' kernels.
        bias_constraint: the constraint on the projections' biases.
        use_gate: gate each head's output by `sigmoid(W_g x)` (keras's
            gated attention).
        seed: seed of the dropout.
        num_key_value_heads: `K`, key/value heads; `N` must be a multiple
            (grouped-query attention; 1 is multi-query). Defaults to `N`.
        position: a `PositionScheme` (`ShawRelativePosition`,
            `T5RelativeBias`, `AlibiBias`, `RotaryEmbedding`, or your own);
            its terms are computed by the core on every path.
        score_mod: as in `attnkit.ops.attention` (indices absolute, the
            cache index included). The terms of `attnkit.ops` save with the
            layer; a function of yours must be registered with
            `keras.saving.register_keras_serializable` (saving refuses an
            unregistered one, saying so).
            A `ScoreModLayer` brings weights of its own, which this layer
            builds, trains and saves.
        mask_mod: as in `attnkit.ops.attention`, and saved as `score_mod`.
        weights_mod: as in `attnkit.ops.attention`: `weights_mod(weights)`
            on the normalized weights `(B, N, T, S)`, a hook after the
            normalizer (math path). A keras layer here is built for
            `(None, N, None, None)` and trains and saves with this one
            (talking-heads attention mixes the heads' weights so).
        logit_soft_cap: as in `attnkit.ops.attention`.
        implementation: `None`, `"math"`, `"fused"` or `"chunked"` (see
            `attnkit.ops.explain`).
        normalizer: `"softmax"`, or `"sparsemax"` / `"entmax15"` for
            weights that are exactly zero on low scores (math path).

    Call arguments:
        query: `(B, T, D)`.
        value: `(B, S, Dv)`.
        key: `(B, S, Dk)`; defaults to `value`.
        query_mask, value_mask, key_mask: `(B, T)`, `(B, S)`, `(B, S)`;
            read from the inputs' keras masks when not given.
        attention_mask: bool `(T, S)`, `(B, T, S)` or `(B, N, T, S)`,
            True = may attend.
        return_attention_scores: also return the weights `(B, N, T, S)`.
        training: enables dropout.
        use_causal_mask: query `i` (at `cache_update_index + i` with a
            cache) sees keys `j <= i`, top-left aligned when `T != S` as in
            keras.
        attention_bias: float, same layouts as `attention_mask`, added to
            the scaled logits.
        cache: `(B, 2, S_max, K, H)` keys and values (keras_hub's
            `CachedMultiHeadAttention` layout; needs `value_dim == key_dim`).
        cache_update_index: where this call's keys and values are written
            (an int or scalar tensor; works under jit and `while_loop`). With
            `cache` but no index, the cache is read as it is.
        segment_ids: int `(B, L)`, the document of each position (packed
            sequences): a query attends only to keys of its own document.
            A model input like any other, so saved models keep it; on the
            chunked path blocks between documents are never computed.
        block_mask: an `attnkit.ops.BlockMask` made once per batch and
            given to every layer (`attnkit.ops.create_block_mask`).

    Returns:
        `(B, T, E)`; with `return_attention_scores`, `(output, scores)`; with
        a cache, the updated cache is appended: `(output, cache)` or
        `(output, scores, cache)`. The output carries the query's keras mask.

    Example:

        >>> layer = attnkit.layers.MultiHeadAttention(
        ...     num_heads=4, key_dim=8, num_key_value_heads=2,
        ...     position=attnkit.layers.RotaryEmbedding())
        >>> x = keras.random.normal((2, 6, 32))
        >>> tuple(layer(x, x, use_causal_mask=True).shape)
        (2, 6, 32)
        >>> cache = ops.zeros((2, 2, 10, 2, 8))
        >>> y, cache = layer(x[:, :1], x[:, :1], cache=cache,
        ...                  cache_update_index=0, use_causal_mask=True)
        >>> tuple(y.shape), tuple(cache.shape)
        ((2, 1, 32), (2, 2, 10, 2, 8))

    References:
        Vaswani et al. 2017; Ainslie et al. 2023 (grouped-query attention).
    """

    def __init__(self, num_heads: int, key_dim: int, value_dim: int | None = None,
                 dropout: float = 0.0, use_bias: bool = True,
                 output_shape: int | tuple | None = None,
                 attention_axes: int | tuple | None = None, sliding_window: int | None = None,
                 flash_attention: bool | None = None,
                 kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
                 bias_initializer: str | keras.initializers.Initializer = "zeros",
                 kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
                 bias_regularizer: str | keras.regularizers.Regularizer | None = None,
                 activity_regularizer: str | keras.regularizers.Regularizer | None = None,
                 kernel_constraint: str | keras.constraints.Constraint | None = None,
                 bias_constraint: str | keras.constraints.Constraint | None = None,
                 use_gate: bool = False, seed: int | None = None,
                 num_key_value_heads: int | None = None, position: PositionScheme | None = None,
                 score_mod: Callable | None = None, mask_mod: Callable | None = None,
                 logit_soft_cap: float | None = None, implementation: str | None = None,
                 normalizer: str = "softmax", weights_mod: Callable | None = None,
                 **kwargs):
        check_positive_int("num_heads", num_heads)
        check_positive_int("key_dim", key_dim)
        check_positive_int("value_dim", value_dim, allow_none=True)
        check_positive_int("num_key_value_heads", num_key_value_heads, allow_none=True)
        check_positive_int("sliding_window", sliding_window, allow_none=True)
        super().__init__(**kwargs)
        kv_heads = num_heads if num_key_value_heads is None else num_key_value_heads
        if num_heads % kv_heads:
            raise ValueError(
                "`num_heads` must be a multiple of `num_key_value_heads`. "
                f"Received: num_heads={num_heads}, num_key_value_heads={kv_heads}."
            )
        _checks.check_rate("dropout", dropout)
        if flash_attention and dropout > 0:
            raise ValueError(
                "Dropout is not supported when flash attention is enabled. "
                "Please set dropout to 0.0 to use flash attention. Received: "
                f"dropout={dropout}, flash_attention=True."
            )
        if implementation not in M.IMPLEMENTATIONS:
            raise ValueError(
                f"`implementation` must be one of {M.IMPLEMENTATIONS}. "
                f"Received: implementation={implementation!r}."
            )
        if isinstance(position, dict):
            position = keras.saving.deserialize_keras_object(position)
        if position is not None and not isinstance(position, PositionScheme):
            raise TypeError(
                "`position` must be an attnkit.layers.PositionScheme (e.g. "
                f"RotaryEmbedding()). Received: {position!r}."
            )
        if flash_attention:
            _check_flash_attention(position, implementation)
        # What every call shares, checked once here (the core checks what
        # the fused kernel cannot run); the core takes it as is.
        try:
            self._spec = ak.AttentionSpec(
                scale=1.0 / math.sqrt(float(key_dim)), sliding_window=sliding_window,
                score_mod=score_mod, mask_mod=mask_mod, weights_mod=weights_mod,
                logit_soft_cap=logit_soft_cap, dropout_rate=dropout,
                implementation="fused" if flash_attention else implementation,
                normalizer=normalizer)
        except ValueError as error:
            if not flash_attention:
                raise
            raise ValueError(f"flash_attention=True asks for the backend's fused kernel: "
                             f"{error}".replace("Leave implementation=None", "Leave "
                                                "flash_attention=None")) from None
        score_mod, mask_mod, weights_mod = (
            self._spec.score_mod, self._spec.mask_mod, self._spec.weights_mod)
        output_shape = M.check_output_shape(output_shape)
        if isinstance(attention_axes, int):
            attention_axes = (attention_axes,)
        elif attention_axes is not None and not isinstance(attention_axes, (list, tuple)):
            raise ValueError(
                "`attention_axes` must be an int, list, or tuple. Received: "
                f"attention_axes={attention_axes!r}."
            )
        self.supports_masking = True
        self._num_heads = num_heads
        self._key_dim = key_dim
        self._value_dim = value_dim if value_dim else key_dim
        self._num_key_value_heads = kv_heads
        self._dropout = dropout
        self._use_bias = use_bias
        self._use_gate = use_gate
        self._output_shape = output_shape
        self._attention_axes = None if attention_axes is None else tuple(attention_axes)
        self._config_attention_axes = self._attention_axes
        self._sliding_window = sliding_window
        self._flash_attention = flash_attention
        self._kernel_initializer = keras.initializers.get(kernel_initializer)
        self._bias_initializer = keras.initializers.get(bias_initializer)
        self._kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._bias_regularizer = keras.regularizers.get(bias_regularizer)
        self._activity_regularizer = keras.regularizers.get(activity_regularizer)
        self._kernel_constraint = keras.constraints.get(kernel_constraint)
        self._bias_constraint = keras.constraints.get(bias_constraint)
        self.seed = seed
        self.position = position
        self.score_mod = score_mod
        self.mask_mod = mask_mod
        self._position_mask_mod = None  # the position scheme's mask and `mask_mod` (build)
        self.weights_mod = weights_mod
        self.normalizer = normalizer
        self.logit_soft_cap = logit_soft_cap
        self.implementation = implementation
        self.seed_generator = keras.random.SeedGenerator(seed) if dropout > 0 else None

    num_heads = property(lambda self: self._num_heads)
    key_dim = property(lambda self: self._key_dim)
    value_dim = property(lambda self: self._value_dim)
    num_key_value_heads = property(lambda self: self._num_key_value_heads)
    dropout = property(lambda self: self._dropout)
    use_bias = property(lambda self: self._use_bias)
    attention_axes = property(lambda self: self._attention_axes)
    query_dense = property(lambda self: self._query_dense)
    key_dense = property(lambda self: self._key_dense)
    value_dense = property(lambda self: self._value_dense)
    output_dense = property(lambda self: self._output_dense)

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        M.check_key_value_shapes(value_shape, key_shape)
        if len(query_shape) < 3 or len(value_shape) != len(query_shape):
            raise ValueError(
                "`query`, `value` and `key` must have the same rank, at least "
                f"3 (B, T, D). Received: query_shape={tuple(query_shape)}, "
                f"value_shape={tuple(value_shape)}."
            )
        rank = len(query_shape) + 1  # projected: (B, <dims>, heads, H)
        axes = self._config_attention_axes or tuple(range(1, rank - 2))
        self._attention_axes = tuple(a if a >= 0 else rank - 1 + a for a in axes)
        self._single_axis = rank == 4 and self._attention_axes == (1,)
        self._dot_product_equation, self._combine_equation = M.attention_equations(
            rank, self._attention_axes)
        if not self._single_axis and (self.position is not None or self._sliding_window):
            raise ValueError(
                "`position` and `sliding_window` need attention over one "
                f"sequence axis. Received: query_shape={tuple(query_shape)}, "
                f"attention_axes={self._attention_axes}."
            )
        n, k, h, hv = self._num_heads, self._num_key_value_heads, self._key_dim, self._value_dim
        self._query_dense = self._projection("query", query_shape, n, h)
        self._key_dense = self._projection("key", key_shape, k, h)
        if self._use_gate:
            self._gate_dense = self._projection("gate", query_shape, n, hv, "sigmoid")
        self._value_dense = self._projection("value", value_shape, k, hv)
        out_dims = self._output_shape or (query_shape[-1],)
        equation, bias_axes, out_rank = M.projection_equation(
            len(query_shape) - 1, 2, len(out_dims))
        self._output_dense = keras.layers.EinsumDense(
            equation, output_shape=M.output_spec_shape(out_rank - 1, out_dims),
            bias_axes=bias_axes if self._use_bias else None,
            name="attention_output", **self._sublayer_kwargs())
        self._output_dense.build(tuple(query_shape[:-1]) + (n, hv))
        if self.position is not None and not self.position.built:
            self.position.dtype_policy = self.dtype_policy
            self.position.build_heads(n, h, hv)
        if self.position is not None:
            # Combined once, outside any traced call (torch.compile cannot
            # trace the making of a combined mask).
            own = self.position.attention_terms().get("mask_mod")
            self._position_mask_mod = (own if own is None or self.mask_mod is None
                                       else ak.and_masks(own, self.mask_mod))
        for term in (self.score_mod, self.weights_mod):  # terms with weights
            if isinstance(term, keras.layers.Layer) and not term.built:
                if hasattr(term, "build_heads"):
                    term.dtype_policy = self.dtype_policy
                    term.build_heads(n, h, hv)
                else:
                    term.build((None, n, None, None))

    def _projection(self, name, input_shape, heads, dim, activation=None):
        equation, bias_axes, rank = M.projection_equation(len(input_shape) - 1, 1, 2)
        layer = keras.layers.EinsumDense(
            equation, output_shape=M.output_spec_shape(rank - 1, [heads, dim]),
            bias_axes=bias_axes if self._use_bias else None, activation=activation,
            name=name, **self._sublayer_kwargs())
        layer.build(tuple(input_shape))
        return layer

    def _sublayer_kwargs(self):
        return dict(
            kernel_initializer=clone_initializer(self._kernel_initializer),
            bias_initializer=clone_initializer(self._bias_initializer),
            kernel_regularizer=self._kernel_regularizer,
            bias_regularizer=self._bias_regularizer,
            activity_regularizer=self._activity_regularizer,
            kernel_constraint=self._kernel_constraint,
            bias_constraint=self._bias_constraint,
            dtype=self.dtype_policy,
        )

    def __call__(self, *args, **kwargs):
        _checks.check_layer_call(
            args, kwargs, ("query", "value", "key?"), ("attention_bias?", "cache?"),
            ("query_mask", "value_mask", "key_mask", "attention_mask"))
        return super().__call__(*args, **kwargs)

    def call(self, query, value, key=None, query_mask=None, value_mask=None,
             key_mask=None, attention_mask=None, return_attention_scores=False,
             training=None, use_causal_mask=False, attention_bias=None,
             cache=None, cache_update_index=None, segment_ids=None, block_mask=None):
        if return_attention_scores and self._flash_attention:
            raise ValueError(_FLASH_SCORES)
        key = value if key is None else key
        with masks_hidden(query, value, key):
            if not self._single_axis:
                if segment_ids is not None or block_mask is not None:
                    raise ValueError(
                        "`segment_ids` and `block_mask` need attention over one sequence "
                        f"axis; this layer attends over axes {self._attention_axes}.")
                return self._call_axes(
                    query, value, key, query_mask=query_mask, value_mask=value_mask,
                    key_mask=key_mask, attention_mask=attention_mask,
                    attention_bias=attention_bias, return_scores=return_attention_scores,
                    training=training, use_causal_mask=use_causal_mask, cache=cache)
            return self._call_one_axis(
                query, value, key, query_mask=query_mask, value_mask=value_mask,
                key_mask=key_mask, attention_mask=attention_mask,
                return_attention_scores=return_attention_scores, training=training,
                use_causal_mask=use_causal_mask, attention_bias=attention_bias, cache=cache,
                cache_update_index=cache_update_index, segment_ids=segment_ids,
                block_mask=block_mask)

    def _call_one_axis(self, query, value, key, *, query_mask, value_mask, key_mask,
                       attention_mask, return_attention_scores, training, use_causal_mask,
                       attention_bias, cache, cache_update_index, segment_ids, block_mask):
        """Attention over one sequence axis: the projections, the cache and
        the position here; masks, terms and the path in the core."""
        documents = {} if segment_ids is None and block_mask is None else dict(
            segment_ids=None if segment_ids is None else ops.cast(segment_ids, "int32"),
            block_mask=block_mask)
        self._check_inputs(query, value, key, cache, cache_update_index)
        gate = self._gate_dense(query) if self._use_gate else None
        t = ops.shape(query)[1]
        offset = 0 if cache_update_index is None else cache_update_index
        q_positions = ops.arange(t, dtype="int32") + offset
        q = self._rotate(self._query_dense(query), q_positions)  # (B, T, N, H)
        if cache is None:
            k = self._rotate(self._key_dense(key), ops.arange(ops.shape(key)[1], dtype="int32"))
            v = self._value_dense(value)  # (B, S, K, Hv)
        else:
            k, v, cache = self._update_cache(key, value, cache, cache_update_index)
        target = (query.shape[0], self._num_heads, query.shape[1], k.shape[1])
        mask = M.merge_layer_masks(query_mask, value_mask, key_mask, attention_mask, target)
        bias = self._bias(attention_bias, target)
        if type(self)._compute_attention is not MultiHeadAttention._compute_attention:
            # A subclass overriding keras's documented override point gets
            # keras's arguments: the causal mask folded into one bool mask.
            if use_causal_mask:
                causal = ak.materialize_mask(ak.causal_mask(), 1, 1, ops.shape(q)[1],
                                             ops.shape(k)[1], q_offset=offset)
                mask = causal if mask is None else ops.logical_and(mask, causal)
            if bias is not None:
                raise ValueError(
                    "`attention_bias` cannot reach a subclass's `_compute_attention` "
                    "(keras's signature has no bias). Received: attention_bias with "
                    f"shape {tuple(bias.shape)}.")
            out, scores = self._compute_attention(
                q, k, v, mask, training, return_attention_scores)
        else:
            out, scores = self._attend(
                q, k, v, bias, mask, training, return_attention_scores,
                is_causal=use_causal_mask, q_offset=offset, **documents)
        out = self._finish(out, gate)
        result = (out, scores) if return_attention_scores else (out,)
        if cache is not None:
            result += (cache,)
        return result[0] if len(result) == 1 else result

    def _rotate(self, x, positions):
        return x if self.position is None else self.position.rotate(x, positions)

    def _update_cache(self, key, value, cache, index):
        cache = ops.convert_to_tensor(cache)
        if index is None:
            return cache[:, 0], cache[:, 1], cache
        positions = ops.arange(ops.shape(key)[1], dtype="int32") + index
        k_new = ops.cast(self._rotate(self._key_dense(key), positions), cache.dtype)
        v_new = ops.cast(self._value_dense(value), cache.dtype)
        start = [0, index, 0, 0]
        k = ops.slice_update(cache[:, 0], start, k_new)  # (B, S_max, K, H)
        v = ops.slice_update(cache[:, 1], start, v_new)
        # Under a keras.distribution, place the cache as attnkit.distribution
        # lays it out (by batch and key/value head).
        cache = relayout(ops.stack([k, v], axis=1), f"{self.path}/cache")
        return k, v, cache

    def _bias(self, attention_bias, target):
        if attention_bias is None:
            return None
        attention_bias = ops.convert_to_tensor(attention_bias)
        _checks.check_bias_dtype(attention_bias)
        return M.layer_mask("attention_bias", attention_bias, target)

    def _attend(self, q, k, v, bias, mask, training, return_scores, is_causal=False,
                q_offset=0, segment_ids=None, block_mask=None):
        """Attention of projected `q` `(B, T, N, H)`, `k`, `v` `(B, S, K, H*)`:
        `(out (B, T, N, Hv), weights (B, N, T, S) or None)`. The core computes
        every term and chooses the path."""
        terms = {} if self.position is None else dict(self.position.attention_terms())
        spec = self._spec
        if "score_mod" in terms:  # the position's own term, before the layer's
            spec = spec.replace(score_mod=ak.chain_score_mods(terms.pop("score_mod"),
                                                              self.score_mod))
        if "mask_mod" in terms:  # the position's own mask, and the layer's (made in build)
            terms.pop("mask_mod")
            spec = spec.replace(mask_mod=self._position_mask_mod)
        options = dict(
            bias=bias, mask=mask, is_causal=bool(is_causal), q_offset=q_offset,
            seed=self.seed_generator, training=bool(training),
            return_weights=return_scores, spec=spec)
        if segment_ids is not None:  # the queries' (and keys') documents
            options["segment_ids"] = segment_ids
        if block_mask is not None:
            options["block_mask"] = block_mask
        if terms:
            result = ak.relative_attention(q, k, v, **terms, **options)
        else:
            result = ak.attention(q, k, v, **options)
        return result if return_scores else (result, None)

    def _compute_attention(self, query, key, value, attention_mask=None, training=None,
                           return_attention_scores=False, use_causal_mask=False):
        """keras's override point: attention of projected tensors.

        Args:
            query: `(B, T, N, H)`; key `(B, S, K, H)`; value `(B, S, K, Hv)`.
            attention_mask: `(B, T, S)` (or `(T, S)`, `(B, N, T, S)`), any
                dtype, nonzero = may attend.
            training: enables dropout.
            return_attention_scores: also return the weights.
            use_causal_mask: query `i` sees keys `j <= i`, together with
                `attention_mask`.

        Returns:
            `(output (B, T, N, Hv), weights (B, N, T, S) or None)`.
        """
        if self._flash_attention and return_attention_scores:
            raise ValueError(_FLASH_SCORES)
        if len(query.shape) != 4:
            raise ValueError(
                "`_compute_attention` takes projected (B, T, N, H) tensors. "
                f"Received: query.shape={tuple(query.shape)}.")
        target = (query.shape[0], self._num_heads, query.shape[1], key.shape[1])
        mask = M.merge_layer_masks(None, None, None, attention_mask, target)
        return self._attend(query, key, value, None, mask, training,
                            return_attention_scores, is_causal=use_causal_mask)

    def _finish(self, out, gate):
        if gate is not None:
            out = ops.multiply(out, ops.cast(gate, out.dtype))
        return self._output_dense(out)

    def _call_axes(self, query, value, key, *, query_mask, value_mask, key_mask,
                   attention_mask, attention_bias, return_scores, training,
                   use_causal_mask, cache):
        """Attention over several axes (keras's `attention_axes`), flattened."""
        unsupported = {"query_mask": query_mask, "value_mask": value_mask,
                       "key_mask": key_mask, "cache": cache}
        if len(self._attention_axes) > 1:  # causal along one axis only
            unsupported["use_causal_mask"] = use_causal_mask or None
        for name, given in unsupported.items():
            if given is not None:
                raise ValueError(
                    f"`{name}` needs attention over one sequence axis; this layer "
                    f"attends over axes {self._attention_axes} of rank "
                    f"{len(query.shape)} inputs. Pass `attention_mask` instead."
                )
        gate = self._gate_dense(query) if self._use_gate else None
        layout = M.AxesLayout(len(query.shape) + 1, self._attention_axes)
        q, k = self._query_dense(query), self._key_dense(key)
        q_shape, k_shape = ops.shape(q), ops.shape(k)  # (<dims>, heads, H)
        (q, q_flat_shape), (k, _) = layout.flatten(q), layout.flatten(k)
        v, _ = layout.flatten(self._value_dense(value))
        full = layout.batch_shape(q_shape) + layout.attention_shape(q_shape) \
            + layout.attention_shape(k_shape)
        flat = (ops.shape(q)[0], 1, ops.shape(q)[1], ops.shape(k)[1])

        def flatten(x):
            return None if x is None else ops.reshape(ops.broadcast_to(x, full), flat)

        mask = None if attention_mask is None else M.as_bool(attention_mask)
        mask, bias = flatten(mask), flatten(attention_bias)
        # One attention axis: the layout keeps its order, so causal is the
        # core's (query i sees keys j <= i along that axis), as in keras.
        out, scores = self._attend(q, k, v, bias, mask, training, return_scores,
                                   is_causal=use_causal_mask)
        out = self._finish(layout.unflatten(out, q_flat_shape[:-1] + (out.shape[-1],)), gate)
        if not return_scores:
            return out
        scores_shape = layout.batch_shape(q_shape) + (self._num_heads,) \
            + layout.attention_shape(q_shape) + layout.attention_shape(k_shape)
        return out, ops.reshape(scores, scores_shape)

    def _check_inputs(self, query, value, key, cache, index):
        for name, x in (("query", query), ("value", value), ("key", key)):
            if len(x.shape) != 3:
                raise ValueError(
                    f"`{name}` must be (B, length, features) like the inputs this "
                    f"layer was built for. Received: {name}.shape={tuple(x.shape)}."
                )
        _checks.check_same_batch(query=query.shape, value=value.shape, key=key.shape)
        if cache is None and index is not None:
            raise ValueError(
                "`cache_update_index` needs a `cache`. Received: "
                f"cache=None, cache_update_index={index!r}."
            )
        if cache is not None:
            M.check_cache(ops.convert_to_tensor(cache), query.shape[0],
                          self._num_key_value_heads, self._key_dim, self._value_dim)

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        M.check_key_value_shapes(value_shape, key_shape)
        if self._output_shape:
            return tuple(query_shape[:-1]) + self._output_shape
        return tuple(query_shape)

    def compute_output_spec(self, query, value, key=None, query_mask=None,
                            value_mask=None, key_mask=None, attention_mask=None,
                            return_attention_scores=False, training=None,
                            use_causal_mask=False, attention_bias=None, cache=None,
                            cache_update_index=None, segment_ids=None, block_mask=None):
        key_shape = None if key is None else key.shape
        out = keras.KerasTensor(
            self.compute_output_shape(query.shape, value.shape, key_shape),
            dtype=self.compute_dtype)
        result = (out,)
        if return_attention_scores:
            rank = len(query.shape) + 1
            axes = self._attention_axes or self._config_attention_axes \
                or tuple(range(1, rank - 2))
            axes = tuple(a if a >= 0 else rank - 1 + a for a in axes)
            layout = M.AxesLayout(rank, axes)
            source = tuple(value.shape) if cache is None else (None, cache.shape[2])
            shape = layout.batch_shape(query.shape) + (self._num_heads,) \
                + layout.attention_shape(query.shape) + layout.attention_shape(source)
            result += (keras.KerasTensor(shape, dtype=self.compute_dtype),)
        if cache is not None:
            result += (keras.KerasTensor(cache.shape, dtype=cache.dtype),)
        return result[0] if len(result) == 1 else result

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self._num_heads,
            "key_dim": self._key_dim,
            "value_dim": self._value_dim,
            "dropout": self._dropout,
            "use_bias": self._use_bias,
            "use_gate": self._use_gate,
            "output_shape": self._output_shape,
            "attention_axes": self._config_attention_axes,
            "sliding_window": self._sliding_window,
            "flash_attention": self._flash_attention,
            "kernel_initializer": keras.initializers.serialize(self._kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self._bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self._kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self._bias_regularizer),
            "activity_regularizer": keras.regularizers.serialize(self._activity_regularizer),
            "kernel_constraint": keras.constraints.serialize(self._kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self._bias_constraint),
            "seed": self.seed,
            "num_key_value_heads": self._num_key_value_heads,
            "position": ak.serialize_term(self.position, "position"),
            "score_mod": ak.serialize_term(self.score_mod, "score_mod"),
            "mask_mod": ak.serialize_term(self.mask_mod, "mask_mod"),
            "weights_mod": ak.serialize_term(self.weights_mod, "weights_mod"),
            "logit_soft_cap": self.logit_soft_cap,
            "implementation": self.implementation,
            "normalizer": self.normalizer,
        })
        return config


_FLASH_SCORES = (
    "Returning attention scores is not supported when flash attention is "
    "enabled. Please disable flash attention to access attention scores. "
    "(With flash_attention=None, attnkit returns them from its math path.)")


def _check_flash_attention(position, implementation):
    """flash_attention=True asks for the native kernel: refuse at
    construction what the layer alone knows it cannot compute (the core
    refuses the attention options, through the spec). Relative logits reach
    the kernel as a dense bias; a relative value table cannot."""
    asked = []
    if isinstance(position, ShawRelativePosition) and position.use_relative_values:
        asked.append("position=ShawRelativePosition(use_relative_values=True) (a value term "
                     "needs the attention weights)")
    if implementation not in (None, "fused"):
        asked.append(f"implementation={implementation!r}")
    if asked:
        raise ValueError(
            "flash_attention=True asks for the backend's fused kernel, which cannot "
            f"compute {'; '.join(asked)}. Leave flash_attention=None: attnkit then "
            "runs these on its chunked path, memory-lean like a flash kernel "
            "(attnkit.ops.explain says which path a call takes).")