"""A float64 NumPy multi-head attention written from the papers, for tests.

Independent of attnkit's code: loops and explicit `(T, S, H)` tables where
the library avoids them. Shape legend: B batch, T query length, S key
length, N query heads, K key/value heads, H head dim, D features.
"""

import math

import numpy as np
from keras import ops

from attnkit.testing import entmax15_reference
from attnkit.testing import sparsemax_reference
from tests.helpers import to_numpy


def layer_weights(layer):
    """{'query/kernel': array, ...} in float64, keyed by the path below the layer."""
    out = {}
    for w in layer.weights:
        parts = w.path.split("/")
        value = ops.cast(ops.convert_to_tensor(w), "float32")  # NumPy has no bfloat16
        out["/".join(parts[-2:])] = to_numpy(value).astype("float64")
    return out


def project(x, w, name):
    y = np.einsum("btd,dnh->btnh", x, w[f"{name}/kernel"])
    return y + w[f"{name}/bias"] if f"{name}/bias" in w else y


def rotate(x, positions, max_wavelength=10000.0):
    """RoPE as complex rotation of the pairs (f, f + H/2) (Su et al. 2021)."""
    h = x.shape[-1] // 2
    freq = max_wavelength ** (-2.0 * np.arange(h) / (2 * h))
    turn = np.exp(1j * positions[:, None] * freq[None, :])  # (P, H/2)
    z = (x[..., :h] + 1j * x[..., h:]) * turn[None, :, None, :]
    return np.concatenate([z.real, z.imag], axis=-1)


def t5_bucket(rel, num_buckets=32, max_distance=128, bidirectional=True):
    """T5's `_relative_position_bucket` (float32 logarithm, as in T5)."""
    rel = np.asarray(rel)
    out = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        out += (rel > 0) * num_buckets
        n = np.abs(rel)
    else:
        n = np.maximum(-rel, 0)
    max_exact = num_buckets // 2
    log = np.log((np.maximum(n, 1) / max_exact).astype("float32")).astype("float32")
    large = max_exact + (log / np.float32(math.log(max_distance / max_exact))
                         * np.float32(num_buckets - max_exact)).astype("int64")
    large = np.minimum(large, num_buckets - 1)
    return out + np.where(n < max_exact, n, large)


def alibi_slopes(n):
    """The paper's `get_slopes` (Press et al. 2022, appendix)."""
    def power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        return [start * start ** i for i in range(n)]
    if math.log2(n).is_integer():
        return np.array(power_of_2(n))
    closest = 2 ** math.floor(math.log2(n))
    return np.array(power_of_2(closest) + power_of_2(2 * closest)[0::2][: n - closest])


def mha(layer, query, value, key=None, mask=None, causal=False, window=None,
        q_offset=0, position=None, bias=None, weights=None, normalizer="softmax"):
    """(output (B, T, E), weights (B, N, T, S)) of `layer` in float64.

    `mask` is bool (B, T, S); `position` is (kind, options) with kind in
    shaw / t5 / alibi / rotary and the options of that scheme. `weights`
    replaces the layer's (as from `layer_weights`).
    """
    key = value if key is None else key
    query, value, key = (np.asarray(a, "float64") for a in (query, value, key))
    w = layer_weights(layer) if weights is None else weights
    q, k, v = project(query, w, "query"), project(key, w, "key"), project(value, w, "value")
    b, t, n, h = q.shape
    s, kh = k.shape[1], k.shape[2]
    q_pos = q_offset + np.arange(t)
    k_pos = np.arange(s)
    kind, opts = position or (None, {})
    if kind == "rotary":
        q, k = rotate(q, q_pos, opts.get("max_wavelength", 10000.0)), rotate(k, k_pos)
    heads = np.arange(n) // (n // kh)
    k, v = k[:, :, heads], v[:, :, heads]  # (B, S, N, .)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(h)
    dist = k_pos[None, :] - q_pos[:, None]  # (T, S), key minus query
    if kind == "shaw":
        kk = opts["k"]
        idx = np.clip(dist, -kk, kk) + kk
        table = w["relative_position/key_embeddings"] if "relative_position/key_embeddings" in w \
            else w[_find(w, "key_embeddings")]
        a_k = table[idx]  # (T, S, [N,] H), explicit as in the paper
        eq = "btnh,tsnh->bnts" if a_k.ndim == 4 else "btnh,tsh->bnts"
        logits = logits + np.einsum(eq, q, a_k) / math.sqrt(h)
    if kind == "t5":
        bucket = t5_bucket(dist, **opts)
        logits = logits + w[_find(w, "embeddings")][bucket].transpose(2, 0, 1)[None]
    if kind == "alibi":
        slopes = alibi_slopes(n)
        if opts.get("split"):  # one slope per pair of heads: even left, odd right
            slopes = np.array([alibi_slopes(math.ceil(n / 2))[i // 2] for i in range(n)])
        logits = logits - slopes[None, :, None, None] * np.abs(dist)[None, None]
    if bias is not None:
        logits = logits + bias
    visible = np.ones((b, 1, t, s), bool)
    if mask is not None:
        visible = visible & mask[:, None]
    if causal:
        visible = visible & (dist <= 0)
    if window is not None:
        band = dist > -window if causal else np.abs(dist) < window
        visible = visible & band
    if kind == "alibi" and opts.get("split"):
        looks_left = (np.arange(n) % 2 == 0)[:, None, None]
        visible = visible & np.where(looks_left, dist <= 0, dist >= 0)[None]
    logits = np.where(visible, logits, -np.inf)
    top = np.max(logits, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(visible, np.exp(logits - top), 0.0)
    total = e.sum(-1, keepdims=True)
    weights = np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)
    if normalizer != "softmax":  # each row with something visible on its own
        rows = {"sparsemax": sparsemax_reference, "entmax15": entmax15_reference}[normalizer]
        weights = np.zeros(logits.shape)
        for index in np.ndindex(*logits.shape[:3]):
            row = visible[index[0], min(index[1], visible.shape[1] - 1), index[2]]
            if row.any():
                weights[index][row] = rows(logits[index][row])
    out = np.einsum("bnts,bsnh->btnh", weights, v)
    if kind == "shaw" and _find(w, "value_embeddings"):
        a_v = w[_find(w, "value_embeddings")][np.clip(dist, -opts["k"], opts["k"]) + opts["k"]]
        eq = "bnts,tsnh->btnh" if a_v.ndim == 4 else "bnts,tsh->btnh"
        out = out + np.einsum(eq, weights, a_v)
    if "gate/kernel" in w:
        out = out / (1.0 + np.exp(-project(query, w, "gate")))
    final = np.einsum("btnh,nhe->bte", out, w["attention_output/kernel"])
    if "attention_output/bias" in w:
        final = final + w["attention_output/bias"]
    return final, weights


def _find(w, suffix):
    found = [name for name in w if name.endswith(suffix)]
    return found[0] if found else None
