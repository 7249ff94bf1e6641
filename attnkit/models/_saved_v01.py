"""Decoding for models saved by attnkit 0.1.

attnkit 0.1 built its seq2seq models as plain functional models (and a
training run resumed from `last.keras` still rebuilds one); they carry no
`encode` / `decode_step`. Their layers' names are all that tells their parts
apart, so this adapter, and only it, finds them by name, then decodes with
the models' own methods.
"""

from attnkit.models.rnn_seq2seq import RNNSeq2Seq
from attnkit.models.transformer_seq2seq import TransformerSeq2Seq


def adapt(model):
    """An object with `encode` / `decode_step` for a functional model with
    the 0.1 layer names, or None."""
    names = {layer.name for layer in getattr(model, "layers", ())}
    if {"encoder", "bridge", "decoder"} <= names:
        return _RNN(model)
    if {"encoder_0", "decoder_0"} <= names:
        return _Transformer(model)
    return None


class _RNN:
    encode = RNNSeq2Seq.encode
    decode_step = RNNSeq2Seq.decode_step

    def __init__(self, model):
        for attribute, name in (("source_embedding", "source_embedding"), ("encoder", "encoder"),
                                ("bridge", "bridge"), ("decoder", "decoder"),
                                ("target_embedding", "target_embedding"),
                                ("to_logits", "logits")):
            setattr(self, attribute, model.get_layer(name))


class _Transformer:
    encode = TransformerSeq2Seq.encode
    decode_step = TransformerSeq2Seq.decode_step

    def __init__(self, model):
        self.source_embedding = model.get_layer("source_embedding")
        self.target_embedding = model.get_layer("target_embedding")
        self.to_logits = model.get_layer("logits")
        self.encoders = _numbered(model, "encoder_")
        self.decoders = _numbered(model, "decoder_")
        self.num_heads, self.units = self.decoders[0].num_heads, self.decoders[0].units


def _numbered(model, prefix):
    found = {}
    for layer in model.layers:
        suffix = layer.name[len(prefix):]
        if layer.name.startswith(prefix) and suffix.isdigit():
            found[int(suffix)] = layer
    return [found[i] for i in sorted(found)]
