"""The one place where attention logits and visibility are computed.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, G = N // K query heads per key/value head, H head dim,
Hv value head dim, R relative buckets. A "block" is a slice of the queries
(t of them) against a slice of the keys (s of them); the math path uses one
block of everything.

Order of operations, the same on every path:
    logits = scale * q . k  (+ relative rows[bucket])  (+ bias)  -> score_mod
             -> logit_soft_cap
    visible = mask & causal & window & mask_mod (& key in range)
"""

from keras import ops

from attnkit import _backends

# A finite stand-in for -inf: exp(NEG - m) is 0 for any visible m and
# exp(NEG - NEG) = 1 is multiplied by a False mask, so no NaN can appear.
NEG = -1e30


def block_one_hot(plan, q_start, t, kv_start, s):
    """(t, s, R) one-hot relative buckets of a block, or None."""
    if plan.relative is None:
        return None
    _, _, q_idx, kv_idx = indices(plan, 1, q_start, t, kv_start, s)
    bucket = plan.relative.buckets(q_idx, kv_idx)  # (1, 1, t, s)
    return _one_hot(plan, bucket[0, 0, :, :, None])


def _one_hot(plan, bucket):
    """`bucket` (ending in an axis of 1) one-hot over the R buckets.

    A comparison, not ops.one_hot: on PyTorch keras's one_hot (a scatter and
    a mask pass) took four times as long on a (1024, 512, 33) block.
    """
    buckets = ops.arange(plan.relative.num_buckets, dtype="int32")
    return ops.cast(ops.equal(bucket, buckets), plan.compute_dtype)


def with_block_buckets(plan, q_start, t, kv_start, s, fn):
    """`fn(one_hot)` for a block of the chunked path.

    `one_hot` is `block_one_hot`, or, where every pair (i, j) of the block
    lies past the bucket function's saturation distance (all in one bucket,
    as in most blocks of a long sequence), that bucket's `(R,)` one-hot,
    which `bucket_rows` and `bucket_sums` take at a row's cost. Decided in
    Python when the positions are ints, else by `ops.cond` where the backend
    allows a branch inside the loops.
    """
    if plan.relative is None:
        return fn(None)
    saturation = plan.relative.buckets.saturation()
    if saturation is None:
        return fn(block_one_hot(plan, q_start, t, kv_start, s))
    (low, low_bucket), (high, high_bucket) = saturation
    offset = plan.q_offset
    if not isinstance(offset, int):
        offset = ops.cast(offset, "int32")
    first_q = offset + q_start
    below = kv_start + s - 1 - first_q <= low  # every j - i <= low
    above = kv_start - (first_q + t - 1) >= high  # every j - i >= high

    def near():
        return fn(block_one_hot(plan, q_start, t, kv_start, s))

    def far():
        bucket = ops.where(above, high_bucket, low_bucket)
        return fn(_one_hot(plan, ops.reshape(bucket, (1,))))

    if isinstance(below, bool) and isinstance(above, bool):
        return far() if below or above else near()
    if not _backends.branches_in_loops():
        return near()
    return ops.cond(ops.logical_or(below, above), far, near)


def bucket_rows(rows, one_hot):
    """rows (B, N, t, R) read at each pair's bucket -> (B, N, t, s).

    With a one-bucket `(R,)` one-hot: (B, N, t, 1), the same for every key.
    """
    if len(one_hot.shape) == 1:
        return ops.sum(rows * one_hot, axis=-1, keepdims=True)
    return ops.einsum("bntr,tsr->bnts", rows, one_hot)


def bucket_sums(weights, one_hot):
    """weights (B, N, t, s) summed per bucket -> (B, N, t, R)."""
    if len(one_hot.shape) == 1:  # one bucket for the whole block
        return ops.sum(weights, axis=-1, keepdims=True) * one_hot
    return ops.einsum("bnts,tsr->bntr", weights, one_hot)


def table_axes(table):
    """einsum axes of a relative table: "rh" shared by all heads, "rnh" per head."""
    return "rh" if len(table.shape) == 2 else "rnh"


def relative_rows(plan, q, heads_first=False):
    """The relative rows of a query block q (B, t, N, H) -> (B, N, t, R)."""
    rel = plan.relative
    if heads_first:
        b, n, t, _ = dims(q)
    else:
        b, t, n, _ = dims(q)
    rows = rel.bias
    if rel.key_table is not None:
        heads = table_axes(rel.key_table)
        queries = "bnth" if heads_first else "btnh"
        keys = ops.einsum(f"{queries},{heads}->bntr", q, rel.key_table) * plan.scale
        rows = keys if rows is None else keys + rows
    return ops.broadcast_to(rows, (b, n, t, rel.num_buckets))


def relative_values(plan, bucket_weights):
    """bucket_weights (B, N, t, R) @ value_table -> (B, N, t, Hv)."""
    table = plan.relative.value_table
    return ops.einsum(f"bntr,{table_axes(table)}->bnth", bucket_weights, table)


def dims(x):
    """Shape as a list of ints, with scalar tensors for dynamic axes."""
    return list(ops.shape(x))


def heads_first(x):
    """(B, L, N, H) -> (B, N, L, H), the chunked path's layout.

    Its blocks' products are then batched matrix products of slices, with
    no transpose per block: TensorFlow's einsum copies a transposed operand
    on every call (a quarter of a block's time at 512 x 256 x 64). The
    functions below take `heads_first=True` for tensors in this layout.
    """
    return None if x is None else ops.transpose(x, (0, 2, 1, 3))


def block_logits(plan, q, k, heads_first=False):
    """Scaled q . k for a block: q (B, t, N, H), k (B, s, K, H) -> (B, N, t, s)."""
    return head_dots(plan, q * plan.scale, k, heads_first)  # a Python float: no round trip


def head_dots(plan, q, k, heads_first=False):
    """q (B, t, N, H) . k (B, s, K, H) per head -> (B, N, t, s), unscaled."""
    if heads_first:  # q (B, N, t, H), k (B, K, s, H)
        if plan.groups == 1:
            return ops.einsum("bnth,bnsh->bnts", q, k)
        b, n, t, h = dims(q)
        q = ops.reshape(q, (b, plan.num_kv_heads, plan.groups, t, h))
        logits = ops.einsum("bkgth,bksh->bkgts", q, k)
        return ops.reshape(logits, (b, n, t, dims(k)[2]))
    b, t, n, h = dims(q)
    s = dims(k)[1]
    if plan.groups == 1:
        return ops.einsum("btnh,bsnh->bnts", q, k)
    q = ops.reshape(q, (b, t, plan.num_kv_heads, plan.groups, h))
    logits = ops.einsum("btkgh,bskh->bkgts", q, k)
    return ops.reshape(logits, (b, n, t, s))


def weighted_values(plan, weights, v, heads_first=False):
    """weights (B, N, t, s) @ v (B, s, K, Hv) -> (B, N, t, Hv)."""
    values = "bksh" if heads_first else "bskh"
    if plan.groups == 1:
        return ops.einsum(f"bnts,{values.replace('k', 'n')}->bnth", weights, v)
    b, n, t, s = dims(weights)
    w = ops.reshape(weights, (b, plan.num_kv_heads, plan.groups, t, s))
    out = ops.einsum(f"bkgts,{values}->bkgth", w, v)
    return ops.reshape(out, (b, n, t, dims(v)[-1]))


def weighted_queries(plan, weights, x, heads_first=False):
    """weights (B, N, t, s) transposed @ x (B, t, N, D) -> (B, s, K, D)
    (with `heads_first`, x (B, N, t, D) -> (B, K, s, D)).

    Sums over the queries and over the query heads that share a key/value
    head: the gradient of keys and values.
    """
    if plan.groups == 1:
        if heads_first:
            return ops.einsum("bnts,bntd->bnsd", weights, x)
        return ops.einsum("bnts,btnd->bsnd", weights, x)
    b, n, t, s = dims(weights)
    w = ops.reshape(weights, (b, plan.num_kv_heads, plan.groups, t, s))
    if heads_first:
        x = ops.reshape(x, (b, plan.num_kv_heads, plan.groups, t, dims(x)[-1]))
        return ops.einsum("bkgts,bkgtd->bksd", w, x)
    x = ops.reshape(x, (b, t, plan.num_kv_heads, plan.groups, dims(x)[-1]))
    return ops.einsum("bkgts,btkgd->bskd", w, x)


def indices(plan, batch, q_start, t, kv_start, s):
    q_offset = ops.cast(plan.q_offset, "int32")
    q_idx = q_offset + q_start + ops.arange(t, dtype="int32")
    kv_idx = kv_start + ops.arange(s, dtype="int32")
    b_idx = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1, 1))
    h_idx = ops.reshape(ops.arange(plan.num_heads, dtype="int32"), (1, -1, 1, 1))
    return (
        b_idx,
        h_idx,
        ops.reshape(q_idx, (1, 1, -1, 1)),
        ops.reshape(kv_idx, (1, 1, 1, -1)),
    )


def block_visibility(plan, batch, q_start, t, kv_start, s, *, mask=None,
                     kv_limit=None):
    """Boolean visibility of a (t, s) block, broadcastable to (B, N, t, s).

    Returns None when nothing is hidden. `kv_limit` hides keys at or past that
    absolute index (padding added by the chunked path).
    """
    b_idx, h_idx, q_idx, kv_idx = indices(plan, batch, q_start, t, kv_start, s)
    parts = [] if mask is None else [mask]
    if plan.is_causal:
        parts.append(q_idx >= kv_idx)
    if plan.sliding_window is not None:
        distance = q_idx - kv_idx
        if not plan.is_causal:
            distance = ops.abs(distance)
        parts.append(distance < plan.sliding_window)
    for mask_mod in plan.mask_mods:
        parts.append(ops.cast(mask_mod(b_idx, h_idx, q_idx, kv_idx), "bool"))
    if kv_limit is not None:
        parts.append(kv_idx < kv_limit)
    visible = None
    for part in parts:
        visible = part if visible is None else ops.logical_and(visible, part)
    return visible


def block_scores(plan, q, k, *, q_start=0, kv_start=0, mask=None, bias=None,
                 kv_limit=None, one_hot=None, rows=None, masked=True, heads_first=False,
                 scaled_q=None):
    """Logits (B, N, t, s) in the compute dtype and visibility (bool or None).

    `mask` and `bias` are the plan's tensors already cut to this block;
    `one_hot` is this block's relative buckets (see `with_block_buckets`),
    `rows` the query block's `relative_rows` where the caller has them,
    `scaled_q` the scale times q where the caller has it (the chunked path
    scales a query block once for all the key blocks it meets).
    `masked=False` is for a block the block mask calls full: every pair is
    visible, so no visibility is computed.
    """
    if scaled_q is None:
        logits = block_logits(plan, q, k, heads_first)
    else:
        logits = head_dots(plan, scaled_q, k, heads_first)
    batch, _, t, s = dims(logits)
    if one_hot is not None and plan.relative.has_rows:  # rows[i, bucket_ij]
        if rows is None:
            rows = relative_rows(plan, q, heads_first)
        logits = logits + bucket_rows(rows, one_hot)
    if bias is not None:
        logits = logits + bias
    if plan.score_mod is not None:
        idx = indices(plan, batch, q_start, t, kv_start, s)
        logits = ops.cast(plan.score_mod(logits, *idx), plan.compute_dtype)
    if plan.logit_soft_cap is not None:
        cap = float(plan.logit_soft_cap)
        logits = cap * ops.tanh(logits / cap)
    if not masked:
        return logits, None
    visible = block_visibility(
        plan, batch, q_start, t, kv_start, s, mask=mask, kv_limit=kv_limit
    )
    return logits, visible


def masked_softmax(logits, visible):
    """Softmax over the last axis; rows with no visible key are exactly 0.

    The mask is applied to the input of exp (not only to its output) so that
    hidden logits carry no gradient, and the row maximum is taken without
    gradient: softmax does not depend on it.
    """
    if visible is not None:
        logits = ops.where(visible, logits, NEG)
    row_max = ops.stop_gradient(ops.amax(logits, axis=-1, keepdims=True))
    # A row of -inf biases has an infinite maximum; any finite shift works.
    row_max = ops.where(ops.isfinite(row_max), row_max, 0.0)
    p = ops.exp(logits - row_max)
    if visible is not None:
        p = ops.where(visible, p, 0.0)
    total = ops.sum(p, axis=-1, keepdims=True)
    return p / ops.where(total > 0, total, 1.0)
