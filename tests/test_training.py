"""attnkit.app.training: reading pairs, batching, the trainer, resuming and translating
(its commands are tested in tests/test_cli.py)."""

import dataclasses
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest

from attnkit.app import _callbacks
from attnkit.app import training
from tests.helpers import reversal_pairs
from tests.helpers import to_numpy
from tests.test_distribution import JAX_SESSION_ONLY


def test_read_pairs_names_the_bad_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("ab\tA B\n\ncd\tC D\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"pairs.tsv:4: expected `input<TAB>output`"):
        training.read_pairs(path)
    path.write_text("ab\tA B\n\ncd\tC D\n", encoding="utf-8")
    assert training.read_pairs(path) == [("ab", "A B"), ("cd", "C D")]
    assert training.references([("a", "x"), ("a", "y"), ("a", "x")]) == {"a": ["x", "y"]}


def test_smoothed_loss_matches_numpy():
    g = np.random.default_rng(0)
    logits = g.normal(size=(3, 5, 7))
    target = g.integers(1, 7, size=(3, 5))
    target[0, 3:] = 0  # padding
    target[2, 1:] = 0
    got = training.SmoothedSequenceLoss(0.2)(target, logits.astype("float32"))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, target[..., None], -1)[..., 0]
    per_token = 0.8 * nll - 0.2 * logp.mean(-1)
    keep = target != 0
    np.testing.assert_allclose(float(to_numpy(got)), per_token[keep].mean(), rtol=1e-5)


def test_bucketed_batches_hold_every_pair_once_in_similar_lengths():
    g = np.random.default_rng(1)
    source = [list(g.integers(3, 9, size=n)) for n in g.integers(1, 30, size=100)]
    target = [[1] + s[::-1] + [2] for s in source]
    batches = training.BucketedBatches(source, target, batch_size=16, seed=0)
    seen = []
    for i in range(len(batches)):
        (src, dec_in), dec_out = batches[i]
        assert src.shape[1] % 8 == 0 and dec_in.shape == dec_out.shape
        lengths = (src != 0).sum(1)
        assert lengths.max() - lengths.min() <= 12  # sorted by length, then cut
        seen += [tuple(row[row != 0]) for row in src]
        np.testing.assert_array_equal(dec_in[:, 1:], dec_out[:, :-1])
    assert sorted(seen) == sorted(tuple(s) for s in source)


def test_an_epoch_of_few_pairs_passes_over_them_until_it_has_min_batches():
    source = [[3 + i % 5] * (1 + i % 7) for i in range(40)]  # 3 batches of 16
    target = [[1] + s + [2] for s in source]
    batches = training.BucketedBatches(source, target, batch_size=16, seed=0, min_batches=7)
    for epoch in range(2):
        assert len(batches) == 9  # three whole passes
        seen = [tuple(row[row != 0]) for i in range(len(batches)) for row in batches[i][0][0]]
        assert sorted(seen) == sorted([tuple(s) for s in source] * 3)
        thirds = [sorted(seen[:40]), sorted(seen[40:80]), sorted(seen[80:])]
        assert thirds[0] == thirds[1] == thirds[2]  # each pass holds every pair once
        batches.on_epoch_end()
    assert len(training.BucketedBatches(source, target, 16, min_batches=3)) == 3
    assert len(training.BucketedBatches(source, target, 16)) == 3


def test_bucketed_batches_of_any_length_fit_after_the_first_two():
    """keras on TensorFlow fixes the shapes that batches 0 and 1 share: a
    later batch of other lengths must still fit (on every backend)."""
    import keras

    source = [[3, 4, 5]] * 128 + [[3, 4, 5, 6] * 4] * 16  # widths 8, and 16 in one batch
    target = [[1, 3, 2]] * 128 + [[1] + [3] * 12 + [2]] * 16
    batches = training.BucketedBatches(source, target, batch_size=16, seed=0)
    widths = [(batches[i][0][0].shape[1], batches[i][1].shape[1]) for i in range(2)]
    assert widths[0][0] != widths[1][0] and widths[0][1] != widths[1][1]
    source_in = keras.Input((None,), dtype="int32")
    target_in = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(8, 4)(target_in)
    context = keras.ops.mean(keras.layers.Embedding(8, 4)(source_in), axis=1, keepdims=True)
    model = keras.Model([source_in, target_in], keras.layers.Dense(8)(embedded + context))
    model.compile("sgd", training.SmoothedSequenceLoss())
    for seed in range(2):  # orders where the wide batch comes after batches 0 and 1
        history = model.fit(training.BucketedBatches(source, target, 16, seed=seed),
                            verbose=0)
        assert np.isfinite(history.history["loss"][-1])


def test_bucketed_batches_pad_rows_to_a_multiple_with_empty_rows():
    source = [[3, 4, 5][:1 + i % 3] for i in range(37)]
    target = [[1] + s + [2] for s in source]
    batches = training.BucketedBatches(source, target, batch_size=16, rows_multiple_of=8)
    rows = []
    for i in range(len(batches)):
        (src, dec_in), dec_out = batches[i]
        assert len(src) % 8 == 0 and len(src) == len(dec_in) == len(dec_out)
        real = (src != 0).any(1)
        assert not dec_in[~real].any() and not dec_out[~real].any()
        rows.append(int(real.sum()))
    assert sorted(rows) == [5, 16, 16]


def test_the_trainer_learns_and_keeps_its_best_model(trained):
    out, result = trained
    assert result["best"]["wer"] < 0.1, result
    translator = training.load(out)
    test = reversal_pairs(100, 2)
    scores, predictions = translator.evaluate(test)
    refs = training.references(test)  # a word drawn twice counts once
    right = sum(predictions[s] in outputs for s, outputs in refs.items())
    assert scores["correct"] == right and right >= 0.8 * len(refs)
    state = json.loads((out / "state.json").read_text())
    assert state["epoch"] == 5 and state["best"]["wer"] == result["best"]["wer"]


def test_beam_search_agrees_with_greedy_on_a_confident_model(trained):
    translator = training.load(trained[0])
    inputs = [s for s, _ in reversal_pairs(20, 3)]
    greedy = translator.translate(inputs)
    beam = translator.translate(inputs, beam=3)
    assert sum(g == b for g, b in zip(greedy, beam)) >= 18


def test_training_resumes_where_it_stopped(trained, tmp_path):
    out, _ = trained
    for name in ("model.keras", "model.vocab.json", "backup", "state.json"):
        if (out / name).is_dir():
            shutil.copytree(out / name, tmp_path / name)
        else:
            (tmp_path / name).write_bytes((out / name).read_bytes())
    lines = []
    config = training.TrainConfig(model="rnn", units=32, epochs=6, batch_size=32,
                                  target_unit="word", max_valid=200, seed=0)
    result = training.train(reversal_pairs(2000, 0), reversal_pairs(200, 1), tmp_path,
                            config, resume=True, verbose=0, log=lines.append)
    assert lines[0].startswith("resuming from epoch 5")
    assert result["epochs"] == 6 and len(lines) == 2  # one more epoch


KILLED = r"""
import os, sys
import keras
from attnkit.app import _callbacks
from attnkit.app import training
from tests.helpers import reversal_pairs


class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:  # after everything the trainer writes for epoch 2
            os._exit(9)


config = training.TrainConfig(model="rnn", units=8, epochs=4, batch_size=32,
                              target_unit="word", max_valid=10, seed=0)
training.train(reversal_pairs(100, 0), reversal_pairs(10, 1), sys.argv[1], config, verbose=0,
               log=lambda line: None, callbacks=[Kill()])
"""


def test_a_training_killed_mid_run_resumes_from_its_last_epoch(tmp_path):
    """A process that dies without cleaning up (os._exit after its second
    epoch) leaves what a resume needs: the run goes on from epoch 2 with the
    weights, optimizer and counters of then, and ends where an uninterrupted
    run ends, 4 epochs and all their updates."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path)], capture_output=True,
                         text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert run.returncode == 9, run.stderr[-3000:]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 2 and state["steps"] == 8  # 100 pairs: 4 batches an epoch
    lines = []
    config = training.TrainConfig(model="rnn", units=8, epochs=4, batch_size=32,
                                  target_unit="word", max_valid=10, seed=0)
    kept = _Kept()
    result = training.train(reversal_pairs(100, 0), reversal_pairs(10, 1), tmp_path, config,
                            resume=True, verbose=0, log=lines.append, callbacks=[kept])
    assert lines[0].startswith("resuming from epoch 2")
    assert [line.split(":")[0] for line in lines[1:]] == ["epoch 3", "epoch 4"]
    assert result["epochs"] == 4 and result["steps"] == 16
    assert int(to_numpy(kept.trainer.optimizer.iterations)) == 16  # the optimizer's own count


def test_a_resumed_training_ends_where_an_uninterrupted_one_ends(tmp_path):
    """Two epochs, then a resume to four, give the weights of four epochs in
    one run: the resumed run sees the batch order the uninterrupted one saw
    in its third and fourth epochs (not the first epochs' order again)."""
    config = training.TrainConfig(model="rnn", units=8, epochs=4, batch_size=16,
                                  target_unit="word", max_valid=10, patience=4, seed=3)
    pairs, valid = reversal_pairs(96, 0), reversal_pairs(10, 1)
    whole, resumed = _Kept(), _Kept()
    training.train(pairs, valid, tmp_path / "whole", config, verbose=0,
                   log=lambda line: None, callbacks=[whole])
    config.epochs = 2
    training.train(pairs, valid, tmp_path / "resumed", config, verbose=0,
                   log=lambda line: None)
    config.epochs = 4
    result = training.train(pairs, valid, tmp_path / "resumed", config, resume=True,
                            verbose=0, log=lambda line: None, callbacks=[resumed])
    assert result["epochs"] == 4 and result["steps"] == 24
    for a, b in zip(whole.trainer.trainable_variables, resumed.trainer.trainable_variables):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-5, atol=1e-6)


def test_resuming_a_finished_training_trains_nothing(tmp_path):
    config = training.TrainConfig(model="rnn", units=8, epochs=2, batch_size=32,
                                  target_unit="word", max_valid=10, patience=3)
    pairs, valid = reversal_pairs(64, 0), reversal_pairs(10, 1)
    first = training.train(pairs, valid, tmp_path, config, verbose=0, log=lambda line: None)
    state = json.loads((tmp_path / "state.json").read_text())

    def resume(**changes):
        lines = []
        result = training.train(pairs, valid, tmp_path, training.TrainConfig(**{
            **dataclasses.asdict(config), **changes}), resume=True, verbose=0,
            log=lines.append)
        return result, lines

    result, lines = resume()
    assert result == {**first, "stopped": "epochs"} and len(lines) == 1
    assert lines[0].startswith(f"nothing to resume in {tmp_path}: the training stopped by epochs")
    assert resume(epochs=5, max_steps=4)[0]["stopped"] == "max steps"  # 2 epochs of 2 updates
    assert resume(epochs=5, time_budget=state["seconds"] / 60)[0]["stopped"] == "time budget"
    state["monitors"]["EarlyStopping"]["wait"] = 3  # three epochs without improvement
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert resume(epochs=5)[0]["stopped"] == "no dev improvement"
    result, lines = resume(epochs=3, patience=4)  # more patience goes on
    assert result["epochs"] == 3 and result["steps"] == 6 and lines[0].startswith("resuming")


def test_a_resume_with_another_model_or_schedule_is_refused(tmp_path):
    """keras would drop the backup's Adam state with only a warning (the
    linear schedule's optimizer has no learning-rate variable) or fail on
    the weights: the trainer names the option instead."""
    config = training.TrainConfig(model="rnn", units=8, epochs=1, batch_size=32,
                                  target_unit="word", max_valid=10)
    pairs, valid = reversal_pairs(64, 0), reversal_pairs(10, 1)
    training.train(pairs, valid, tmp_path, config, verbose=0, log=lambda line: None)
    for changes, named in [({"schedule": "linear"}, "schedule ('linear'; it was trained with "
                            "'plateau')"),
                           ({"units": 16, "attention": "dot"}, "attention ('dot'; it was "
                            "trained with 'additive'), units (16; it was trained with 8)"),
                           ({"coverage_loss": 0.5}, "coverage_loss (True; it was trained "
                            "with False)")]:
        changed = training.TrainConfig(**{**dataclasses.asdict(config), "epochs": 2, **changes})
        with pytest.raises(ValueError, match=re.escape(named)):
            training.train(pairs, valid, tmp_path, changed, resume=True, verbose=0,
                           log=lambda line: None)
    more = training.TrainConfig(**{**dataclasses.asdict(config), "epochs": 2, "patience": 9,
                                   "label_smoothing": 0.2, "max_valid": 5})
    assert training.train(pairs, valid, tmp_path, more, resume=True, verbose=0,
                          log=lambda line: None)["epochs"] == 2


def test_an_alibi_training_begun_with_a_symmetric_encoder_is_not_resumed(tmp_path):
    """Its `state.json` does not record the ALiBi encoder: it trained before
    the encoder's heads were split, and resuming would change the model."""
    config = training.TrainConfig(model="transformer", attention="alibi", units=8, heads=2,
                                  layers=1, epochs=1, batch_size=32, target_unit="word",
                                  max_valid=10)
    pairs, valid = reversal_pairs(64, 0), reversal_pairs(10, 1)
    training.train(pairs, valid, tmp_path, config, verbose=0, log=lambda line: None)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["built"]["alibi_encoder"] == "split"
    encoder = training.load(tmp_path).model.encoders[0].self_attention.position
    assert encoder.split_directions  # what was recorded is what was built
    del state["built"]["alibi_encoder"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    again = training.TrainConfig(**{**dataclasses.asdict(config), "epochs": 2})
    with pytest.raises(ValueError, match=re.escape(
            "alibi_encoder ('split'; it was trained with 'symmetric')")):
        training.train(pairs, valid, tmp_path, again, resume=True, verbose=0,
                       log=lambda line: None)


def test_a_state_json_of_attnkit_0_1_resumes_with_its_early_stopping_counter():
    """0.1 kept the epochs without improvement as `stale`, beside the best
    dev scores: a resume puts them into the monitors and stops as 0.1 did."""
    state = {"epoch": 4, "steps": 40, "seconds": 30.0, "stale": 2,
             "best": {"wer": 0.5, "per": 0.25, "epoch": 2}}
    saved = _callbacks.saved_monitors(state)
    assert saved["EarlyStopping"] == {"best": 0.5 + training.TIE_BREAK * 0.25, "wait": 2}
    assert saved["ModelCheckpoint"] == {"best": 0.5 + training.TIE_BREAK * 0.25}
    config = training.TrainConfig(epochs=10, patience=3)
    assert _callbacks.finished(config, state) is None
    assert _callbacks.finished(dataclasses.replace(config, patience=2), state) == \
        "no dev improvement"
    assert _callbacks.finished(dataclasses.replace(config, epochs=4), state) == "epochs"
    assert _callbacks.finished(dataclasses.replace(config, max_steps=40), state) == "max steps"
    assert _callbacks.finished(dataclasses.replace(config, time_budget=0.5), state) == \
        "time budget"
    assert _callbacks.finished(dataclasses.replace(config, time_budget=0.6), state) is None
    assert _callbacks.saved_monitors({"epoch": 0, "steps": 0, "seconds": 0.0,
                                      "best": None}) == {}


class _Trained(keras.callbacks.Callback):
    """The trainable weights at the end of every epoch, as the callbacks
    after the trainer's own see them."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([to_numpy(v).astype("float64")
                             for v in self.model.trainable_variables])


def test_checkpoint_averaging_evaluates_and_keeps_the_mean_of_the_last_epochs(tmp_path):
    """With `average_epochs=2` the dev score and the saved best model are
    those of the mean of the last two epochs' weights; training goes on from
    the trained weights."""
    config = training.TrainConfig(model="rnn", units=8, epochs=4, batch_size=32,
                                  target_unit="word", max_valid=10, patience=4,
                                  average_epochs=2, learning_rate=0.02)
    valid = reversal_pairs(10, 1)
    trained, kept = _Trained(), _Kept()
    result = training.train(reversal_pairs(100, 0), valid, tmp_path, config, verbose=0,
                            log=lambda line: None, callbacks=[trained, kept])
    best = result["best"]["epoch"]
    assert best >= 2  # a mean of two epochs, not one
    window = trained.weights[best - 2:best]
    saved = keras.saving.load_model(tmp_path / "model.keras")
    for i, variable in enumerate(saved.trainable_variables):
        expected = np.mean([weights[i] for weights in window], axis=0)
        np.testing.assert_allclose(to_numpy(variable), expected, rtol=1e-6, atol=1e-7)
    scores, _ = training.load(tmp_path).score(training.references(valid))
    # What the dev scores measured.
    assert (scores["wer"], scores["per"]) == (result["best"]["wer"], result["best"]["per"])
    for variable, value in zip(kept.trainer.trainable_variables, trained.weights[-1]):
        np.testing.assert_array_equal(to_numpy(variable), value)  # trained, not averaged
    with pytest.raises(ValueError, match="average_epochs"):
        training.TrainConfig(average_epochs=0).check()


def test_the_averaging_window_covers_trainable_weights_and_survives_a_resume(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5),
                              keras.layers.BatchNormalization()])
    g = np.random.default_rng(0)
    state = {"epoch": 0}
    averaged = _callbacks.AveragedWeights(2, tmp_path / "averaged.npz", state)
    for callback in (averaged, averaged.restorer):
        callback.set_model(model)
    averaged.on_train_begin()
    epochs = []
    for epoch in range(3):
        epochs.append([g.normal(size=v.shape).astype("float32")
                       for v in model.trainable_variables])
        for variable, value in zip(model.trainable_variables, epochs[-1]):
            variable.assign(value)
        moving = [g.normal(size=v.shape).astype("float32")
                  for v in model.non_trainable_variables]  # BatchNormalization's statistics
        for variable, value in zip(model.non_trainable_variables, moving):
            variable.assign(value)
        averaged.on_epoch_end(epoch)
        for i, variable in enumerate(model.trainable_variables):
            expected = np.mean([np.float64(w[i]) for w in epochs[-2:]], axis=0)
            np.testing.assert_allclose(to_numpy(variable), expected, rtol=1e-6)
        for variable, value in zip(model.non_trainable_variables, moving):
            np.testing.assert_array_equal(to_numpy(variable), value)  # not averaged
        averaged.restorer.on_epoch_end(epoch)
        for variable, value in zip(model.trainable_variables, epochs[-1]):
            np.testing.assert_array_equal(to_numpy(variable), value)
    # A resumed training at epoch 3 reads the window; at another epoch (a
    # kill between the window's file and the run's state) it starts afresh.
    for epoch, window in ((3, epochs[-2:]), (2, [])):
        again = _callbacks.AveragedWeights(2, tmp_path / "averaged.npz", {"epoch": epoch})
        again.set_model(model)
        again.on_train_begin()
        assert len(again.window) == len(window)
        for got, want in zip(again.window, window):
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_transformer_trains_resumes_and_translates(tmp_path):
    config = training.TrainConfig(model="transformer", attention="t5", normalizer="entmax15",
                                  units=16, heads=2, layers=1, epochs=1, batch_size=32,
                                  target_unit="word", max_valid=20)
    pairs, valid = reversal_pairs(300, 0), reversal_pairs(20, 1)
    training.train(pairs, valid, tmp_path, config, verbose=0, log=lambda line: None)
    config.epochs = 2
    result = training.train(pairs, valid, tmp_path, config, resume=True, verbose=0,
                            log=lambda line: None)
    assert result["epochs"] == 2
    translator = training.load(tmp_path)
    assert len(translator.translate(["abc", "hgfedcb"], beam=2)) == 2


@pytest.mark.slow
def test_coverage_loss_trains_the_alignments_and_resumes(tmp_path):
    import keras

    from attnkit.losses import CoverageLoss

    config = training.TrainConfig(model="rnn", units=8, epochs=1, batch_size=32,
                                  target_unit="word", max_valid=10, coverage_loss=0.5)
    pairs, valid = reversal_pairs(200, 0), reversal_pairs(10, 1)
    kept = _Kept()
    training.train(pairs, valid, tmp_path, config, verbose=0, log=lambda line: None,
                   callbacks=[kept])
    trainer = kept.trainer
    assert len(trainer.outputs) == 2 and isinstance(trainer.loss[1], CoverageLoss)
    config.epochs = 2
    result = training.train(pairs, valid, tmp_path, config, resume=True, verbose=0,
                            log=lambda line: None)
    assert result["epochs"] == 2
    assert len(training.load(tmp_path).translate(["abc"])) == 1
    with pytest.raises(ValueError, match="coverage_loss"):
        training.TrainConfig(coverage_loss=-1.0).check()


@pytest.mark.slow
def test_linear_schedule_lowers_the_rate_towards_zero(tmp_path):
    import keras

    config = training.TrainConfig(model="rnn", units=8, epochs=3, batch_size=16,
                                  target_unit="word", max_valid=5, schedule="linear",
                                  learning_rate=0.01)
    kept = _Kept()
    training.train(reversal_pairs(160, 0), reversal_pairs(5, 1), tmp_path, config,
                   verbose=0, log=lambda line: None, callbacks=[kept])
    # Batch t of 30 (3 epochs of 10) starts t/30 of the way from 0.01 to
    # 1% of it, whatever the dev scores.
    expected = [0.01 - 0.0099 * t / 30 for t in range(30)]
    np.testing.assert_allclose(kept.rates, expected, rtol=1e-5)


@pytest.mark.slow
def test_time_budget_stops_training(tmp_path):
    config = training.TrainConfig(model="rnn", units=8, epochs=50, batch_size=8,
                                  target_unit="word", max_valid=5, time_budget=0.001)
    result = training.train(reversal_pairs(200, 0), reversal_pairs(5, 1), tmp_path, config,
                            verbose=0, log=lambda line: None)
    assert result["stopped"] == "time budget" and result["epochs"] == 1


def test_bad_configurations_are_refused():
    for kwargs, match in ((dict(model="lstm"), "model"),
                          (dict(model="rnn", attention="t5"), "does not fit"),
                          (dict(units=0), "units"), (dict(label_smoothing=1.0), "smoothing"),
                          (dict(time_budget=0), "time_budget"),
                          (dict(min_epoch_steps=0), "min_epoch_steps")):
        with pytest.raises(ValueError, match=match):
            training.TrainConfig(**kwargs).check()


DATA_PARALLEL = r"""
import json, sys
import keras
import numpy as np
from keras import distribution as D
from attnkit.app import _callbacks
from attnkit.app import training


class Kept(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        self.trainer = self.model


assert len(D.list_devices("cpu")) == 8, D.list_devices("cpu")
pairs, valid = json.loads(sys.argv[1])
config = training.TrainConfig(model="rnn", units=16, epochs=2, batch_size=20,
                              target_unit="word", max_valid=20)
report = {}
for name in ("single", "data"):
    if name == "data":
        D.set_distribution(D.DataParallel(devices=D.list_devices("cpu")))
    out = sys.argv[2] + "/" + name
    kept = Kept()
    result = training.train(pairs, valid, out, config, verbose=0, log=lambda line: None,
                            callbacks=[kept])
    model = kept.trainer
    report[name] = {
        "weights": [np.asarray(w).tolist() for w in model.get_weights()],
        "replicated": [len(v.value.sharding.device_set) for v in model.weights],
        "best": result["best"],
        "translations": training.load(out).translate([s for s, _ in valid]),
    }
print("REPORT " + json.dumps(report))
"""


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason=JAX_SESSION_ONLY)
def test_training_under_data_parallel_equals_one_device(tmp_path):
    """keras.distribution.DataParallel over 8 virtual CPU devices (JAX):
    the same weights and dev scores as on one device, though 150 pairs in
    batches of 20 leave a last batch of 10 rows, which 8 devices cannot
    split until it is padded."""
    import os
    import subprocess
    import sys

    pairs = reversal_pairs(150, 0)
    env = dict(os.environ, KERAS_BACKEND="jax",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL, json.dumps([pairs, reversal_pairs(20, 1)]),
         str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("REPORT "))
    single, data = (json.loads(line[len("REPORT "):])[k] for k in ("single", "data"))
    assert set(single["replicated"]) == {1} and set(data["replicated"]) == {8}
    for got, want in zip(data["weights"], single["weights"]):
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert data["best"] == single["best"]
    assert data["translations"] == single["translations"]


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_a_loaded_translator_holds_the_saved_weights_and_trains_on(kind, tmp_path):
    from attnkit.app.vocabulary import Vocabulary

    pairs = reversal_pairs(50, 0)
    source = Vocabulary.from_texts([s for s, _ in pairs], unit="char")
    target = Vocabulary.from_texts([t for _, t in pairs], unit="char")
    config = training.TrainConfig(model=kind, units=16, heads=2, layers=1).check()
    keras.utils.set_random_seed(3)
    model = training.build_model(config, len(source), len(target))
    training.Translator(model, source, target, 8).save(tmp_path)
    loaded = training.load(tmp_path).model
    reference = keras.saving.load_model(tmp_path / "model.keras")  # keras's own loader
    assert len(loaded.weights) == len(model.weights) == len(reference.weights)
    for mine, saved, theirs in zip(loaded.weights, model.weights, reference.weights):
        assert mine.shape == theirs.shape
        np.testing.assert_array_equal(to_numpy(mine), to_numpy(theirs))
        np.testing.assert_array_equal(to_numpy(mine), to_numpy(saved))
    # Every variable has a value a training step can read and change.
    rng = np.random.default_rng(0)
    src = rng.integers(1, len(source), (4, 6)).astype("int32")
    dec = rng.integers(1, len(target), (4, 5)).astype("int32")
    loaded.compile(optimizer=keras.optimizers.SGD(0.5),
                   loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), None])
    before = [to_numpy(w).copy() for w in loaded.trainable_weights]
    loaded.train_on_batch([src, dec], [dec, np.zeros((4, 5, 6), "float32")])
    changed = [not np.array_equal(b, to_numpy(w)) for b, w in zip(before, loaded.trainable_weights)]
    assert sum(changed) >= len(changed) // 2, changed


@pytest.mark.backend_independent
def test_building_and_loading_a_model_leaves_tensorflow_unimported(tmp_path):
    """keras's Bidirectional asks its serializer whether TensorFlow is
    installed, which imported it (2.5 s) on JAX and PyTorch."""
    import subprocess
    import sys

    from attnkit.app.vocabulary import Vocabulary

    vocab = Vocabulary.from_texts(["ab", "ba"], unit="char")
    config = training.TrainConfig(model="rnn", units=8).check()
    training.Translator(training.build_model(config, len(vocab), len(vocab)),
                        vocab, vocab, 4).save(tmp_path)
    script = (
        "import sys\n"
        "from attnkit.app import training\n"
        "config = training.TrainConfig(model='rnn', units=8).check()\n"
        "training.build_model(config, 5, 5)\n"
        "built = 'tensorflow' in sys.modules\n"
        f"print(training.load({str(tmp_path)!r}).translate(['ab']))\n"
        "print(built, 'tensorflow' in sys.modules)\n")
    for backend in ("jax", "torch"):
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env={**os.environ, "KERAS_BACKEND": backend})
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.split()[-2:] == ["False", "False"], (backend, run.stdout)


@keras.saving.register_keras_serializable(package="attnkit_tests")
class _ValueVariable(keras.layers.Layer):
    """A layer that makes its variable from a value, which a stateless
    scope refuses."""

    def build(self, shape):
        self.offset = keras.Variable(np.full((shape[-1],), 0.5, "float32"), name="offset")

    def call(self, x):
        return x + self.offset


def test_a_model_that_cannot_build_in_a_stateless_scope_loads_as_usual(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(_ValueVariable()(inputs)))
    model.save(tmp_path / "m.keras")
    loaded = training._load_model(tmp_path / "m.keras")
    x = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6)


@pytest.mark.parametrize("model", ["rnn", "transformer"])
def test_the_trainer_keeps_the_model_class_and_a_resumed_training_steps_it(model, tmp_path,
                                                                         monkeypatch):
    import keras

    from attnkit.models import _saved_v01
    from attnkit.models import RNNSeq2Seq
    from attnkit.models import TransformerSeq2Seq

    config = training.TrainConfig(model=model, units=8, heads=2, layers=1, epochs=1,
                                  batch_size=32, target_unit="word", max_valid=10)
    pairs, valid = reversal_pairs(100, 0), reversal_pairs(10, 1)
    kept = _Kept()
    training.train(pairs, valid, tmp_path, config, verbose=0, log=lambda line: None,
                   callbacks=[kept])
    trainer = kept.trainer
    assert isinstance(trainer, training.LogitsTrainer)
    assert isinstance(trainer.seq2seq, RNNSeq2Seq if model == "rnn" else TransformerSeq2Seq)

    def no_adapter(model):
        raise AssertionError("decoded through the adapter for saved 0.1 models")

    monkeypatch.setattr(_saved_v01, "adapt", no_adapter)
    config.epochs = 2
    lines = []
    result = training.train(pairs, valid, tmp_path, config, resume=True, verbose=0,
                            log=lines.append)
    assert result["epochs"] == 2 and lines[0].startswith("resuming from epoch 1")


class _Kept(keras.callbacks.Callback):
    """Keeps the model `train` fitted, and the learning rate at the start
    of every batch."""

    def __init__(self):
        super().__init__()
        self.rates, self.trainer = [], None

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(to_numpy(self.model.optimizer.learning_rate)))

    def on_train_end(self, logs=None):
        self.trainer = self.model


def test_the_monitors_keep_the_ter_tie_break_that_float32_loses():
    """Same WER, TER better by 0.001: keras's own comparison (float32)
    sees no improvement; the trainer's monitors do, as its dev scores do."""
    tied, before = 0.25 + training.TIE_BREAK * 0.099, 0.25 + training.TIE_BREAK * 0.100
    plain = keras.callbacks.EarlyStopping("dev_score", mode="min")
    plain._set_monitor_op()
    assert not plain._is_improvement(tied, before)  # why the trainer has its own
    for monitor in (_callbacks.EarlyStopping("dev_score", mode="min"),
                    _callbacks.ReduceLROnPlateau("dev_score", mode="min", min_delta=0.0),
                    _callbacks.BestModel("m.keras", monitor="dev_score", mode="min")):
        assert monitor._is_improvement(tied, before)
        assert not monitor._is_improvement(before, before)
        assert monitor._is_improvement(0.3, None)


@pytest.mark.parametrize("latest, previous, recorded, kept", [
    (3, 2, 3, "latest"),    # a complete save
    (4, 3, 3, "previous"),  # killed after the backup, before state.json
    (3, 3, 3, "previous"),  # killed after keras's copies: weights may be half written
    (5, 4, 2, None),        # another run's backup
])
def test_a_resume_takes_the_backup_of_the_epoch_state_json_records(
        tmp_path, latest, previous, recorded, kept):
    backup = tmp_path / "backup"
    backup.mkdir()
    for suffix, epoch in (("", latest), (".bkp", previous)):
        (backup / f"training_metadata.json{suffix}").write_text(json.dumps({"epoch": epoch}))
        (backup / f"latest.weights.h5{suffix}").write_bytes(f"weights {epoch}".encode())
    if kept is None:
        with pytest.raises(ValueError, match="not of epoch 2"):
            training._match_backup(backup, recorded)
        return
    training._match_backup(backup, recorded)
    epoch = latest if kept == "latest" else previous
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == epoch
    assert (backup / "latest.weights.h5").read_bytes() == f"weights {epoch}".encode()


def test_an_out_folder_with_braces_is_a_plain_path(tmp_path):
    """keras's ModelCheckpoint formats its path with the logs."""
    config = training.TrainConfig(model="rnn", units=8, epochs=1, batch_size=32,
                                  target_unit="word", max_valid=5)
    out = tmp_path / "run {epoch} {"
    training.train(reversal_pairs(40, 0), reversal_pairs(5, 1), out, config, verbose=0,
                   log=lambda line: None)
    assert (out / "model.keras").is_file() and len(training.load(out).translate(["ab"])) == 1
