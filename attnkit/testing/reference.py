"""A float64 NumPy reference for attention, written from the definitions.

It shares no code with `attnkit.ops`: grouped heads are expanded with
`np.repeat`, masks are built on explicit index grids, each softmax row is
normalised on its own, and the backward pass is the textbook chain rule.
`score_mod` and `mask_mod` given here must be NumPy functions. The
relative references take each (query, key) pair's bucket as an array and
gather explicit per-pair tables.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

from collections.abc import Callable

import numpy as np

from attnkit.types import Tensor


def _grids(b, n, t, s, q_offset):
    return (
        np.arange(b).reshape(b, 1, 1, 1),
        np.arange(n).reshape(1, n, 1, 1),
        (q_offset + np.arange(t)).reshape(1, 1, t, 1),
        np.arange(s).reshape(1, 1, 1, s),
    )


def visibility_reference(shape: tuple[int, int, int, int], *, mask: Tensor | None = None,
                         is_causal: bool = False, q_offset: int | Tensor = 0,
                         sliding_window: int | None = None, mask_mod: Callable | None = None):
    """Boolean (B, N, T, S): which key each query may attend to."""
    b, n, t, s = shape
    bi, hi, qi, ki = _grids(b, n, t, s, q_offset)
    visible = np.ones(shape, dtype=bool)
    if mask is not None:
        visible &= np.broadcast_to(np.asarray(mask) != 0, shape)
    if is_causal:
        visible &= ki <= qi
    if sliding_window is not None:
        if is_causal:
            visible &= (qi - ki) < sliding_window
        else:
            visible &= np.abs(qi - ki) < sliding_window
    if mask_mod is not None:
        visible &= np.broadcast_to(mask_mod(bi, hi, qi, ki), shape)
    return visible


def _forward(query, key, value, bias, scale, q_offset, score_mod,
             logit_soft_cap, visible_kwargs, normalizer="softmax"):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (query, key, value))
    b, t, n, h = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    groups = n // kv_heads
    k = np.repeat(k, groups, axis=2)  # (B, S, N, H)
    v = np.repeat(v, groups, axis=2)  # (B, S, N, Hv)
    scale = 1.0 / np.sqrt(h) if scale is None else scale
    raw = np.einsum("btnh,bsnh->bnts", q, k) * scale
    if bias is not None:
        raw = raw + np.asarray(bias, dtype=np.float64)
    logits = raw
    if score_mod is not None:
        logits = score_mod(logits, *_grids(b, n, t, s, q_offset))
    weights = _weights(logits, logit_soft_cap, q_offset, visible_kwargs, normalizer)
    return q, k, v, logits, weights, groups, scale


def sparsemax_reference(z: Tensor):
    """Sparsemax of a 1-D array (Martins & Astudillo 2016, Algorithm 1)."""
    z = np.asarray(z, dtype=np.float64)
    z_sorted = np.sort(z)[::-1]
    k = np.arange(1, z.size + 1)
    cumulative = np.cumsum(z_sorted)
    support = k[1 + k * z_sorted > cumulative].max()
    tau = (cumulative[support - 1] - 1) / support
    return np.maximum(z - tau, 0.0)


def entmax15_reference(z: Tensor, iterations: int = 200):
    """1.5-entmax of a 1-D array: `max(z / 2 - tau, 0) ** 2` summing to 1,
    `tau` found by bisection (Peters et al. 2019, eq. 9) on
    `[max(z) / 2 - 1, max(z) / 2]`."""
    x = np.asarray(z, dtype=np.float64) / 2
    low, high = x.max() - 1, x.max()
    for _ in range(iterations):
        tau = (low + high) / 2
        if np.sum(np.maximum(x - tau, 0.0) ** 2) > 1:
            low = tau
        else:
            high = tau
    return np.maximum(x - (low + high) / 2, 0.0) ** 2


def _normalize_row(row, normalizer):
    if normalizer == "sparsemax":
        return sparsemax_reference(row)
    if normalizer == "entmax15":
        return entmax15_reference(row)
    e = np.exp(row - row.max())
    return e / e.sum()


def _weights(logits, logit_soft_cap, q_offset, visible_kwargs, normalizer="softmax"):
    """Soft-capped logits (B, N, T, S) -> weights, each visible row on its own."""
    capped = logits
    if logit_soft_cap is not None:
        capped = logit_soft_cap * np.tanh(logits / logit_soft_cap)
    visible = visibility_reference(logits.shape, q_offset=q_offset, **visible_kwargs)
    weights = np.zeros(logits.shape)
    for index in np.ndindex(*logits.shape[:3]):
        row = visible[index]
        if row.any():
            weights[index][row] = _normalize_row(capped[index][row], normalizer)
    return weights


def _normalizer_backward(w, d_w, normalizer):
    """d_logits from the weights' gradient: the Jacobian of each map."""
    if normalizer == "sparsemax":  # (diag(s) - s s^T / |S|) d_w, s the support
        s = (w > 0).astype(np.float64)
        mean = np.sum(d_w * s, axis=-1, keepdims=True) / np.maximum(
            np.sum(s, axis=-1, keepdims=True), 1)
        return s * (d_w - mean)
    if normalizer == "entmax15":  # g = sqrt(w): g * d_w - g (g . d_w) / sum(g)
        g = np.sqrt(w)
        total = np.maximum(np.sum(g, axis=-1, keepdims=True), 1e-300)
        return g * d_w - g * np.sum(g * d_w, axis=-1, keepdims=True) / total
    return w * (d_w - np.sum(d_w * w, axis=-1, keepdims=True))


def attention_reference(query: Tensor, key: Tensor, value: Tensor, *, bias: Tensor | None = None,
                        mask: Tensor | None = None, scale: float | None = None,
                        is_causal: bool = False, q_offset: int | Tensor = 0,
                        sliding_window: int | None = None, score_mod: Callable | None = None,
                        mask_mod: Callable | None = None, logit_soft_cap: float | None = None,
                        dropout_keep: np.ndarray | None = None, dropout_rate: float = 0.0,
                        normalizer: str = "softmax"):
    """Returns (output (B, T, N, Hv), weights (B, N, T, S)), float64.

    `dropout_keep`, a 0/1 array (B, N, T, S), applies inverted dropout with
    `dropout_rate` to the weights before they meet the values. `normalizer`:
    `"softmax"`, `"sparsemax"` or `"entmax15"`, row by row.
    """
    _, _, v, _, weights, _, _ = _forward(
        query, key, value, bias, scale, q_offset, score_mod, logit_soft_cap,
        dict(mask=mask, is_causal=is_causal, sliding_window=sliding_window,
             mask_mod=mask_mod), normalizer,
    )
    used = weights
    if dropout_keep is not None:
        used = weights * dropout_keep / (1.0 - dropout_rate)
    return np.einsum("bnts,bsnh->btnh", used, v), weights


def attention_reference_grads(query: Tensor, key: Tensor, value: Tensor, d_out: Tensor, *,
                              bias: Tensor | None = None, mask: Tensor | None = None,
                              scale: float | None = None, is_causal: bool = False,
                              q_offset: int | Tensor = 0, sliding_window: int | None = None,
                              logit_soft_cap: float | None = None, normalizer: str = "softmax"):
    """Gradients of `sum(output * d_out)` w.r.t. query, key, value, bias.

    The bias gradient has the full (B, N, T, S) shape; sum it over the axes
    a broadcast bias lacks.
    """
    q, k, v, logits, w, groups, scale = _forward(
        query, key, value, bias, scale, q_offset, None, logit_soft_cap,
        dict(mask=mask, is_causal=is_causal, sliding_window=sliding_window), normalizer,
    )
    d_out = np.asarray(d_out, dtype=np.float64)
    d_v = np.einsum("bnts,btnh->bsnh", w, d_out)
    d_w = np.einsum("btnh,bsnh->bnts", d_out, v)
    d_capped = _normalizer_backward(w, d_w, normalizer)
    d_logits = d_capped
    if logit_soft_cap is not None:
        d_logits = d_capped * (1.0 - np.tanh(logits / logit_soft_cap) ** 2)
    d_q = np.einsum("bnts,bsnh->btnh", d_logits, k) * scale
    d_k = np.einsum("bnts,btnh->bsnh", d_logits, q) * scale

    def fold(x):  # (B, S, N, .) -> (B, S, K, .): sum each group of heads
        b, s, n, h = x.shape
        return x.reshape(b, s, n // groups, groups, h).sum(axis=3)

    return d_q, fold(d_k), fold(d_v), d_logits


def _relative_forward(query, key, value, buckets, key_table, value_table,
                      bias_table, scale, visible_kwargs, q_offset, logit_soft_cap):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (query, key, value))
    b, t, n, h = q.shape
    s, groups = k.shape[1], n // k.shape[2]
    k = np.repeat(k, groups, axis=2)  # (B, S, N, H)
    v = np.repeat(v, groups, axis=2)  # (B, S, N, Hv)
    scale = 1.0 / np.sqrt(h) if scale is None else scale
    pairs = np.asarray(buckets)  # (T, S) bucket of each pair

    def per_pair(table):  # (R, D) or (R, N, D) -> (T, S, N, D)
        table = np.asarray(table, dtype=np.float64)
        if table.ndim == 2:
            table = np.repeat(table[:, None], n, axis=1)
        return table[pairs]

    a_k = None if key_table is None else per_pair(key_table)
    a_v = None if value_table is None else per_pair(value_table)
    logits = np.einsum("btnh,bsnh->bnts", q, k) * scale
    if a_k is not None:
        logits = logits + np.einsum("btnh,tsnh->bnts", q, a_k) * scale
    if bias_table is not None:
        table = np.asarray(bias_table, dtype=np.float64)
        table = np.repeat(table[:, None], n, axis=1) if table.ndim == 1 else table
        logits = logits + np.transpose(table[pairs], (2, 0, 1))[None]  # (1, N, T, S)
    logits = np.broadcast_to(logits, (b, n, t, s))
    weights = _weights(logits, logit_soft_cap, q_offset, visible_kwargs)
    out = np.einsum("bnts,bsnh->btnh", weights, v)
    if a_v is not None:
        out = out + np.einsum("bnts,tsnh->btnh", weights, a_v)
    return dict(q=q, k=k, v=v, a_k=a_k, a_v=a_v, pairs=pairs, logits=logits,
                weights=weights, out=out, scale=scale, groups=groups)


def relative_attention_reference(query: Tensor, key: Tensor, value: Tensor, buckets: Callable, *,
                                 key_table: Tensor | None = None,
                                 value_table: Tensor | None = None,
                                 bias_table: Tensor | None = None, scale: float | None = None,
                                 mask: Tensor | None = None, is_causal: bool = False,
                                 q_offset: int | Tensor = 0, sliding_window: int | None = None,
                                 logit_soft_cap: float | None = None):
    """Relative attention with explicit per-pair tables, float64.

    `buckets` is an int array `(T, S)`: the bucket of each (query, key) pair,
    computed by the caller from its own definition (Shaw's clipped distance,
    T5's log buckets, ...). Each pair gathers its rows:
    `logits = scale * q_i . (k_j + key_table[r_ij]) + bias_table[r_ij, n]`,
    `out_i = sum_j w_ij (v_j + value_table[r_ij])`. Tables are `(R, D)`
    shared by the heads or `(R, N, D)` (`bias_table`: `(R,)` or `(R, N)`).

    Returns (output (B, T, N, Hv), weights (B, N, T, S)).
    """
    f = _relative_forward(query, key, value, buckets, key_table, value_table,
                          bias_table, scale,
                          dict(mask=mask, is_causal=is_causal,
                               sliding_window=sliding_window),
                          q_offset, logit_soft_cap)
    return f["out"], f["weights"]


def relative_attention_reference_grads(query: Tensor, key: Tensor, value: Tensor,
                                       buckets: Callable, d_out: Tensor, *,
                                       key_table: Tensor | None = None,
                                       value_table: Tensor | None = None,
                                       bias_table: Tensor | None = None,
                                       scale: float | None = None, mask: Tensor | None = None,
                                       is_causal: bool = False, q_offset: int | Tensor = 0,
                                       sliding_window: int | None = None,
                                       logit_soft_cap: float | None = None):
    """Gradients of `sum(output * d_out)` by the chain rule, float64.

    Returns a dict with `query`, `key`, `value` and each table given
    (`key_table`, `value_table`, `bias_table`), in the shapes passed in.
    """
    f = _relative_forward(query, key, value, buckets, key_table, value_table,
                          bias_table, scale,
                          dict(mask=mask, is_causal=is_causal,
                               sliding_window=sliding_window),
                          q_offset, logit_soft_cap)
    q, k, v, w, pairs, scale = f["q"], f["k"], f["v"], f["weights"], f["pairs"], f["scale"]
    d_out = np.asarray(d_out, dtype=np.float64)
    values = v[:, None] if f["a_v"] is None else v[:, None] + f["a_v"][None]  # (B, T?, S, N, Hv)
    d_w = np.einsum("btnh,btsnh->bnts", d_out, np.broadcast_to(
        values, (q.shape[0], q.shape[1]) + values.shape[2:]))
    d_logits = w * (d_w - np.sum(d_w * w, axis=-1, keepdims=True))
    if logit_soft_cap is not None:
        d_logits = d_logits * (1.0 - np.tanh(f["logits"] / logit_soft_cap) ** 2)
    keys = k[:, None] if f["a_k"] is None else k[:, None] + f["a_k"][None]  # (B, T?, S, N, H)
    d_q = np.einsum("bnts,btsnh->btnh", d_logits, np.broadcast_to(
        keys, (q.shape[0], q.shape[1]) + keys.shape[2:])) * scale
    d_k = np.einsum("bnts,btnh->bsnh", d_logits, q) * scale
    d_v = np.einsum("bnts,btnh->bsnh", w, d_out)

    def fold(x):  # (B, S, N, .) -> (B, S, K, .): sum each group of heads
        b, s, n, h = x.shape
        return x.reshape(b, s, n // f["groups"], f["groups"], h).sum(axis=3)

    grads = {"query": d_q, "key": fold(d_k), "value": fold(d_v)}

    def per_bucket(pair_grads, like):  # (T, S, N, ...) summed per bucket -> like's shape
        like = np.asarray(like)
        out = np.zeros((like.shape[0],) + pair_grads.shape[2:])
        np.add.at(out, pairs, pair_grads)
        return out.sum(axis=1) if out.ndim > like.ndim else out

    if key_table is not None:
        pair = np.einsum("bnts,btnh->tsnh", d_logits, q) * scale  # (T, S, N, H)
        grads["key_table"] = per_bucket(pair, key_table)
    if value_table is not None:
        pair = np.einsum("bnts,btnh->tsnh", w, d_out)  # (T, S, N, Hv)
        grads["value_table"] = per_bucket(pair, value_table)
    if bias_table is not None:
        pair = np.einsum("bnts->tsn", d_logits)  # (T, S, N)
        grads["bias_table"] = per_bucket(pair, bias_table)
    return grads


def monotonic_alignment_reference(p_choose: Tensor, previous: Tensor):
    """Expected monotonic alignment of one output step, from the recursive
    definition (Raffel et al. 2017, eq. 10-11) as a loop over the memory:
    `q[j] = (1 - p[j-1]) q[j-1] + previous[j]`, `alpha[j] = p[j] q[j]`.
    Arrays `(..., S)`."""
    p = np.asarray(p_choose, np.float64)
    prev = np.asarray(previous, np.float64)
    alpha = np.zeros(p.shape)
    q = np.zeros(p.shape[:-1])
    for j in range(p.shape[-1]):
        q = (q * (1 - p[..., j - 1]) if j else 0.0) + prev[..., j]
        alpha[..., j] = p[..., j] * q
    return alpha


def hard_monotonic_reference(p_choose: Tensor, previous: Tensor):
    """Test-time monotonic attention as a scan (Raffel et al. 2017,
    Algorithm 1): from the previous stop, the first position with
    `p > 0.5`; all zeros when none does or when the previous step had
    already run off the end (an all-zero `previous`). Arrays `(B, S)`."""
    p = np.asarray(p_choose, np.float64)
    prev = np.asarray(previous, np.float64)
    out = np.zeros(p.shape)
    for b in range(p.shape[0]):
        if not prev[b].any():
            continue
        for j in range(int(np.argmax(prev[b])), p.shape[1]):
            if p[b, j] > 0.5:
                out[b, j] = 1.0
                break
    return out


def chunkwise_alignment_reference(monotonic: Tensor, chunk_energies: Tensor,
                                  chunk_size: int | None, mask: Tensor | None = None):
    """MoChA's expected attention from its definition (Chiu & Raffel 2018,
    eq. 20): the mass `alpha[k]` of each stop `k` spread over positions
    `k - w + 1 .. k` (real ones only) by a softmax of `u`. Arrays `(B, S)`."""
    alpha = np.asarray(monotonic, np.float64)
    u = np.asarray(chunk_energies, np.float64)
    real = np.ones(u.shape, bool) if mask is None else np.asarray(mask, bool)
    beta = np.zeros(alpha.shape)
    for b in range(alpha.shape[0]):
        for k in range(alpha.shape[1]):
            window = [j for j in range(max(0, k - chunk_size + 1), k + 1) if real[b, j]]
            if not window or alpha[b, k] == 0:
                continue
            e = np.exp(u[b, window] - u[b, window].max())
            beta[b, window] += alpha[b, k] * e / e.sum()
    return beta
