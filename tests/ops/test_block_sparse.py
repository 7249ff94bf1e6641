"""Block sparsity of the chunked path: which blocks it skips, and that
skipping never changes a value or a gradient.

Block states are checked against an explicit NumPy visibility grid; values
and gradients against the float64 reference with the same mask given as a
dense array. Sizes are ragged on purpose: T=11 and S=13 queries and keys in
blocks of 3 x 4 leave a short last block on both axes.
"""

import keras
import numpy as np
import pytest
from keras import ops

import attnkit.ops as ak
from attnkit.testing import attention_reference
from attnkit.testing import attention_reference_grads
from tests.helpers import BACKEND
from tests.helpers import grads
from tests.helpers import jit
from tests.helpers import to_numpy

B, N, KV, H = 2, 4, 2, 8
T, S = 11, 13
QB, KB = 3, 4
LENGTHS = np.array([13, 6], dtype="int32")
PREFIX = 5
WINDOW = 4


def _ids(length, cuts):
    """Document ids (B, length): row b starts a new document at each cut."""
    ids = np.zeros((B, length), dtype="int32")
    for b, row in enumerate(cuts):
        for cut in row:
            ids[b, cut:] += 1
    return ids


Q_IDS = _ids(T + 3, [(4, 9), (2, 3, 12)])
KV_IDS = _ids(S, [(4, 9), (5, 10)])


# Each mask kind: (attnkit mask_mod, NumPy visibility of absolute query
# position q and key k in batch row b; arrays broadcast).
def _kinds():
    def causal(b, q, k):
        return k <= q

    return {
        "causal": (ak.causal_mask(), causal),
        "window_causal": (ak.sliding_window_mask(WINDOW, causal=True),
                          lambda b, q, k: (k <= q) & (q - k < WINDOW)),
        "window": (ak.sliding_window_mask(WINDOW),
                   lambda b, q, k: np.abs(q - k) < WINDOW),
        "padding_lengths": (ak.padding_mask(lengths=LENGTHS),
                            lambda b, q, k: k < LENGTHS[b]),
        "padding_keras_mask": (ak.padding_mask(np.arange(S)[None] < LENGTHS[:, None]),
                               lambda b, q, k: k < LENGTHS[b]),
        "prefix": (ak.prefix_lm_mask(PREFIX), lambda b, q, k: (k < PREFIX) | (k <= q)),
        "prefix_per_row": (ak.prefix_lm_mask(np.array([2, 7], "int32")),
                           lambda b, q, k: (k < np.array([2, 7])[b]) | (k <= q)),
        "documents": (ak.document_mask(Q_IDS, KV_IDS),
                      lambda b, q, k: (q >= 0) & (q < Q_IDS.shape[1])
                      & (Q_IDS[b, np.clip(q, 0, Q_IDS.shape[1] - 1)] == KV_IDS[b, k])),
        "causal_and_documents": (
            ak.and_masks(ak.causal_mask(), ak.document_mask(Q_IDS, KV_IDS)),
            lambda b, q, k: (k <= q) & (q >= 0)
            & (Q_IDS[b, np.clip(q, 0, Q_IDS.shape[1] - 1)] == KV_IDS[b, k])),
        # A causal window of 2 plus "sink" keys: the first 3 (row 0) or 1.
        "window_or_sinks": (
            ak.or_masks(ak.sliding_window_mask(2, causal=True),
                        ak.padding_mask(lengths=np.array([3, 1], "int32"))),
            lambda b, q, k: ((k <= q) & (q - k < 2)) | (k < np.array([3, 1])[b])),
        "causal_and_padding": (ak.and_masks(ak.causal_mask(), ak.padding_mask(lengths=LENGTHS)),
                               lambda b, q, k: (k <= q) & (k < LENGTHS[b])),
        # No block_visibility: the chunked path evaluates it block row by row.
        "user_function": (lambda b, h, q, k: ops.logical_or(q - k >= 6, ops.equal(k, 0)),
                          lambda b, q, k: (q - k >= 6) | (k == 0)),
    }


KINDS = _kinds()
OFFSETS = [0, 2, -3]


def visibility(kind, q_offset, t=T, s=S):
    """NumPy (B, 1, t, s) visibility of `kind` (True = may attend)."""
    b = np.arange(B).reshape(B, 1, 1)
    q = (q_offset + np.arange(t)).reshape(1, t, 1)
    k = np.arange(s).reshape(1, 1, s)
    return np.broadcast_to(KINDS[kind][1](b, q, k), (B, t, s))[:, None]


def block_truth(visible, qb=QB, kb=KB):
    """(any, all) per block, over batch rows, heads and the real positions."""
    _, _, t, s = visible.shape
    nq, nkv = -(-t // qb), -(-s // kb)
    any_, all_ = np.zeros((nq, nkv), bool), np.zeros((nq, nkv), bool)
    for i in range(nq):
        for j in range(nkv):
            block = visible[:, :, i * qb:(i + 1) * qb, j * kb:(j + 1) * kb]
            any_[i, j], all_[i, j] = block.any(), block.all()
    if s % kb:  # the short last key block is filled with hidden keys
        all_[:, -1] = False
    return any_, all_


def states_of(block_mask):
    return np.asarray(to_numpy(block_mask.states))


EXACT_KINDS = ["causal", "window_causal", "window", "padding_lengths", "padding_keras_mask",
               "prefix", "prefix_per_row", "documents", "user_function"]


@pytest.mark.parametrize("q_offset", OFFSETS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_block_states_never_skip_a_visible_pair(kind, q_offset):
    block_mask = ak.create_block_mask(KINDS[kind][0], B, N, T, S, q_offset=q_offset,
                                      query_block=QB, key_block=KB)
    states = states_of(block_mask)
    any_, all_ = block_truth(visibility(kind, q_offset))
    assert states.shape == any_.shape
    # Sound: a block with a visible pair is computed; "full" only if it is.
    assert np.all(states[any_] != 0), block_mask.explain()
    assert np.all(all_[states == 2]), block_mask.explain()
    if kind in EXACT_KINDS:
        # Each built-in mask (and the evaluated function) knows exactly.
        np.testing.assert_array_equal(states == 0, ~any_)
        np.testing.assert_array_equal(states == 2, all_)


@pytest.mark.parametrize("kind", ["causal", "window_causal", "documents", "prefix_per_row",
                                  "causal_and_padding"])
def test_block_states_with_a_tensor_offset_equal_the_static_ones(kind):
    want = states_of(ak.create_block_mask(KINDS[kind][0], B, N, T, S, q_offset=2,
                                          query_block=QB, key_block=KB))
    got = ak.create_block_mask(KINDS[kind][0], B, N, T, S,
                               q_offset=ops.convert_to_tensor(2, "int32"),
                               query_block=QB, key_block=KB)
    np.testing.assert_array_equal(states_of(got), want)


def test_computed_fraction_of_causal_attention():
    q = keras.random.normal((1, 1024, 2, 16), seed=1)
    # Blocks of 512 x 256: the first query block sees 2 of 4 key blocks.
    explained = ak.explain(q, q, q, is_causal=True, implementation="chunked")
    assert explained.computed_blocks == pytest.approx(0.75)
    block_mask = ak.create_block_mask(ak.causal_mask(), 1, 2, 1024, 1024)
    assert block_mask.computed_fraction() == pytest.approx(0.75)
    window = ak.explain(q, q, q, sliding_window=256, is_causal=True, implementation="chunked")
    assert window.computed_blocks == pytest.approx(5 / 8)  # keys q-255 .. q
    assert "6 of 8 block pairs computed" in block_mask.explain()
    assert block_mask.explain().splitlines()[1:] == ["++..", "##++"]


def _qkv(t=T, s=S, seed=0):
    g = np.random.default_rng(seed)
    q = g.normal(size=(B, t, N, H)).astype("float32")
    k = g.normal(size=(B, s, KV, H)).astype("float32")
    v = g.normal(size=(B, s, KV, H + 3)).astype("float32")
    return q, k, v


def _check(call, visible, q_offset=0, t=T, s=S, atol=2e-5):
    """`call(q, k, v)` against the reference with `visible` as a dense mask,
    forward and backward (chunked, blocks of 3 x 4)."""
    q, k, v = _qkv(t, s)
    d_out = np.random.default_rng(5).normal(size=(B, t, N, H + 3)).astype("float32")

    def loss(q, k, v):
        with ak.block_sizes(query=QB, key=KB):
            return ops.sum(call(q, k, v) * ops.convert_to_tensor(d_out))

    with ak.block_sizes(query=QB, key=KB):
        out = to_numpy(call(q, k, v))
    want, _ = attention_reference(q, k, v, mask=visible)
    np.testing.assert_allclose(out, want, atol=atol, rtol=1e-4)
    dead = ~visible.any(axis=-1)  # (B, 1, T): queries that see nothing
    if dead.any():
        rows = np.broadcast_to(dead.transpose(0, 2, 1)[..., None], out.shape)
        assert np.all(out[rows] == 0)
    got = grads(loss, q, k, v)
    wanted = attention_reference_grads(q, k, v, d_out, mask=visible)
    for name, g, w in zip(("query", "key", "value"), got, wanted):
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("q_offset", OFFSETS)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_chunked_mask_mod_equals_the_dense_reference(kind, q_offset):
    _check(lambda q, k, v: ak.attention(q, k, v, mask_mod=KINDS[kind][0], q_offset=q_offset,
                                        implementation="chunked"),
           visibility(kind, q_offset))


@pytest.mark.parametrize("q_offset", [0, 3])
@pytest.mark.parametrize("window", [None, 3])
def test_chunked_causal_and_window_flags_equal_the_dense_reference(window, q_offset):
    want = KINDS["causal"][1] if window is None else \
        (lambda b, q, k: (k <= q) & (q - k < window))
    b = np.arange(B).reshape(B, 1, 1)
    q = (q_offset + np.arange(T)).reshape(1, T, 1)
    visible = np.broadcast_to(want(b, q, np.arange(S).reshape(1, 1, S)), (B, T, S))[:, None]
    _check(lambda q, k, v: ak.attention(q, k, v, is_causal=True, sliding_window=window,
                                        q_offset=q_offset, implementation="chunked"),
           visible)


def test_chunked_dense_mask_skips_its_empty_blocks_and_stays_exact():
    g = np.random.default_rng(3)
    mask = np.tril(np.ones((T, S), bool), k=1) & (g.random((B, 1, T, S)) > 0.3)
    mask[:, :, 3:6, :] = False  # a query block that sees nothing
    with ak.block_sizes(query=QB, key=KB):
        explained = ak.explain(*_qkv(), mask=mask, implementation="chunked")
    assert explained.computed_blocks == pytest.approx(np.mean(block_truth(mask)[0]))
    assert explained.computed_blocks < 0.6
    _check(lambda q, k, v: ak.attention(q, k, v, mask=mask, implementation="chunked"), mask)


@pytest.mark.parametrize("q_offset", [0, 2])
def test_call_time_segment_ids_equal_the_dense_reference(q_offset):
    def call(q, k, v):
        return ak.attention(q, k, v, segment_ids=ops.convert_to_tensor(Q_IDS),
                            kv_segment_ids=ops.convert_to_tensor(KV_IDS), is_causal=True,
                            q_offset=q_offset, implementation="chunked")

    _check(call, visibility("causal_and_documents", q_offset))


def test_self_attention_segment_ids_on_every_path():
    ids = _ids(S, [(3, 8), (6,)])
    q, k, v = _qkv(S, S)
    visible = (ids[:, None, :, None] == ids[:, None, None, :])
    want, _ = attention_reference(q, k, v, mask=visible)
    for implementation in (None, "math", "chunked"):
        got = ak.attention(q, k, v, segment_ids=ids, implementation=implementation)
        np.testing.assert_allclose(to_numpy(got), want, atol=2e-5, err_msg=implementation)


def test_a_shared_block_mask_equals_the_dense_reference():
    mask_mod = ak.and_masks(ak.causal_mask(), ak.document_mask(Q_IDS, KV_IDS))
    block_mask = ak.create_block_mask(mask_mod, B, N, T, S, q_offset=1,
                                      query_block=QB, key_block=KB)
    assert 0 < block_mask.computed_fraction() < 1

    def call(q, k, v):
        return ak.attention(q, k, v, block_mask=block_mask, q_offset=1,
                            implementation="chunked")

    _check(call, visibility("causal_and_documents", 1))
    # Its mask function applies on every path, not only the chunked one.
    q, k, v = _qkv()
    want, _ = attention_reference(q, k, v, mask=visibility("causal_and_documents", 1))
    got = ak.attention(q, k, v, block_mask=block_mask, q_offset=1, implementation="math")
    np.testing.assert_allclose(to_numpy(got), want, atol=2e-5)


def test_a_block_mask_for_other_lengths_is_refused():
    block_mask = ak.create_block_mask(ak.causal_mask(), B, N, T, S,
                                      query_block=QB, key_block=KB)
    q, k, v = _qkv(T, S + 1)
    with pytest.raises(ValueError, match="create_block_mask"):
        ak.attention(q, k, v, block_mask=block_mask)
    with pytest.raises(TypeError, match="BlockMask"):
        ak.attention(*_qkv(), block_mask=np.ones((4, 4)))


def test_compiled_chunked_with_a_tensor_offset_equals_the_reference():
    q, k, v = _qkv()

    def fn(q, k, v, offset):
        with ak.block_sizes(query=QB, key=KB):
            return ak.attention(q, k, v, mask_mod=KINDS["causal_and_documents"][0],
                                sliding_window=5, is_causal=True, q_offset=offset,
                                implementation="chunked")

    for offset in (0, 2):
        got = to_numpy(jit(fn)(q, k, v, np.int32(offset)))
        bq = (offset + np.arange(T)).reshape(1, 1, T, 1)
        visible = visibility("causal_and_documents", offset) & \
            (bq - np.arange(S).reshape(1, 1, 1, S) < 5)
        want, _ = attention_reference(q, k, v, mask=visible)
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=str(offset))


class LearnedAlibi(ak.ScoreMod):
    """ALiBi with one trainable slope per head (read from a layer)."""

    def __init__(self, layer):
        self.layer = layer

    def bias(self, b, h, q_idx, kv_idx):
        slopes = ops.take(self.layer.slopes, h)
        return -slopes * ops.cast(ops.abs(q_idx - kv_idx), slopes.dtype)


class LearnedAlibiAttention(keras.layers.Layer):
    def __init__(self, implementation, **kwargs):
        super().__init__(**kwargs)
        self.implementation = implementation
        self.term = LearnedAlibi(self)

    def build(self, input_shape):
        self.slopes = self.add_weight(shape=(N,), initializer=keras.initializers.Constant(
            [0.5, 0.25, 0.125, 0.0625]), name="slopes")

    def call(self, q, k, v):
        with ak.block_sizes(query=QB, key=KB):
            return ak.attention(q, k, v, score_mod=self.term, is_causal=True,
                                implementation=self.implementation)


def _variable_gradient(layer, loss_of_output, args):
    """d loss / d layer.slopes, as NumPy, on the running backend."""
    args = [ops.convert_to_tensor(a) for a in args]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_of_output(layer(*args))
        return to_numpy(tape.gradient(value, layer.slopes.value))
    if BACKEND == "jax":
        import jax

        def fn(trainable):
            out, _ = layer.stateless_call(trainable, [], *args)
            return loss_of_output(out)

        return np.asarray(jax.grad(fn)([v.value for v in layer.trainable_variables])[0])
    value = loss_of_output(layer(*args))
    layer.slopes.value.grad = None
    value.backward()
    return layer.slopes.value.grad.detach().cpu().numpy()


def test_a_term_with_trainable_weights_gets_its_gradient_on_every_path():
    q, k, v = _qkv(S, S)
    d_out = np.random.default_rng(9).normal(size=(B, S, N, H + 3)).astype("float32")
    slopes = np.array([0.5, 0.25, 0.125, 0.0625])
    distance = np.abs(np.arange(S)[:, None] - np.arange(S)[None, :])
    bias = (-slopes[:, None, None] * distance)[None]  # (1, N, S, S)
    causal = np.tril(np.ones((S, S), bool))
    *_, d_logits = attention_reference_grads(q, k, v, d_out, bias=bias, mask=causal)
    want = np.sum(d_logits * -distance, axis=(0, 2, 3))  # d loss / d slope_h

    for implementation in ("math", "chunked"):
        layer = LearnedAlibiAttention(implementation)
        layer.build(None)

        def loss(out):
            return ops.sum(out * ops.convert_to_tensor(d_out))

        got = _variable_gradient(layer, loss, (q, k, v))
        assert np.all(np.abs(got) > 1e-3), (implementation, got)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=implementation)
