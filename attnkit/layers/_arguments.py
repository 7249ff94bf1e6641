"""Helpers shared by the attnkit layers."""


def clone_initializer(initializer):
    """A fresh copy: one stateless initializer instance shared by several
    weights would give them the same initial values."""
    return initializer.__class__.from_config(initializer.get_config())
