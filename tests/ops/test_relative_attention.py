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


def reference(q, k, v, key_table, value_table, max_distance, *, q_offset=0, causal=False,
              mask=None, cap=None):
    """Float64 NumPy Shaw attention: q (B, T, N, H), k/v (B, S, K, H)."""
    q, k, v = (np.asarray(x, "float64") for x in (q, k, v))
    b, t, n, h = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    group = n // kv_heads
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    qpos = q_offset + np.arange(t)
    bucket = np.clip(np.arange(s)[None, :] - qpos[:, None], -max_distance, max_distance)
    bucket = bucket + max_distance  # (T, S)

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


def problem(per_head, with_values, seed=0, t=5, s=7):
    g = np.random.default_rng(seed)
    n, kv_heads, h, max_distance = 4, 2, 3, 2
    q = g.normal(size=(2, t, n, h)).astype("float32")
    k = g.normal(size=(2, s, kv_heads, h)).astype("float32")
    v = g.normal(size=(2, s, kv_heads, h)).astype("float32")
    shape = (2 * max_distance + 1,) + ((n,) if per_head else ()) + (h,)
    key_table = g.normal(size=shape).astype("float32")
    value_table = g.normal(size=shape).astype("float32") if with_values else None
    return q, k, v, key_table, value_table, max_distance


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
        got = ak.relative_attention(q, k, v, kt, vt, max_distance=dist,
                                    implementation=implementation, **lib)
    want = reference(q, k, v, kt, vt, dist, **ref)
    np.testing.assert_allclose(to_numpy(got), want, rtol=2e-5, atol=2e-5)


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
            out = ak.relative_attention(*args, max_distance=dist,
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
    with pytest.raises(ValueError, match="relative-position terms"):
        ak.relative_attention(q, k, v, kt, vt, max_distance=dist, implementation="fused")
    with pytest.raises(ValueError, match="chunked.*weights"):
        ak.relative_attention(q, k, v, kt, vt, max_distance=dist, implementation="chunked",
                              return_weights=True)
    out, weights = ak.relative_attention(q, k, v, kt, vt, max_distance=dist,
                                         return_weights=True)
    assert tuple(weights.shape) == (2, 4, 5, 7)


@pytest.mark.parametrize("bad, match", [
    (dict(max_distance=0), "positive int"),
    (dict(max_distance=3), r"shape \(7, 3\)"),
    (dict(key_table=np.zeros((5, 4), "float32")), r"\(5, 3\) or \(5, 4, 3\)"),
    (dict(value_table=np.zeros((5, 2, 3), "float32")), "value_table"),
])
def test_bad_tables_raise(bad, match):
    q, k, v, kt, vt, dist = problem(False, True)
    args = dict(key_table=kt, value_table=vt, max_distance=dist)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        ak.relative_attention(q, k, v, **args)
