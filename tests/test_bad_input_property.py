"""Random wrong arguments to every public entry point: attnkit itself refuses
each with a `ValueError` or `TypeError` (never a framework error from deep
inside), and whatever it accepts gives a finite result.

Each entry point is a valid call; hypothesis replaces one of its arguments
with a wrong value: the wrong rank, a wrong axis size, a wrong dtype, None,
a string, a non-positive, non-integer or non-finite number.
"""

import pathlib
import traceback

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest

import attnkit
import attnkit.ops as ak
from tests.helpers import to_numpy

PACKAGE = str(pathlib.Path(attnkit.__file__).parent)
g = np.random.default_rng(0)
Q = g.normal(size=(2, 3, 4, 8)).astype("float32")
K = g.normal(size=(2, 5, 2, 8)).astype("float32")
V = g.normal(size=(2, 5, 2, 8)).astype("float32")
X = g.normal(size=(2, 3, 8)).astype("float32")
M = g.normal(size=(2, 5, 8)).astype("float32")
TABLE = g.normal(size=(5, 8)).astype("float32")
T5_TABLE = g.normal(size=(32, 4)).astype("float32")
IDS = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 2, 2]], "int32")


def _mha(num_heads=2, key_dim=4, query=X, value=M, attention_mask=None,
         attention_bias=None, dropout=0.0, output_shape=None, num_key_value_heads=None):
    layer = attnkit.layers.MultiHeadAttention(
        num_heads, key_dim, dropout=dropout, output_shape=output_shape,
        num_key_value_heads=num_key_value_heads)
    return layer(query, value, attention_mask=attention_mask, attention_bias=attention_bias)


def _single(layer_class, query=X[:, 0], value=M, value_mask=None, **kwargs):
    return layer_class(**kwargs)(query, value, value_mask=value_mask)


P = g.uniform(size=(2, 5)).astype("float32")
PREV = np.eye(5, dtype="float32")[[0, 2]]


def _stateful(layer_class, query=X[:, 0], value=M, value_mask=None, **kwargs):
    layer = layer_class(**kwargs)
    return layer(query, value, layer.get_initial_state(value), value_mask=value_mask)


# name -> (function, valid keyword arguments)
ENTRY_POINTS = {
    "attention": (ak.attention, dict(
        query=Q, key=K, value=V, mask=np.ones((3, 5), bool), bias=np.zeros((3, 5), "float32"),
        scale=0.5, q_offset=1, sliding_window=2, logit_soft_cap=30.0, dropout_rate=0.0,
        implementation="math")),
    "attention chunked": (ak.attention, dict(
        query=Q, key=K, value=V, is_causal=True, implementation="chunked")),
    "explain": (ak.explain, dict(query=Q, key=K, value=V, sliding_window=2)),
    "relative_attention Shaw": (ak.relative_attention, dict(
        query=Q, key=K, value=V, key_table=TABLE, value_table=TABLE, clip_distance=2)),
    "relative_attention T5": (ak.relative_attention, dict(
        query=Q, key=K, value=V, bias_table=T5_TABLE, buckets=ak.T5Buckets())),
    "alibi": (lambda num_heads=4, query=Q: ak.attention(
        query, K, V, score_mod=ak.alibi(num_heads)), {"num_heads": 4, "query": Q}),
    "soft_cap": (lambda cap=5.0: ak.attention(Q, K, V, score_mod=ak.soft_cap(cap)),
                 {"cap": 5.0}),
    "sliding_window_mask": (lambda window=2: ak.attention(
        Q, K, V, mask_mod=ak.sliding_window_mask(window)), {"window": 2}),
    "prefix_lm_mask": (lambda prefix_length=2: ak.attention(
        Q, K, V, mask_mod=ak.prefix_lm_mask(prefix_length)), {"prefix_length": 2}),
    "document_mask": (lambda segment_ids=IDS: ak.attention(
        Q, K, V, mask_mod=ak.document_mask(segment_ids)), {"segment_ids": IDS}),
    "padding_mask": (lambda lengths=np.array([3, 5]): ak.attention(
        Q, K, V, mask_mod=ak.padding_mask(lengths=lengths)), {"lengths": np.array([3, 5])}),
    "MultiHeadAttention": (_mha, dict(
        num_heads=2, key_dim=4, query=X, value=M, attention_mask=np.ones((2, 3, 5), bool),
        attention_bias=np.zeros((3, 5), "float32"), dropout=0.1, output_shape=6,
        num_key_value_heads=1)),
    "DotProductAttention": (lambda **kw: _single(attnkit.layers.DotProductAttention, **kw),
                            dict(query=X[:, 0], value=M, value_mask=np.ones((2, 5), bool),
                                 dropout=0.0)),
    "AdditiveAttention": (lambda **kw: _single(attnkit.layers.AdditiveAttention, **kw),
                          dict(query=X[:, 0], value=M, units=4, dropout=0.0)),
    "monotonic_alignment": (ak.monotonic_alignment, dict(p_choose=P, previous=PREV,
                                                         mode="parallel")),
    "chunkwise_alignment": (ak.chunkwise_alignment, dict(monotonic=P, chunk_energies=P,
                                                         chunk_size=2)),
    "MonotonicAttention": (lambda **kw: _stateful(attnkit.layers.MonotonicAttention, **kw),
                           dict(query=X[:, 0], value=M, value_mask=np.ones((2, 5), bool),
                                units=4, chunk_size=2, noise_std=0.5, score_bias_init=-1.0)),
    "LocationSensitiveAttention": (
        lambda **kw: _stateful(attnkit.layers.LocationSensitiveAttention, **kw),
        dict(query=X[:, 0], value=M, units=4, filters=3, kernel_size=3)),
    "CoverageAttention": (lambda **kw: _stateful(attnkit.layers.CoverageAttention, **kw),
                          dict(query=X[:, 0], value=M, units=4, fertility=2.0)),
    "ShawRelativePosition": (
        lambda clip_distance=2, query=X: attnkit.layers.MultiHeadAttention(
            2, 4, position=attnkit.layers.ShawRelativePosition(clip_distance))(query, query),
        dict(clip_distance=2, query=X)),
    "T5RelativeBias": (
        lambda num_buckets=8, max_distance=16: attnkit.layers.MultiHeadAttention(
            2, 4, position=attnkit.layers.T5RelativeBias(num_buckets, max_distance))(X, X),
        dict(num_buckets=8, max_distance=16)),
    "RotaryEmbedding": (
        lambda max_wavelength=10000, query=X: attnkit.layers.MultiHeadAttention(
            2, 4, position=attnkit.layers.RotaryEmbedding(max_wavelength))(query, query),
        dict(max_wavelength=10000, query=X)),
}


def _wrong_arrays(x):
    x = np.asarray(x)
    shape = list(x.shape)
    wrong = [x[None], np.zeros(shape[:-1] + [shape[-1] + 3], x.dtype) if shape else x[None],
             x.astype("U3"), None, "tensor"]
    if shape:
        wrong += [x[..., 0], np.zeros([s + 1 for s in shape], x.dtype)]
    if x.dtype.kind == "f":
        wrong += [x.astype("int32"), x > 0]
    else:
        wrong += [x.astype("float32") + 0.5]
    return wrong


WRONG_SCALARS = [0, -3, 1.5, float("nan"), float("inf"), -1.0, "2", None, True, [2]]


def _wrong_values(value):
    if isinstance(value, np.ndarray):
        return _wrong_arrays(value)
    if isinstance(value, str):
        return ["bogus", 3, None]
    return WRONG_SCALARS


CASES = [(name, arg, i) for name, (_, valid) in ENTRY_POINTS.items()
         for arg, value in valid.items() for i in range(len(_wrong_values(value)))]


def _raised_by_attnkit(error):
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(PACKAGE)


@pytest.mark.slow
@hypothesis.settings(max_examples=len(CASES))
@hypothesis.given(st.sampled_from(CASES))
def test_wrong_arguments_are_refused_by_attnkit_or_give_finite_results(case):
    name, arg, index = case
    fn, valid = ENTRY_POINTS[name]
    kwargs = dict(valid)
    kwargs[arg] = _wrong_values(valid[arg])[index]
    keras.utils.set_random_seed(0)
    try:
        result = fn(**kwargs)
    except (ValueError, TypeError) as error:
        assert _raised_by_attnkit(error), (
            f"{name}({arg}={kwargs[arg]!r}) failed outside attnkit: "
            f"{type(error).__name__}: {error}\n{''.join(traceback.format_tb(error.__traceback__)[-3:])}")
        return
    if isinstance(result, ak.Explanation):
        return
    results = result if isinstance(result, tuple) else (result,)
    for r in results:
        assert np.all(np.isfinite(to_numpy(r))), f"{name}({arg}={kwargs[arg]!r}) gave NaN"
