"""Greedy and beam-search decoding for encoder-decoder models.

Shape legend: B batch, W beams, S source length, V target vocabulary.

Decoding drives a model through two methods, the stepping contract that
`RNNSeq2Seq` and `TransformerSeq2Seq` implement and a user's own model can:

- `encode(source_ids (B, S), steps) -> state`: the encoder runs once; the
  state is a nest (dicts, lists) of tensors with a leading batch axis and a
  shape that does not change from step to step (a self-attention cache
  sized for `steps` tokens, RNN and attention states, the memory and what
  is projected from it once).
- `decode_step(token (B,), state, index) -> (logits (B, V), alignment
  (B, S), state)`: one token at position `index` (a tensor inside the
  compiled loop).

Greedy and beam search run as one compiled loop per input signature
(`jax.jit`, `tf.function`; PyTorch runs the loop without autograd) that
stops once every sequence has ended. Beam search tiles the state `W` times
along the batch axis and reorders it as beams are kept.
"""

import keras
import numpy as np
from keras import ops

from attnkit import _checks
from attnkit import _backends
from attnkit.types import Tensor


def greedy_decode(model: keras.Model, source_ids: Tensor, steps: int, start_id: int = 1,
                  end_id: int | None = None, pad_id: int = 0):
    """Greedy decoding of up to `steps` tokens with a model that implements
    `encode` / `decode_step` (see the module docstring), such as
    `build_rnn_seq2seq`'s and `build_transformer_seq2seq`'s.

    Args:
        model: the model.
        source_ids: int `(B, S)`, 0 for padding.
        steps: the most tokens to decode.
        start_id: the token fed first.
        end_id: the token that ends a sequence; a sequence that emitted it
            continues with `pad_id` (alignment rows of zeros), and decoding
            stops once every sequence has ended. None decodes `steps` tokens.
        pad_id: what an ended sequence emits.

    Returns:
        `(token ids (B, steps), alignments (B, steps, S))` as NumPy arrays.
    """
    _checks.check_positive_int("steps", steps)
    source = ops.convert_to_tensor(np.asarray(source_ids, dtype="int32"))
    decoder = as_decoder(model)
    run = _compiled(model, decoder, source, ("greedy", steps, start_id, end_id, pad_id),
                    lambda src: _greedy(decoder, src, steps, start_id, end_id, pad_id))
    tokens, alignments = run(source)
    return _backends.to_numpy(tokens), _backends.to_numpy(alignments)


def beam_search_decode(model: keras.Model, source_ids: Tensor, steps: int, beam_width: int = 4,
                       start_id: int = 1, end_id: int = 2, pad_id: int = 0,
                       length_penalty: float = 0.0, coverage_penalty: float = 0.0):
    """Beam search over `steps` tokens; a finished beam (it emitted
    `end_id`) continues with `pad_id` at no cost, and the search stops once
    every beam has finished.

    Beams are ranked by GNMT's score (Wu et al. 2016, section 7):
    `log P(Y|X) / lp(Y) + cp(X; Y)` with `lp(Y) = ((5 + |Y|) / 6) ** alpha`
    (`|Y|` the tokens up to and with `end_id`) and `cp(X; Y) = beta *
    sum_i log(min(sum_j p_ij, 1))` over the real source positions `i` (the
    sum floored at 1e-10, which sparse attention can leave at 0),
    `p_ij` the attention of output `j` on source `i` (the models'
    alignment output). `alpha = beta = 0` ranks by log-probability alone.

    Args:
        model: a model that implements `encode` / `decode_step` (see the
            module docstring), such as `build_rnn_seq2seq`'s and
            `build_transformer_seq2seq`'s.
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
    _checks.check_positive_int("steps", steps)
    source = ops.convert_to_tensor(np.asarray(source_ids, dtype="int32"))
    decoder = as_decoder(model)
    options = dict(steps=steps, width=beam_width, start_id=start_id, end_id=end_id,
                   pad_id=pad_id, alpha=float(length_penalty), beta=float(coverage_penalty))
    run = _compiled(model, decoder, source, ("beam",) + tuple(sorted(options.items())),
                    lambda src: _beam(decoder, src, **options))
    tokens, log_probs = run(source)
    return _backends.to_numpy(tokens), _backends.to_numpy(log_probs).astype("float64")


def as_decoder(model):
    """`model` if it implements `encode` and `decode_step`; a model saved
    by attnkit 0.1 (a functional `build_rnn_seq2seq` or
    `build_transformer_seq2seq` model) wrapped to implement them."""
    if callable(getattr(model, "encode", None)) and callable(getattr(model, "decode_step", None)):
        return model
    from attnkit.models import _saved_v01

    adapted = _saved_v01.adapt(model)
    if adapted is None:
        raise TypeError(
            f"{type(model).__name__} {getattr(model, 'name', '')!r} cannot be decoded: a "
            "model decodes through `encode(source_ids, steps) -> state` and "
            "`decode_step(token, state, index) -> (logits, alignment, state)` "
            "(see attnkit.models.decoding).")
    return adapted


# Compiled decoding loops per model, by kind and options (jax.jit and
# tf.function retrace them per input shape), kept in the model's own
# `__dict__` (outside keras's attribute tracking), so that they, and their
# compiled programs, go with the model. A loop refers to its model: held
# in a table keyed weakly by the model, it would keep the model, and every
# program compiled for it, alive for as long as the process.
_LOOPS = "_attnkit_decoding_loops"


def _compiled(model, decoder, source, key, loop):
    per_model = vars(model).setdefault(_LOOPS, {})
    if key not in per_model:
        if any(not layer.built for layer in model._flatten_layers()):
            # A model whose layers build on first use creates its variables
            # here, eagerly, not inside the compiled loop's trace.
            state = decoder.encode(source[:1], 1)
            decoder.decode_step(ops.ones((1,), "int32"), state, 0)
        per_model[key] = _backends.compiled_inference(loop, list(model.variables))
    return per_model[key]


def _at(step, steps, shape):
    """A bool of `shape` (`steps` along one axis, 1 along the others) true
    at position `step`."""
    return ops.reshape(ops.equal(ops.arange(steps, dtype="int32"), step), shape)


class _Carried:
    """A decoding state as the flat list of its tensors that a compiled
    loop carries (a state may hold None, e.g. a projection a layer
    skips), and back."""

    def __init__(self, state):
        self.structure = state
        self.absent = [x is None for x in keras.tree.flatten(state)]

    def tensors(self, state):
        return [x for x in keras.tree.flatten(state) if x is not None]

    def state(self, tensors):
        tensors = iter(tensors)
        leaves = [None if absent else next(tensors) for absent in self.absent]
        return keras.tree.pack_sequence_as(self.structure, leaves)


def _greedy(decoder, source, steps, start_id, end_id, pad_id):
    b, s = ops.shape(source)[0], ops.shape(source)[1]
    state = decoder.encode(source, steps)
    carry = _Carried(state)
    state = carry.tensors(state)
    carried = (ops.convert_to_tensor(0, "int32"), ops.full((b,), start_id, "int32"),
               ops.zeros((b,), "bool"), ops.full((b, steps), pad_id, "int32"),
               ops.zeros((b, steps, s), "float32"), state)

    def more(i, token, ended, tokens, alignments, state):
        going = ops.less(i, steps)
        return going if end_id is None else ops.logical_and(
            going, ops.logical_not(ops.all(ended)))

    def step(i, token, ended, tokens, alignments, state):
        logits, alignment, state = decoder.decode_step(token, carry.state(state), i)
        state = carry.tensors(state)
        token = ops.cast(ops.argmax(logits, axis=-1), "int32")
        alignment = ops.cast(alignment, "float32")
        if end_id is not None:
            token = ops.where(ended, pad_id, token)
            alignment = ops.where(ended[:, None], 0.0, alignment)
            ended = ops.logical_or(ended, ops.equal(token, end_id))
        tokens = ops.where(_at(i, steps, (1, steps)), token[:, None], tokens)
        alignments = ops.where(_at(i, steps, (1, steps, 1)), alignment[:, None], alignments)
        return i + 1, token, ended, tokens, alignments, state

    _, _, _, tokens, alignments, _ = ops.while_loop(more, step, carried)
    return tokens, alignments


def _beam(decoder, source, steps, width, start_id, end_id, pad_id, alpha, beta):
    b, s, w = ops.shape(source)[0], ops.shape(source)[1], width
    state = decoder.encode(source, steps)
    carry = _Carried(state)
    state = [ops.repeat(x, w, axis=0) for x in carry.tensors(state)]  # (B*W, ...)
    first = ops.concatenate([ops.zeros((b, 1)), ops.full((b, w - 1), -np.inf)], axis=1)
    real_source = ops.expand_dims(ops.not_equal(source, pad_id), 1)  # (B, 1, S)
    carried = (ops.convert_to_tensor(0, "int32"), ops.full((b * w,), start_id, "int32"),
               first,  # log-probabilities (B, W): all beams start identical, keep one
               ops.full((b, w, steps), pad_id, "int32"),  # tokens so far
               ops.zeros((b, w), "bool"), ops.zeros((b, w)),  # finished, lengths
               ops.zeros((b, w, s)), state)  # summed attention per source position

    def more(i, token, log_probs, history, finished, lengths, coverage, state):
        return ops.logical_and(ops.less(i, steps), ops.logical_not(ops.all(finished)))

    def step(i, token, log_probs, history, finished, lengths, coverage, state):
        logits, alignment, state = decoder.decode_step(token, carry.state(state), i)
        logp = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
        vocab = logp.shape[-1]
        logp = ops.reshape(logp, (b, w, vocab))
        pad = ops.equal(ops.arange(vocab), pad_id)  # a finished beam emits pad at no cost
        logp = ops.where(finished[..., None], ops.where(pad, 0.0, -np.inf), logp)
        total = log_probs[..., None] + logp  # (B, W, V)
        grown = lengths + ops.cast(ops.logical_not(finished), "float32")
        attended = ops.reshape(ops.cast(alignment, "float32"), (b, w, s))
        grown_coverage = coverage + ops.where(finished[..., None], 0.0, attended)
        rank = total / ops.power((5.0 + grown) / 6.0, alpha)[..., None]
        if beta:
            covered = ops.log(ops.clip(grown_coverage, 1e-10, 1.0))
            rank = rank + beta * ops.sum(ops.where(real_source, covered, 0.0), -1)[..., None]
        _, best = ops.top_k(ops.reshape(rank, (b, w * vocab)), w)  # (B, W)
        beam, token = best // vocab, ops.cast(best % vocab, "int32")
        log_probs = ops.take_along_axis(ops.reshape(total, (b, w * vocab)), best, axis=1)
        history = ops.take_along_axis(history, beam[..., None], axis=1)
        history = ops.where(_at(i, steps, (1, 1, steps)), token[..., None], history)
        lengths = ops.take_along_axis(grown, beam, axis=1)
        coverage = ops.take_along_axis(grown_coverage, beam[..., None], axis=1)
        finished = ops.logical_or(ops.take_along_axis(finished, beam, axis=1),
                                  ops.equal(token, end_id))
        order = ops.reshape(ops.arange(b)[:, None] * w + beam, (-1,))
        state = [ops.take(x, order, axis=0) for x in carry.tensors(state)]
        return i + 1, ops.reshape(token, (-1,)), log_probs, history, finished, lengths, \
            coverage, state

    result = ops.while_loop(more, step, carried)
    history, log_probs = result[3], result[2]
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


