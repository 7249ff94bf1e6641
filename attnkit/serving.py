"""A trained translator as a TensorFlow SavedModel that serves without
attnkit or keras.

`export(translator, path)` writes a SavedModel whose `serve` signature (also
`serving_default`) takes a batch of strings `(B,)` and returns their
translations `(B,)`: splitting into tokens, the vocabulary lookup, the
compiled greedy or beam search of `attnkit.models` and the detokenization
all run inside the graph. A process with TensorFlow alone loads it:

    loaded = tf.saved_model.load(path)
    loaded.serve(tf.constant(["1er mai 2020"]))  # [b"2020-05-01"]

An input holding a token outside the vocabulary gets an empty translation
(as `Translator.score` counts it). A SavedModel is TensorFlow's format, so
this module uses TensorFlow directly and runs under keras's TensorFlow
backend; the model may have been trained on any backend (`attnkit export`
loads it under TensorFlow).
"""

import os

import keras

from attnkit import _checks
from attnkit.models import decoding

SIGNATURE = "serve"


def export(translator, path: str | os.PathLike, beam: int = 1, length_penalty: float = 0.0,
           coverage_penalty: float = 0.0):
    """Writes `translator` (an `attnkit.app.training.Translator`) to `path` as a
    TensorFlow SavedModel with a `serve` signature: strings in, strings out,
    decoded greedily (`beam=1`) or by beam search with GNMT's penalties."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "A SavedModel is written under keras's TensorFlow backend (KERAS_BACKEND="
            f"tensorflow); this process runs {keras.backend.backend()}. `attnkit export` "
            "switches by itself.")
    _checks.check_positive_int("beam", beam)
    import tensorflow as tf

    source_vocab, target_vocab = translator.source_vocab, translator.target_vocab
    model = translator.model
    decoder = decoding.as_decoder(model)
    steps = translator.target_length + 1
    end, pad, start = target_vocab.END, target_vocab.PAD, target_vocab.START

    def table(keys, values, default):
        return tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, values), default_value=default)

    def ids(vocab):  # each token's id, as the vocabulary encodes it
        return tf.constant([vocab.encode(t)[0] for t in vocab.tokens], tf.int64)

    token_ids = table(tf.constant(source_vocab.tokens), ids(source_vocab), -1)
    target_tokens = table(ids(target_vocab), tf.constant(target_vocab.tokens), "")

    def serve(texts):
        if source_vocab.unit == "char":
            pieces = tf.strings.unicode_split(texts, "UTF-8")
        else:
            pieces = tf.strings.split(texts)
        ids = tf.ragged.map_flat_values(token_ids.lookup, pieces)
        known = tf.reduce_all(ids >= 0, axis=1) & (ids.row_lengths() > 0)
        ids = tf.ragged.map_flat_values(lambda x: tf.maximum(x, 0), ids)
        source = tf.cast(ids.to_tensor(0), "int32")
        # One more padding column: a batch of empty strings still has a length.
        source = tf.pad(source, [[0, 0], [0, 1]])
        if beam == 1:
            tokens, _ = decoding._greedy(decoder, source, steps, start, end, pad)
        else:
            tokens, _ = decoding._beam(decoder, source, steps, beam, start, end, pad,
                                       float(length_penalty), float(coverage_penalty))
        tokens = tf.cast(tokens, tf.int64)
        # Up to the first end or padding id, as `Vocabulary.decode` reads.
        going = tf.math.cumprod(tf.cast((tokens != end) & (tokens != pad), tf.int64), axis=1)
        words = tf.ragged.boolean_mask(target_tokens.lookup(tokens), going > 0)
        joined = tf.strings.reduce_join(words, axis=1,
                                        separator="" if target_vocab.unit == "char" else " ")
        return tf.where(known, joined, "")

    archive = keras.export.ExportArchive()
    archive.track(token_ids)
    archive.track(target_tokens)
    archive.add_endpoint(SIGNATURE, serve, input_signature=[tf.TensorSpec([None], tf.string)])
    archive.write_out(str(path), verbose=False)
