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


def _pad_keys(plan, pad):
    """Pad keys/values (and the S axis of mask/bias) with `pad` hidden keys."""
    widths = [(0, 0), (0, pad), (0, 0), (0, 0)]
    key = ops.pad(plan.key, widths)
    value = ops.pad(plan.value, widths)
    mask, bias = plan.mask, plan.bias
    s_widths = [(0, 0), (0, 0), (0, 0), (0, pad)]
    if mask is not None and mask.shape[-1] != 1:
        mask = ops.pad(mask, s_widths, constant_values=False)
    if bias is not None and bias.shape[-1] != 1:
        bias = ops.pad(bias, s_widths)
    return key, value, mask, bias


def chunked_attention(plan):
    """Returns the output (B, T, N, Hv)."""
    t_total = plan.query.shape[1]
    s_total = plan.key.shape[1]
    if t_total is None or s_total is None:
        raise ValueError(
            "The chunked implementation needs static query and key lengths. "
            f"Received T={t_total}, S={s_total}."
        )
    s_block = min(_BLOCKS["key"], s_total)
    num_kv_blocks = -(-s_total // s_block)
    pad = num_kv_blocks * s_block - s_total
    key, value, mask, bias = _pad_keys(plan, pad) if pad else (
        plan.key, plan.value, plan.mask, plan.bias)
    outs = []
    for q_start in range(0, t_total, _BLOCKS["query"]):
        t = min(_BLOCKS["query"], t_total - q_start)
        q = plan.query[:, q_start:q_start + t]
        outs.append(_query_block(
            plan, q, key, value,
            mask=_cut(mask, 2, q_start, t),
            bias=_cut(bias, 2, q_start, t),
            q_start=q_start, s_block=s_block, num_kv_blocks=num_kv_blocks,
            kv_limit=s_total if pad else None,
        ))
    out = outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=2)
    return ops.transpose(out, (0, 2, 1, 3))


def _query_block(plan, q, key, value, *, mask, bias, q_start, s_block,
                 num_kv_blocks, kv_limit):
    """Online softmax of one query block q (B, t, N, H) -> (B, N, t, Hv)."""
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
        _, l, acc = step(0, init)
    else:
        _, l, acc = ops.fori_loop(0, num_kv_blocks, step, init)
    return acc / ops.where(l > 0, l, 1.0)
