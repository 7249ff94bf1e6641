"""PositionEmbedding: a learned absolute position table.

Shape legend: B batch, T length, D features.
"""

import keras
from keras import ops

from attnkit._checks import check_positive_int
from attnkit.layers.positions.sinusoidal_position_encoding import _check_rank3


@keras.saving.register_keras_serializable(package="attnkit")
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute position embeddings to add to the inputs.

    Args:
        sequence_length: the longest sequence (rows of the table).
        initializer: the initializer of the `(sequence_length, D)` table.
        regularizer: the regularizer of the table.

    Call arguments:
        inputs: `(B, T, D)`; only its shape is used.
        start_index: position of the first step (an int or scalar tensor).
            `start_index + T` must not exceed `sequence_length`.

    Returns:
        `(B, T, D)` embeddings; add them to the inputs. The inputs' keras
        mask is passed on.

    Example:

        >>> tokens = keras.random.normal((2, 5, 16))
        >>> x = tokens + attnkit.layers.PositionEmbedding(32)(tokens)
        >>> tuple(x.shape)
        (2, 5, 16)
    """

    def __init__(self, sequence_length: int,
                 initializer: str | keras.initializers.Initializer = "glorot_uniform",
                 regularizer: str | keras.regularizers.Regularizer | None = None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("sequence_length", sequence_length)
        self.sequence_length = sequence_length
        self.initializer = keras.initializers.get(initializer)
        self.regularizer = keras.regularizers.get(regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        _check_rank3(input_shape)
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.sequence_length, input_shape[-1]),
            initializer=self.initializer, regularizer=self.regularizer)

    def call(self, inputs, start_index=0):
        _check_rank3(inputs.shape)
        t, d = inputs.shape[1], inputs.shape[-1]
        if isinstance(start_index, int) and t is not None \
                and start_index + t > self.sequence_length:
            raise ValueError(
                f"Positions {start_index}..{start_index + t - 1} exceed "
                f"sequence_length={self.sequence_length}."
            )
        t = ops.shape(inputs)[1]
        rows = ops.slice(ops.convert_to_tensor(self.embeddings), (start_index, 0), (t, d))  # (T, D)
        return ops.broadcast_to(ops.cast(rows, inputs.dtype)[None], ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({
            "sequence_length": self.sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
            "regularizer": keras.regularizers.serialize(self.regularizer),
        })
        return config
