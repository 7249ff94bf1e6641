"""attnkit.losses against NumPy loops written from the papers' definitions,
and inside a seq2seq model's compile, fit and save."""

import keras
import numpy as np
import pytest

from attnkit.losses import CoverageLoss
from attnkit.losses import GuidedAlignmentLoss
from attnkit.app.training import SmoothedSequenceLoss
from attnkit.models import build_rnn_seq2seq
from tests.helpers import to_numpy


def alignments(seed=0, b=3, t=5, s=4):
    g = np.random.default_rng(seed)
    a = g.random((b, t, s)) ** 3
    a[0, :, 3] = 0.0  # a padded source position
    return (a / a.sum(-1, keepdims=True)).astype("float32")


def test_coverage_loss_is_see_et_al_2017():
    a = alignments()
    target = np.ones((3, 5), "int32")
    target[1, 3:] = 0  # padded target steps
    terms = []
    for b in range(3):
        coverage = np.zeros(4)
        for t in range(5):
            if target[b, t]:
                terms.append(np.minimum(a[b, t], coverage).sum())
            coverage = coverage + a[b, t]
    got = float(to_numpy(CoverageLoss()(target, a)))
    np.testing.assert_allclose(got, np.mean(terms), rtol=1e-6)
    # Attending once to each position costs nothing; twice to one, a full step.
    once = np.eye(4, dtype="float32")[None]
    assert float(to_numpy(CoverageLoss()(np.ones((1, 4)), once))) == 0.0
    twice = np.array([[[1, 0, 0, 0], [1, 0, 0, 0]]], "float32")
    assert float(to_numpy(CoverageLoss()(np.ones((1, 2)), twice))) == 0.5


@pytest.mark.parametrize("kind", ["ce", "mse"])
def test_guided_alignment_loss_is_the_definition(kind):
    predicted = alignments(1)
    reference = alignments(2) ** 4
    reference /= reference.sum(-1, keepdims=True)
    reference[0, 4] = 0.0  # a padded target step: no reference
    reference[2, :, 1] = 0.0  # reference zeros where the prediction may be 0
    predicted[2, :, 1] = 0.0
    rows = [(b, t) for b in range(3) for t in range(5) if reference[b, t].any()]
    if kind == "ce":
        want = np.mean([-sum(reference[b, t, i] * np.log(predicted[b, t, i])
                             for i in range(4) if reference[b, t, i] > 0) for b, t in rows])
    else:
        want = np.mean([((predicted[b, t] - reference[b, t]) ** 2).sum() for b, t in rows])
    got = float(to_numpy(GuidedAlignmentLoss(kind)(reference, predicted)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.isfinite(got)
    with pytest.raises(ValueError, match="kind"):
        GuidedAlignmentLoss("kl")


@pytest.mark.slow
def test_losses_train_and_save_with_a_seq2seq_model(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_rnn_seq2seq(12, 10, units=8, embedding_dim=8)
    g = np.random.default_rng(3)
    source = g.integers(1, 12, (16, 6)).astype("int32")
    target = g.integers(1, 10, (16, 5)).astype("int32")
    target[:4, 3:] = 0
    diagonal = np.zeros((16, 4, 6), "float32")
    diagonal[:, np.arange(4), np.arange(4)] = 1.0
    model.compile("adam", [SmoothedSequenceLoss(), CoverageLoss()],
                  loss_weights=[1.0, 0.5])
    history = model.fit([source, target[:, :-1]], [target[:, 1:], target[:, 1:]], epochs=2,
                        verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    guided = build_rnn_seq2seq(12, 10, units=8, embedding_dim=8)
    guided.compile(keras.optimizers.Adam(0.03), [SmoothedSequenceLoss(), GuidedAlignmentLoss()],
                   loss_weights=[0.1, 1.0])
    before = guided.evaluate([source, target[:, :-1]], [target[:, 1:], diagonal], verbose=0)
    guided.fit([source, target[:, :-1]], [target[:, 1:], diagonal], epochs=30, verbose=0)
    after = guided.evaluate([source, target[:, :-1]], [target[:, 1:], diagonal], verbose=0)
    assert after[2] < 0.7 * before[2]  # the alignments moved towards the diagonal
    path = tmp_path / "guided.keras"
    guided.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.loss[1], GuidedAlignmentLoss) and loaded.loss[1].kind == "ce"
