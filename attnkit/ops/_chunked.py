"""Memory-lean attention: an online softmax over blocks of keys and queries.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim; t and s are block sizes.

Queries are cut into static blocks of at most `query_block`; for each, a loop
(`keras.ops.fori_loop`) walks the keys in blocks of `key_block`, keeping a
running maximum `m`, normaliser `l` and output `acc` (Milakov & Gimelshein
2018; Rabe & Staats 2021). The scores held at once are (B, N, t, s), so memory
grows with T * block rather than T * S.
"""

import contextlib

from keras import backend
from keras import ops

from attnkit.ops import _scores

_BLOCKS = {"query": 1024, "key": 512}


@contextlib.contextmanager
def block_sizes(query=None, key=None):
    """Temporarily set the chunked path's block sizes.

    Args:
        query: queries per block (default 1024).
        key: keys per block (default 512).

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


def _cut(x, axis, start, size):
    """Slice `size` entries from `start` on `axis` unless that axis is 1."""
    if x is None or x.shape[axis] == 1:  # a broadcast axis: nothing to cut
        return x
    starts = [0] * 4
    starts[axis] = start
    shape = list(ops.shape(x))
    shape[axis] = size
    return ops.slice(x, starts, shape)


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


def _key_blocks(s_total):
    """(block size, number of blocks, padding) for S keys."""
    s_block = min(_BLOCKS["key"], s_total)
    num_blocks = -(-s_total // s_block)
    return s_block, num_blocks, num_blocks * s_block - s_total


def chunked_attention(plan):
    """Returns the output (B, T, N, Hv).

    Without a bias or score_mod (nothing the backward would have to
    differentiate but q, k and v; see `_recomputes`), the gradient recomputes the scores block
    by block from the saved log-sum-exp (FlashAttention-2's backward), so
    training holds no more than the forward does. Otherwise autodiff runs
    through the loops, which keeps one (B, N, t, s) block per step.
    """
    t_total = plan.query.shape[1]
    s_total = plan.key.shape[1]
    if t_total is None or s_total is None:
        raise ValueError(
            "The chunked implementation needs static query and key lengths. "
            f"Received T={t_total}, S={s_total}."
        )
    if _recomputes(plan):
        return _recomputing(plan)(plan.query, plan.key, plan.value)
    return _forward(plan, plan.query, plan.key, plan.value)[0]


def _recomputes(plan):
    """Whether the backward recomputes blocks instead of autodiff.

    Not on PyTorch: keras's custom gradient there is a torch.autograd.Function
    that TorchDynamo cannot compile, and PyTorch's default path (its SDPA
    kernel) already has a lean backward.
    """
    return (
        plan.bias is None
        and plan.score_mod is None
        and backend.backend() != "torch"
    )


def _recomputing(plan):
    @ops.custom_gradient
    def attention(query, key, value):
        out, lse = _forward(plan, query, key, value)

        def grad(*args, upstream=None):
            if upstream is None:  # TensorFlow and JAX pass it by position
                (upstream,) = args
            return _backward(plan, query, key, value, out, lse, upstream)

        return out, grad

    return attention


def _forward(plan, query, key, value):
    """(output (B, T, N, Hv), log-sum-exp of the logits (B, N, T, 1))."""
    t_total, s_total = query.shape[1], key.shape[1]
    s_block, num_kv_blocks, pad = _key_blocks(s_total)
    key, value, mask, bias = _pad_keys(key, value, plan.mask, plan.bias, pad)
    outs, lses = [], []
    for q_start in range(0, t_total, _BLOCKS["query"]):
        t = min(_BLOCKS["query"], t_total - q_start)
        out, lse = _query_block(
            plan, query[:, q_start:q_start + t], key, value,
            mask=_cut(mask, 2, q_start, t),
            bias=_cut(bias, 2, q_start, t),
            q_start=q_start, s_block=s_block, num_kv_blocks=num_kv_blocks,
            kv_limit=s_total if pad else None,
        )
        outs.append(out)
        lses.append(lse)
    if len(outs) > 1:
        outs, lses = [ops.concatenate(outs, axis=2)], [ops.concatenate(lses, axis=2)]
    return ops.transpose(outs[0], (0, 2, 1, 3)), lses[0]


def _query_block(plan, q, key, value, *, mask, bias, q_start, s_block,
                 num_kv_blocks, kv_limit):
    """Online softmax of one query block q (B, t, N, H).

    Returns the output (B, N, t, Hv) and the log-sum-exp (B, N, t, 1).
    """
    b, t, n, _ = _scores.dims(q)
    hv = value.shape[-1]
    dtype = plan.compute_dtype

    def step(i, carry):
        m, l, acc = carry  # (B, N, t, 1), (B, N, t, 1), (B, N, t, Hv)
        start = i * s_block
        k_blk = _cut(key, 1, start, s_block)
        v_blk = _cut(value, 1, start, s_block)
        logits, visible = _scores.block_scores(
            plan, q, k_blk, q_start=q_start, kv_start=start,
            mask=_cut(mask, 3, start, s_block),
            bias=_cut(bias, 3, start, s_block),
            kv_limit=kv_limit,
        )  # (B, N, t, s)
        if visible is not None:
            logits = ops.where(visible, logits, _scores.NEG)
        m_new = ops.maximum(m, ops.amax(logits, axis=-1, keepdims=True))
        m_new = ops.stop_gradient(m_new)
        p = ops.exp(logits - m_new)
        if visible is not None:
            p = ops.where(visible, p, 0.0)
        correction = ops.exp(m - m_new)
        l = l * correction + ops.sum(p, axis=-1, keepdims=True)
        acc = acc * correction + _scores.weighted_values(plan, p, v_blk)
        return m_new, l, acc

    init = (
        ops.full((b, n, t, 1), _scores.NEG, dtype=dtype),
        ops.zeros((b, n, t, 1), dtype=dtype),
        ops.zeros((b, n, t, hv), dtype=dtype),
    )
    if num_kv_blocks == 1:
        m, l, acc = step(0, init)
    else:
        m, l, acc = ops.fori_loop(0, num_kv_blocks, step, init)
    seen = l > 0  # False only for a query that sees no key at all
    lse = ops.where(seen, m + ops.log(ops.where(seen, l, 1.0)), 0.0)
    return acc / ops.where(seen, l, 1.0), lse


def _backward(plan, query, key, value, out, lse, d_out):
    """Gradients of q, k, v from the output's gradient, block by block.

    The outer (Python) loop walks key blocks, keeping their dk and dv; the
    inner loop walks query blocks, recomputing p = exp(logits - lse) and
    adding each block's dq in place. Shapes are the forward's.
    """
    t_total, s_total = query.shape[1], key.shape[1]
    s_block, num_kv_blocks, pad = _key_blocks(s_total)
    key, value, mask, _ = _pad_keys(key, value, plan.mask, None, pad)
    t_block = min(_BLOCKS["query"], t_total)
    num_q_blocks = -(-t_total // t_block)
    q_pad = num_q_blocks * t_block - t_total
    d_out = ops.cast(d_out, plan.compute_dtype)
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
    d_query = ops.zeros(ops.shape(query), dtype=plan.compute_dtype)
    d_keys, d_values = [], []
    for kv_start in range(0, num_kv_blocks * s_block, s_block):
        k_blk = key[:, kv_start:kv_start + s_block]
        v_blk = value[:, kv_start:kv_start + s_block]
        mask_col = _cut(mask, 3, kv_start, s_block)

        def step(i, carry, k_blk=k_blk, v_blk=v_blk, mask_col=mask_col,
                 kv_start=kv_start):
            d_q, d_k, d_v = carry
            start = i * t_block
            q_blk = _cut(query, 1, start, t_block)
            do_blk = _cut(d_out, 1, start, t_block)
            logits, visible = _scores.block_scores(
                plan, q_blk, k_blk, q_start=start, kv_start=kv_start,
                mask=_cut(mask_col, 2, start, t_block),
                kv_limit=s_total if pad else None,
            )  # (B, N, t, s)
            p = ops.exp(logits - _cut(lse, 2, start, t_block))
            if visible is not None:
                p = ops.where(visible, p, 0.0)
            d_v = d_v + _scores.weighted_queries(plan, p, do_blk)
            d_p = _scores.head_dots(plan, do_blk, v_blk)
            d_s = p * (d_p - _cut(delta, 2, start, t_block))
            if cap is not None:  # d/dx c tanh(x / c) = 1 - tanh(x / c)^2
                d_s = d_s * (1.0 - ops.square(logits / float(cap)))
            d_s = d_s * plan.scale
            d_k = d_k + _scores.weighted_queries(plan, d_s, q_blk)
            d_q_blk = ops.transpose(_scores.weighted_values(plan, d_s, k_blk), (0, 2, 1, 3))
            at = [0, start, 0, 0]
            d_q = ops.slice_update(d_q, at, _cut(d_q, 1, start, t_block) + d_q_blk)
            return d_q, d_k, d_v

        init = (d_query, ops.zeros(ops.shape(k_blk), dtype=plan.compute_dtype),
                ops.zeros(ops.shape(v_blk), dtype=plan.compute_dtype))
        if num_q_blocks == 1:
            d_query, d_k, d_v = step(0, init)
        else:
            d_query, d_k, d_v = ops.fori_loop(0, num_q_blocks, step, init)
        d_keys.append(d_k)
        d_values.append(d_v)
    d_key = d_keys[0] if len(d_keys) == 1 else ops.concatenate(d_keys, axis=1)
    d_value = d_values[0] if len(d_values) == 1 else ops.concatenate(d_values, axis=1)
    return d_query[:, :t_total], d_key[:, :s_total], d_value[:, :s_total]
