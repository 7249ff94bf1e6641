"""The three examples in examples/ run on every backend."""

import pathlib
import runpy

import numpy as np

from tests.helpers import to_numpy

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def run(name, capsys):
    results = runpy.run_path(str(EXAMPLES / f"{name}.py"))["main"]()
    printed = capsys.readouterr().out
    return {k: to_numpy(v).astype("float64") for k, v in results.items()}, printed


def test_example_1_each_row_attends_over_its_own_keys(capsys):
    r, printed = run("dot_product_attention", capsys)
    assert "context (10, 64)" in printed and "weights (10, 20)" in printed
    logits = np.einsum("bd,bsd->bs", r["query"], r["key"])  # unscaled, per row
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    np.testing.assert_allclose(r["weights"], weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r["context"], np.einsum("bs,bsd->bd", weights, r["value"]),
                               rtol=1e-4, atol=1e-4)


def test_example_2_matches_keras_and_decodes_with_the_cache(capsys):
    r, printed = run("multi_head_attention", capsys)
    assert "output (4, 12, 64)" in printed
    np.testing.assert_allclose(r["ours"], r["keras"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(r["cached"], r["full"], rtol=1e-5, atol=1e-5)


def test_example_3_relative_attention_is_shift_invariant(capsys):
    r, printed = run("relative_positional_attention", capsys)
    assert "output (2, 15, 64) scores (2, 4, 15, 15)" in printed
    np.testing.assert_allclose(r["moved"], r["out"], rtol=1e-5, atol=1e-5)
