"""Argument checks shared by every attnkit package, run before any computation.

Each raises a `ValueError` or `TypeError` that names the argument, what was
received and what was expected. Shape checks work on static shapes only; a
dimension unknown at trace time (`None`) is skipped rather than guessed.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

import math
import numbers
import warnings

import numpy as np

from keras import backend
from keras import ops

IMPLEMENTATIONS = ("math", "fused", "chunked")


def is_int(value):
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def as_float_tensor(name, x):
    """`x` as a floating tensor (ints are cast to float32), or a TypeError
    naming `name`."""
    x = as_tensor(name, x)
    dtype = backend.standardize_dtype(x.dtype)
    if dtype == "bool" or not backend.is_float_dtype(dtype):
        raise TypeError(f"`{name}` must be a floating tensor. Received dtype {dtype}.")
    return x


def check_same_batch(**shapes):
    """Raises a ValueError naming the tensors unless the known first axes of
    their `shapes` (keyword: name=shape) agree."""
    if len({shape[0] for shape in shapes.values()} - {None}) > 1:
        names = [f"`{name}`" for name in shapes]
        names = ", ".join(names[:-1]) + " and " + names[-1]
        received = ", ".join(f"{name}.shape={tuple(shape)}" for name, shape in shapes.items())
        raise ValueError(f"{names} must have the same batch size. Received: {received}.")


def check_positive_int(name, value, allow_none=False):
    """Raises a ValueError naming `name` unless `value` is a positive int."""
    if value is None and allow_none:
        return
    if not is_int(value) or value <= 0:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(invalid(name, f"`{name}` must be {expected}. Received: {name}={value!r}."))


def invalid(name, detail):
    """keras's wording for a bad constructor argument, then `detail`: users'
    `except` clauses and searches written for keras's layers find ours."""
    return f"Received an invalid value for argument `{name}`: {detail}"


def check_positive_number(name, value, allow_none=False):
    """Raises a ValueError naming `name` unless `value` is a real number > 0."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 \
            or not math.isfinite(value):
        expected = "a finite positive number or None" if allow_none else "a finite positive number"
        raise ValueError(invalid(name, f"`{name}` must be {expected}. Received: {name}={value!r}."))


def renamed_argument(name, value, old_name, old_value):
    """`value`, or `old_value` given under a deprecated name (with a warning)."""
    if old_value is None:
        return value
    if value is not None and value != old_value:
        raise ValueError(
            f"`{old_name}` is the old name of `{name}`; give one. Received: "
            f"{name}={value!r}, {old_name}={old_value!r}.")
    warnings.warn(
        f"`{old_name}` is deprecated; use `{name}` (the same meaning).",
        DeprecationWarning, stacklevel=4)
    return old_value


def check_rate(name, value):
    """Raises a ValueError naming `name` unless `value` is a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}.")


def check_rank(name, x, rank):
    if len(x.shape) != rank:
        raise ValueError(
            f"`{name}` must have rank {rank}. Received: {name}.shape={tuple(x.shape)}."
        )


def static_shape(x):
    """The static shape of a tensor as a tuple of ints or `None` (unknown,
    or symbolic as under JAX shape polymorphism)."""
    return tuple(int(d) if isinstance(d, numbers.Integral) else None for d in x.shape)


def _numeric(dtype):
    """Whether keras takes `dtype` as a bool, int or float (bfloat16 too)."""
    try:
        name = backend.standardize_dtype(dtype)
    except (TypeError, ValueError):
        return False
    return name == "bool" or "int" in name or "float" in name


def as_tensor(name, x, kind="a floating"):
    """`x` as a tensor, or a TypeError naming `name` (not the framework's)."""
    dtype = getattr(x, "dtype", None)
    if isinstance(x, str) or (isinstance(dtype, np.dtype) and not _numeric(dtype)):
        raise TypeError(
            f"`{name}` must be {kind} tensor. Received: {type(x).__name__}"
            f"{'' if dtype is None else f' of dtype {dtype}'}.")
    try:
        return ops.convert_to_tensor(x)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{name}` must be {kind} tensor. Received: {type(x).__name__} "
            f"({error}).") from error


def check_layer_call(args, kwargs, tensors, keyword_tensors=(), masks=()):
    """Checks a layer call's arguments before keras's own call machinery sees
    them (it would fail on None, strings or arrays of strings with its own
    message). `tensors` names the leading call arguments, in order (given
    by position or keyword), `keyword_tensors` others read from `kwargs`;
    each must be a floating tensor, and may be None only where its name ends
    in "?". `masks` (read from `kwargs`) must be boolean or numeric when
    given. Raises a TypeError naming the argument."""
    given = {**kwargs, **dict(zip((t.rstrip("?") for t in tensors), args))}
    for name in tuple(tensors) + tuple(keyword_tensors):
        optional = name.endswith("?")
        name = name.rstrip("?")
        x = given.get(name)
        if x is None:
            if optional:
                continue
            raise TypeError(f"`{name}` must be a tensor. Received: {name}=None.")
        dtype = getattr(x, "dtype", None)
        if dtype is None or not _numeric(dtype):
            dtype = as_tensor(name, x).dtype  # raises on what is not numeric
        if not backend.is_float_dtype(backend.standardize_dtype(dtype)):
            raise TypeError(
                f"`{name}` must be a floating tensor. Received dtype {dtype}.")
    for name in masks:
        if given.get(name) is not None:
            as_tensor(name, given[name], "a boolean or numeric")


def check_qkv(query, key, value):
    for name, x in (("query", query), ("key", key), ("value", value)):
        if len(x.shape) != 4:
            layout = "(B, T, N, H)" if name == "query" else "(B, S, K, H)"
            raise ValueError(
                f"`{name}` must be rank 4 with layout {layout}. "
                f"Received: {name}.shape={tuple(x.shape)}."
            )
        if not backend.is_float_dtype(x.dtype):
            raise TypeError(
                f"`{name}` must be a floating tensor. Received dtype "
                f"{x.dtype}."
            )
    qb, _, n, h = static_shape(query)
    kb, ks, kk, kh = static_shape(key)
    vb, vs, vk, _ = static_shape(value)
    _equal("batch size (axis 0)", query=qb, key=kb, value=vb)
    _equal("key/value length (axis 1)", key=ks, value=vs)
    _equal("key/value heads (axis 2)", key=kk, value=vk)
    _equal("head dim (axis 3)", query=h, key=kh)
    if n is not None and kk is not None and (kk == 0 or n % kk):
        raise ValueError(
            "The number of query heads must be a multiple of the number of "
            f"key/value heads. Received: query heads N={n} (query.shape="
            f"{tuple(query.shape)}), key/value heads K={kk} (key.shape="
            f"{tuple(key.shape)})."
        )


def _equal(what, **dims):
    known = {k: v for k, v in dims.items() if v is not None}
    if len(set(known.values())) > 1:
        got = ", ".join(f"{k}={v}" for k, v in known.items())
        raise ValueError(f"Mismatched {what}: {got}. They must be equal.")


def check_broadcast(name, x, target, legend="(B, N, T, S)"):
    """Check that `x` broadcasts to `target` (`legend`) by NumPy rules."""
    shape = static_shape(x)
    if len(shape) > len(target):
        raise ValueError(
            f"`{name}` must have rank at most {len(target)}, broadcastable to "
            f"{legend}={target}. Received: {name}.shape={shape}."
        )
    for have, want in zip(reversed(shape), reversed(target)):
        if have is None or want is None or have in (1, want):
            continue
        raise ValueError(
            f"`{name}` of shape {shape} cannot broadcast to {legend}="
            f"{target}. Each of its trailing axes must be 1 or equal to the "
            "matching axis."
        )


def check_mask_dtype(mask):
    dtype = backend.standardize_dtype(mask.dtype)
    if dtype != "bool" and "int" not in dtype:
        raise TypeError(
            "`mask` must be boolean (True = may attend) or integer 0/1. "
            f"Received dtype {dtype}; for an additive float mask use `bias`."
        )


def check_bias_dtype(bias):
    if not backend.is_float_dtype(bias.dtype):
        raise TypeError(
            "`bias` must be a floating tensor added to the logits. Received "
            f"dtype {bias.dtype}; for a boolean mask use `mask`."
        )


NORMALIZERS = ("softmax", "sparsemax", "entmax15")


def check_options(
    *,
    scale,
    q_offset,
    sliding_window,
    score_mod,
    mask_mod,
    logit_soft_cap,
    dropout_rate,
    implementation,
    normalizer="softmax",
    weights_mod=None,
):
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, numbers.Real)):
        raise TypeError(f"`scale` must be a number. Received: {scale!r}.")
    if scale is not None and not math.isfinite(scale):
        raise ValueError(f"`scale` must be finite. Received: scale={scale!r}.")
    check_positive_int("sliding_window", sliding_window, allow_none=True)
    check_q_offset(q_offset)
    for name, fn in (("score_mod", score_mod), ("mask_mod", mask_mod),
                     ("weights_mod", weights_mod)):
        if fn is not None and not callable(fn):
            raise TypeError(
                f"`{name}` must be callable or None. Received: {fn!r}."
            )
    check_positive_number("logit_soft_cap", logit_soft_cap, allow_none=True)
    check_rate("dropout_rate", dropout_rate)
    if implementation is not None and implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` must be None or one of {IMPLEMENTATIONS}. "
            f"Received: {implementation!r}."
        )
    check_normalizer(normalizer)


def check_q_offset(q_offset):
    if isinstance(q_offset, bool) or not (
        isinstance(q_offset, numbers.Integral) or _is_int_scalar(q_offset)
    ):
        raise TypeError(
            "`q_offset` must be an integer or a scalar integer tensor. "
            f"Received: {q_offset!r}."
        )


def check_normalizer(normalizer):
    if normalizer not in NORMALIZERS:
        raise ValueError(
            f"`normalizer` must be one of {NORMALIZERS}. Received: normalizer={normalizer!r}.")


def _is_int_scalar(x):
    if not ops.is_tensor(x) and not hasattr(x, "dtype"):
        return False
    dtype = backend.standardize_dtype(x.dtype)
    return "int" in dtype and len(x.shape) == 0
