"""StatefulAttention: attention that reads its own earlier alignments.

Shape legend: B batch, S memory length, D query (decoder state) features,
Dk key features, Dv value features, U units.
"""

import keras
from keras import ops

from attnkit import _checks
from attnkit._checks import check_positive_int
from attnkit.layers._arguments import clone_initializer
from attnkit.layers.seq2seq.additive_attention import additive_hidden
from attnkit.ops.weights import attention_weights
from attnkit.types import Tensor


class StatefulAttention(keras.layers.Layer):
    """Base class of attention over encoder memory, one decoder step at a
    time, that carries a state of `(B, S)` tensors from step to step: the
    previous alignment, the cumulative alignment, a coverage vector.

    `attnkit.layers.AttentionDecoder` keeps the state with the cell's and
    hands it over each step, so a subclass only says how to start and how to
    move on. Subclasses implement:

    - `_build_weights(query_dim, key_dim)`: the layer's weights.
    - `get_initial_state(value, value_mask=None)`: the list of states
      before the first step (default: `state_count` zeros `(B, S)`); a
      state of another shape also overrides `initial_state_spec`.
    - `project_keys(value)`: the query-independent part of the energies,
      computed once per memory (default: `value` itself).
    - `_attend(query, keys, states, mask, training)`: `(alignment (B, S),
      new states)`; `mask` is a bool `(B, S)` or None.

    Call arguments:
        query: `(B, D)`, the decoder state of this step.
        value: `(B, S, Dv)`, the memory.
        states: the list from `get_initial_state` or the previous call.
        value_mask: `(B, S)`, True = real memory position; read from
            `value`'s keras mask when not given.
        keys: `project_keys(value)`, to reuse it across steps.
        training: enables noise or dropout where a subclass has them.

    Returns:
        `(context (B, Dv), alignment (B, S), new states)`.
    """

    def __init__(self, units: int,
                 kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
                 kernel_regularizer: str | keras.regularizers.Regularizer | None = None,
                 kernel_constraint: str | keras.constraints.Constraint | None = None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("units", units)
        self.units = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.supports_masking = True

    def build(self, query_shape, value_shape):
        _check_shapes(query_shape, value_shape)
        self._build_weights(query_shape[-1], value_shape[-1])

    def _build_weights(self, query_dim, key_dim):
        """Creates the layer's weights for D = query_dim, Dk = key_dim."""

    def _kernel(self, name, shape, initializer=None):
        return self.add_weight(
            name=name, shape=shape,
            initializer=initializer or clone_initializer(self.kernel_initializer),
            regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)

    state_count = 1

    def get_initial_state(self, value: Tensor, value_mask: Tensor | None = None):
        """The states before the first decoder step, for this memory."""
        value = checked_memory(value)
        zeros = ops.zeros(ops.shape(value)[:2], self.compute_dtype)
        return [zeros] * self.state_count

    def initial_state_spec(self, value: Tensor):
        """`get_initial_state`'s shapes and dtypes for a symbolic `value`."""
        shape = tuple(value.shape[:2])
        return [keras.KerasTensor(shape, dtype=self.compute_dtype)
                for _ in range(self.state_count)]

    def project_keys(self, value: Tensor):
        """The part of the energies that depends on the memory alone."""
        return value

    @staticmethod
    def normalize_scores(scores: Tensor, mask: Tensor | None = None, normalizer: str = "softmax"):
        """Weights `(B, S)` from scores `(B, S)` by attnkit's core: the
        normalizer (`"softmax"`, `"sparsemax"`, `"entmax15"`) over the
        positions `mask` (bool `(B, S)`) shows, zeros for a row with none."""
        return attention_weights(scores, mask, normalizer)

    def __call__(self, *args, **kwargs):
        _checks.check_layer_call(args, kwargs, ("query", "value"), masks=("value_mask",))
        given = {**kwargs, **dict(zip(("query", "value", "states"), args))}
        states = given.get("states")
        if not isinstance(states, (list, tuple)) or not states:
            raise TypeError(
                "`states` must be the list from `get_initial_state` or the previous "
                f"call. Received: states={states!r}.")
        return super().__call__(*args, **kwargs)

    def call(self, query, value, states, value_mask=None, keys=None, training=None):
        _check_shapes(query.shape, value.shape)
        _check_mask(value_mask, value.shape)
        if keys is None:
            keys = self.project_keys(value)
        mask = None if value_mask is None else ops.cast(value_mask, "bool")
        alignment, states = self._attend(query, keys, list(states), mask, training)
        context = ops.einsum("bs,bsv->bv", ops.cast(alignment, value.dtype), value)
        return context, alignment, states

    def compute_output_spec(self, query, value, states, value_mask=None, keys=None,
                            training=None):
        dtype = self.compute_dtype
        batch, length = value.shape[0], value.shape[1]
        return (keras.KerasTensor((batch, value.shape[-1]), dtype=dtype),
                keras.KerasTensor((batch, length), dtype=dtype),
                [keras.KerasTensor(s.shape, dtype=s.dtype) for s in states])

    def compute_mask(self, *args, **kwargs):
        return None

    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
        })
        return config


class AdditiveEnergy:
    """Bahdanau's energy `v . tanh(W_q q + W_k k + extra + b)` with the
    weights on a `StatefulAttention` layer; `extra` `(B, S, U)` is a
    subclass's location or coverage term."""

    def __init__(self, layer: keras.layers.Layer, prefix: str = ""):
        self.layer, self.prefix = layer, prefix

    def build(self, query_dim, key_dim, units):
        layer, p = self.layer, self.prefix
        self.query_kernel = layer._kernel(f"{p}query_kernel", (query_dim, units))
        self.key_kernel = layer._kernel(f"{p}key_kernel", (key_dim, units))
        self.bias = layer._kernel(f"{p}bias", (units,), keras.initializers.Zeros())
        self.score_kernel = layer._kernel(f"{p}score_kernel", (units,))

    def keys(self, value: Tensor):
        return ops.matmul(value, ops.cast(self.key_kernel, value.dtype))  # (B, S, U)

    def hidden(self, query: Tensor, keys: Tensor, extra: Tensor | None = None):
        dtype = keys.dtype
        q = ops.matmul(query, ops.cast(self.query_kernel, dtype))  # (B, U)
        if extra is not None:
            keys = keys + extra  # (B, S, U)
        hidden = additive_hidden(q[:, None], keys, ops.cast(self.bias, dtype))
        return hidden[:, 0]  # (B, S, U)

    def __call__(self, query, keys, extra=None):
        hidden = self.hidden(query, keys, extra)
        return ops.tensordot(hidden, ops.cast(self.score_kernel, keys.dtype), 1)  # (B, S)


def checked_memory(value: Tensor):
    """`value` as a floating `(B, S, Dv)` tensor, or an error naming it."""
    value = _checks.as_float_tensor("value", value)
    if len(value.shape) != 3:
        raise ValueError(
            f"`value` must be (B, S, Dv). Received: value.shape={tuple(value.shape)}.")
    return value



def _check_mask(mask, value_shape):
    if mask is None:
        return
    shape, want = tuple(mask.shape), tuple(value_shape[:2])
    if len(shape) != 2 or any(a is not None and b is not None and a != b
                              for a, b in zip(shape, want)):
        raise ValueError(
            f"`value_mask` must be (B, S) = {want}, like `value`'s first axes. Received: "
            f"value_mask.shape={shape}.")


def _check_shapes(query_shape, value_shape):
    if len(query_shape) != 2:
        raise ValueError(
            "`query` must be one decoder step (B, D): this attention reads its "
            "previous alignment, so it runs step by step (AttentionDecoder does "
            f"this). Received: query.shape={tuple(query_shape)}.")
    if len(value_shape) != 3:
        raise ValueError(
            f"`value` must be (B, S, Dv). Received: value.shape={tuple(value_shape)}.")
    _checks.check_same_batch(query=query_shape, value=value_shape)
