"""Argument helpers shared by the attnkit layers."""

import numbers


def check_positive_int(name, value, allow_none=False):
    """Raises a ValueError naming `name` unless `value` is a positive int."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}.")


def clone_initializer(initializer):
    """A fresh copy: one stateless initializer instance shared by several
    weights would give them the same initial values."""
    return initializer.__class__.from_config(initializer.get_config())
