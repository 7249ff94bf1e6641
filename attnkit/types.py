"""The names used in attnkit's type hints."""

import typing

Tensor = typing.Any
"""A tensor of the keras backend, a NumPy array, or a symbolic `keras.KerasTensor`
(anything `keras.ops.convert_to_tensor` takes)."""
