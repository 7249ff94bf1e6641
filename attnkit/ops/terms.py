"""The attention-term protocol: what a mask function, a score modifier or a
relative bucketing is, and how one saves and loads.

Every term is a small keras-serializable object (`get_config` /
`from_config`, registered under the package "attnkit", like keras's
initializers), so a model that uses one saves and loads. Plain functions are
accepted wherever a term is; to save one, register it with
`keras.saving.register_keras_serializable`. The terms attnkit ships live by
concept: masks in `attnkit.ops.masks`, score modifiers in
`attnkit.ops.score_mods`, relative buckets in `attnkit.ops.positions`.

Index convention (FlexAttention's, vectorized): int32 tensors broadcasting
against the scores `(B, N, t, s)` of the whole call or of one block:
`b` `(B, 1, 1, 1)`, `h` `(1, N, 1, 1)`, `q_idx` `(1, 1, t, 1)` absolute (the
query offset included), `kv_idx` `(1, 1, 1, s)`.

Shape legend: B batch, N query heads, t / s a block of queries / keys.
"""

from collections.abc import Callable

import keras
from keras import ops

from attnkit.types import Tensor


def register(cls):
    """Registers an attnkit term class with keras under the package "attnkit"."""
    return keras.saving.register_keras_serializable(package="attnkit")(cls)


class Term:
    """Config plumbing shared by the term base classes."""

    # True where the config says everything the term computes (no tensors
    # of its own): compiled graphs are then shared by equal terms.
    _keyed_by_config = False

    def get_config(self):
        return {}

    def cache_key(self):
        """A hashable stand-in for this term in a compiled graph's key, or
        None: its class and config when those say everything it computes."""
        if not self._keyed_by_config:
            return None
        return (type(self).__qualname__, _frozen(self.get_config()))

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        try:
            config = self.get_config()
        except ValueError:  # a term holding a traced tensor has no config
            return f"{type(self).__name__}(...)"
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{type(self).__name__}({args})"


@register
class MaskMod(Term):
    """Base class of mask functions: `mask(b, h, q_idx, kv_idx) -> bool`.

    True = may attend. Subclass it, implement `__call__` with `keras.ops`
    and `get_config`, and register the class with
    `keras.saving.register_keras_serializable` to save models that use it.
    """

    def __call__(self, b, h, q_idx, kv_idx):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__.")

    def check_lengths(self, batch: int, q_end: int | None, kv_len: int):
        """Refuses a call it cannot serve: `batch` rows, queries up to
        absolute position `q_end`, `kv_len` keys (each None when unknown)."""

    def block_visibility(self, geometry):
        """Which blocks of a call this mask leaves empty or full, or None to
        have the chunked path evaluate the function itself block row by
        block row (exact, `(B, N, t, S)` at a time).

        Override it to make a mask of your own cheap to skip over:
        `geometry` has the first and last absolute query position of each
        query block (`q_lo`, `q_hi`, `(nq, 1)`), the first and last key of
        each key block (`kv_lo`, `kv_hi`, `(1, nkv)`) and `xp`, the array
        namespace to compute with (NumPy where the positions are known, else
        `keras.ops`); return an `attnkit.ops.Visibility(any, all)` of bool
        arrays broadcastable to `(nq, nkv)` (or `(B, nq, nkv)`): whether
        some pair of the block may attend (True is always safe) and whether
        every pair may (False is always safe). An answer in the safe
        direction only costs time.
        """
        return None


@register
class ScoreMod(Term):
    """Base class of score modifiers: `score_mod(scores, b, h, q_idx, kv_idx)`.

    Override `__call__` for any change of the scores. A modifier that only
    adds a term computed from the indices overrides `bias(b, h, q_idx,
    kv_idx)` instead: the chunked path then recomputes that term in its
    backward pass and keeps training memory-lean (ALiBi is one).
    `check_heads(num_heads)` may refuse a head count it cannot serve.
    """

    def bias(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor):
        raise NotImplementedError(
            f"{type(self).__name__} must implement __call__ or bias.")

    def __call__(self, scores, b, h, q_idx, kv_idx):
        return scores + ops.cast(self.bias(b, h, q_idx, kv_idx), scores.dtype)

    @property
    def additive(self):
        """True when the modifier is `scores + bias(indices)`."""
        return type(self).__call__ is ScoreMod.__call__

    def check_heads(self, num_heads: int):
        """Raises a ValueError if this modifier cannot serve `num_heads`."""


def serialize_term(term: Callable | None, name: str = "term"):
    """A term's keras config, or a ValueError saying how to make it savable.

    Objects of registered classes (and of keras's own) and registered
    functions serialize; an unregistered class or function would save a
    file that cannot load, so it is refused here, at save time. attnkit's
    layers serialize every object a user hands them (terms, position
    schemes, a decoder's cell and attention) through this.
    """
    if term is None:
        return None
    target = term if callable(term) and not hasattr(term, "get_config") else type(term)
    registered = keras.saving.get_registered_name(target)
    builtin = target is not term and target.__module__.split(".")[0] == "keras"
    if not builtin and keras.saving.get_registered_object(registered) is not target:
        what = "function" if target is term else "class"
        hint = (" (a closure cannot be registered: write a class with __call__ and "
                "get_config, or use an attnkit.ops term such as attnkit.ops.alibi)"
                if target is term else "")
        raise ValueError(
            f"`{name}` is the {what} {getattr(target, '__qualname__', target)!r}, "
            "which keras cannot load back from a saved model. Decorate it with "
            f"@keras.saving.register_keras_serializable(package=\"my_package\"){hint}.")
    return keras.saving.serialize_keras_object(term)


def _frozen(value):
    """A config as nested tuples (hashable; plain Python, so TorchDynamo
    traces it where it would not trace `json`)."""
    if isinstance(value, dict):
        return tuple((k, _frozen(value[k])) for k in sorted(value))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def cache_key(term):
    """A hashable stand-in for `term` (a term object or function) in a
    compiled graph's key: its own `cache_key()`, else its identity (the
    cache keeps the term alive, so the identity is not reused)."""
    if term is None:
        return None
    own = getattr(term, "cache_key", None)
    key = own() if callable(own) else None
    return key if key is not None else ("id", getattr(term, "__qualname__", ""), id(term))


def deserialize_term(config: dict | Callable | None):
    """The inverse of `serialize_term`; passes callables, objects with a
    config (an `AttentionSpec`) and None through."""
    if config is None or callable(config) or hasattr(config, "get_config"):
        return config
    return keras.saving.deserialize_keras_object(config)




_MOVED = {  # classes that lived here, by the module they moved to
    **dict.fromkeys(["CausalMask", "SlidingWindowMask", "PaddingMask", "PrefixLMMask",
                     "DocumentMask", "AndMasks", "OrMasks"], "attnkit.ops.masks"),
    **dict.fromkeys(["SoftCap", "ChainedScoreMods", "chain_score_mods", "Alibi",
                     "alibi_slopes"], "attnkit.ops.score_mods"),
    **dict.fromkeys(["RelativeBuckets", "ClippedBuckets", "T5Buckets", "t5_bucket"],
                    "attnkit.ops.positions"),
}


def __getattr__(name):
    if name in _MOVED:
        import importlib

        from attnkit import _moved

        _moved.warn_moved(f"attnkit.ops.terms.{name}", f"{_MOVED[name]}.{name}")
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
