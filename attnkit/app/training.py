"""Train, evaluate and use a sequence-to-sequence model on any pairs.

The library side of `attnkit train`, `attnkit evaluate` and `attnkit
translate`: pairs of texts (a tab-separated file, or a built-in data set)
become an `attnkit.models` encoder-decoder, trained with length-bucketed
batches, label smoothing, a halving learning rate and early stopping on the
dev error rate, keeping the best model in an output folder.

An output folder holds `model.keras` (the best model so far),
`model.vocab.json` (vocabularies and lengths), and what a training resumes
from: `backup/` (keras's `BackupAndRestore`: the latest weights with the
optimizer's state, and the epoch), `state.json` (what keras's callbacks do
not keep: their best dev scores and counters, the updates and seconds
spent, the options the model and optimizer were built from) and, with
checkpoint averaging, `averaged.npz` (the last epochs' trained weights).
Folders of attnkit 0.1 (`last.keras` and `state.json`) resume too. The
callbacks the trainer puts together are in `attnkit.app._callbacks`.
"""

import dataclasses
import json
import math
import os
import shutil
import time
import typing
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from keras import ops

from attnkit import _backends
from attnkit._checks import NORMALIZERS
from attnkit.app import _callbacks
from attnkit.app import metrics
from attnkit.app._callbacks import TIE_BREAK  # noqa: F401 (public: dev_score's weight)
from attnkit.app._callbacks import DevMetrics
from attnkit.app.vocabulary import Vocabulary
from attnkit.losses import CoverageLoss
from attnkit.models import beam_search_decode
from attnkit.models import build_rnn_seq2seq
from attnkit.models import build_transformer_seq2seq
from attnkit.models import greedy_decode
from attnkit.models import rnn_seq2seq
from attnkit.models import transformer_seq2seq


# The folder of `keras.callbacks.BackupAndRestore` in the output folder.
BACKUP = "backup"
# The last epochs' trained weights, with `average_epochs` > 1.
AVERAGED = "averaged.npz"
# What a training run writes into its output folder (`last.keras`: 0.1's).
RUN_FILES = ("model.keras", "model.vocab.json", "state.json", BACKUP, AVERAGED, "last.keras")
# The options a training's model and optimizer are built from: a resumed
# training keeps them (`state.json` records them).
BUILT = ("model", "attention", "normalizer", "units", "layers", "heads", "source_unit",
         "target_unit", "schedule", "coverage_loss")
# The ALiBi Transformer's encoder heads look one way each (state.json
# records it as "alibi_encoder").
ALIBI_SPLIT_DIRECTIONS = True


def read_pairs(path: str | os.PathLike):
    """`(input, output)` pairs of a UTF-8 file with one `input<TAB>output` per line.

    Blank lines are skipped; any other line without exactly one tab, or
    with bytes that are not UTF-8, is an error naming the file and line.
    """
    pairs = []
    with open(path, "rb") as f:
        for number, line in enumerate(utf8_lines(f, path), 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                raise ValueError(
                    f"{path}:{number}: expected `input<TAB>output`, got {line[:60]!r}")
            pairs.append((fields[0].strip(), fields[1].strip()))
    if not pairs:
        raise ValueError(f"{path} holds no pairs")
    return pairs


def utf8_lines(stream: typing.BinaryIO, name: str, first_line: int = 1):
    """The lines of a binary `stream` as text; a line that is not UTF-8
    raises a ValueError naming `name`, the line (counted from `first_line`)
    and the offending byte."""
    for number, raw in enumerate(stream, first_line):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as error:
            column = len(raw[:error.start].decode("utf-8")) + 1  # what precedes is valid
            raise ValueError(
                f"{name}:{number}: not UTF-8 text (byte 0x{raw[error.start]:02x} at "
                f"column {column}); save the file as UTF-8") from None


def references(pairs: list[tuple[str, str]]):
    """{input: [outputs]} (an input may have several correct outputs)."""
    refs = {}
    for source, target in pairs:
        if target not in refs.setdefault(source, []):
            refs[source].append(target)
    return refs


@dataclasses.dataclass
class TrainConfig:
    """What `train` builds and how it trains (the `attnkit train` options)."""

    model: str = "rnn"  # or "transformer"
    attention: str = None  # rnn: additive, dot, ...; transformer: relative, t5, ...
    normalizer: str = "softmax"  # or sparsemax, entmax15
    units: int = 128
    layers: int = 2  # transformer blocks
    heads: int = 4
    dropout: float = 0.1  # transformer
    epochs: int = 30
    # An epoch (one dev evaluation) runs at least this many updates, passing
    # over the training pairs several times when they are few.
    min_epoch_steps: int = 1
    batch_size: int = 64
    learning_rate: float = None  # default 2e-3 (rnn), 1e-3 (transformer)
    schedule: str = "plateau"  # or "linear": to 1% over max_steps or the epochs
    label_smoothing: float = 0.1
    coverage_loss: float = 0.0  # weight of attnkit.losses.CoverageLoss on the alignments
    patience: int = 4  # dev evaluations without improvement before stopping
    # Checkpoint averaging: the dev evaluation and the saved model use the
    # mean of the last this many epochs' weights (1: the trained weights).
    average_epochs: int = 1
    time_budget: float = None  # minutes
    max_steps: int = None  # optimizer updates (a budget that does not depend on the machine)
    max_valid: int = 2000  # dev inputs decoded per evaluation
    source_unit: str = "char"
    target_unit: str = "char"
    seed: int = 0

    def check(self):
        kinds = {"rnn": rnn_seq2seq.ATTENTION_KINDS,
                 "transformer": transformer_seq2seq.POSITION_KINDS}
        if self.model not in kinds:
            raise ValueError(f"`model` must be 'rnn' or 'transformer'. Received: {self.model!r}.")
        self.attention = self.attention or kinds[self.model][0]
        if self.attention not in kinds[self.model]:
            raise ValueError(f"attention {self.attention!r} does not fit model {self.model!r} "
                             f"(choose from {', '.join(kinds[self.model])})")
        if self.schedule not in ("plateau", "linear"):
            raise ValueError(f"`schedule` must be 'plateau' or 'linear'. "
                             f"Received: {self.schedule!r}.")
        if self.normalizer not in NORMALIZERS:
            raise ValueError(f"`normalizer` must be one of {NORMALIZERS}. "
                             f"Received: {self.normalizer!r}.")
        for name in ("units", "layers", "heads", "epochs", "min_epoch_steps", "batch_size",
                     "patience", "max_valid", "average_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive int. Received: {value!r}.")
        if not self.coverage_loss >= 0:
            raise ValueError(f"`coverage_loss` must be a weight >= 0. "
                             f"Received: {self.coverage_loss!r}.")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.dropout < 1:
            raise ValueError("`label_smoothing` and `dropout` must be in [0, 1).")
        if self.max_steps is not None and (isinstance(self.max_steps, bool) or not isinstance(
                self.max_steps, int) or self.max_steps <= 0):
            raise ValueError(f"`max_steps` must be a positive int. Received: {self.max_steps!r}.")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"`time_budget` must be positive minutes. "
                             f"Received: {self.time_budget!r}.")
        if self.learning_rate is None:
            self.learning_rate = 2e-3 if self.model == "rnn" else 1e-3
        return self


@keras.saving.register_keras_serializable(package="attnkit")
class SmoothedSequenceLoss(keras.losses.Loss):
    """Cross-entropy over the non-padding tokens (id 0 is padding), with
    label smoothing: the target is `1 - smoothing` on the true token and
    `smoothing` spread over the whole vocabulary."""

    def __init__(self, smoothing: float = 0.1, name: str = "smoothed_sequence_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        logp = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        nll = -ops.take_along_axis(logp, y_true[..., None], axis=-1)[..., 0]
        loss = (1.0 - self.smoothing) * nll - self.smoothing * ops.mean(logp, axis=-1)
        keep = ops.cast(ops.not_equal(y_true, 0), "float32")
        # The mean over real tokens, for every sequence of the batch alike.
        total = ops.sum(loss * keep) / ops.maximum(ops.sum(keep), 1.0)
        return ops.ones_like(loss[:, 0]) * total

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


@keras.saving.register_keras_serializable(package="attnkit")
class LogitsTrainer(keras.Model):
    """A sequence-to-sequence model trained on its logits alone (its
    alignments, its second output, are no training target).

    It holds the model itself, so `last.keras` keeps the model's class: a
    resumed training decodes through the model's own stepping contract.
    It has no weights of its own.
    """

    def __init__(self, seq2seq: keras.Model, **kwargs):
        if isinstance(seq2seq, dict):
            seq2seq = keras.saving.deserialize_keras_object(seq2seq)
        super().__init__(**kwargs)
        self.seq2seq = seq2seq
        self.built = seq2seq.built

    def call(self, inputs, training=None):
        return self.seq2seq(inputs, training=training)[0]

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "seq2seq": keras.saving.serialize_keras_object(self.seq2seq)}


class BucketedBatches(keras.utils.PyDataset):
    """Batches of pairs of similar source length, padded to a multiple of 8
    (few distinct shapes to compile); batch order reshuffled every epoch.

    `rows_multiple_of`: a batch short of a multiple of it (the last of the
    length order) is padded with empty rows, which the loss ignores: a
    distribution that splits the batch over n devices needs n | rows.
    `target_width`: pad every target sequence (start and end tokens
    included) to this width, or `"longest"` to that of the longest one
    (rounded as a batch is), instead of per batch, for models that need one
    static target length (the RNN decoder on TensorFlow, where keras turns
    batch shapes into a tf.data signature). `outputs=2` gives the targets
    twice, for a model trained on its logits and its alignments.
    `min_batches`: an epoch passes over the pairs as many times as it takes
    to give at least this many batches (each pass in its own order).
    """

    def __init__(self, source: list[list[int]], target: list[list[int]], batch_size: int,
                 seed: int | None = 0, rows_multiple_of: int = 1,
                 target_width: int | str | None = None, outputs: int = 1, min_batches: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        self.outputs = outputs
        self.source, self.target = source, target
        self.rows_multiple_of = int(rows_multiple_of)
        if target_width == "longest":
            target_width = _padded_width(max(map(len, target)), extra=1)
        self.target_width = target_width
        order = np.argsort([len(s) for s in source], kind="stable")
        self.groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        self.passes = max(1, math.ceil(min_batches / len(self.groups)))
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        source, target = self._padded(index)
        if index == 1:
            # keras on TensorFlow fixes the lengths that batches 0 and 1
            # share (its tf.data signature); 8 more columns where they agree
            # keep the free lengths free for the other batches.
            first_source, first_target = self._padded(0)
            if source.shape[1] == first_source.shape[1]:
                source = np.pad(source, ((0, 0), (0, 8)))
            if self.target_width is None and target.shape[1] == first_target.shape[1]:
                target = np.pad(target, ((0, 0), (0, 8)))
        labels = target[:, 1:]
        return (source, target[:, :-1]), labels if self.outputs == 1 else (labels,) * self.outputs

    def _padded(self, index):
        rows = self.batches[index]
        source = _pad([self.source[i] for i in rows], rows=self.rows_multiple_of)
        target = _pad([self.target[i] for i in rows], extra=1, rows=self.rows_multiple_of,
                      width=self.target_width)
        return source, target

    def on_epoch_end(self):
        self.batches = []
        for _ in range(self.passes):
            self.rng.shuffle(self.groups)
            self.batches += list(self.groups)


def _padded_width(length, extra=0):
    """`length` rounded up to a multiple of 8 (the `extra` columns apart)."""
    return 8 * math.ceil((length - extra) / 8) + extra


def _pad(seqs, extra=0, rows=1, width=None):
    if width is None:
        width = _padded_width(max(len(s) for s in seqs), extra)
    out = np.zeros((rows * math.ceil(len(seqs) / rows), width), "int32")
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out


class Translator:
    """A trained model with its vocabularies: texts in, texts out."""

    def __init__(self, model: keras.Model, source_vocab: Vocabulary, target_vocab: Vocabulary,
                 target_length: int):
        self.model = model
        self.source_vocab, self.target_vocab = source_vocab, target_vocab
        self.target_length = int(target_length)

    def translate(self, texts: list[str], beam: int = 1, batch_size: int = 256,
                  length_penalty: float = 0.0, coverage_penalty: float = 0.0):
        """Predictions for `texts` (a list), decoded greedily or with `beam`
        (ranked with GNMT's length and coverage penalties when given, see
        `attnkit.models.beam_search_decode`)."""
        predictions = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            ids = [self.source_vocab.encode(t) for t in chunk]
            source = _pad(ids)
            steps = self.target_length + 1
            if beam > 1:
                tokens, _ = beam_search_decode(
                    self.model, source, steps, beam_width=beam, length_penalty=length_penalty,
                    coverage_penalty=coverage_penalty)
            else:
                tokens, _ = greedy_decode(self.model, source, steps,
                                          end_id=self.target_vocab.END)
            predictions += [self.target_vocab.decode(row) for row in tokens]
        return predictions

    def align(self, text: str):
        """(greedy prediction, alignments (steps, S)) of one input."""
        tokens, alignments = greedy_decode(
            self.model, [self.source_vocab.encode(text)], self.target_length + 1)
        return self.target_vocab.decode(tokens[0]), alignments[0]

    def evaluate(self, pairs: list[tuple[str, str]], beam: int = 1, **penalties):
        """Error rates of the predictions for the inputs of `pairs` against
        all their outputs; also returns the predictions, input by input."""
        return self.score(references(pairs), beam=beam, **penalties)

    def score(self, refs: dict[str, list[str]], beam: int = 1, **penalties):
        """`evaluate` for references already grouped: {input: [outputs]}."""
        # An input with a token the model never saw gets no prediction: wrong.
        inputs = [s for s in refs if _encodes(self.source_vocab, s)]
        predictions = dict(zip(inputs, self.translate(inputs, beam=beam, **penalties)))
        predictions.update({s: "" for s in refs if s not in predictions})
        scores = metrics.error_rates(predictions, refs, unit=self.target_vocab.unit)
        return scores, predictions

    def save(self, folder: str | os.PathLike):
        """Writes `model.keras` and `model.vocab.json` into `folder`."""
        self.model.save(Path(folder) / "model.keras")
        self.save_vocabularies(folder)

    def save_vocabularies(self, folder: str | os.PathLike):
        """Writes `model.vocab.json`: the vocabularies and lengths."""
        (Path(folder) / "model.vocab.json").write_text(json.dumps({
            "source": self.source_vocab.tokens, "target": self.target_vocab.tokens,
            "source_unit": self.source_vocab.unit, "target_unit": self.target_vocab.unit,
            "target_length": self.target_length}, ensure_ascii=False))


def load(folder_or_model: str | os.PathLike, *others: str | os.PathLike):
    """The `Translator` saved in a folder (or at its `model.keras`). The
    model loads without its training state (`compile=False`): compile it
    to train further, or resume with `train(..., resume=True)`.

    With `others`, the models of all the folders decoded as one
    (`attnkit.models.Ensemble`: the mean of their next-token
    distributions); they must have been trained with the same
    vocabularies (the same data and units)."""
    translators = [_load_one(path) for path in (folder_or_model, *others)]
    if len(translators) == 1:
        return translators[0]
    return ensemble_translators(translators, [folder_or_model, *others])


def ensemble_translators(translators: list[Translator], names: list | None = None):
    """One `Translator` of several (their models as an
    `attnkit.models.Ensemble`), which must share their vocabularies;
    `names` (their folders, one per translator) name one that does not."""
    if not translators:
        raise ValueError("An ensemble needs at least one translator.")
    names = [f"model {i + 1}" for i in range(len(translators))] if names is None else names
    if len(names) != len(translators):
        raise ValueError(f"{len(translators)} translators but {len(names)} names.")
    first = translators[0]
    for name, other in zip(names[1:], translators[1:]):
        for side in ("source", "target"):
            mine, theirs = getattr(first, side + "_vocab"), getattr(other, side + "_vocab")
            if (mine.tokens, mine.unit) != (theirs.tokens, theirs.unit):
                raise ValueError(
                    f"{name} has another {side} vocabulary than {names[0]}: an ensemble's "
                    "models share their vocabularies (train them on the same pairs with the "
                    "same units)")
    from attnkit.models import Ensemble

    return Translator(Ensemble([t.model for t in translators]), first.source_vocab,
                      first.target_vocab, max(t.target_length for t in translators))


def _load_one(folder_or_model):
    path = Path(folder_or_model)
    if path.is_dir():
        path = path / "model.keras"
    vocab = json.loads(path.with_suffix(".vocab.json").read_text())
    model = _load_model(path)
    source = Vocabulary(vocab["source"], unit=vocab.get("source_unit", "char"))
    target = Vocabulary(vocab["target"], unit=vocab.get("target_unit", "char"))
    # Files from `attnkit demo` keep "length" (dates: 10 characters).
    return Translator(model, source, target, vocab.get("target_length", 10))


def _load_model(path):
    """`keras.saving.load_model(path, compile=False)`, without computing on
    JAX the initial weights that the load then replaces: JAX compiles each
    initializer for its shape (2-3 s of a short `attnkit translate`). The
    model is built in a `keras.StatelessScope` that leaves its variables
    uninitialized and collects the loaded values, which then become the
    variables' values; a variable the file does not hold is initialized as
    usual. A model that cannot be built that way (a layer that makes a
    variable from a value) loads as usual."""
    if keras.backend.backend() != "jax":
        return keras.saving.load_model(path, compile=False)
    try:
        from keras.src.backend.common import global_state
        from keras.src.backend.common.stateless_scope import in_stateless_scope
        from keras.src.backend.common.variables import initialize_all_variables
    except ImportError:  # another keras: load as usual
        return keras.saving.load_model(path, compile=False)
    if in_stateless_scope():
        return keras.saving.load_model(path, compile=False)
    key = "uninitialized_variables"
    waiting = list(global_state.get_global_attribute(key) or [])
    global_state.set_global_attribute(key, [])
    try:
        with keras.StatelessScope(initialize_variables=False) as scope:
            model = keras.saving.load_model(path, compile=False)
    except ValueError:
        global_state.set_global_attribute(key, waiting)  # the half-built model is dropped
        return keras.saving.load_model(path, compile=False)
    created = global_state.get_global_attribute(key) or []
    for variable in created:
        value = scope.get_current_value(variable)
        if value is not None:
            variable._initialize(value)
            variable._initializer = None
    global_state.set_global_attribute(key, waiting + [v for v in created if v._value is None])
    initialize_all_variables()
    return model


def build_model(config: TrainConfig, source_size: int, target_size: int):
    if config.model == "rnn":
        return build_rnn_seq2seq(source_size, target_size, attention=config.attention,
                                 units=config.units, normalizer=config.normalizer)
    return build_transformer_seq2seq(
        source_size, target_size, units=config.units, num_heads=config.heads,
        num_layers=config.layers, ff_units=4 * config.units, dropout=config.dropout,
        position=config.attention, normalizer=config.normalizer,
        alibi_split_directions=ALIBI_SPLIT_DIRECTIONS)


def train(train_pairs: list[tuple[str, str]], valid_pairs: list[tuple[str, str]],
          out: str | os.PathLike, config: TrainConfig | None = None, *, resume: bool = False,
          verbose: int | str = "auto", log: Callable[[str], None] = print,
          callbacks: list[keras.callbacks.Callback] = (),
          vocabularies: tuple[Vocabulary, Vocabulary] | None = None):
    """Trains on `train_pairs`, keeps the model best on `valid_pairs` in `out`.

    keras's callbacks do the work: `DevMetrics` puts the dev error rates in
    the logs, `ModelCheckpoint` keeps the best model, `ReduceLROnPlateau`
    halves the rate after an epoch without improvement (or a linear
    `PolynomialDecay` schedule lowers it), `EarlyStopping` stops after
    `patience` of them and `BackupAndRestore` keeps what a resumed training
    needs. `callbacks`, keras callbacks of your own, run after these (their
    logs have `dev_wer`, `dev_ter` and `dev_score`). `vocabularies`: the
    (source, target) vocabularies of a data set that has its own (its
    generator's alphabet); by default both are the tokens of the training
    pairs, in `config`'s units. Returns a dict: the
    best dev scores, epochs run, updates, seconds, why it stopped.
    """
    config = (config or TrainConfig()).check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    keras.utils.set_random_seed(config.seed)
    if vocabularies is not None:
        source_vocab, target_vocab = vocabularies
    else:
        source_vocab = Vocabulary.from_texts([s for s, _ in train_pairs],
                                             unit=config.source_unit)
        target_vocab = Vocabulary.from_texts([t for _, t in train_pairs],
                                             unit=config.target_unit)
    valid_pairs = [(s, t) for s, t in valid_pairs
                   if _encodes(source_vocab, s) and _encodes(target_vocab, t)]
    if not valid_pairs:
        raise ValueError("No dev pair is written in the training pairs' vocabulary.")
    valid_refs = references(valid_pairs)
    valid_inputs = list(valid_refs)[:config.max_valid]
    valid_refs = {k: valid_refs[k] for k in valid_inputs}
    target_length = max(len(target_vocab.split(t)) for _, t in train_pairs + valid_pairs)
    source = [source_vocab.encode(s) for s, _ in train_pairs]
    target = [target_vocab.encode(t, add_start_end=True) for _, t in train_pairs]
    # The RNN decoder unrolls over a static target length.
    static_target = config.model == "rnn" and _backends.fit_fixes_batch_shapes()
    batches = BucketedBatches(
        source, target, config.batch_size, seed=config.seed, rows_multiple_of=_batch_shards(),
        target_width="longest" if static_target else None,
        outputs=2 if config.coverage_loss else 1, min_batches=config.min_epoch_steps)

    state_path, backup, legacy = out / "state.json", out / BACKUP, out / "last.keras"
    state = {"epoch": 0, "steps": 0, "best": None, "seconds": 0.0}
    resuming = resume and state_path.is_file()
    built = _built(config)
    if resuming:
        state = json.loads(state_path.read_text())
        if backup.is_dir():
            _match_backup(backup, state["epoch"])
        elif not legacy.is_file():
            raise ValueError(f"Nothing to resume in {out}: it has state.json but no {BACKUP} "
                             "folder.")
        _check_built(built, state.get("built"), out)
        done = _callbacks.finished(config, state)
        if done:
            log(f"nothing to resume in {out}: the training stopped by {done} (a larger "
                "budget, epochs or patience goes on)")
            return {"best": state["best"], "epochs": state["epoch"], "stopped": done,
                    "seconds": state["seconds"], "steps": state["steps"]}
        log(f"resuming from epoch {state['epoch']} in {out}")
        for _ in range(state["epoch"]):  # the batch order of an uninterrupted run
            batches.on_epoch_end()
    else:  # a run left there would be resumed from
        shutil.rmtree(backup, ignore_errors=True)
        for path in (state_path, legacy, out / AVERAGED):
            path.unlink(missing_ok=True)
    state["built"] = built
    if resuming and not backup.is_dir():
        # A run of an earlier version: its latest model, optimizer included.
        trainer = keras.saving.load_model(legacy)
        if isinstance(trainer, LogitsTrainer):
            model = trainer.seq2seq
        elif len(trainer.outputs) == 2:
            model = trainer
        else:  # a functional logits-only copy (attnkit 0.1)
            model = keras.Model(trainer.inputs, [trainer.outputs[0], _alignments(trainer)],
                                name=trainer.name)
    else:
        model = build_model(config, len(source_vocab), len(target_vocab))
        rate = config.learning_rate
        if config.schedule == "linear":
            steps = config.max_steps or config.epochs * len(batches)
            rate = keras.optimizers.schedules.PolynomialDecay(
                rate, steps, end_learning_rate=0.01 * rate)
        optimizer = keras.optimizers.Adam(rate, clipnorm=1.0)
        if config.coverage_loss:  # the alignments are trained too
            trainer = model
            trainer.compile(optimizer, [SmoothedSequenceLoss(config.label_smoothing),
                                        CoverageLoss()],
                            loss_weights=[1.0, config.coverage_loss])
        else:
            trainer = LogitsTrainer(model, name=model.name)
            trainer.compile(optimizer, SmoothedSequenceLoss(config.label_smoothing))
    translator = Translator(model, source_vocab, target_vocab, target_length)
    translator.save_vocabularies(out)
    budget = _callbacks.Budget(config, state, start)
    stopping = _callbacks.EarlyStopping("dev_score", patience=config.patience, mode="min")
    users = list(callbacks)
    callbacks = [
        DevMetrics(translator, valid_refs),
        # The path is formatted with the logs: braces in it are literal.
        _callbacks.BestModel(str(out / "model.keras").replace("{", "{{").replace("}", "}}"),
                             monitor="dev_score", mode="min", save_best_only=True),
        stopping,
        budget,
        keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False,
                                         double_checkpoint=True),
    ]
    if config.schedule == "plateau":
        callbacks.insert(2, _callbacks.ReduceLROnPlateau(
            "dev_score", factor=0.5, patience=1, mode="min", min_delta=0.0, min_lr=0.0))
    if config.average_epochs > 1:  # evaluated and saved averaged, backed up as trained
        averaged = _callbacks.AveragedWeights(config.average_epochs, out / AVERAGED, state)
        callbacks.insert(0, averaged)
        callbacks.insert(callbacks.index(budget) + 1, averaged.restorer)
    callbacks += [_callbacks.RunState(callbacks, state, state_path, budget, log)] + users
    if verbose:  # last, to show the dev scores in the logs
        callbacks.append(_callbacks.Progress(len(batches), config.epochs,
                                             1 if verbose == "auto" else verbose))
    # `batches` orders itself (a resumed training replays its order); keras's
    # own shuffle would draw its order from the re-seeded random state again.
    trainer.fit(batches, epochs=config.epochs, initial_epoch=state["epoch"],
                callbacks=callbacks, verbose=0, shuffle=False)
    stopped = budget.stopped or ("no dev improvement" if stopping.stopped_epoch else "epochs")
    return {"best": state["best"], "epochs": state["epoch"], "stopped": stopped,
            "seconds": state["seconds"], "steps": state["steps"]}


def _match_backup(folder, epoch):
    """Makes the backup the one of `epoch`, which `state.json` records. keras
    copies the backup to `.bkp` (`double_checkpoint`), then writes the
    weights, then the epoch; `state.json` comes last. A complete save
    leaves `.bkp` one epoch behind: then the backup is the one. A `.bkp` of
    the recorded epoch means a kill after the copies (the weights may be
    half written or of the next epoch): then `.bkp` is the one. A backup
    of any other epoch is refused."""

    def backup_epoch(suffix):
        try:
            return json.loads((folder / f"training_metadata.json{suffix}").read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            return None

    previous = backup_epoch(".bkp")
    if previous != epoch and backup_epoch("") == epoch:
        return
    if previous == epoch:
        for name in ("latest.weights.h5", "training_metadata.json"):
            shutil.copyfile(folder / f"{name}.bkp", folder / name)
        return
    raise ValueError(f"Cannot resume from {folder.parent}: its backup is not of epoch {epoch}, "
                     "which state.json records.")


def _built(config):
    built = {name: getattr(config, name) for name in BUILT}
    built["coverage_loss"] = config.coverage_loss > 0  # its weight may change
    if config.model == "transformer" and config.attention == "alibi":
        # as `build_model` builds it; symmetric before it was recorded
        built["alibi_encoder"] = "split" if ALIBI_SPLIT_DIRECTIONS else "symmetric"
    return built


def _check_built(built, recorded, out):
    """Refuses to resume a training (whose `state.json` records `recorded`)
    with a different model or optimizer (`built`, of `_built`): keras would
    skip the backup's optimizer state with a warning (another schedule) or
    fail on its weights. Folders of earlier versions record nothing, and
    resume unchecked, but for an ALiBi Transformer: its encoder was
    symmetric before `alibi_encoder` was recorded."""
    recorded = recorded or {}
    names = list(recorded)
    if "alibi_encoder" in built and "alibi_encoder" not in recorded:
        names.append("alibi_encoder")  # an ALiBi encoder trained symmetric
    changed = [name for name in names if recorded.get(name) != built.get(name)]
    if changed:
        raise ValueError(
            f"Cannot resume the training in {out} with another "
            + ", ".join(f"{name} ({built.get(name)!r}; it was trained with "
                        f"{recorded.get(name, 'symmetric')!r})"
                        for name in changed)
            + ": resume with the options it was trained with, or start again.")


def _batch_shards():
    """Into how many parts the current keras distribution splits a batch."""
    distribution = keras.distribution.distribution()
    if distribution is None or getattr(distribution, "batch_dim_name", None) is None:
        return 1
    mesh = distribution.device_mesh
    return int(mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)])


def _alignments(trainer):
    """The alignment output of a model saved for training (its second output
    is not a training target, so the trainer model drops it)."""
    for layer in trainer.layers:
        if layer.name == "decoder":  # RNN: (outputs, alignments)
            return layer.output[1]
        if layer.name.startswith("decoder_") and layer.name[8:].isdigit():
            last = layer
    return last.output[1]


def _encodes(vocab, text):
    try:
        vocab.encode(text)
        return True
    except ValueError:
        return False
