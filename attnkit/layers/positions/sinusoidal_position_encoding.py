"""SinusoidalPositionEncoding: the fixed absolute encoding of Vaswani et al.

Shape legend: B batch, T length, D features.
"""

import keras
from keras import ops

from attnkit.ops import positions as P


@keras.saving.register_keras_serializable(package="attnkit")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """Absolute sinusoidal encodings to add to the inputs (no weights).

    Feature `2f` is `sin(pos * w ** (-2f / D))` and feature `2f + 1` the
    cosine of the same angle (Vaswani et al. 2017, section 3.5).

    Args:
        max_wavelength: `w`, 10000 in the paper.

    Call arguments:
        inputs: `(B, T, D)`; only its shape and dtype are used.
        start_index: position of the first step (an int or scalar tensor,
            e.g. the cache index when decoding).

    Returns:
        `(B, T, D)` encodings in the inputs' dtype; add them to the inputs.
        The inputs' keras mask is passed on.

    Example:

        >>> tokens = keras.random.normal((2, 5, 16))
        >>> x = tokens + attnkit.layers.SinusoidalPositionEncoding()(tokens)
        >>> tuple(x.shape)
        (2, 5, 16)
    """

    def __init__(self, max_wavelength: float = 10000, **kwargs):
        super().__init__(**kwargs)
        P.check_max_wavelength(max_wavelength)
        self.max_wavelength = max_wavelength
        self.supports_masking = True

    def call(self, inputs, start_index=0):
        _check_rank3(inputs.shape)
        t, d = ops.shape(inputs)[1], inputs.shape[-1]
        positions = ops.cast(ops.arange(t) + start_index, "float32")
        feature = ops.arange(d)
        rates = ops.power(float(self.max_wavelength),
                          -ops.cast(2 * (feature // 2), "float32") / float(d))
        angles = positions[:, None] * rates[None, :]  # (T, D)
        encoding = ops.where(ops.equal(feature % 2, 0), ops.sin(angles), ops.cos(angles))
        return ops.broadcast_to(ops.cast(encoding, inputs.dtype)[None], ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["max_wavelength"] = self.max_wavelength
        return config


def _check_rank3(shape):
    if len(shape) != 3:
        raise ValueError(
            f"`inputs` must be (B, T, D). Received: inputs.shape={tuple(shape)}."
        )
