"""A float64 NumPy reference for attention, written from the definitions.

It shares no code with `attnkit.ops`: grouped heads are expanded with
`np.repeat`, masks are built on explicit index grids, each softmax row is
normalised on its own, and the backward pass is the textbook chain rule.
`score_mod` and `mask_mod` given here must be NumPy functions.

Shape legend: B batch, T query length, S key length, N query heads,
K key/value heads, H head dim, Hv value head dim.
"""

import numpy as np


def _grids(b, n, t, s, q_offset):
    return (
        np.arange(b).reshape(b, 1, 1, 1),
        np.arange(n).reshape(1, n, 1, 1),
        (q_offset + np.arange(t)).reshape(1, 1, t, 1),
        np.arange(s).reshape(1, 1, 1, s),
    )


def visibility_reference(shape, *, mask=None, is_causal=False, q_offset=0,
                         sliding_window=None, mask_mod=None):
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
             logit_soft_cap, visible_kwargs):
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
    capped = logits
    if logit_soft_cap is not None:
        capped = logit_soft_cap * np.tanh(logits / logit_soft_cap)
    visible = visibility_reference(
        (b, n, t, s), q_offset=q_offset, **visible_kwargs
    )
    weights = np.zeros((b, n, t, s))
    for index in np.ndindex(b, n, t):
        row = visible[index]
        if row.any():
            e = np.exp(capped[index][row] - capped[index][row].max())
            weights[index][row] = e / e.sum()
    return q, k, v, logits, weights, groups, scale


def attention_reference(query, key, value, *, bias=None, mask=None,
                        scale=None, is_causal=False, q_offset=0,
                        sliding_window=None, score_mod=None, mask_mod=None,
                        logit_soft_cap=None, dropout_keep=None,
                        dropout_rate=0.0):
    """Returns (output (B, T, N, Hv), weights (B, N, T, S)), float64.

    `dropout_keep`, a 0/1 array (B, N, T, S), applies inverted dropout with
    `dropout_rate` to the weights before they meet the values.
    """
    _, _, v, _, weights, _, _ = _forward(
        query, key, value, bias, scale, q_offset, score_mod, logit_soft_cap,
        dict(mask=mask, is_causal=is_causal, sliding_window=sliding_window,
             mask_mod=mask_mod),
    )
    used = weights
    if dropout_keep is not None:
        used = weights * dropout_keep / (1.0 - dropout_rate)
    return np.einsum("bnts,bsnh->btnh", used, v), weights


def attention_reference_grads(query, key, value, d_out, *, bias=None,
                              mask=None, scale=None, is_causal=False,
                              q_offset=0, sliding_window=None,
                              logit_soft_cap=None):
    """Gradients of `sum(output * d_out)` w.r.t. query, key, value, bias.

    The bias gradient has the full (B, N, T, S) shape; sum it over the axes
    a broadcast bias lacks.
    """
    q, k, v, logits, w, groups, scale = _forward(
        query, key, value, bias, scale, q_offset, None, logit_soft_cap,
        dict(mask=mask, is_causal=is_causal, sliding_window=sliding_window),
    )
    d_out = np.asarray(d_out, dtype=np.float64)
    d_v = np.einsum("bnts,btnh->bsnh", w, d_out)
    d_w = np.einsum("btnh,bsnh->bnts", d_out, v)
    d_capped = w * (d_w - np.sum(d_w * w, axis=-1, keepdims=True))
    d_logits = d_capped
    if logit_soft_cap is not None:
        d_logits = d_capped * (1.0 - np.tanh(logits / logit_soft_cap) ** 2)
    d_q = np.einsum("bnts,bsnh->btnh", d_logits, k) * scale
    d_k = np.einsum("bnts,btnh->bsnh", d_logits, q) * scale

    def fold(x):  # (B, S, N, .) -> (B, S, K, .): sum each group of heads
        b, s, n, h = x.shape
        return x.reshape(b, s, n // groups, groups, h).sum(axis=3)

    return d_q, fold(d_k), fold(d_v), d_logits
