"""The reference itself, checked against a per-element loop from the formula.

The loop spells attention out scalar by scalar: for query (b, i, n) and key
j visible under the rules, weight = exp(l_j) / sum exp(l), l_j = scale *
sum_d q[b, i, n, d] * k[b, j, n // G, d] + bias. Its gradients are checked by
central finite differences.
"""

import itertools
import math

import numpy as np
import pytest

from attnkit.testing import attention_reference
from attnkit.testing import attention_reference_grads
from tests.helpers import central_differences

pytestmark = pytest.mark.backend_independent


def loop_attention(q, k, v, bias, mask, q_offset, window, causal):
    b_, t_, n_, h_ = q.shape
    s_, kv_, hv_ = k.shape[1], k.shape[2], v.shape[3]
    g = n_ // kv_
    out = np.zeros((b_, t_, n_, hv_))
    for b, i, n in itertools.product(range(b_), range(t_), range(n_)):
        pos = q_offset + i
        logits = {}
        for j in range(s_):
            if not mask[b, n, i, j] or (causal and j > pos):
                continue
            if window is not None and (pos - j >= window if causal else abs(pos - j) >= window):
                continue
            dot = sum(q[b, i, n, d] * k[b, j, n // g, d] for d in range(h_))
            logits[j] = dot / math.sqrt(h_) + bias[b, n, i, j]
        if not logits:
            continue
        top = max(logits.values())
        total = sum(math.exp(x - top) for x in logits.values())
        for j, x in logits.items():
            out[b, i, n] += math.exp(x - top) / total * v[b, j, n // g]
    return out


def test_reference_equals_the_loop():
    g = np.random.default_rng(0)
    q = g.normal(size=(2, 3, 4, 5))
    k = g.normal(size=(2, 6, 2, 5))
    v = g.normal(size=(2, 6, 2, 3))
    bias = g.normal(size=(2, 4, 3, 6))
    mask = g.random((2, 4, 3, 6)) > 0.3
    mask[1, 2, 0] = False
    for causal, offset, window in [(False, 0, None), (True, 2, None), (True, 3, 2), (False, 0, 2)]:
        want = loop_attention(q, k, v, bias, mask, offset, window, causal)
        got, _ = attention_reference(q, k, v, bias=bias, mask=mask, is_causal=causal,
                                     q_offset=offset, sliding_window=window)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_reference_gradients_equal_finite_differences():
    g = np.random.default_rng(1)
    q = g.normal(size=(1, 2, 4, 3))
    k = g.normal(size=(1, 3, 2, 3))
    v = g.normal(size=(1, 3, 2, 2))
    bias = g.normal(size=(1, 4, 2, 3))
    mask = np.ones((1, 1, 2, 3), bool)
    mask[0, 0, 1, 2] = False
    d_out = g.normal(size=(1, 2, 4, 2))
    kwargs = dict(mask=mask, logit_soft_cap=1.5, is_causal=True, q_offset=1)

    def loss(q, k, v, bias):
        out, _ = attention_reference(q, k, v, bias=bias, **kwargs)
        return np.sum(out * d_out)

    analytic = attention_reference_grads(q, k, v, d_out, bias=bias, **kwargs)
    for grad, numeric in zip(analytic, central_differences(loss, [q, k, v, bias])):
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


def test_relative_reference_gradients_match_finite_differences():
    """The relative reference's chain rule (inputs and all three tables)
    against central differences of its own forward pass."""
    from attnkit.testing import relative_attention_reference
    from attnkit.testing import relative_attention_reference_grads

    g = np.random.default_rng(3)
    b, t, s, n, kv, h, r = 2, 3, 5, 4, 2, 2, 4
    args = dict(query=g.normal(size=(b, t, n, h)), key=g.normal(size=(b, s, kv, h)),
                value=g.normal(size=(b, s, kv, h + 1)))
    tables = dict(key_table=g.normal(size=(r, n, h)), value_table=g.normal(size=(r, h + 1)),
                  bias_table=g.normal(size=(r, n)))
    buckets = g.integers(0, r, size=(t, s))
    d_out = g.normal(size=(b, t, n, h + 1))
    options = dict(is_causal=True, q_offset=1, logit_soft_cap=2.0)
    got = relative_attention_reference_grads(*args.values(), buckets, d_out, **tables,
                                             **options)
    values = {**args, **tables}
    for name, x in values.items():
        want = np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            f = []
            for sign in (1, -1):
                bumped = {k: v.copy() for k, v in values.items()}
                bumped[name][idx] += sign * 1e-6
                out, _ = relative_attention_reference(
                    bumped.pop("query"), bumped.pop("key"), bumped.pop("value"), buckets,
                    **bumped, **options)
                f.append(np.sum(out * d_out))
            want[idx] = (f[0] - f[1]) / 2e-6
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-7, err_msg=name)
