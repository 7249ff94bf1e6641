"""Encoder-decoder models built from attnkit layers."""

from attnkit.models.decoding import as_decoder
from attnkit.models.decoding import beam_search_decode
from attnkit.models.decoding import gnmt_score
from attnkit.models.decoding import greedy_decode
from attnkit.models.ensemble import Ensemble
from attnkit.models.rnn_seq2seq import ATTENTION_KINDS
from attnkit.models.rnn_seq2seq import RNNSeq2Seq
from attnkit.models.rnn_seq2seq import build_rnn_seq2seq
from attnkit.models.transformer_seq2seq import POSITION_KINDS
from attnkit.models.transformer_seq2seq import TransformerDecoderBlock
from attnkit.models.transformer_seq2seq import TransformerEncoderBlock
from attnkit.models.transformer_seq2seq import TransformerSeq2Seq
from attnkit.models.transformer_seq2seq import build_transformer_seq2seq

__all__ = [
    "ATTENTION_KINDS",
    "Ensemble",
    "POSITION_KINDS",
    "RNNSeq2Seq",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "TransformerSeq2Seq",
    "as_decoder",
    "beam_search_decode",
    "build_rnn_seq2seq",
    "build_transformer_seq2seq",
    "gnmt_score",
    "greedy_decode",
]
