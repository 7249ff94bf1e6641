"""Which blocks of an attention call can see anything: the block mask.

Shape legend: B batch, N query heads, T query length, S key length; the
queries are cut into `nq` blocks of `t`, the keys into `nkv` blocks of `s`.

A block (i, j) is *empty* when no query of block i may attend to any key of
block j (for every batch row and head): the chunked path never computes it.
It is *full* when every query of the block may attend to every key: the
chunked path computes it without the elementwise mask. Otherwise it is
*partial*. Each mask the core knows says which blocks it leaves empty or
full from its own parameters (`MaskMod.block_visibility`), at the cost of a
few operations per block, never a `(T, S)` tensor; a mask function without
that method is evaluated one block row at a time.

Combining masks: a block is empty when any component says it is empty
(an AND of "something visible" is a safe over-estimate) and full when every
component says it is full; a block the estimate calls partial is always
computed with the exact elementwise mask, so the estimate decides speed,
never values.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

from attnkit import _backends

EMPTY, PARTIAL, FULL = 0, 1, 2


class Geometry:
    """The block grid of one call: sizes, positions and an array namespace.

    `xp` is NumPy when every position is a Python int (the grid is then
    static: loops run over known lists), else `keras.ops`.
    """

    def __init__(self, t_total, s_total, t_block, s_block, q_offset, batch, num_heads):
        self.t_total, self.s_total = t_total, s_total
        self.t_block, self.s_block = t_block, s_block
        self.nq = -(-t_total // t_block)
        self.nkv = -(-s_total // s_block)
        self.batch, self.num_heads = batch, num_heads
        self.q_offset = q_offset
        self.static = isinstance(q_offset, (int, np.integer))
        self.xp = np if self.static else ops
        first = np.arange(self.nq) * t_block
        last = np.minimum(first + t_block, t_total) - 1  # real queries only
        offset = int(q_offset) if self.static else ops.cast(q_offset, "int32")
        self.q_lo = (first + offset).reshape(-1, 1) if self.static else \
            ops.reshape(ops.convert_to_tensor(first, "int32") + offset, (-1, 1))
        self.q_hi = (last + offset).reshape(-1, 1) if self.static else \
            ops.reshape(ops.convert_to_tensor(last, "int32") + offset, (-1, 1))
        kv_first = np.arange(self.nkv) * s_block
        self.kv_lo = kv_first.reshape(1, -1)
        self.kv_hi = (np.minimum(kv_first + s_block, s_total) - 1).reshape(1, -1)
        if not self.static:
            self.kv_lo, self.kv_hi = (ops.convert_to_tensor(x, "int32")
                                      for x in (self.kv_lo, self.kv_hi))

    @property
    def key_padding(self):
        """Keys added to fill the last key block (hidden from every query)."""
        return self.nkv * self.s_block - self.s_total

    def rows(self):
        """Absolute positions of the queries `(nq, t)` (past T: beyond the
        last real query) and which are real."""
        grid = np.arange(self.nq * self.t_block).reshape(self.nq, self.t_block)
        real = grid < self.t_total
        if self.static:
            return grid + int(self.q_offset), real
        return ops.convert_to_tensor(grid, "int32") + ops.cast(self.q_offset, "int32"), real

    def cols(self):
        """Key positions `(nkv, s)` and which are real keys."""
        grid = np.arange(self.nkv * self.s_block).reshape(self.nkv, self.s_block)
        return grid, grid < self.s_total


@dataclasses.dataclass
class Visibility:
    """`(any, all)` per block, each broadcastable to `(nq, nkv)` (a leading
    batch axis allowed): whether some, and whether every, pair is visible."""

    any: Any
    all: Any


def and_all(parts, xp):
    """Visibility of several masks ANDed together."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    any_, all_ = parts[0].any, parts[0].all
    for part in parts[1:]:
        any_ = xp.logical_and(any_, part.any)
        all_ = xp.logical_and(all_, part.all)
    return Visibility(any_, all_)


def or_all(parts, xp):
    """Visibility of several masks ORed together (None: unknown)."""
    if any(p is None for p in parts):
        return None
    any_, all_ = parts[0].any, parts[0].all
    for part in parts[1:]:
        any_ = xp.logical_or(any_, part.any)
        all_ = xp.logical_or(all_, part.all)
    return Visibility(any_, all_)


def causal(geometry):
    """Query q sees keys k <= q."""
    g, xp = geometry, geometry.xp
    return Visibility(xp.greater_equal(g.q_hi, g.kv_lo), xp.greater_equal(g.q_lo, g.kv_hi))


def window(geometry, width, is_causal):
    """`q - width < k` (causal) or `|q - k| < width`."""
    g, xp = geometry, geometry.xp
    nearest = xp.subtract(g.q_lo, g.kv_hi)  # the smallest q - k of each block
    farthest = xp.subtract(g.q_hi, g.kv_lo)  # the largest
    if is_causal:  # the causal part itself is `causal`; here q - k < width
        return Visibility(xp.less(nearest, width), xp.less(farthest, width))
    gap = xp.maximum(xp.maximum(nearest, xp.negative(farthest)), 0)
    widest = xp.maximum(xp.abs(nearest), xp.abs(farthest))
    return Visibility(xp.less(gap, width), xp.less(widest, width))


def key_padding(geometry):
    """The chunked path's own padded keys: the last key block is never full."""
    g = geometry
    if not g.key_padding:
        return None
    not_last = np.arange(g.nkv).reshape(1, -1) < g.nkv - 1
    return Visibility(np.ones((1, g.nkv), bool), not_last)


def dense_mask(geometry, mask):
    """Visibility of a bool mask broadcastable to (B, N, T, S)."""
    g = geometry
    b, n, t, s = mask.shape
    any_, all_ = mask, mask
    if t != 1:
        pad = g.nq * g.t_block - t
        any_ = _reduce(any_, 2, g.nq, g.t_block, pad, False, ops.any)
        all_ = _reduce(all_, 2, g.nq, g.t_block, pad, True, ops.all)
    if s != 1:
        pad = g.nkv * g.s_block - s
        any_ = _reduce(any_, 3, g.nkv, g.s_block, pad, False, ops.any)
        all_ = _reduce(all_, 3, g.nkv, g.s_block, pad, True, ops.all)
    # (B, N, nq or 1, nkv or 1) -> (B, nq or 1, nkv or 1): the heads share the blocks.
    return Visibility(ops.any(any_, axis=1), ops.all(all_, axis=1))


def _reduce(x, axis, blocks, size, pad, fill, reduce):
    """`x` reduced over blocks of `size` along `axis` (padded with `fill`)."""
    if pad:
        widths = [(0, 0)] * 4
        widths[axis] = (0, pad)
        x = ops.pad(x, widths, constant_values=fill)
    shape = list(ops.shape(x))
    shape[axis:axis + 1] = [blocks, size]
    return reduce(ops.reshape(x, shape), axis=axis + 1)


def documents(geometry, q_table, kv_table):
    """Visibility of document ids: `q_table` `(B, L)` gives the document of
    each absolute query position, `kv_table` `(B, S')` that of each key; a
    position outside its table sees nothing. Conservative where a block
    spans several documents (ids compared as ranges)."""
    g = geometry
    positions, real_rows = g.rows()
    q_min, q_max, q_some, q_every = _document_ranges(q_table, positions, real_rows)
    cols, real_cols = g.cols()
    k_min, k_max, k_some, k_every = _document_ranges(kv_table, cols, real_cols)
    q_min, q_max = q_min[:, :, None], q_max[:, :, None]  # (B, nq, 1)
    k_min, k_max = k_min[:, None, :], k_max[:, None, :]  # (B, 1, nkv)
    overlap = ops.logical_and(ops.less_equal(q_min, k_max), ops.less_equal(k_min, q_max))
    some = ops.logical_and(q_some[:, None], k_some[None, :])
    one = ops.logical_and(ops.equal(q_min, q_max), ops.equal(k_min, k_max))
    same = ops.logical_and(one, ops.equal(q_min, k_min))
    every = ops.logical_and(q_every[:, None], k_every[None, :])
    return Visibility(ops.logical_and(overlap, some), ops.logical_and(same, every))


def _document_ranges(table, positions, real):
    """Per block of `positions` `(nb, size)` (`real` marks those that
    count): the smallest and largest id `(B, nb)`, whether some and whether
    every real position lies inside the table `(nb,)`."""
    length = table.shape[1]
    table = ops.cast(table, "int32")
    inside = ops.logical_and(ops.logical_and(ops.greater_equal(positions, 0),
                                             ops.less(positions, length)), real)
    ids = ops.take(table, ops.clip(positions, 0, length - 1), axis=1)  # (B, nb, size)
    big = np.iinfo("int32").max
    low = ops.min(ops.where(inside, ids, big), axis=-1)
    high = ops.max(ops.where(inside, ids, -big), axis=-1)
    every = ops.all(ops.logical_or(inside, np.logical_not(real)), axis=-1)
    return low, high, ops.any(inside, axis=-1), every


def of_mask_mod(geometry, mask_mod):
    """A mask function's block visibility: its own, or evaluated."""
    own = getattr(mask_mod, "block_visibility", None)
    visibility = own(geometry) if own is not None else None
    return visibility if visibility is not None else evaluated(geometry, mask_mod)


def namespace_of(parts):
    """NumPy when every part is a NumPy array, else `keras.ops`."""
    arrays = [x for p in parts for x in (p.any, p.all)]
    return np if all(isinstance(x, (np.ndarray, np.bool_, bool)) for x in arrays) else ops


def evaluated(geometry, mask_mod):
    """Visibility of a mask function evaluated block row by block row:
    exact, holding `(B, N, t, S)` at a time."""
    g = geometry
    cols, real_cols = g.cols()
    kv_idx = ops.reshape(ops.convert_to_tensor(cols.reshape(-1), "int32"), (1, 1, 1, -1))
    real_cols = ops.convert_to_tensor(real_cols.reshape(1, 1, 1, -1))
    b_idx = ops.reshape(ops.arange(max(g.batch or 1, 1), dtype="int32"), (-1, 1, 1, 1))
    h_idx = ops.reshape(ops.arange(g.num_heads, dtype="int32"), (1, -1, 1, 1))
    positions, real_rows = g.rows()
    anys, alls = [], []
    for i in range(g.nq):
        q_idx = ops.reshape(ops.convert_to_tensor(positions[i], "int32"), (1, 1, -1, 1))
        seen = ops.cast(mask_mod(b_idx, h_idx, q_idx, kv_idx), "bool")
        rows = ops.convert_to_tensor(real_rows[i].reshape(1, 1, -1, 1))
        shape = (-1, g.nkv, g.s_block)
        # (B?, N?, t, nkv * s): a pair counts only between a real query and key.
        hits = ops.logical_and(ops.logical_and(seen, rows), real_cols)
        hides = ops.logical_and(ops.logical_not(seen), ops.logical_and(rows, real_cols))
        hits = ops.reshape(ops.any(hits, axis=2), shape)
        hides = ops.reshape(ops.any(hides, axis=2), shape)
        anys.append(ops.any(hits, axis=(0, 2)))
        alls.append(ops.logical_not(ops.any(hides, axis=(0, 2))))
    return Visibility(ops.stack(anys), ops.stack(alls))


def combined(visibilities, geometry):
    """States `(nq, nkv)` (EMPTY, PARTIAL or FULL) of the ANDed visibilities."""
    g = geometry
    parts = [v for v in visibilities if v is not None]
    if not parts:
        return np.full((g.nq, g.nkv), FULL, "int8")
    concrete = all(_backends.is_concrete(x) for p in parts for x in (p.any, p.all))
    xp = np if concrete else ops
    if concrete:
        parts = [Visibility(_numpy(p.any), _numpy(p.all)) for p in parts]
    joined = and_all(parts, xp)
    any_, all_ = (_batch_reduced(x, xp, reduce) for x, reduce in
                  ((joined.any, xp.any), (joined.all, xp.all)))
    shape = (g.nq, g.nkv)
    any_ = xp.broadcast_to(any_, shape)
    all_ = xp.broadcast_to(all_, shape)
    states = xp.where(any_, xp.where(all_, FULL, PARTIAL), EMPTY)
    return states.astype("int8") if concrete else ops.cast(states, "int32")


def _batch_reduced(x, xp, reduce):
    """A visibility with a leading batch axis, reduced over it."""
    return reduce(x, axis=0) if len(x.shape) == 3 else x


def _numpy(x):
    return np.asarray(_backends.to_numpy(x)) if not isinstance(x, (np.ndarray, bool)) else \
        np.asarray(x)


def of_states(states):
    """The visibility a block mask's states `(nq, nkv)` say."""
    if isinstance(states, np.ndarray):
        return Visibility(states != EMPTY, states == FULL)
    return Visibility(ops.not_equal(states, EMPTY), ops.equal(states, FULL))


class BlockMask:
    """The block structure of a mask, computed once and shared by calls.

    Which pairs of (query block, key block) may see something, and which
    see everything, for one query length, key length and block grid: the
    chunked path computes only the former and skips the elementwise mask
    on the latter. Give it to every attention call (and every layer) of a
    batch as `block_mask=`, so the mask is not evaluated again by each;
    the calls apply its `mask_mod` elementwise inside partial blocks,
    together with their own masks. Build it with
    `attnkit.ops.create_block_mask`.

    Attributes:
        states (Tensor): int `(nq, nkv)`: 0 empty, 1 partial, 2 full.
        mask_mod (Callable | None): the mask function it was made from.
        query_block (int): `t`, queries per block.
        key_block (int): `s`, keys per block.
        q_len (int): `T`, the query length it serves.
        kv_len (int): `S`, the key length it serves.
        q_offset (int | Tensor): the absolute position of the first query.
    """

    def __init__(self, states, mask_mod, query_block, key_block, q_len, kv_len, q_offset=0):
        self.states = states
        self.mask_mod = mask_mod
        self.query_block, self.key_block = int(query_block), int(key_block)
        self.q_len, self.kv_len = int(q_len), int(kv_len)
        self.q_offset = q_offset

    def static_states(self):
        """The states as nested tuples, or None when known only at run time."""
        if not _backends.is_concrete(self.states):
            return None
        return tuple(tuple(int(x) for x in row) for row in _numpy(self.states))

    def computed_fraction(self):
        """The fraction of block pairs computed (not empty)."""
        return float(np.mean(_numpy(self.states) != EMPTY))

    def explain(self):
        """A summary, and for small grids a map (`#` full, `+` partial,
        `.` empty; a row per query block)."""
        states = _numpy(self.states)
        nq, nkv = states.shape
        computed = int(np.sum(states != EMPTY))
        partial = int(np.sum(states == PARTIAL))
        lines = [f"BlockMask: T={self.q_len}, S={self.kv_len}, blocks of "
                 f"{self.query_block} x {self.key_block}: {computed} of {nq * nkv} block "
                 f"pairs computed ({100 * computed / (nq * nkv):.1f}%), {partial} of them "
                 "with the elementwise mask"]
        if nq <= 64 and nkv <= 64:
            lines += ["".join(".+#"[s] for s in row) for row in states]
        return "\n".join(lines)

    def __repr__(self):
        return self.explain().splitlines()[0]


def create_block_mask(mask_mod: Callable, batch: int | None, num_heads: int, q_len: int,
                      kv_len: int, *, q_offset: int = 0, query_block: int | None = None,
                      key_block: int | None = None) -> "BlockMask":
    """The `BlockMask` of `mask_mod` for calls of this shape.

    Computed from the mask's own `block_visibility` where it has one (every
    mask of `attnkit.ops` does: a few operations per block), else by
    evaluating it block row by block row; never as a `(T, S)` tensor at once.

    Args:
        mask_mod: a mask function (`attnkit.ops.causal_mask()`,
            `document_mask(ids)`, an `and_masks` of them, or your own).
        batch: `B`, the batch rows the mask's tables cover (None: any).
        num_heads: `N`, query heads.
        q_len: `T`, queries per call.
        kv_len: `S`, keys per call.
        q_offset: the absolute position of the first query.
        query_block: queries per block (default: the chunked path's).
        key_block: keys per block (default: the chunked path's).

    Returns:
        A `BlockMask`; pass it as `block_mask=` to `attnkit.ops.attention`
        or `attnkit.layers.MultiHeadAttention`.

    Example:

        >>> ids = np.repeat(np.arange(4), 256)[None]  # 4 documents of 256
        >>> mask = attnkit.ops.and_masks(attnkit.ops.causal_mask(),
        ...                              attnkit.ops.document_mask(ids))
        >>> block_mask = attnkit.ops.create_block_mask(mask, 1, 8, 1024, 1024)
        >>> block_mask.computed_fraction()  # 4 of 8 blocks of 512 x 256
        0.5
    """
    from attnkit.ops import _thresholds  # the defaults of the chunked path

    for name, value in (("num_heads", num_heads), ("q_len", q_len), ("kv_len", kv_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}.")
    if not callable(mask_mod):
        raise TypeError(f"`mask_mod` must be a mask function. Received: {mask_mod!r}.")
    t_block = min(query_block or _thresholds.DEFAULT_BLOCKS["query"], q_len)
    s_block = min(key_block or _thresholds.DEFAULT_BLOCKS["key"], kv_len)
    geometry = Geometry(q_len, kv_len, t_block, s_block, q_offset, batch, num_heads)
    states = combined([key_padding(geometry), of_mask_mod(geometry, mask_mod)], geometry)
    return BlockMask(states, mask_mod, t_block, s_block, q_len, kv_len, q_offset)


def check_block_mask(block_mask, q_len, kv_len, q_offset):
    """Refuses a block mask made for calls of another shape."""
    if not isinstance(block_mask, BlockMask):
        raise TypeError("`block_mask` must be an attnkit.ops.BlockMask (from "
                        f"attnkit.ops.create_block_mask). Received: {block_mask!r}.")
    same_offset = not isinstance(q_offset, (int, np.integer)) or \
        not isinstance(block_mask.q_offset, (int, np.integer)) or q_offset == block_mask.q_offset
    if (q_len, kv_len) != (block_mask.q_len, block_mask.kv_len) or not same_offset:
        raise ValueError(
            f"`block_mask` was made for T={block_mask.q_len}, S={block_mask.kv_len}, "
            f"q_offset={block_mask.q_offset}; this call has T={q_len}, S={kv_len}, "
            f"q_offset={q_offset}. Make one with attnkit.ops.create_block_mask for it.")
