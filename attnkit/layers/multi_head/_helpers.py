"""Helpers of `MultiHeadAttention`: projections, masks, checks, several axes.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H key head dim, Hv value head dim, G = N // K.
"""

import string

from keras import ops

from attnkit import _checks

IMPLEMENTATIONS = (None,) + _checks.IMPLEMENTATIONS


def projection_equation(free_dims, bound_dims, output_dims):
    """keras MHA's einsum for a projection: (equation, bias axes, rank)."""
    letters = string.ascii_lowercase
    free = letters[:free_dims]
    bound = letters[free_dims: free_dims + bound_dims]
    out = letters[free_dims + bound_dims: free_dims + bound_dims + output_dims]
    return f"{free}{bound},{bound}{out}->{free}{out}", out, free_dims + output_dims


def attention_equations(rank, axes):
    """keras's einsum equations for attention over `axes` of rank-`rank`
    projected tensors `(B, <dims>, heads, H)`: (query-key dot product, weights
    times values). The layer computes through `attnkit.ops`; these are for
    code written against keras's layer that reads its `_dot_product_equation`
    or `_combine_equation`."""
    letters = string.ascii_lowercase
    target = letters[:rank]
    source = list(target)
    fresh = iter(letters[rank:])
    for i in sorted(axes):
        source[i] = next(fresh)
    source = "".join(source)
    batch = [i for i in range(rank - 1) if i not in axes]  # the heads axis included
    product = "".join([target[i] for i in batch] + [target[i] for i in axes]
                      + [source[i] for i in axes])
    return f"{source},{target}->{product}", f"{product},{source}->{target}"


def output_spec_shape(rank, last_dims):
    return [None] * (rank - len(last_dims)) + list(last_dims)


def check_key_value_shapes(value_shape, key_shape):
    if tuple(value_shape[1:-1]) != tuple(key_shape[1:-1]):
        raise ValueError(
            "All dimensions of `value` and `key`, except the last one, "
            f"must be equal. Received: value_shape={tuple(value_shape)} and "
            f"key_shape={tuple(key_shape)}."
        )


def layer_mask(name, mask, rank_target):
    """A keras-layout mask or bias made rank 4: 2D `(T, S)`, 3D `(B, T, S)`
    (the head axis inserted, as keras does), 4D `(B, N, T, S)`."""
    if mask is None:
        return None
    mask = ops.convert_to_tensor(mask)
    rank = len(mask.shape)
    if rank not in (2, 3, 4):
        raise ValueError(
            f"`{name}` must be (T, S), (B, T, S) or (B, N, T, S). Received: "
            f"{name}.shape={tuple(mask.shape)}."
        )
    if rank == 2:
        mask = mask[None, None]
    elif rank == 3:
        mask = ops.expand_dims(mask, 1)
    _checks.check_broadcast(name, mask, rank_target)
    return mask


def merge_layer_masks(query_mask, value_mask, key_mask, attention_mask, target):
    """AND of the keras masks as one bool mask broadcastable to `target`
    `(B, N, T, S)`, or None. True = may attend; as in keras, a mask of any
    dtype attends where it is nonzero (float 0/1 masks are common)."""
    parts = []
    if attention_mask is not None:
        parts.append(layer_mask("attention_mask", as_bool(attention_mask), target))
    if query_mask is not None:
        query_mask = ops.convert_to_tensor(query_mask)
        _check_rank2("query_mask", query_mask, (target[0], target[2]), "(B, T)")
        parts.append(query_mask[:, None, :, None])  # (B, 1, T, 1)
    for name, mask in (("value_mask", value_mask), ("key_mask", key_mask)):
        if mask is not None:
            mask = ops.convert_to_tensor(mask)
            _check_rank2(name, mask, (target[0], target[3]), "(B, S)")
            parts.append(mask[:, None, None, :])  # (B, 1, 1, S)
    merged = None
    for part in parts:
        part = ops.cast(part, "bool")
        merged = part if merged is None else ops.logical_and(merged, part)
    return merged


def as_bool(mask):
    """A keras layer mask as bool: nonzero = may attend, whatever its dtype."""
    mask = ops.convert_to_tensor(mask)
    return mask if mask.dtype == "bool" else ops.not_equal(mask, 0)


def check_output_shape(output_shape):
    """keras's `output_shape` forms (an int, a tuple or list of ints, None)
    as a tuple or None; anything else is keras's `ValueError`."""
    if output_shape is None or (isinstance(output_shape, (tuple, list)) and not output_shape):
        return None
    dims = (output_shape,) if _checks.is_int(output_shape) else output_shape
    try:
        dims = tuple(dims)
    except TypeError:
        dims = None
    if dims is None or not all(_checks.is_int(d) and d > 0 for d in dims):
        raise ValueError(
            f"Invalid `output_shape`: {output_shape!r}. When specified, the "
            "`output_shape` should be of type tuple, list, or int (positive "
            "output sizes).")
    return tuple(int(d) for d in dims)


def _check_rank2(name, mask, expected, layout):
    shape = tuple(mask.shape)
    ok = len(shape) == 2 and all(
        a is None or b is None or a == b for a, b in zip(shape, expected))
    if not ok:
        hint = "" if name == "query_mask" else (
            " With a cache, key padding goes into `attention_mask` (B, T, S_max).")
        raise ValueError(
            f"`{name}` must be {layout} = {expected}. Received: "
            f"{name}.shape={shape}.{hint}"
        )


def check_cache(cache, batch, kv_heads, head_dim, value_dim):
    if len(cache.shape) != 5 or cache.shape[1] != 2:
        raise ValueError(
            "`cache` must be (B, 2, S_max, K, H) (keys then values, as "
            f"keras_hub's CachedMultiHeadAttention). Received: cache.shape="
            f"{tuple(cache.shape)}."
        )
    expected = (batch, 2, None, kv_heads, head_dim)
    for got, want in zip(cache.shape, expected):
        if got is not None and want is not None and got != want:
            raise ValueError(
                f"`cache` must be (B, 2, S_max, K, H) = {expected}. "
                f"Received: cache.shape={tuple(cache.shape)}."
            )
    if value_dim != head_dim:
        raise ValueError(
            "A cache holds keys and values in one tensor and needs "
            f"value_dim == key_dim. Received: key_dim={head_dim}, "
            f"value_dim={value_dim}."
        )


class AxesLayout:
    """Flattens attention over several axes into `(B', T', N, H)` and back.

    Projected tensors are `(<dims>, heads, H)`; the attention axes are
    gathered (in order) into one sequence axis and every other axis into the
    batch, as keras's einsum equations treat them.
    """

    def __init__(self, rank, attention_axes):
        self.axes = tuple(attention_axes)
        self.batch = tuple(i for i in range(rank - 2) if i not in self.axes)
        self.perm = self.batch + self.axes + (rank - 2, rank - 1)
        self.inverse = tuple(self.perm.index(i) for i in range(rank))

    def flatten(self, x):
        x = ops.transpose(x, self.perm)
        shape = ops.shape(x)
        nb, na = len(self.batch), len(self.axes)
        b = _product(shape[:nb])
        t = _product(shape[nb: nb + na])
        return ops.reshape(x, (b, t) + tuple(shape[-2:])), shape

    def unflatten(self, out, shape):
        """`out` `(B', T', N, Hv)` back to the layout of `shape`."""
        out = ops.reshape(out, tuple(shape[:-1]) + (out.shape[-1],))
        return ops.transpose(out, self.inverse)

    def batch_shape(self, shape):
        return tuple(shape[i] for i in self.batch)

    def attention_shape(self, shape):
        return tuple(shape[i] for i in self.axes)


def _product(dims):
    out = 1
    for d in dims:
        out = out * d
    return out
