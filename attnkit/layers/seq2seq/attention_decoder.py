"""AttentionDecoder: an RNN decoder that attends to encoder memory each step.

Shape legend: B batch, T target length, S memory (source) length, E decoder
input features, Dv memory features, U cell units, A attentional features.
"""

import keras
from keras import ops

from attnkit.layers.seq2seq.stateful_attention import StatefulAttention
from attnkit.ops import serialize_term
from attnkit.types import Tensor

STYLES = ("bahdanau", "luong")


@keras.saving.register_keras_serializable(package="attnkit")
class AttentionDecoder(keras.layers.Layer):
    """Runs a keras RNN cell with attention over encoder memory.

    Keras 3 has no decoder-step attention (TF Addons' `AttentionWrapper`
    reached end of life in 2024); this layer is it, for any keras RNN cell
    (`GRUCell`, `LSTMCell`, ...) and any attnkit single-head attention layer,
    or a `StatefulAttention` (monotonic, location-sensitive, coverage),
    whose state (earlier alignments) the decoder carries with the cell's.

    - `"bahdanau"` (Bahdanau et al. 2015): attention from the previous
      state `h[t-1]`; the context is fed into the cell with the input;
      output `[h[t]; context[t]]`.
    - `"luong"` (Luong et al. 2015): the cell runs first; attention from
      `h[t]`; output `a[t] = tanh(W_c [context[t]; h[t]])` (A =
      `attentional_units`, default U). With `input_feeding`, `a[t-1]` is
      fed into the cell with the input.

    `call` runs teacher-forced over a whole target sequence (for `fit`);
    `step` runs one step with explicit state (for inference). Both compute the
    same thing: `call` is a loop of `step`, unrolled over the static `T`;
    for Luong without input feeding, the loop runs the cell alone and one
    attention call then serves all `T` steps.

    Args:
        cell: a keras RNN cell, e.g. `keras.layers.GRUCell(128)`.
        attention: an attnkit single-head attention layer, e.g.
            `attnkit.layers.AdditiveAttention(64)`, or a `StatefulAttention`
            such as `attnkit.layers.MonotonicAttention(64)`.
        style: `"bahdanau"` or `"luong"`.
        input_feeding: Luong only: feed `a[t-1]` into the cell.
        attentional_units: Luong only: size A of `a[t]` (default: U).

    Call arguments:
        inputs: `(B, T, E)` decoder inputs (embedded previous targets).
        memory: `(B, S, Dv)` encoder outputs.
        memory_mask: `(B, S)`, True = real source token; read from
            `memory`'s keras mask when not given.
        initial_state: list of cell states (e.g. the encoder's final
            state); zeros when not given.
        return_state: also return the final state list.
        training: passed to the cell and the attention.

    Returns:
        `(outputs (B, T, U + Dv or A), alignments (B, T, S))`, plus the final
        state list with `return_state=True`.

    Example:

        >>> decoder = attnkit.layers.AttentionDecoder(
        ...     keras.layers.GRUCell(32), attnkit.layers.AdditiveAttention(16))
        >>> memory = keras.random.normal((4, 9, 24))
        >>> targets = keras.random.normal((4, 6, 8))
        >>> outputs, alignments = decoder(targets, memory)
        >>> tuple(outputs.shape), tuple(alignments.shape)
        ((4, 6, 56), (4, 6, 9))

    References:
        Bahdanau, Cho, Bengio 2015; Luong, Pham, Manning 2015.
    """

    def __init__(self, cell: keras.layers.Layer, attention: keras.layers.Layer,
                 style: str = "bahdanau", input_feeding: bool = True,
                 attentional_units: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if style not in STYLES:
            raise ValueError(
                f"`style` must be one of {STYLES}. Received: style={style!r}."
            )
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        if isinstance(attention, dict):
            attention = keras.saving.deserialize_keras_object(attention)
        if not hasattr(cell, "state_size"):
            raise ValueError(
                "`cell` must be a keras RNN cell with a `state_size` (e.g. "
                f"keras.layers.GRUCell). Received: {cell!r}."
            )
        self.cell = cell
        self.attention = attention
        self.style = style
        self.input_feeding = bool(input_feeding)
        self.attentional_units = attentional_units
        self.projection = None
        if style == "luong":
            self.projection = keras.layers.Dense(
                attentional_units or self._units, activation="tanh",
                use_bias=False, name="attentional", dtype=self.dtype_policy,
            )

    @property
    def _units(self):
        sizes = self.cell.state_size
        return sizes[0] if isinstance(sizes, (list, tuple)) else sizes

    @property
    def _stateful(self):
        return isinstance(self.attention, StatefulAttention)

    @property
    def _cell_state_count(self):
        sizes = self.cell.state_size
        return len(sizes) if isinstance(sizes, (list, tuple)) else 1

    @property
    def _feeds_attentional(self):
        return self.style == "luong" and self.input_feeding

    def _cell_input_dim(self, input_dim, memory_dim):
        if self.style == "bahdanau":
            return input_dim + memory_dim
        if self.input_feeding:
            return input_dim + self.projection.units
        return input_dim

    def build(self, inputs_shape, memory_shape):
        batch, input_dim, memory_dim = inputs_shape[0], inputs_shape[-1], memory_shape[-1]
        # A loaded model deserializes the sub-layers already built.
        if not self.cell.built:
            self.cell.build((batch, self._cell_input_dim(input_dim, memory_dim)))
        if not self.attention.built:
            self.attention.build((batch, self._units), memory_shape)
        if self.projection is not None and not self.projection.built:
            self.projection.build((batch, self._units + memory_dim))

    def get_initial_state(self, batch_size: int, cell_state: list | None = None,
                          memory: Tensor | None = None, memory_mask: Tensor | None = None):
        """The full decoder state list: cell states (+ a[t-1] for Luong
        input feeding) (+ the attention's states for a `StatefulAttention`,
        which needs `memory` and `memory_mask`). `cell_state` replaces the
        zero cell states."""
        if self._stateful and memory is None:
            raise ValueError(
                f"{type(self.attention).__name__} carries a state over the memory: "
                "pass `memory` (and `memory_mask`) to get_initial_state.")
        if cell_state is None:
            sizes = self.cell.state_size
            sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
            cell_state = [ops.zeros((batch_size, n), self.compute_dtype) for n in sizes]
        states = list(cell_state)
        if self._feeds_attentional:
            states.append(ops.zeros((batch_size, self.projection.units), self.compute_dtype))
        if self._stateful:
            states += list(self.attention.get_initial_state(memory, memory_mask))
        return states

    def step(self, inputs: Tensor, states: list, memory: Tensor, memory_mask: Tensor | None = None,
             training: bool | None = None, keys: Tensor | None = None):
        """One decoder step: inputs `(B, E)` -> (output, alignment (B, S),
        new states). `keys`: the attention's `project_keys(memory)`, made
        once for every step (made here when not given)."""
        if keys is None:
            keys = self._project_keys(memory)
        return self._step(inputs, states, memory, memory_mask, training, self._call_cell, keys)

    def _project_keys(self, memory):
        """The attention's projection of the memory, the same for every step
        (attnkit's attention layers have `project_keys`), or None."""
        project = getattr(self.attention, "project_keys", None)
        return None if project is None else project(memory)

    def _attend(self, query, memory, memory_mask, attention_states, keys, training):
        """(context, alignment, new attention states) for one step."""
        if self._stateful:
            return self.attention(query, memory, attention_states, value_mask=memory_mask,
                                  keys=keys, training=training)
        given = {} if keys is None else {"keys": keys}
        context, alignment = self.attention(
            query, memory, value_mask=memory_mask, return_attention_scores=True,
            training=training, **given)  # (B, Dv), (B, S)
        return context, alignment, []

    def _call_cell(self, inputs, extra, cell_states, training):
        """The cell on `[inputs; extra]` (extra: the context or a[t-1], or None)."""
        cell_input = inputs if extra is None else ops.concatenate([inputs, extra], axis=-1)
        h, cell_states = self.cell(cell_input, cell_states, training=training)
        return h, list(_as_list(cell_states))

    def _step(self, inputs, states, memory, memory_mask, training, cell, keys=None):
        states = list(states)
        count = self._cell_state_count
        cell_states, rest = states[:count], states[count:]
        previous = rest.pop(0) if self._feeds_attentional else None
        if self.style == "bahdanau":
            context, alignment, rest = self._attend(
                cell_states[0], memory, memory_mask, rest, keys, training)
            h, cell_states = cell(inputs, context, cell_states, training)
            output = ops.concatenate([h, context], axis=-1)
            return output, alignment, cell_states + list(rest)
        h, cell_states = cell(inputs, previous, cell_states, training)
        context, alignment, rest = self._attend(h, memory, memory_mask, rest, keys, training)
        output = self.projection(ops.concatenate([context, h], axis=-1))  # (B, A)
        if previous is not None:
            cell_states.append(output)
        return output, alignment, cell_states + list(rest)

    def _gru_steps(self, inputs):
        """For a keras GRUCell (reset_after, no dropout): the input
        projections of every step at once `(B, T, 3U)` and a cell function
        that adds the rest, the same arithmetic as `GRUCell.call` without a
        layer call per step (as keras's own GRU layer does on CPU). None for
        any other cell."""
        cell = self.cell
        if not (isinstance(cell, keras.layers.GRUCell) and cell.reset_after
                and not cell.dropout and not cell.recurrent_dropout):
            return None
        dtype = inputs.dtype
        kernel = ops.cast(cell.kernel, dtype)
        recurrent_kernel = ops.cast(cell.recurrent_kernel, dtype)
        width = inputs.shape[-1]
        projected = ops.matmul(inputs, kernel[:width])  # (B, T, 3U)
        input_bias = recurrent_bias = None
        if cell.use_bias:
            bias = ops.cast(cell.bias, dtype)  # (2, 3U): input, recurrent
            input_bias, recurrent_bias = bias[0], bias[1]
            projected = projected + input_bias
        extra_kernel = kernel[width:]

        def gru(x, extra, cell_states, training):
            h_prev = cell_states[0]
            if extra is not None:
                x = x + ops.matmul(extra, extra_kernel)
            inner = ops.matmul(h_prev, recurrent_kernel)
            if recurrent_bias is not None:
                inner = inner + recurrent_bias
            x_z, x_r, x_h = ops.split(x, 3, axis=-1)
            inner_z, inner_r, inner_h = ops.split(inner, 3, axis=-1)
            z = cell.recurrent_activation(x_z + inner_z)
            r = cell.recurrent_activation(x_r + inner_r)
            h = z * h_prev + (1 - z) * cell.activation(x_h + r * inner_h)
            return h, [h]

        return projected, gru

    def call(self, inputs, memory, memory_mask=None, initial_state=None,
             return_state=False, training=None):
        steps = inputs.shape[1]
        if steps is None:
            raise ValueError(
                "AttentionDecoder unrolls over the target length, which must "
                f"be static. Received: inputs.shape={tuple(inputs.shape)}."
            )
        batch = ops.shape(inputs)[0]
        states = self.get_initial_state(batch, initial_state, memory, memory_mask)
        fast = self._gru_steps(inputs)
        projected, cell = (inputs, self._call_cell) if fast is None else fast
        if self.style == "luong" and not self.input_feeding and not self._stateful:
            return self._call_attending_after(projected, cell, memory, memory_mask, states,
                                              return_state, training)
        # The attention's memory projection serves every step.
        keys = self._project_keys(memory)
        outputs, alignments = [], []
        for t in range(steps):
            output, alignment, states = self._step(
                projected[:, t], states, memory, memory_mask, training, cell, keys)
            outputs.append(output)
            alignments.append(alignment)
        result = (ops.stack(outputs, axis=1), ops.stack(alignments, axis=1))
        return result + (states,) if return_state else result

    def _call_attending_after(self, inputs, cell, memory, memory_mask, states, return_state,
                              training):
        """Luong without input feeding: the attention does not feed the
        cell, so the cell runs first over all steps and one attention call
        serves every step, the same values as the loop of `step`."""
        hidden = []
        for t in range(inputs.shape[1]):
            h, states = cell(inputs[:, t], None, states, training)
            hidden.append(h)
        hidden = ops.stack(hidden, axis=1)  # (B, T, U)
        context, alignments = self.attention(
            hidden, memory, value_mask=memory_mask, return_attention_scores=True,
            training=training)  # (B, T, Dv), (B, T, S)
        outputs = self.projection(ops.concatenate([context, hidden], axis=-1))  # (B, T, A)
        return (outputs, alignments, states) if return_state else (outputs, alignments)

    def compute_output_spec(self, inputs, memory, memory_mask=None,
                            initial_state=None, return_state=False,
                            training=None):
        batch, steps = inputs.shape[0], inputs.shape[1]
        width = self._units + memory.shape[-1] if self.style == "bahdanau" else self.projection.units
        dtype = self.compute_dtype
        result = (
            keras.KerasTensor((batch, steps, width), dtype=dtype),
            keras.KerasTensor((batch, steps, memory.shape[1]), dtype=dtype),
        )
        if not return_state:
            return result
        sizes = self.cell.state_size
        sizes = list(sizes) if isinstance(sizes, (list, tuple)) else [sizes]
        if self._feeds_attentional:
            sizes.append(self.projection.units)
        states = [keras.KerasTensor((batch, n), dtype=dtype) for n in sizes]
        if self._stateful:
            states += self.attention.initial_state_spec(memory)
        return result + (states,)

    def compute_mask(self, inputs, previous_mask=None):
        return None  # the outputs are one per target step, all real

    def get_config(self):
        config = super().get_config()
        config.update({
            "cell": serialize_term(self.cell, "cell"),
            "attention": serialize_term(self.attention, "attention"),
            "style": self.style,
            "input_feeding": self.input_feeding,
            "attentional_units": self.attentional_units,
        })
        return config


def _as_list(states):
    return states if isinstance(states, (list, tuple)) else [states]
