"""attnkit.models: encoder-decoder models built from attnkit layers."""

from attnkit.models.rnn_seq2seq import ATTENTION_KINDS
from attnkit.models.rnn_seq2seq import build_rnn_seq2seq
from attnkit.models.rnn_seq2seq import greedy_decode

__all__ = ["ATTENTION_KINDS", "build_rnn_seq2seq", "greedy_decode"]
