"""Attention test cases shared by the forward, gradient and jit tests.

Each case builds keyword arguments for `attnkit.ops.attention` and the
matching ones for the NumPy reference (score and mask functions come in a
keras.ops version and an independent NumPy version). Sizes are distinct
primes where the heads allow: B=2, T=3, S=5, H=11, Hv=13.
"""

import numpy as np
from keras import ops

import attnkit.ops as ak

B, T, S, H, HV = 2, 3, 5, 11, 13
HEADS = {"mha": (7, 7), "gqa": (6, 2), "mqa": (5, 1)}


def _alibi_np(n):
    slopes = ak.alibi_slopes(n)

    def fn(s, b, h, q, k):
        return s - slopes[h] * np.abs(q - k)

    return fn


def _alibi_split_np(n):
    pairs = ak.alibi_slopes((n + 1) // 2)
    slopes = np.array([pairs[h // 2] for h in range(n)])

    def score(s, b, h, q, k):
        return s - slopes[h] * np.abs(q - k)

    def mask(b, h, q, k):
        return np.where(h % 2 == 0, k <= q, k >= q)

    return score, mask


def _tilt_lib(s, b, h, q, k):
    return s + ops.cast(0.1 * ops.cast((q - k) * (h + 1) - b, "float32"), s.dtype)


def _tilt_np(s, b, h, q, k):
    return s + 0.1 * ((q - k) * (h + 1) - b)


def doc_ids():
    return np.array([[0, 0, 1, 1, 1], [0, 1, 1, 2, 2]], dtype="int32")


def _doc_np(b, h, q, k):
    ids = doc_ids()
    return ids[b, np.clip(q, 0, S - 1)] == ids[b, k]


def make_case(name, n, t=T, s=S, seed=0):
    """Returns (lib_kwargs, ref_kwargs, logit_scale) for case `name`."""
    g = np.random.default_rng(seed)
    lib, ref, logit_scale = {}, {}, 1.0
    if name == "plain":
        pass
    elif name == "mask_2d_bool":
        lib["mask"] = g.random((t, s)) > 0.4
    elif name == "mask_3d_int":
        lib["mask"] = (g.random((n, t, s)) > 0.4).astype("int32")
    elif name == "mask_4d_fully_masked_rows":
        m = g.random((B, 1, t, s)) > 0.4
        m[0, 0, 0] = False
        m[1, 0, -1] = False
        lib["mask"] = m
    elif name == "mask_4d_full":
        lib["mask"] = g.random((B, n, t, s)) > 0.5
    elif name == "all_masked":
        lib["mask"] = np.zeros((t, s), dtype=bool)
    elif name == "bias_4d":
        lib["bias"] = g.normal(size=(B, n, t, s)).astype("float32")
    elif name == "bias_2d_and_mask":
        lib["bias"] = g.normal(size=(t, s)).astype("float32")
        lib["mask"] = g.random((B, 1, 1, s)) > 0.3
    elif name == "causal":
        lib["is_causal"] = True
    elif name == "causal_offset":
        lib.update(is_causal=True, q_offset=2)
    elif name == "causal_negative_offset":  # first queries see nothing
        lib.update(is_causal=True, q_offset=-1)
    elif name == "window":
        lib["sliding_window"] = 2
    elif name == "causal_window_offset":
        lib.update(is_causal=True, sliding_window=2, q_offset=2)
    elif name == "score_mod_alibi":
        lib["score_mod"] = ak.alibi(n)
        ref["score_mod"] = _alibi_np(n)
    elif name == "alibi_split_directions":
        lib.update(score_mod=ak.alibi(n, split_directions=True),
                   mask_mod=ak.split_directions_mask())
        ref["score_mod"], ref["mask_mod"] = _alibi_split_np(n)
    elif name == "alibi_split_and_window":  # the split mask inside a combined one
        lib.update(score_mod=ak.alibi(n, split_directions=True),
                   mask_mod=ak.and_masks(ak.split_directions_mask(), ak.sliding_window_mask(3)))
        ref["score_mod"], split = _alibi_split_np(n)
        ref["mask_mod"] = lambda b, h, q, k: split(b, h, q, k) & (np.abs(q - k) < 3)
    elif name == "mask_mod_by_head_in_and_masks":  # evaluated by the core, every head
        from tests.ops.user_terms import EvenHeadsLookBack

        lib["mask_mod"] = ak.and_masks(EvenHeadsLookBack(), ak.sliding_window_mask(3))
        ref["mask_mod"] = lambda b, h, q, k: ((h % 2 == 1) | (k <= q)) & (np.abs(q - k) < 3)
    elif name == "score_mod_indices":
        lib["score_mod"] = _tilt_lib
        ref["score_mod"] = _tilt_np
    elif name == "mask_mod_document":
        lib["mask_mod"] = ak.document_mask(doc_ids())
        ref["mask_mod"] = _doc_np
    elif name == "mask_mod_window_and_causal_offset":
        lib.update(mask_mod=ak.sliding_window_mask(3), is_causal=True, q_offset=1)
        ref["mask_mod"] = lambda b, h, q, k: np.abs(q - k) < 3
    elif name == "soft_cap_large_logits":
        lib["logit_soft_cap"] = 5.0
        logit_scale = 30.0
    elif name == "scale":
        lib["scale"] = 0.37
    else:
        raise KeyError(name)
    for key, value in lib.items():
        ref.setdefault(key, value)
    return lib, ref, logit_scale


CASES = [
    "plain", "mask_2d_bool", "mask_3d_int", "mask_4d_fully_masked_rows",
    "mask_4d_full", "all_masked", "bias_4d", "bias_2d_and_mask", "causal",
    "causal_offset", "causal_negative_offset", "window",
    "causal_window_offset", "score_mod_alibi", "alibi_split_directions",
    "alibi_split_and_window", "mask_mod_by_head_in_and_masks", "score_mod_indices",
    "mask_mod_document", "mask_mod_window_and_causal_offset",
    "soft_cap_large_logits", "scale",
]


def make_qkv(n, k, t=T, s=S, seed=1, logit_scale=1.0, h=H, hv=HV):
    g = np.random.default_rng(seed)
    q = (g.normal(size=(B, t, n, h)) * logit_scale).astype("float32")
    key = g.normal(size=(B, s, k, h)).astype("float32")
    value = g.normal(size=(B, s, k, hv)).astype("float32")
    return q, key, value
