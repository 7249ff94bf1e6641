"""Bad input raises a clear error naming the argument, before computing."""

import numpy as np
import pytest

import attnkit.ops as ak

Q = np.zeros((2, 3, 6, 4), "float32")
K = np.zeros((2, 5, 2, 4), "float32")
V = np.zeros((2, 5, 2, 7), "float32")

BAD = [
    ("query rank", dict(query=np.zeros((3, 6, 4), "float32")), ValueError, r"`query` must be rank 4.*\(3, 6, 4\)"),
    ("key rank", dict(key=np.zeros((2, 5, 8), "float32")), ValueError, r"`key` must be rank 4"),
    ("batch", dict(key=np.zeros((3, 5, 2, 4), "float32")), ValueError, r"batch size.*query=2.*key=3"),
    ("kv length", dict(value=np.zeros((2, 4, 2, 7), "float32")), ValueError, r"key/value length.*key=5.*value=4"),
    ("kv heads", dict(value=np.zeros((2, 5, 3, 7), "float32")), ValueError, r"key/value heads.*key=2.*value=3"),
    ("head dim", dict(key=np.zeros((2, 5, 2, 3), "float32")), ValueError, r"head dim.*query=4.*key=3"),
    ("groups", dict(key=np.zeros((2, 5, 4, 4), "float32"), value=np.zeros((2, 5, 4, 7), "float32")), ValueError, r"multiple.*N=6.*K=4"),
    ("int query", dict(query=np.zeros((2, 3, 6, 4), "int32")), TypeError, r"`query` must be a floating"),
    ("mask broadcast", dict(mask=np.ones((3, 4), bool)), ValueError, r"`mask` of shape \(3, 4\) cannot broadcast.*\(2, 6, 3, 5\)"),
    ("mask rank", dict(mask=np.ones((1, 2, 6, 3, 5), bool)), ValueError, r"`mask` must have rank at most 4"),
    ("mask dtype", dict(mask=np.ones((3, 5), "float32")), TypeError, r"`mask` must be boolean.*float32"),
    ("bias broadcast", dict(bias=np.zeros((2, 7, 3, 5), "float32")), ValueError, r"`bias` of shape \(2, 7, 3, 5\) cannot broadcast"),
    ("bias dtype", dict(bias=np.ones((3, 5), bool)), TypeError, r"`bias` must be a floating"),
    ("window zero", dict(sliding_window=0), ValueError, r"`sliding_window` must be a positive int.*0"),
    ("window float", dict(sliding_window=2.5), ValueError, r"`sliding_window`.*2.5"),
    ("offset", dict(q_offset=1.5), TypeError, r"`q_offset`.*1.5"),
    ("soft cap", dict(logit_soft_cap=-1.0), ValueError, r"`logit_soft_cap`.*-1.0"),
    ("dropout", dict(dropout_rate=1.0), ValueError, r"`dropout_rate`.*1.0"),
    ("implementation", dict(implementation="flash"), ValueError, r"`implementation`.*'flash'"),
    ("score_mod", dict(score_mod=3), TypeError, r"`score_mod` must be callable"),
    ("mask_mod", dict(mask_mod="causal"), TypeError, r"`mask_mod` must be callable"),
    ("scale", dict(scale="0.5"), TypeError, r"`scale` must be a number"),
]


@pytest.mark.parametrize("name, change, error, message", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("fn", [ak.attention, ak.explain])
def test_bad_input_is_rejected_with_a_clear_message(fn, name, change, error, message):
    args = dict(query=Q, key=K, value=V)
    args.update(change)
    calls = []

    def spy(*a):  # the computation never starts
        calls.append(a)
        return True

    kwargs = {k: v for k, v in args.items() if k not in ("query", "key", "value")}
    if "mask_mod" not in kwargs:
        kwargs["mask_mod"] = lambda b, h, q, k: spy(b)
    with pytest.raises(error, match=message):
        fn(args["query"], args["key"], args["value"], **kwargs)
    assert calls == []


def test_ineligible_implementation_request_says_why():
    with pytest.raises(ValueError, match=r"'chunked' cannot compute this call.*weights"):
        ak.attention(Q, K, V, return_weights=True, implementation="chunked")
    with pytest.raises(ValueError, match=r"'fused' cannot compute this call.*score_mod"):
        ak.attention(Q, K, V[..., :4], score_mod=lambda s, b, h, q, k: s, implementation="fused")
