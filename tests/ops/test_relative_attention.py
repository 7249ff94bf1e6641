"""attnkit.ops.relative_attention against Shaw et al.'s equations in float64.

The reference gathers explicit (T, S, H) tables a_ij = table[clip(j - i)]
and evaluates equations (3)-(4) directly; gradients are its central finite
differences.
"""

import numpy as np
import pytest
from keras import ops

import attnkit.ops as ak
from tests.helpers import grads
from tests.helpers import to_numpy


def reference(q, k, v, key_table, value_table, clip_distance, *, q_offset=0, causal=False,
              mask=None, cap=None):
    """Float64 NumPy Shaw attention: q (B, T, N, H), k/v (B, S, K, H)."""
    q, k, v = (np.asarray(x, "float64") for x in (q, k, v))
    b, t, n, h = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    group = n // kv_heads
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    qpos = q_offset + np.arange(t)
    bucket = buckets(t, s, clip_distance, q_offset)

    def table_ij(table):  # -> (T, S, N, D)
        table = np.asarray(table, "float64")
        if table.ndim == 2:
            table = np.repeat(table[:, None], n, axis=1)
        return table[bucket]

    a_k = table_ij(key_table)
    logits = (np.einsum("btnh,bsnh->bnts", q, k)
              + np.einsum("btnh,tsnh->bnts", q, a_k)) / np.sqrt(h)
    if cap is not None:
        logits = cap * np.tanh(logits / cap)
    visible = np.ones((b, n, t, s), bool)
    if causal:
        visible &= np.arange(s)[None, :] <= qpos[:, None]
    if mask is not None:
        visible &= np.broadcast_to(mask, visible.shape)
    logits = np.where(visible, logits, -np.inf)
    top = logits.max(-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    w = np.where(visible, np.exp(logits - top), 0.0)
    total = w.sum(-1, keepdims=True)
    w = w / np.where(total > 0, total, 1.0)
    out = np.einsum("bnts,bsnh->btnh", w, v)
    if value_table is not None:
        out = out + np.einsum("bnts,tsnh->btnh", w, table_ij(value_table))
    return out


def buckets(t, s, clip_distance, q_offset=0):
    """(T, S) bucket of each pair: clip(j - i, -k, k) + k."""
    distance = np.arange(s)[None, :] - (q_offset + np.arange(t))[:, None]
    return np.clip(distance, -clip_distance, clip_distance) + clip_distance


def problem(per_head, with_values, seed=0, t=5, s=7):
    g = np.random.default_rng(seed)
    n, kv_heads, h, clip_distance = 4, 2, 3, 2
    q = g.normal(size=(2, t, n, h)).astype("float32")
    k = g.normal(size=(2, s, kv_heads, h)).astype("float32")
    v = g.normal(size=(2, s, kv_heads, h)).astype("float32")
    shape = (2 * clip_distance + 1,) + ((n,) if per_head else ()) + (h,)
    key_table = g.normal(size=shape).astype("float32")
    value_table = g.normal(size=shape).astype("float32") if with_values else None
    return q, k, v, key_table, value_table, clip_distance


CASES = {
    "plain": {},
    "causal_offset": dict(is_causal=True, q_offset=2),
    "masked_with_empty_row": "mask",
    "soft_cap": dict(logit_soft_cap=1.5),
}


def options(case, t=5, s=7):
    if case != "masked_with_empty_row":
        lib = dict(CASES[case])
        ref = dict(q_offset=lib.get("q_offset", 0), causal=lib.get("is_causal", False),
                   cap=lib.get("logit_soft_cap"))
        return lib, ref
    mask = np.random.default_rng(3).random((2, 1, t, s)) > 0.3
    mask[1, 0, 2] = False  # a query that sees no key
    return dict(mask=mask), dict(mask=mask)


@pytest.mark.parametrize("implementation", [None, "math", "chunked"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("tables", ["shared_kv", "per_head_kv", "shared_keys_only"])
def test_matches_shaw_equations(implementation, case, tables):
    q, k, v, kt, vt, dist = problem("per_head" in tables, "kv" in tables)
    lib, ref = options(case)
    # Several blocks, padded keys, and blocks wholly past the clipping distance.
    with ak.block_sizes(query=2, key=3):
        got = ak.relative_attention(q, k, v, kt, vt, clip_distance=dist,
                                    implementation=implementation, **lib)
    want = reference(q, k, v, kt, vt, dist, **ref)
    np.testing.assert_allclose(to_numpy(got), want, rtol=2e-5, atol=2e-5)


def test_default_blocks_are_smaller_with_relative_positions():
    # 600 queries by 700 keys: with the relative defaults (256 x 256) that is
    # 3 x 3 blocks, padded keys and queries, and blocks past the clipping
    # distance; gradients flow through the recomputing backward.
    from attnkit.ops import _thresholds

    assert _thresholds.RELATIVE_BLOCKS == {"query": 256, "key": 256}
    assert _thresholds.DEFAULT_BLOCKS == {"query": 512, "key": 256}
    q, k, v, kt, vt, dist = problem(True, True, seed=3, t=600, s=700)
    q, k, v = q[:1], k[:1], v[:1]
    got = ak.relative_attention(q, k, v, kt, vt, clip_distance=dist, implementation="chunked")
    np.testing.assert_allclose(to_numpy(got), reference(q, k, v, kt, vt, dist),
                               rtol=2e-5, atol=2e-5)
    d_out = np.random.default_rng(4).normal(size=q.shape).astype("float32")

    def loss(*args):
        out = ak.relative_attention(*args, clip_distance=dist, implementation="chunked")
        return ops.sum(out * ops.convert_to_tensor(d_out))

    got = grads(loss, q, k, v, kt, vt)
    want = reference_grads(q, k, v, kt, vt, dist, d_out)
    for name, g, w in zip(["query", "key", "value", "key_table", "value_table"], got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)


def reference_grads(q, k, v, key_table, value_table, clip_distance, d_out):
    """Float64 gradients of sum(out * d_out) for Shaw attention (no mask),
    by the chain rule through softmax: per-head tables (2k + 1, N, H)."""
    q, k, v, d_out = (np.asarray(x, "float64") for x in (q, k, v, d_out))
    key_table, value_table = (np.asarray(x, "float64") for x in (key_table, value_table))
    t, n, h = q.shape[1:]
    s, kv_heads = k.shape[1:3]
    group = n // kv_heads
    k_n, v_n = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    bucket = buckets(t, s, clip_distance)
    a_k, a_v = key_table[bucket], value_table[bucket]  # (T, S, N, H)
    scale = 1 / np.sqrt(h)
    logits = (np.einsum("btnh,bsnh->bnts", q, k_n)
              + np.einsum("btnh,tsnh->bnts", q, a_k)) * scale
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    d_p = (np.einsum("btnh,bsnh->bnts", d_out, v_n)
           + np.einsum("btnh,tsnh->bnts", d_out, a_v))
    d_s = p * (d_p - (p * d_p).sum(-1, keepdims=True)) * scale
    d_q = np.einsum("bnts,bsnh->btnh", d_s, k_n) + np.einsum("bnts,tsnh->btnh", d_s, a_k)
    fold = lambda x: x.reshape(x.shape[:2] + (kv_heads, group, h)).sum(3)  # noqa: E731
    d_k = fold(np.einsum("bnts,btnh->bsnh", d_s, q))
    d_v = fold(np.einsum("bnts,btnh->bsnh", p, d_out))
    d_key_table, d_value_table = np.zeros_like(key_table), np.zeros_like(value_table)
    for r in range(2 * clip_distance + 1):
        at = (bucket == r)[None, None]  # (1, 1, T, S)
        d_key_table[r] = np.einsum("bnts,btnh->nh", np.where(at, d_s, 0.0), q)
        d_value_table[r] = np.einsum("bnts,btnh->nh", np.where(at, p, 0.0), d_out)
    return d_q, d_k, d_v, d_key_table, d_value_table


@pytest.mark.parametrize("implementation", ["math", "chunked"])
@pytest.mark.parametrize("case", ["plain", "causal_offset", "masked_with_empty_row", "soft_cap"])
@pytest.mark.parametrize("per_head", [False, True])
def test_gradients_match_finite_differences(implementation, case, per_head):
    q, k, v, kt, vt, dist = problem(per_head, True, seed=1, t=3, s=4)
    q, k, v, kt, vt = (x[:1] if x.ndim == 4 else x for x in (q, k, v, kt, vt))
    lib, ref = options(case, t=3, s=4)
    if "mask" in lib:
        lib["mask"] = ref["mask"] = lib["mask"][:1]
    d_out = np.random.default_rng(2).normal(size=q.shape)

    def loss(*args):
        with ak.block_sizes(query=2, key=3):
            out = ak.relative_attention(*args, clip_distance=dist,
                                        implementation=implementation, **lib)
        return ops.sum(out * ops.convert_to_tensor(d_out, "float32"))

    args = [q, k, v, kt, vt]
    got = grads(loss, *args)
    for index, name in enumerate(["query", "key", "value", "key_table", "value_table"]):
        want = np.zeros(args[index].shape)
        for idx in np.ndindex(want.shape):
            f = []
            for sign in (1, -1):
                bumped = [a.astype("float64") for a in args]
                bumped[index][idx] += sign * 1e-6
                f.append(np.sum(reference(*bumped, dist, **ref) * d_out))
            want[idx] = (f[0] - f[1]) / 2e-6
        assert np.all(np.isfinite(got[index])), name
        np.testing.assert_allclose(got[index], want, rtol=1e-3, atol=1e-4, err_msg=name)


def test_fused_and_chunked_refuse_what_they_cannot_do():
    q, k, v, kt, vt, dist = problem(False, True)
    with pytest.raises(ValueError, match="relative-position value terms"):
        ak.relative_attention(q, k, v, kt, vt, clip_distance=dist, implementation="fused")
    with pytest.raises(ValueError, match="chunked.*weights"):
        ak.relative_attention(q, k, v, kt, vt, clip_distance=dist, implementation="chunked",
                              return_weights=True)
    out, weights = ak.relative_attention(q, k, v, kt, vt, clip_distance=dist,
                                         return_weights=True)
    assert tuple(weights.shape) == (2, 4, 5, 7)


@pytest.mark.parametrize("bad, match", [
    (dict(clip_distance=0), "positive int"),
    (dict(clip_distance=3), r"shape \(7, 3\)"),
    (dict(key_table=np.zeros((5, 4), "float32")), r"\(5, 3\) or \(5, 4, 3\)"),
    (dict(value_table=np.zeros((5, 2, 3), "float32")), "value_table"),
])
def test_bad_tables_raise(bad, match):
    q, k, v, kt, vt, dist = problem(False, True)
    args = dict(key_table=kt, value_table=vt, clip_distance=dist)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        ak.relative_attention(q, k, v, **args)
