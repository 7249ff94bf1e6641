"""attnkit.distribution: sharded runs equal the single-device run.

keras.distribution shards on JAX; the check runs in a JAX process with 8
virtual CPU devices (the device count must be set before JAX starts). That
process is the same whichever backend the test session runs, so the JAX
session runs it. The layout map itself is checked in every session.
"""

import json
import os
import re
import subprocess
import sys

import keras
import pytest

import attnkit

JAX_SESSION_ONLY = ("a JAX subprocess with 8 devices, the same from any session: "
                    "the JAX session runs it")

SCRIPT = r"""
import json
import keras
import numpy as np
import attnkit
from keras import distribution as D

assert len(D.list_devices("cpu")) == 8, D.list_devices("cpu")
rng = np.random.default_rng(0)
src = rng.integers(3, 30, (8, 10)).astype("int32")
src[:, 8:] = 0
tgt_in = rng.integers(3, 30, (8, 7)).astype("int32")
tgt_out = rng.integers(3, 30, (8, 7)).astype("int32")


def build(position):
    return attnkit.models.build_transformer_seq2seq(
        30, 30, units=32, num_heads=4, num_layers=1, ff_units=64, dropout=0.0,
        position=position)


def run(position, weights, distribution):
    D.set_distribution(distribution)
    model = build(position)
    model.set_weights(weights)
    logits, alignment = model([src, tgt_in])
    tokens, _ = attnkit.models.greedy_decode(model, src, 6)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(keras.optimizers.SGD(0.5), [loss, None])
    model.train_on_batch([src, tgt_in], (tgt_out, None))
    sharded = [v.path for v in model.weights
               if any(a is not None for a in getattr(v.value.sharding, "spec", ()))]
    result = ([np.asarray(logits), np.asarray(alignment)], tokens,
              [np.asarray(w) for w in model.get_weights()], sharded)
    D.set_distribution(None)
    return result


report = {}
for position in ("relative", "t5"):
    keras.utils.set_random_seed(0)
    weights = build(position).get_weights()
    single = run(position, weights, None)
    mesh = D.DeviceMesh((2, 4), ["batch", "model"], D.list_devices("cpu"))
    parallel = {
        "data": D.DataParallel(devices=D.list_devices("cpu")),
        "model": D.ModelParallel(layout_map=attnkit.distribution.layout_map(mesh),
                                 batch_dim_name="batch"),
    }
    for name, distribution in parallel.items():
        got = run(position, weights, distribution)
        report[f"{position}/{name}"] = {
            "outputs": max(float(np.max(np.abs(a - b))) for a, b in zip(got[0], single[0])),
            "tokens_equal": bool(np.array_equal(got[1], single[1])),
            "weights": max(float(np.max(np.abs(a - b))) for a, b in zip(got[2], single[2])),
            "moved": max(float(np.max(np.abs(a - b))) for a, b in zip(single[2], weights)),
            "sharded": got[3],
        }
print("REPORT " + json.dumps(report))
"""


@pytest.mark.skipif(keras.backend.backend() != "jax", reason=JAX_SESSION_ONLY)
@pytest.mark.slow
def test_data_and_model_parallel_equal_the_single_device_run():
    env = dict(os.environ, KERAS_BACKEND="jax",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("REPORT "))
    report = json.loads(line[len("REPORT "):])
    assert sorted(report) == ["relative/data", "relative/model", "t5/data", "t5/model"]
    for name, r in report.items():
        assert r["outputs"] <= 1e-5, (name, r)
        assert r["weights"] <= 1e-5, (name, r)
        assert r["moved"] > 1e-3, (name, r)  # the training step changed the weights
        assert r["tokens_equal"], (name, r)
    # ModelParallel really sharded heads, the feed-forward and the T5 table.
    sharded = report["t5/model"]["sharded"]
    for part in ("self_attention/query/kernel", "cross_attention/attention_output/kernel",
                 "expand/kernel", "contract/kernel", "t5_relative_bias[^/]*/embeddings"):
        assert any(re.search(part + "$", path) for path in sharded), (part, sharded)
    assert not report["t5/data"]["sharded"]


def _mesh():
    # Device names only: building a layout map touches no device (and
    # keras.distribution lists devices on JAX and TensorFlow only).
    return keras.distribution.DeviceMesh((2, 4), ["batch", "model"],
                                         [f"cpu:{i}" for i in range(8)])


@pytest.mark.parametrize("shard_key_value", [True, False])
def test_layout_map_entries(shard_key_value):
    layouts = attnkit.distribution.layout_map(_mesh(), shard_key_value=shard_key_value)
    kv = "model" if shard_key_value else None
    expected = {
        "enc/self_attention/query/kernel": (None, "model", None),
        "enc/self_attention/gate/bias": ("model", None),
        "enc/self_attention/key/kernel": (None, kv, None),
        "dec/cross_attention/value/bias": (kv, None),
        "mha/attention_output/kernel": ("model", None, None),
        "enc/self_attention/t5_relative_bias_3/embeddings": (None, "model"),
        "enc/expand/kernel": (None, "model"),
        "enc/contract/kernel": ("model", None),
        "dec/self_attention/cache": ("batch", None, None, kv, None),
    }
    for path, axes in expected.items():
        assert tuple(layouts[path].axes) == axes, path
    for path in ("mha/attention_output/bias", "enc/norm1/gamma", "logits/kernel",
                 "enc/self_attention/shaw_relative_position/key_embeddings"):
        assert layouts[path] is None, path


def test_layout_map_needs_the_model_axis():
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        attnkit.distribution.layout_map(_mesh(), model_axis="heads")
