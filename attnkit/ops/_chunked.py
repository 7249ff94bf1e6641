"""Memory-lean attention: an online softmax over the blocks a mask leaves.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim; t and s are block sizes.

Queries are cut into blocks of at most `query_block`, keys into blocks of
`key_block`. The block mask (`_blockmask`) says which (query block, key
block) pairs are empty (never computed), full (computed without the
elementwise mask) or partial. For each query block a loop walks its full
key blocks, then its partial ones, keeping a running maximum `m`,
normaliser `l` and output `acc` (Milakov & Gimelshein 2018; Rabe & Staats
2021); the backward walks, for each key block, the query blocks that see it
(FlashAttention-2). The scores held at once are (B, N, t, s).
"""

import contextlib
import dataclasses
from typing import Any

import numpy as np
from keras import ops

from attnkit import _backends
from attnkit.ops import _blockmask
from attnkit.ops import _blocks
from attnkit.ops import _plan
from attnkit.ops import _thresholds
from attnkit.ops import masks
from attnkit.ops import terms

_BLOCKS = {"query": None, "key": None}  # set by `block_sizes`


@contextlib.contextmanager
def block_sizes(query: int | None = None, key: int | None = None):
    """Temporarily set the chunked path's block sizes.

    Args:
        query: queries per block (default 512; 256 with relative positions).
        key: keys per block (default 256; 256 with relative positions).

    Example:

        >>> q = keras.random.normal((1, 100, 2, 8))
        >>> with attnkit.ops.block_sizes(query=64, key=32):
        ...     out = attnkit.ops.attention(q, q, q, implementation="chunked")
        >>> tuple(out.shape)
        (1, 100, 2, 8)
    """
    for name, size in (("query", query), ("key", key)):
        if size is not None and (not isinstance(size, int) or size <= 0):
            raise ValueError(
                f"`{name}` block size must be a positive int. Received: {size!r}."
            )
    saved = dict(_BLOCKS)
    _BLOCKS.update({k: v for k, v in (("query", query), ("key", key)) if v})
    try:
        yield dict(_BLOCKS)
    finally:
        _BLOCKS.clear()
        _BLOCKS.update(saved)


def sizes(plan):
    """(query block, key block) for `plan`: its block mask's, `block_sizes`,
    else the defaults."""
    if plan.block_mask is not None:
        return plan.block_mask.query_block, plan.block_mask.key_block
    blocks = _thresholds.DEFAULT_BLOCKS if plan.relative is None else _thresholds.RELATIVE_BLOCKS
    t = _BLOCKS["query"] or blocks["query"]
    s = _BLOCKS["key"] or blocks["key"]
    return min(t, plan.query.shape[1]), min(s, plan.key.shape[1])


def _cut(x, axis, start, size):
    """Slice `size` entries from `start` on `axis` unless that axis is 1."""
    if x is None or x.shape[axis] == 1:  # a broadcast axis: nothing to cut
        return x
    starts = [0] * 4
    starts[axis] = start
    shape = list(ops.shape(x))
    shape[axis] = size
    return ops.slice(x, starts, shape)


def _first(x, axis, size):
    """The first `size` entries of `x` on `axis` (no copy when that is all)."""
    if x.shape[axis] == size:
        return x
    return _cut(x, axis, 0, size)


@dataclasses.dataclass
class Lists:
    """For each of `n` blocks on one side, the blocks of the other side to
    visit: `full` ones (no elementwise mask) and `partial` ones. Counts
    `(n,)` and indices `(n, m)` (valid entries first): arrays (or, for
    Python's loops, lists) when the mask is known now, else tensors."""

    full_count: Any
    full_index: Any
    partial_count: Any
    partial_index: Any

    @property
    def static(self):
        return isinstance(self.full_count, (np.ndarray, list))


def _lists(states):
    """`Lists` along the last axis of `states` (EMPTY, PARTIAL or FULL)."""
    if isinstance(states, tuple):  # Python's own: nested tuples of states
        out = []
        for kind in (_blockmask.FULL, _blockmask.PARTIAL):
            rows = [[j for j, state in enumerate(row) if state == kind] for row in states]
            out += [[len(r) for r in rows], rows]
        return Lists(*out)
    n = states.shape[-1]
    if isinstance(states, np.ndarray):
        order = np.arange(n)
        out = []
        for kind in (_blockmask.FULL, _blockmask.PARTIAL):
            hit = states == kind
            # stable: the visited blocks first, in order, then the rest
            index = np.argsort(np.where(hit, order, n + order), axis=-1, kind="stable")
            out += [hit.sum(-1), index.astype("int32")]
        return Lists(*out)
    order = ops.arange(n, dtype="int32")
    out = []
    for kind in (_blockmask.FULL, _blockmask.PARTIAL):
        hit = ops.equal(states, kind)
        index = ops.argsort(ops.where(hit, order, n + order), axis=-1)
        out += [ops.sum(ops.cast(hit, "int32"), axis=-1), ops.cast(index, "int32")]
    return Lists(*out)


@dataclasses.dataclass
class Schedule:
    """The block grid of a call and which blocks each loop visits."""

    t_block: int
    s_block: int
    nq: int
    nkv: int
    states: Any  # (nq, nkv): an array, nested tuples or a tensor
    by_query: Lists  # per query block: its key blocks
    by_key: Lists  # per key block: its query blocks

    @property
    def computed_fraction(self):
        """The fraction of blocks computed (None when known only at run time)."""
        if not isinstance(self.states, (np.ndarray, tuple)):
            return None
        return float(np.mean(np.asarray(self.states) != _blockmask.EMPTY))


def schedule(plan, dense=False):
    """The plan's block grid and visit lists. `dense` visits every block
    not known empty before the data: for autodiff through the loops, whose
    trip counts must be known then."""
    t_block, s_block = sizes(plan)
    t_total, s_total = plan.query.shape[1], plan.key.shape[1]
    nq, nkv = -(-t_total // t_block), -(-s_total // s_block)
    if _backends.python_traced():
        # TorchDynamo would trace the NumPy of the block mask: it runs
        # once, now, and its answer is a constant of the compiled graph.
        keyed = terms.cache_key(plan.mask_mod)
        batch = plan.query.shape[0]
        states = _STATES_KNOWN_NOW(
            t_total, s_total, t_block, s_block, batch if isinstance(batch, int) else None,
            plan.num_heads, plan.q_offset if isinstance(plan.q_offset, int) else None,
            plan.is_causal, plan.sliding_window,
            plan.mask is not None or plan.documents is not None,
            plan.mask_mod if keyed is None or keyed[0] != "id" else False,
            None if plan.block_mask is None else plan.block_mask.static_states())
    else:
        geometry = _blockmask.Geometry(t_total, s_total, t_block, s_block, plan.q_offset,
                                       plan.query.shape[0], plan.num_heads)
        states = _blockmask.combined(visibilities(plan, geometry), geometry)
        if not isinstance(states, np.ndarray) and (dense or not _backends.dynamic_loops()):
            states = np.full((nq, nkv), _blockmask.PARTIAL, "int8")
        if isinstance(states, np.ndarray) and _backends.python_loops():
            states = tuple(tuple(int(x) for x in row) for row in states)
    if isinstance(states, tuple):
        transposed = tuple(zip(*states))
    else:
        transposed = states.T if isinstance(states, np.ndarray) else ops.transpose(states)
    return Schedule(t_block, s_block, nq, nkv, states, _lists(states), _lists(transposed))


def _states_known_now(t_total, s_total, t_block, s_block, batch, num_heads, q_offset,
                      is_causal, window, has_mask, mask_mod, given):
    """Block states from what is known before the data, as nested tuples:
    a query offset of None, a dense mask or a mask function that holds
    tensors (`mask_mod=False`) leave blocks partial; `given` are the states
    of a block mask (nested tuples) or None. A mask function is evaluated
    for every head and batch row."""
    nq, nkv = -(-t_total // t_block), -(-s_total // s_block)
    if q_offset is None:
        return ((_blockmask.PARTIAL,) * nkv,) * nq
    geometry = _blockmask.Geometry(t_total, s_total, t_block, s_block, q_offset, batch,
                                   num_heads)
    parts = [_blockmask.key_padding(geometry)]
    if is_causal:
        parts.append(_blockmask.causal(geometry))
    if window is not None:
        parts.append(_blockmask.window(geometry, window, is_causal))
    if mask_mod:
        parts.append(mask_mod.block_visibility(geometry))
    if has_mask or mask_mod is False or (mask_mod and parts[-1] is None):
        parts.append(_blockmask.Visibility(np.ones((1, 1), bool), np.zeros((1, 1), bool)))
    if given is not None:
        parts.append(_blockmask.of_states(np.asarray(given)))
    states = _blockmask.combined(parts, geometry)
    return tuple(tuple(int(x) for x in row) for row in states)


# Wrapped once, here: TorchDynamo refuses to wrap a function while tracing.
_STATES_KNOWN_NOW = _backends.constant_result(_states_known_now)


def visibilities(plan, geometry):
    """The block visibility of every mask of the plan."""
    parts = [_blockmask.key_padding(geometry)]
    if plan.is_causal:
        parts.append(_blockmask.causal(geometry))
    if plan.sliding_window is not None:
        parts.append(_blockmask.window(geometry, plan.sliding_window, plan.is_causal))
    if plan.mask is not None:
        parts.append(_blockmask.dense_mask(geometry, plan.mask))
    if plan.mask_mod is not None:
        parts.append(_blockmask.of_mask_mod(geometry, plan.mask_mod))
    if plan.documents is not None:
        parts.append(plan.documents.block_visibility(geometry))
    if plan.block_mask is not None:  # its own mask function is already in its states
        parts.append(_blockmask.of_states(plan.block_mask.states))
    return parts


def _visit(lists, i, carry, body):
    """`body(j, masked, carry)` over the full, then the partial blocks of
    row `i` of `lists`."""
    for kind, (counts, index) in (("full", (lists.full_count, lists.full_index)),
                                  ("partial", (lists.partial_count, lists.partial_index))):
        masked = kind == "partial"
        if lists.static and isinstance(i, int):
            count, row = int(counts[i]), index[i]
            if count == 0:
                continue
            if _backends.python_loops() or count == 1:
                for j in row[:count]:
                    carry = body(int(j), masked, carry)
                continue
            row = ops.convert_to_tensor(np.asarray(row), "int32")
        else:
            counts = ops.convert_to_tensor(counts, "int32")
            index = ops.convert_to_tensor(index, "int32")
            count, row = ops.take(counts, i), ops.take(index, i, axis=0)
        carry = ops.fori_loop(0, count, lambda k, c, row=row, masked=masked: body(
            ops.take(row, k), masked, c), carry)
    return carry


def _pad_keys(key, value, mask, bias, pad):
    """Pad keys/values (and the S axis of mask/bias) with `pad` hidden keys."""
    if not pad:
        return key, value, mask, bias
    widths = [(0, 0), (0, pad), (0, 0), (0, 0)]
    key = ops.pad(key, widths)
    value = ops.pad(value, widths)
    s_widths = [(0, 0), (0, 0), (0, 0), (0, pad)]
    if mask is not None and mask.shape[-1] != 1:
        mask = ops.pad(mask, s_widths, constant_values=False)
    if bias is not None and bias.shape[-1] != 1:
        bias = ops.pad(bias, s_widths)
    return key, value, mask, bias


def chunked_attention(plan: _plan.Plan):
    """Returns the output (B, T, N, Hv).

    Without a bias tensor, a score_mod other than an additive one of the
    indices, or a term that reads trainable weights (nothing the backward
    would have to differentiate but q, k, v and the relative terms; see
    `_plan.recomputes`), the gradient recomputes the scores block by block
    from the saved log-sum-exp (FlashAttention-2's backward), so training
    holds no more than the forward does. Otherwise autodiff runs through
    the loops, which then visit blocks known before the data.
    """
    t_total = plan.query.shape[1]
    s_total = plan.key.shape[1]
    if t_total is None or s_total is None:
        raise ValueError(
            "The chunked implementation needs static query and key lengths. "
            f"Received T={t_total}, S={s_total}."
        )
    if _native_rows_serve(plan):
        return _native_rows(plan, schedule(plan))
    if _plan.recomputes(plan):
        inputs = _inputs(plan)
        key = ("recomputing",) + _plan.signature(plan, inputs)
        return _backends.as_graph(
            key, lambda *xs: _recomputing(_with_inputs(plan, xs))(*_differentiable_of(xs)),
            inputs, plan)
    return _forward(plan, schedule(plan, dense=True))[0]


def _native_rows_serve(plan):
    """Whether the backend's kernel computes each query block over its
    visible keys (see `_native_rows`): where the kernel is a
    memory-lean flash kernel with its own backward (PyTorch's SDPA on CPU)
    and the plan holds nothing but masks."""
    return (_backends.python_loops() and plan.relative is None and plan.score_mod is None
            and plan.logit_soft_cap is None and plan.bias is None
            and _backends.native_kernel_refuses(plan) is None)


def _native_rows(plan, plan_schedule):
    """Each query block through the native kernel, over the keys of the
    blocks it may see (a slice where they are consecutive), with the
    elementwise mask only where a partial block lies among them. The
    kernel's own backward differentiates it: it keeps no scores."""
    query, key, value = plan.query, plan.key, plan.value
    t_total, s_total = query.shape[1], key.shape[1]
    t_block, s_block = plan_schedule.t_block, plan_schedule.s_block
    lists = plan_schedule.by_query
    b, _, n, _ = _blocks.dims(query)
    outs = []
    for i in range(plan_schedule.nq):
        start, stop = i * t_block, min((i + 1) * t_block, t_total)
        full = lists.full_index[i][:lists.full_count[i]]
        partial = lists.partial_index[i][:lists.partial_count[i]]
        visible = sorted(full + partial)
        if not visible:
            # Sees nothing: the first block, all hidden, gives exact zeros
            # that autograd still connects to the inputs.
            visible = partial = [0]
        first, last = visible[0] * s_block, min((visible[-1] + 1) * s_block, s_total)
        columns = None
        if len(visible) != visible[-1] - visible[0] + 1:  # gaps: gather the blocks
            columns = np.concatenate([np.arange(j * s_block, min((j + 1) * s_block, s_total))
                                      for j in visible]) - first
        k_row, v_row = _cut(key, 1, first, last - first), _cut(value, 1, first, last - first)
        mask, has_key = None, None
        if partial:
            mask = _blocks.block_visibility(
                plan, b, start, stop - start, first, last - first,
                mask=_cut(_cut(plan.mask, 2, start, stop - start), 3, first, last - first))
        if columns is not None:
            k_row, v_row = (ops.take(x, columns, axis=1) for x in (k_row, v_row))
            mask = None if mask is None else ops.take(mask, columns, axis=3)
        if mask is not None:
            # The kernel gives a uniform row where no key is visible.
            has_key = ops.any(mask, axis=-1, keepdims=True)  # (B?, N?, t, 1)
            mask = ops.logical_or(mask, ops.logical_not(has_key))
        out = _backends.native_attention(
            _cut(query, 1, start, stop - start), k_row, v_row, bias=None, mask=mask,
            scale=plan.scale, is_causal=False, grouped=plan.groups > 1)  # (B, t, N, Hv)
        if has_key is not None:
            out = ops.where(ops.transpose(has_key, (0, 2, 1, 3)), out, 0.0)
        outs.append(out)
    return outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=1)


def _inputs(plan):
    """Every tensor a plan computes from, in a fixed order: q, k, v, the
    relative tables, then the mask and the query offset when they are
    tensors."""
    inputs = [plan.query, plan.key, plan.value]
    if plan.relative is not None:
        inputs += plan.relative.tensors()
    if plan.mask is not None:
        inputs.append(plan.mask)
    if plan.documents is not None:
        inputs += plan.documents.tables()
    if not isinstance(plan.q_offset, int):
        inputs.append(ops.convert_to_tensor(plan.q_offset, "int32"))
    return inputs


def _with_inputs(plan, inputs):
    """`plan` reading every tensor of `_inputs` from `inputs`."""
    query, key, value, *rest = inputs
    relative = plan.relative
    if relative is not None:
        count = len(relative.tensors())
        relative, rest = relative.with_tensors(rest[:count]), rest[count:]
    mask = plan.mask
    if mask is not None:
        mask, rest = rest[0], rest[1:]
    documents = plan.documents
    if documents is not None:
        count = len(documents.tables())
        documents, rest = masks.DocumentMask(*rest[:count]), rest[count:]
    q_offset = plan.q_offset if isinstance(plan.q_offset, int) else rest[0]
    return dataclasses.replace(plan, query=query, key=key, value=value, relative=relative,
                               mask=mask, documents=documents, q_offset=q_offset)


def _differentiable_of(inputs):
    """The inputs gradients flow to: all but the mask and the query offset."""
    return [x for x in inputs if _is_float(x)]


def _is_float(x):
    return "float" in str(getattr(x, "dtype", ""))


def _differentiable(plan):
    """The plan's tensors that gradients flow to: q, k, v (, relative tables)."""
    inputs = [plan.query, plan.key, plan.value]
    if plan.relative is not None:
        inputs += plan.relative.tensors()
    return inputs


def _with_differentiable(plan, inputs):
    """`plan` reading its differentiable tensors from `inputs`."""
    query, key, value, *rest = inputs
    relative = plan.relative
    if relative is not None:
        relative = relative.with_tensors(rest)
    return dataclasses.replace(plan, query=query, key=key, value=value, relative=relative)


def _recomputing(plan):
    plan_schedule = schedule(plan)

    @ops.custom_gradient
    def attention(*inputs):
        # The gradient below is the whole backward: a recording tape (eager
        # TensorFlow's `GradientTape`) must not also keep every block of the
        # forward alive for a gradient nobody takes.
        inputs = [ops.stop_gradient(x) for x in inputs]
        out, lse = _forward(_with_differentiable(plan, inputs), plan_schedule)

        def grad(*args, upstream=None):
            if upstream is None:  # TensorFlow and JAX pass it by position
                (upstream,) = args
            return _backward(_with_differentiable(plan, inputs), plan_schedule, out, lse,
                             upstream)

        return out, grad

    return attention


def _forward(plan, plan_schedule):
    """(output (B, T, N, Hv), log-sum-exp of the logits (B, N, T, 1)).

    When the backward recomputes, the query blocks are a `fori_loop`, so
    no two blocks are ever live at once (TensorFlow's graph executor would
    run independent blocks side by side); under autodiff they are
    Python-static (TensorFlow cannot differentiate a dynamic slice update).
    """
    query = plan.query
    t_total, s_total = query.shape[1], plan.key.shape[1]
    t_block, s_block = plan_schedule.t_block, plan_schedule.s_block
    num_q_blocks, num_kv_blocks = plan_schedule.nq, plan_schedule.nkv
    pad = num_kv_blocks * s_block - s_total
    key, value, mask, bias = _pad_keys(plan.key, plan.value, plan.mask, plan.bias, pad)
    q_pad = num_q_blocks * t_block - t_total
    if q_pad:  # extra queries see the real keys; their rows are dropped
        query = ops.pad(query, [(0, 0), (0, q_pad), (0, 0), (0, 0)])
        cols = [(0, 0), (0, 0), (0, q_pad), (0, 0)]
        if mask is not None and mask.shape[2] != 1:
            mask = ops.pad(mask, cols, constant_values=True)
        if bias is not None and bias.shape[2] != 1:
            bias = ops.pad(bias, cols)
    b, t_padded, n, _ = _blocks.dims(query)
    dtype = plan.compute_dtype
    lists = plan_schedule.by_query
    key, value = _blocks.heads_first(key), _blocks.heads_first(value)

    def block(i, carry):
        out, lse = carry
        start = (i if out is None else _backends.sequential(i, out)) * t_block
        out_blk, lse_blk = _query_block(
            plan, _cut(query, 1, start, t_block), key, value, lists, i,
            mask=_cut(mask, 2, start, t_block), bias=_cut(bias, 2, start, t_block),
            q_start=start, s_block=s_block, kv_limit=s_total if pad else None,
        )
        if out is None:
            return out_blk, lse_blk
        return (_backends.write(out, [0, 0, start, 0], out_blk),
                _backends.write(lse, [0, 0, start, 0], lse_blk))

    if num_q_blocks == 1 or not _plan.recomputes(plan) or _backends.python_loops():
        # Autodiff runs through this loop (TensorFlow cannot differentiate a
        # dynamic slice update), or Python runs the loops anyway.
        blocks = [block(i, (None, None)) for i in range(num_q_blocks)]
        out = _first(ops.concatenate([o for o, _ in blocks], axis=2), 2, t_total)
        lse = _first(ops.concatenate([l for _, l in blocks], axis=2), 2, t_total)
    else:
        init = (ops.zeros((b, n, t_padded, value.shape[-1]), dtype=dtype),
                ops.zeros((b, n, t_padded, 1), dtype=dtype))
        out, lse = ops.fori_loop(0, num_q_blocks, block, init)
        out, lse = _first(out, 2, t_total), _first(lse, 2, t_total)
    return ops.transpose(out, (0, 2, 1, 3)), lse


def _query_block(plan, q, key, value, lists, i, *, mask, bias, q_start, s_block, kv_limit):
    """Online softmax of query block `i`, q (B, t, N, H), over the key blocks
    `lists` gives it, key and value heads first (B, K, S, H). Returns the
    output (B, N, t, Hv) and the log-sum-exp (B, N, t, 1)."""
    b, t, n, _ = _blocks.dims(q)
    q = _blocks.heads_first(q)
    scaled_q = q * plan.scale
    hv = value.shape[-1]
    dtype = plan.compute_dtype
    relative_values = plan.relative is not None and plan.relative.value_table is not None
    rows = None
    if plan.relative is not None and plan.relative.has_rows:
        rows = _blocks.relative_rows(plan, q, heads_first=True)  # (B, N, t, R), once

    def step(j, masked, carry):
        start = _backends.sequential(j, carry[2]) * s_block
        return _blocks.with_block_buckets(
            plan, q_start, t, start, s_block,
            lambda one_hot: update(start, masked, carry, one_hot))

    def update(start, masked, carry, one_hot):
        # (B, N, t, 1), (B, N, t, 1), (B, N, t, Hv) (, (B, N, t, R))
        m, l, acc, *bucket_w = carry
        k_blk = _cut(key, 2, start, s_block)
        v_blk = _cut(value, 2, start, s_block)
        logits, visible = _blocks.block_scores(
            plan, q, k_blk, q_start=q_start, kv_start=start,
            mask=_cut(mask, 3, start, s_block), bias=_cut(bias, 3, start, s_block),
            kv_limit=kv_limit, one_hot=one_hot, rows=rows, masked=masked, heads_first=True,
            scaled_q=scaled_q,
        )  # (B, N, t, s)
        if visible is not None:
            logits = ops.where(visible, logits, _blocks.NEG)
        m_new = ops.maximum(m, ops.amax(logits, axis=-1, keepdims=True))
        m_new = ops.stop_gradient(m_new)
        p = ops.exp(logits - m_new)
        logits = None  # freed now in eager execution
        if visible is not None:
            p = ops.where(visible, p, 0.0)
        correction = ops.exp(m - m_new)
        l = l * correction + ops.sum(p, axis=-1, keepdims=True)
        acc = acc * correction + _blocks.weighted_values(plan, p, v_blk, heads_first=True)
        if relative_values:
            bucket_w = [bucket_w[0] * correction + _blocks.bucket_sums(p, one_hot)]
        return (m_new, l, acc, *bucket_w)

    carry = (
        ops.full((b, n, t, 1), _blocks.NEG, dtype=dtype),
        ops.zeros((b, n, t, 1), dtype=dtype),
        ops.zeros((b, n, t, hv), dtype=dtype),
    )
    if relative_values:
        carry += (ops.zeros((b, n, t, plan.relative.num_buckets), dtype=dtype),)
    m, l, acc, *bucket_w = _visit(lists, i, carry, step)
    if relative_values:
        acc = acc + _blocks.relative_values(plan, bucket_w[0])
    seen = l > 0  # False only for a query that sees no key at all
    lse = ops.where(seen, m + ops.log(ops.where(seen, l, 1.0)), 0.0)
    return acc / ops.where(seen, l, 1.0), lse


def _backward(plan, plan_schedule, out, lse, d_out):
    """Gradients of `_differentiable(plan)` from the output's gradient.

    The outer loop walks key blocks, writing their dk and dv in place; the
    inner loops walk the query blocks that see the key block, recomputing
    p = exp(logits - lse) and adding each block's dq in place. The
    relative tables' gradients are sums over blocks, carried as they are
    (each is the size of its table): nothing of size (B, N, T, R) is formed.
    """
    query, rel = plan.query, plan.relative
    t_total, s_total = query.shape[1], plan.key.shape[1]
    t_block, s_block = plan_schedule.t_block, plan_schedule.s_block
    num_q_blocks, num_kv_blocks = plan_schedule.nq, plan_schedule.nkv
    pad = num_kv_blocks * s_block - s_total
    key, value, mask, _ = _pad_keys(plan.key, plan.value, plan.mask, None, pad)
    q_pad = num_q_blocks * t_block - t_total
    dtype = plan.compute_dtype
    d_out = ops.cast(d_out, dtype)
    # delta_i = sum_j p_ij dp_ij = d_out_i . out_i  (B, N, T, 1)
    delta = ops.transpose(ops.sum(d_out * out, axis=-1, keepdims=True), (0, 2, 1, 3))
    if q_pad:  # zero rows: a query with no output gradient adds nothing
        rows = [(0, 0), (0, q_pad), (0, 0), (0, 0)]
        query, d_out = ops.pad(query, rows), ops.pad(d_out, rows)
        cols = [(0, 0), (0, 0), (0, q_pad), (0, 0)]
        lse, delta = ops.pad(lse, cols), ops.pad(delta, cols)
        if mask is not None and mask.shape[2] != 1:
            mask = ops.pad(mask, cols, constant_values=False)
    cap = plan.logit_soft_cap
    tables = [] if rel is None else rel.tensors()
    d_tables = [ops.zeros(ops.shape(x), dtype=dtype) for x in tables]
    lists = plan_schedule.by_key
    # Heads first, like the forward's blocks; the gradients turn back at the end.
    query, d_out, key, value = map(_blocks.heads_first, (query, d_out, key, value))
    scaled_query = query * plan.scale  # once, not once per block

    def key_block(j, carry):
        d_key, d_value, d_query, *d_tables = carry
        kv_start = _backends.sequential(j, d_key) * s_block
        k_blk = _cut(key, 2, kv_start, s_block)
        v_blk = _cut(value, 2, kv_start, s_block)
        mask_col = _cut(mask, 3, kv_start, s_block)

        def step(i, masked, carry):
            start = _backends.sequential(i, carry[2]) * t_block
            return _blocks.with_block_buckets(
                plan, start, t_block, kv_start, s_block,
                lambda one_hot: update(start, masked, carry, one_hot))

        def update(start, masked, carry, one_hot):
            d_k, d_v, d_query, *d_tables = carry
            q_blk = _cut(query, 2, start, t_block)
            scaled_q = _cut(scaled_query, 2, start, t_block)
            do_blk = _cut(d_out, 2, start, t_block)
            logits, visible = _blocks.block_scores(
                plan, q_blk, k_blk, q_start=start, kv_start=kv_start,
                mask=_cut(mask_col, 2, start, t_block),
                kv_limit=s_total if pad else None, one_hot=one_hot, masked=masked,
                heads_first=True, scaled_q=scaled_q,
            )  # (B, N, t, s)
            # Each (B, N, t, s) temporary is dropped as soon as it is used:
            # eager execution (TensorFlow's tape, PyTorch) frees it then.
            p = ops.exp(logits - _cut(lse, 2, start, t_block))
            if cap is None:
                logits = None
            if visible is not None:
                p = ops.where(visible, p, 0.0)
            d_v = d_v + _blocks.weighted_queries(plan, p, do_blk, heads_first=True)
            p_sums = None  # sum_j p_ij [bucket_ij = r]  (B, N, t, R)
            if rel is not None and rel.value_table is not None:
                p_sums = _blocks.bucket_sums(p, one_hot)
            d_p = _blocks.head_dots(plan, do_blk, v_blk, heads_first=True)
            if p_sums is not None:  # dp_ij gains d_out_i . value_table[bucket_ij]
                heads = _blocks.table_axes(rel.value_table)
                d_p = d_p + _blocks.bucket_rows(
                    ops.einsum(f"bnth,{heads}->bntr", do_blk, rel.value_table), one_hot)
            d_s = p * (d_p - _cut(delta, 2, start, t_block))
            p = d_p = None
            if cap is not None:  # d/dx c tanh(x / c) = 1 - tanh(x / c)^2
                d_s = d_s * (1.0 - ops.square(logits / float(cap)))
                logits = None
            # d_s is the gradient of the unscaled relative rows; the scale of
            # q . k goes on the (much smaller) products with q and k.
            d_k = d_k + _blocks.weighted_queries(plan, d_s, scaled_q, heads_first=True)
            d_q = _blocks.weighted_values(plan, d_s, k_blk, heads_first=True)  # (B, N, t, H)
            if rel is not None:
                d_rows = _blocks.bucket_sums(d_s, one_hot) if rel.has_rows else None
                d_q, d_tables = _table_grads(plan, d_q, d_tables, d_rows, p_sums,
                                             q_blk, do_blk)
            # (B, N, t, H) added at query `start`
            d_query = _backends.write(d_query, [0, 0, start, 0], d_q * plan.scale, add=True)
            return (d_k, d_v, d_query, *d_tables)

        init = (ops.zeros(ops.shape(k_blk), dtype=dtype),
                ops.zeros(ops.shape(v_blk), dtype=dtype), d_query, *d_tables)
        d_k, d_v, d_query, *d_tables = _visit(lists, j, init, step)
        return (_backends.write(d_key, [0, 0, kv_start, 0], d_k),
                _backends.write(d_value, [0, 0, kv_start, 0], d_v), d_query, *d_tables)

    # One loop over key blocks writing dk, dv in place: as a Python loop,
    # TensorFlow kept every block's copy of the accumulators alive.
    init = (ops.zeros(ops.shape(key), dtype=dtype), ops.zeros(ops.shape(value), dtype=dtype),
            ops.zeros(ops.shape(query), dtype=dtype), *d_tables)
    if num_kv_blocks == 1 or _backends.python_loops():
        carry = init
        for j in range(num_kv_blocks):
            carry = key_block(j, carry)
        d_key, d_value, d_query, *d_tables = carry
    else:
        d_key, d_value, d_query, *d_tables = ops.fori_loop(0, num_kv_blocks, key_block, init)
    d_query, d_key, d_value = map(_blocks.heads_first, (d_query, d_key, d_value))
    return (_first(d_query, 1, t_total), _first(d_key, 1, s_total),
            _first(d_value, 1, s_total), *d_tables)


def _table_grads(plan, d_q, d_tables, d_rows, p_sums, q_blk, do_blk):
    """One block's share of the relative tables' gradients.

    `d_rows` (B, N, t, R) is the gradient of the block's relative rows and
    `p_sums` the block's weights summed per bucket; `q_blk` and `do_blk`
    are heads first (B, N, t, H). The key table's share
    of d_q is added unscaled: the caller multiplies all of d_q by the scale
    (rows = scale * q . key_table, as logits = scale * q . k). Returns d_q (B, N, t, H) with the key
    table's share added, and the tables' gradients with this block added.
    """
    rel = plan.relative
    grads = iter(d_tables)
    out = []
    if rel.key_table is not None:  # rows = scale * q . key_table
        heads = _blocks.table_axes(rel.key_table)
        d_q = d_q + ops.einsum(f"bntr,{heads}->bnth", d_rows, rel.key_table)
        out.append(next(grads) + ops.einsum(f"bntr,bnth->{heads}", d_rows, q_blk) * plan.scale)
    if rel.bias is not None:  # rows = bias (1, N or 1, 1, R)
        axes = (0, 2) if rel.bias.shape[1] != 1 else (0, 1, 2)
        out.append(next(grads) + ops.sum(d_rows, axis=axes, keepdims=True))
    if rel.value_table is not None:  # out_i += sum_r p_sums_ir value_table[r]
        heads = _blocks.table_axes(rel.value_table)
        out.append(next(grads) + ops.einsum(f"bntr,bnth->{heads}", p_sums, do_blk))
    return d_q, out
