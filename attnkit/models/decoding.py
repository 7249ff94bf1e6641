"""Greedy and beam-search decoding for the attnkit encoder-decoder models.

Shape legend: B batch, W beams, S source length, V target vocabulary.
A "stepper" runs a model's encoder once and its decoder one token at a
time; its state is a nest of tensors with a leading batch axis, which beam
search tiles and reorders.
"""

import keras
import numpy as np
from keras import ops

from attnkit.types import Tensor


def greedy_decode(model: keras.Model, source_ids: Tensor, steps: int, start_id: int = 1):
    """Greedy decoding of `steps` tokens with a model from
    `build_rnn_seq2seq` or `build_transformer_seq2seq` (the Transformer
    decodes with its self-attention caches).

    Returns:
        `(token ids (B, steps), alignments (B, steps, S))` as NumPy arrays.
    """
    stepper = _stepper(model)
    source_ids = np.asarray(source_ids, dtype="int32")
    state = stepper.start(ops.convert_to_tensor(source_ids), steps)
    token = np.full((source_ids.shape[0],), start_id, "int32")
    tokens, alignments = [], []
    for i in range(steps):
        logits, alignment, state = stepper.step(ops.convert_to_tensor(token), state, i)
        token = np.argmax(ops.convert_to_numpy(logits), axis=-1).astype("int32")
        tokens.append(token)
        alignments.append(ops.convert_to_numpy(alignment))
    return np.stack(tokens, 1), np.stack(alignments, 1)


def beam_search_decode(model: keras.Model, source_ids: Tensor, steps: int, beam_width: int = 4,
                       start_id: int = 1, end_id: int = 2, pad_id: int = 0,
                       length_penalty: float = 0.0, coverage_penalty: float = 0.0):
    """Beam search over `steps` tokens; a finished beam (it emitted
    `end_id`) continues with `pad_id` at no cost.

    Beams are ranked by GNMT's score (Wu et al. 2016, section 7):
    `log P(Y|X) / lp(Y) + cp(X; Y)` with `lp(Y) = ((5 + |Y|) / 6) ** alpha`
    (`|Y|` the tokens up to and with `end_id`) and `cp(X; Y) = beta *
    sum_i log(min(sum_j p_ij, 1))` over the real source positions `i` (the
    sum floored at 1e-10, which sparse attention can leave at 0),
    `p_ij` the attention of output `j` on source `i` (the models'
    alignment output). `alpha = beta = 0` ranks by log-probability alone.

    Args:
        model: a model from `build_rnn_seq2seq` or `build_transformer_seq2seq`.
        source_ids: int `(B, S)`, 0 for padding.
        steps: tokens to decode.
        beam_width: `W`, hypotheses kept per input; 1 is greedy decoding.
        start_id: the token fed first.
        end_id: the token that ends a hypothesis.
        pad_id: what a finished hypothesis emits from then on.
        length_penalty: `alpha` (GNMT used 0.6-0.7): larger favours longer
            outputs.
        coverage_penalty: `beta` (GNMT used 0.2): penalises outputs that
            leave source positions unattended.

    Returns:
        `(token ids (B, steps), log-probabilities (B,))` of the best beam, as
        NumPy arrays. `beam_width=1` is greedy decoding.
    """
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"`beam_width` must be a positive int. Received: {beam_width!r}.")
    for name, value in (("length_penalty", length_penalty),
                        ("coverage_penalty", coverage_penalty)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"`{name}` must be a number >= 0. Received: {value!r}.")
    stepper = _stepper(model)
    source_ids = np.asarray(source_ids, dtype="int32")
    b, w = source_ids.shape[0], beam_width
    state = stepper.start(ops.convert_to_tensor(source_ids), steps)
    state = keras.tree.map_structure(lambda x: ops.repeat(x, w, axis=0), state)  # (B*W, ...)
    log_probs = np.full((b, w), -np.inf)
    log_probs[:, 0] = 0.0  # all beams start identical: keep one
    history = np.zeros((b, w, 0), "int32")
    finished = np.zeros((b, w), bool)
    lengths = np.zeros((b, w))
    coverage = np.zeros((b, w, source_ids.shape[1]))
    real_source = (source_ids != pad_id)[:, None, None, :]  # (B, 1, 1, S)
    token = np.full((b * w,), start_id, "int32")
    for i in range(steps):
        logits, alignment, state = stepper.step(ops.convert_to_tensor(token), state, i)
        logp = _log_softmax(ops.convert_to_numpy(logits).astype("float64"))
        logp = logp.reshape(b, w, -1)
        logp[finished] = -np.inf
        logp[finished, pad_id] = 0.0
        vocab = logp.shape[-1]
        total = log_probs[:, :, None] + logp  # (B, W, V)
        grown = lengths + ~finished  # a finished beam stays as long
        attended = ops.convert_to_numpy(alignment).astype("float64").reshape(b, w, -1)
        grown_coverage = coverage + np.where(finished[..., None], 0.0, attended)
        rank = gnmt_score(total, grown[..., None], grown_coverage[:, :, None, :],
                          real_source, length_penalty, coverage_penalty)
        best = np.argsort(-rank.reshape(b, w * vocab), axis=1, kind="stable")[:, :w]  # (B, W)
        beam, token = best // vocab, (best % vocab).astype("int32")
        log_probs = np.take_along_axis(total.reshape(b, w * vocab), best, axis=1)
        history = np.concatenate(
            [np.take_along_axis(history, beam[:, :, None], axis=1), token[:, :, None]], axis=2)
        lengths = np.take_along_axis(grown, beam, axis=1)
        coverage = np.take_along_axis(grown_coverage, beam[:, :, None], axis=1)
        finished = np.take_along_axis(finished, beam, axis=1) | (token == end_id)
        order = ops.convert_to_tensor((np.arange(b)[:, None] * w + beam).reshape(-1))
        state = keras.tree.map_structure(lambda x: ops.take(x, order, axis=0), state)
        token = token.reshape(-1)
    return history[:, 0], log_probs[:, 0]


def gnmt_score(log_probs: np.ndarray, lengths: np.ndarray, coverage: np.ndarray | None = None,
               source_mask: np.ndarray | None = None, length_penalty: float = 0.0,
               coverage_penalty: float = 0.0):
    """GNMT's beam score (Wu et al. 2016, eq. 14), with NumPy broadcasting:
    `log_probs / ((5 + lengths) / 6) ** length_penalty + coverage_penalty *
    sum_i log(min(coverage_i, 1))`, the sum over the last axis of
    `coverage` (summed attention per source position) where `source_mask`
    is True, `coverage` floored at 1e-10 (sparse attention can leave 0).
    Rescores n-best lists the way `beam_search_decode` ranks beams."""
    score = np.asarray(log_probs) / ((5.0 + np.asarray(lengths)) / 6.0) ** length_penalty
    if coverage_penalty:
        coverage = np.asarray(coverage, dtype="float64")
        mask = np.ones(coverage.shape, bool) if source_mask is None else np.broadcast_to(
            source_mask, coverage.shape)
        covered = np.log(np.clip(coverage, 1e-10, 1.0), where=mask,
                         out=np.zeros(coverage.shape))
        score = score + coverage_penalty * covered.sum(-1)
    return score


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _stepper(model):
    names = {layer.name for layer in model.layers}
    if "decoder" in names:
        return _RNNStepper(model)
    if "decoder_0" in names:
        return _TransformerStepper(model)
    raise ValueError(
        "The model is neither from build_rnn_seq2seq nor from "
        f"build_transformer_seq2seq (its layers: {sorted(names)})."
    )


class _RNNStepper:
    def __init__(self, model):
        self.model = model
        self.decoder = model.get_layer("decoder")
        self.embed = model.get_layer("target_embedding")
        self.to_logits = model.get_layer("logits")

    def start(self, source_ids, steps):
        embedded = self.model.get_layer("source_embedding")(source_ids)
        mask = ops.not_equal(source_ids, 0)
        memory, forward, backward = self.model.get_layer("encoder")(embedded, mask=mask)
        state = self.model.get_layer("bridge")(ops.concatenate([forward, backward], -1))
        states = self.decoder.get_initial_state(ops.shape(source_ids)[0], [state],
                                                memory=memory, memory_mask=mask)
        return list(states), memory, mask

    def step(self, token, state, i):
        states, memory, mask = state
        out, alignment, states = self.decoder.step(self.embed(token), states, memory, mask)
        return self.to_logits(out), alignment, (list(states), memory, mask)


class _TransformerStepper:
    def __init__(self, model):
        self.model = model
        self.encoders = _numbered(model, "encoder_")
        self.decoders = _numbered(model, "decoder_")
        self.embed = model.get_layer("target_embedding")
        self.to_logits = model.get_layer("logits")

    def start(self, source_ids, steps):
        mask = ops.not_equal(source_ids, 0)
        memory = self.model.get_layer("source_embedding")(source_ids)
        for block in self.encoders:
            memory = block(memory, mask=mask)
        b = ops.shape(source_ids)[0]
        caches = [ops.zeros((b, 2, steps, d.num_heads, d.units // d.num_heads), memory.dtype)
                  for d in self.decoders]
        return caches, memory, mask

    def step(self, token, state, i):
        caches, memory, mask = state
        y = self.embed(ops.expand_dims(token, 1))  # (B, 1, D)
        new_caches = []
        for block, cache in zip(self.decoders, caches):
            y, alignment, cache = block(y, memory, memory_mask=mask, cache=cache,
                                        cache_update_index=i)
            new_caches.append(cache)
        return self.to_logits(y[:, 0]), alignment[:, 0], (new_caches, memory, mask)


def _numbered(model, prefix):
    """Layers named `prefix0`, `prefix1`, ... in order."""
    found = [layer for layer in model.layers
             if layer.name.startswith(prefix) and layer.name[len(prefix):].isdigit()]
    return sorted(found, key=lambda layer: int(layer.name[len(prefix):]))
