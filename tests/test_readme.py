"""The documentation's "write your own" examples run as written, compute what they
say (against the float64 reference of `tests/layers/mha_reference`), take
the chunked path, and save."""

import contextlib
import io
import pathlib
import re

import keras
import numpy as np
import pytest

import attnkit
from tests.helpers import to_numpy
from tests.layers import mha_reference as ref

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


def readme_block(marker):
    blocks = [b for page in PAGES
              for b in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)]
    (block,) = [b for b in blocks if marker in b]
    return block


def run_block(marker):
    namespace = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_block(marker), f"README:{marker}", "exec"), namespace)
    return namespace, printed.getvalue()


def dense_distance(t, s):
    return np.arange(s)[None, :] - np.arange(t)[:, None]  # (T, S), key minus query


def _table(layer):
    weights = ref.layer_weights(layer)
    return weights[ref._find(weights, "/table")]  # (17, N)


EXAMPLES = {
    # marker: (class name, constructor, dense float64 bias (N, T, S) of the layer)
    "my_terms": ("DistancePenalty", lambda cls: dict(score_mod=cls(0.1)),
                 lambda layer, t: -0.1 * np.abs(dense_distance(t, t))[None]),
    "my_positions": ("ClippedBias", lambda cls: dict(position=cls()),
                     lambda layer, t: _table(layer)[
                         np.clip(dense_distance(t, t), -8, 8) + 8].transpose(2, 0, 1)),
}


@pytest.mark.parametrize("marker", sorted(EXAMPLES))
def test_readme_example_runs_and_computes_what_it_says(marker, tmp_path):
    namespace, printed = run_block(marker)
    assert printed.strip().endswith("(2, 50, 64)")
    name, kwargs, dense_bias = EXAMPLES[marker]
    cls = namespace[name]
    t = 40
    x = np.random.default_rng(0).normal(size=(2, t, 64)).astype("float32")
    outs = {}
    for implementation in ("chunked", "math"):
        keras.utils.set_random_seed(1)
        layer = attnkit.layers.MultiHeadAttention(
            4, 16, implementation=implementation, **kwargs(cls))
        layer.build(x.shape, x.shape)
        for w in layer.weights:  # a table of zeros would test nothing
            w.assign(np.random.default_rng(2).normal(size=w.shape).astype("float32") * 0.3)
        with attnkit.ops.block_sizes(query=16, key=8):  # blocks past the clip too
            outs[implementation] = to_numpy(layer(x, x, use_causal_mask=True))
        want, _ = ref.mha(layer, x, x, causal=True, bias=dense_bias(layer, t)[None])
        np.testing.assert_allclose(outs[implementation], want, rtol=1e-4, atol=1e-4)
    assert attnkit.ops.explain(
        np.zeros((1, 8192, 4, 16), "float32"), np.zeros((1, 8192, 4, 16), "float32"),
        np.zeros((1, 8192, 4, 16), "float32"), is_causal=True,
        **({"score_mod": cls(0.1)} if marker == "my_terms" else
           {"buckets": attnkit.ops.ClippedBuckets(8),
            "bias_table": np.zeros((17, 4), "float32")})).implementation == "chunked"

    inp = keras.Input((t, 64))
    model = keras.Model(inp, layer(inp, inp, use_causal_mask=True))
    path = str(tmp_path / "readme.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_cmudict_example_prints_what_it_says():
    _, printed = run_block("cmudict.load_data(train_size=4000)")
    assert printed.splitlines() == ["['R EH D', 'R IY D']", "0.0 0.0"]


def test_readme_stateful_attention_example_runs_and_stays_monotonic():
    namespace, printed = run_block("reads_earlier_alignments")
    assert printed.strip() == "(4, 6, 56) (4, 9)"
    decoder, memory, targets = (namespace[k] for k in ("decoder", "memory", "targets"))
    decoder.attention.score_bias.assign(1.0)  # hard decisions that stop somewhere
    states = decoder.get_initial_state(4, memory=memory)
    stops = []
    for t in range(6):
        _, _, states = decoder.step(targets[:, t], states, memory)
        alpha = to_numpy(states[-1])  # the monotonic alignment: one-hot or empty
        assert set(np.unique(alpha)) <= {0.0, 1.0}
        stops.append(np.where(alpha.any(-1), alpha.argmax(-1), 9))
    assert np.all(np.diff(np.stack(stops, 1), axis=1) >= 0)  # never moves back
