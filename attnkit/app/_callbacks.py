"""The trainer's keras callbacks: the dev error rates in the logs, keras's
monitoring callbacks comparing them exactly, checkpoint averaging, the time
and update budget, the run's state kept for a resumed training, and the
progress bar. `attnkit.app.training.train` puts them together.
"""

import json
import os
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops


class Progress(keras.callbacks.Callback):
    """keras's progress bar (`verbose=1`) or line per epoch (`verbose=2`),
    counting the steps that ran: an epoch cut short by the time budget or
    `max_steps` ends at the step it reached, not at the epoch's length."""

    def __init__(self, steps, epochs, verbose):
        super().__init__()
        self.steps, self.epochs, self.verbose = steps, epochs, verbose
        self.bar, self.seen = None, 0

    def on_epoch_begin(self, epoch, logs=None):
        print(f"Epoch {epoch + 1}/{self.epochs}", flush=True)
        self.bar = keras.utils.Progbar(self.steps, verbose=self.verbose, unit_name="step")
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen = batch + 1
        if self.verbose == 1:
            self.bar.update(self.seen, list((logs or {}).items()))

    def on_epoch_end(self, epoch, logs=None):
        self.bar.update(self.seen, list((logs or {}).items()), finalize=True)


# What `DevMetrics` logs as `dev_score`, the value the callbacks monitor: the
# WER, ties broken by the TER, weighed so little that it never outweighs
# one word of WER.
TIE_BREAK = 1e-6


class DevMetrics(keras.callbacks.Callback):
    """After every epoch, the error rates of `translator` (an `attnkit.app.training.Translator`)
    on `refs` ({input: [outputs]}) in the logs: `dev_wer`, `dev_ter`, and
    `dev_score` (the WER, ties broken by the TER) for keras's callbacks to
    monitor; put it before them in the list of callbacks."""

    def __init__(self, translator, refs: dict[str, list[str]]):
        super().__init__()
        self.translator, self.refs = translator, refs
        self.scores = None

    def on_epoch_end(self, epoch, logs=None):
        self.scores, _ = self.translator.score(self.refs)
        if logs is not None:
            logs.update(dev_wer=self.scores["wer"], dev_ter=self.scores["per"],
                        dev_score=dev_score(self.scores))


def dev_score(scores):
    return scores["wer"] + TIE_BREAK * scores["per"]


class Exact:
    """keras's monitoring compares in float32, where `dev_score`'s
    tie-break by the TER vanishes (0.25 + 1e-6 * 0.100 and 0.25 + 1e-6 *
    0.099 are one float32): these compare Python floats (mode "min")."""

    def _is_improvement(self, monitor_value, reference_value):
        return reference_value is None or \
            float(monitor_value) - self.min_delta < float(reference_value)


class EarlyStopping(Exact, keras.callbacks.EarlyStopping):
    pass


class ReduceLROnPlateau(Exact, keras.callbacks.ReduceLROnPlateau):
    pass


class BestModel(Exact, keras.callbacks.ModelCheckpoint):
    """keras's `ModelCheckpoint` saving the model a `LogitsTrainer` trains,
    not the trainer: `model.keras` holds the seq2seq model alone."""

    @property
    def model(self):
        trainer = super().model
        return getattr(trainer, "seq2seq", trainer)


class AveragedWeights(keras.callbacks.Callback):
    """Checkpoint averaging: at the end of every epoch the model's trainable
    weights become the mean of the last `epochs` epochs' trained weights, for
    the callbacks after it (the dev evaluation, the saved best model); its
    `restorer`, put before `BackupAndRestore`, puts the trained weights back
    and keeps the window in `path` for a resumed training (`state`: the run's
    state, whose epoch the window must match)."""

    def __init__(self, epochs, path, state):
        super().__init__()
        self.epochs, self.path, self.state = epochs, Path(path), state
        self.window, self.trained = [], None  # oldest first
        self.restorer = RestoreTrained(self)

    def on_train_begin(self, logs=None):
        self.window = []
        if self.path.is_file():
            with np.load(self.path) as saved:
                if int(saved["epoch"]) == self.state["epoch"]:  # else a kill between writes
                    count = len(self.model.trainable_variables)
                    self.window = [[saved[f"{e}_{i}"] for i in range(count)]
                                   for e in range(int(saved["size"]))]

    def on_epoch_end(self, epoch, logs=None):
        variables = self.model.trainable_variables
        self.trained = [ops.convert_to_numpy(v) for v in variables]
        self.window = (self.window + [self.trained])[-self.epochs:]
        for i, variable in enumerate(variables):
            mean = np.mean([weights[i] for weights in self.window], axis=0, dtype="float64")
            variable.assign(mean.astype(self.trained[i].dtype))


class RestoreTrained(keras.callbacks.Callback):
    def __init__(self, averaged):
        super().__init__()
        self.averaged = averaged

    def on_epoch_end(self, epoch, logs=None):
        averaged = self.averaged
        for variable, value in zip(self.model.trainable_variables, averaged.trained):
            variable.assign(value)
        arrays = {f"{e}_{i}": value for e, weights in enumerate(averaged.window)
                  for i, value in enumerate(weights)}
        partial = averaged.path.with_suffix(".partial")
        with open(partial, "wb") as f:  # whole or not at all
            np.savez(f, epoch=epoch + 1, size=len(averaged.window), **arrays)
        os.replace(partial, averaged.path)


class Budget(keras.callbacks.Callback):
    """A stop past the time budget or `max_steps` updates, checked after
    every batch (keras has no callback for either); counts the updates."""

    def __init__(self, config, state, start):
        super().__init__()
        self.config, self.state, self.start = config, state, start
        self.spent = state["seconds"]  # by earlier runs of a resumed training
        self.stopped = None

    def seconds(self):
        return self.spent + time.time() - self.start

    def on_train_batch_end(self, batch, logs=None):
        self.state["steps"] += 1
        self.stopped = spent(self.config, self.state["steps"], self.seconds())
        if self.stopped:
            # `_model`: on JAX, `.model` would copy the training state back
            # into the variables after every batch.
            self._model.stop_training = True


def spent(config, steps, seconds):
    """"time budget" or "max steps" where `config`'s is spent after `steps`
    updates and `seconds`, else None."""
    if config.time_budget is not None and seconds >= 60 * config.time_budget:
        return "time budget"
    if config.max_steps is not None and steps >= config.max_steps:
        return "max steps"
    return None


def finished(config, state):
    """Why the training recorded in `state` (`state.json`) would stop before
    its next update under `config` (as `train` gives it), or None."""
    if state["epoch"] >= config.epochs:
        return "epochs"
    wait = saved_monitors(state).get("EarlyStopping", {}).get("wait", 0)
    return spent(config, state["steps"], state["seconds"]) or (
        "no dev improvement" if wait >= config.patience else None)


# The callbacks whose best value and counter `state.json` keeps.
MONITORS = (keras.callbacks.ModelCheckpoint, keras.callbacks.EarlyStopping,
             keras.callbacks.ReduceLROnPlateau)


class RunState(keras.callbacks.Callback):
    """What keras's callbacks do not keep across a kill, in `state.json`
    after every epoch: the epochs, updates and seconds so far, the best dev
    scores, and the best value and counter of each monitoring callback
    (`BackupAndRestore` keeps the weights, the optimizer and the epoch);
    put back into those callbacks when a training resumes. Logs a line per
    epoch."""

    def __init__(self, callbacks, state, path, budget, log):
        super().__init__()
        self.dev = next(c for c in callbacks if isinstance(c, DevMetrics))
        self.monitors = [c for c in callbacks if isinstance(c, MONITORS)]
        self.state, self.path, self.budget, self.log = state, path, budget, log

    def on_train_begin(self, logs=None):
        saved = saved_monitors(self.state)
        for callback in self.monitors:
            for key, value in saved.get(_kind(callback), {}).items():
                setattr(callback, key, value)

    def on_epoch_end(self, epoch, logs=None):
        scores, state = self.dev.scores, self.state
        improved = state["best"] is None or dev_score(scores) < dev_score(state["best"])
        if improved:
            state["best"] = dict(scores, epoch=epoch + 1)
        state["epoch"] = epoch + 1
        state["seconds"] = self.budget.seconds()
        state["monitors"] = {_kind(c): {key: getattr(c, key) for key in ("best", "wait")
                                        if hasattr(c, key)} for c in self.monitors}
        # Whole or not at all: a kill mid-write leaves the last one.
        partial = self.path.with_suffix(".json.partial")
        partial.write_text(json.dumps(state))
        os.replace(partial, self.path)
        self.log(f"epoch {epoch + 1}: dev WER {100 * scores['wer']:.2f}% "
                 f"TER {100 * scores['per']:.2f}%" + ("  (best, saved)" if improved else ""))


def _kind(callback):
    """The keras class of a monitoring callback: its key in `state.json`."""
    return next(kind.__name__ for kind in MONITORS if isinstance(callback, kind))


def saved_monitors(state):
    """The best value and counter of each monitoring callback that `state`
    (`state.json`) records, by keras class name; from the best dev scores
    and the early-stopping counter of a `state.json` of attnkit 0.1."""
    saved = state.get("monitors")
    if saved is None and state.get("best") is not None:
        best = dev_score(state["best"])
        saved = {"ModelCheckpoint": {"best": best},
                 "EarlyStopping": {"best": best, "wait": state.get("stale", 0)},
                 "ReduceLROnPlateau": {"best": best, "wait": 0}}
    return saved or {}
