"""The attention benchmarks (benchmarks/attention, `make bench`): the
harness measures what it claims, the report reads the rows right, and the
whole suite runs end to end at tiny sizes."""

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from benchmarks.attention import _harness
from benchmarks.attention import _report

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_runner_backward_returns_the_gradients_total():
    g = np.random.default_rng(0)
    x = g.normal(size=(3, 4)).astype("float32")
    w = keras.Variable(g.normal(size=(4,)).astype("float32"))
    run = _harness.runner(lambda x: x * x * w, [x], [w], backward=True)
    # sum(out * d) with the runner's fixed d: d/dx = 2 x w d, d/dw = sum_rows x^2 d
    d = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    wv = np.asarray(w.numpy() if hasattr(w, "numpy") else ops.convert_to_numpy(w), "float64")
    want = np.sum(2 * x * wv * d) + np.sum(x * x * d)
    np.testing.assert_allclose(run(), want, rtol=1e-5)
    forward = _harness.runner(lambda x: x * x * w, [x])
    np.testing.assert_allclose(forward(), np.sum(x * x * wv), rtol=1e-5)


def _row(backend, suite, competitor, length, passes, ms=None, impl="", memory=None,
         peak_fraction=None):
    return dict(backend=backend, suite=suite, competitor=competitor, implementation=impl,
                length=length, batch=1, passes=passes, ms=ms, gflops=None,
                peak_fraction=peak_fraction, memory_mib=memory, note="")


def test_targets_and_choice_table_read_the_rows():
    rows = [
        _row("jax", "mha", "keras MHA", 1024, "fwd+bwd", ms=300.0),
        _row("jax", "mha", "attnkit MHA", 1024, "fwd+bwd", ms=200.0),
        _row("jax", "mha", "keras MHA", 1024, "fwd", ms=100.0),
        _row("jax", "mha", "attnkit MHA", 1024, "fwd", ms=110.0),
        _row("jax", "ops", "attnkit", 2048, "fwd", ms=10.0, impl="math", peak_fraction=0.8),
        _row("jax", "ops", "attnkit:math", 2048, "fwd", ms=10.0),
        _row("jax", "ops", "attnkit:chunked", 2048, "fwd", ms=8.0),
        # the eager row of the same case (first here) is not the one target 3 reads
        _row("jax", "memory:ops", "attnkit:chunked", 4096, "fwd+bwd eager", ms=1.0,
             memory=900.0),
        _row("jax", "memory:ops", "attnkit:chunked", 4096, "fwd+bwd", ms=1.0, memory=120.0),
        _row("jax", "decoding", "cached", 256, "decode", ms=100.0),
        _row("jax", "decoding", "recompute", 256, "decode", ms=700.0),
    ]
    found = {(n, text.split(":")[0]): (values["jax"], met)
             for n, text, values, met in _report.targets(rows)}
    assert found[(1, "MHA fwd+bwd L=1024 B=8")] == ("1.50x", True)
    assert found[(1, "MHA")] == ("0.91x", False)  # forward is slower at 1024
    assert found[(2, "ops.attention fwd L=2048")] == ("80%", True)
    assert found[(3, "chunked fwd+bwd L=4096 B=1 N=8 H=64")] == ("120", True)
    assert found[(5, "greedy decoding")] == ("7.0x", True)
    # No relative rows: those targets are not run, neither met nor missed.
    assert found[(4, "Shaw L=2048 B=8")] == ("-", None)
    assert found[(3, "fwd+bwd L=32768 runs")] == ("-", None)
    assert "| not run |" in _report.markdown(rows)
    (choice,) = _report.choice_table(rows)
    assert (choice["picked"], choice["fastest"], choice["ok"]) == ("math", "chunked", False)
    assert abs(choice["slowdown"] - 0.25) < 1e-12


def test_report_names_the_machine_of_each_run():
    one = [dict(_row("jax", "mha", "keras MHA", 1024, "fwd", ms=1.0), run="r1", machine="A")]
    assert _report.markdown(one).splitlines()[2].startswith("Machine: A. Written ")
    two = one + [dict(_row("jax", "ops", "attnkit", 128, "fwd", ms=1.0), run="r2",
                      machine="B")]
    two += [dict(_row("jax", "peak", "matmul", 2048, "fwd"), gflops=g, run=run, machine=m)
            for g, run, m in ((100.0, "r1", "A"), (200.0, "r2", "B"))]
    text = _report.markdown(two)
    assert "peak (GFLOP/s): r1: jax 100; r2: jax 200." in text
    assert "Machines: differ between runs" in text
    assert "Rows come from 2 runs (r1 on A; r2 on B)" in text
    # A results.csv written before machines were recorded reads back as unknown.
    old = _report.parsed({k: "" for k in _report.COLUMNS if k != "machine"})
    assert old["machine"] == "" and old["run"] == "an earlier run"
    assert "Machine: machine not recorded." in _report.markdown([{**one[0], "machine": ""}])


@pytest.mark.slow
def test_quick_suite_runs_and_writes_the_report(tmp_path):
    backend = keras.backend.backend()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.attention", "--quick", "--backends", backend,
         "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    suites = {r["suite"] for r in rows}
    assert suites == {"peak", "ops", "mha", "relative", "decoding", "memory:ops",
                      "memory:relative"}, suites
    assert all(r["backend"] == backend for r in rows)
    timed = [r for r in rows if r["suite"] in ("ops", "mha", "relative", "decoding")]
    assert timed and all(float(r["ms"]) > 0 for r in timed)
    assert all(r["note"].startswith("same tokens") for r in rows if r["suite"] == "decoding")
    text = (tmp_path / "results.md").read_text()
    assert "## Targets" in text and "implementation=None picks" in text
    assert (tmp_path / "results.png").stat().st_size > 10_000
    # Measuring one suite again replaces its rows and keeps every other row.
    again = subprocess.run(
        [sys.executable, "-m", "benchmarks.attention", "--quick", "--backends", backend,
         "--suites", "relative", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    with open(tmp_path / "results.csv") as f:
        merged = list(csv.DictReader(f))

    def without(rows, suites):
        return [{k: v for k, v in r.items() if k != "run"} for r in rows
                if r["suite"] not in suites]

    assert without(merged, ("relative", "peak")) == without(rows, ("relative", "peak"))
    assert (len([r for r in merged if r["suite"] == "relative"])
            == len([r for r in rows if r["suite"] == "relative"]))
    # The first run's peak stays with its ops and MHA rows; the new run adds its own.
    peaks = [r for r in merged if r["suite"] == "peak"]
    first = [r for r in rows if r["suite"] == "peak"]
    assert len(first) == 1 and len(peaks) == 2 and first[0] in peaks
    bad = subprocess.run([sys.executable, "-m", "benchmarks.attention", "--backends", "numpy"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 2 and "error: --backends takes tensorflow" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "benchmarks.attention", "--suites", "speed"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 2 and "error: --suites takes ops" in bad.stderr


@pytest.mark.backend_independent
def test_low_resource_table_lists_kinds_in_order_and_leaves_missing_cells_blank():
    from benchmarks import low_resource as table

    def cell(wer, **more):
        return {"wer": wer, "per": wer / 4, "steps": 20, "units": 8, "max_valid": 5,
                "train_items": 0, **more}

    results = {"cmudict/transformer/t5/1000/0": cell(0.9),
               "cmudict/rnn/mocha/1000/0": cell(0.5),
               "cmudict/rnn/additive/1000/0": cell(0.75),
               "cmudict/rnn/additive/all/0": cell(0.125)}
    lines = [line for line in table.markdown(results).splitlines() if line.startswith("| ")]
    assert lines[0] == "| attention | 1,000 words | all words |"
    # One seed: no spread, and nothing is marked better than additive.
    assert lines[2:] == ["| rnn additive | 75.0 (1) | 12.5 (1) |",
                         "| rnn mocha | 50.0 (1) |  |",
                         "| transformer t5 | 90.0 (1) |  |"]


@pytest.mark.backend_independent
def test_low_resource_table_gives_mean_and_spread_and_marks_clear_wins():
    from benchmarks import low_resource as table

    def cell(wer, distance):
        return {"wer": wer, "per": 0.0, "steps": 20, "units": 8, "max_valid": 5,
                "train_items": 100, "accuracy": 1 - wer, "mean_distance": distance}

    results = {}
    for seed, (base, mocha, dot) in enumerate([(0.60, 0.40, 0.55), (0.70, 0.44, 0.75),
                                               (0.80, 0.42, 0.65)]):
        results[f"inflection-fr/rnn/additive/100/{seed}"] = cell(base, 2.0 + seed)
        results[f"inflection-fr/rnn/mocha/100/{seed}"] = cell(mocha, 1.0)
        results[f"inflection-fr/rnn/dot/100/{seed}"] = cell(dot, 1.5)
        results[f"inflection-fr/rnn/general/100/{seed}"] = cell((0.87, 0.90, 0.93)[seed], 3.0)
    text = table.markdown(results)
    rows = [line for line in text.splitlines() if line.startswith("| rnn")]
    # additive: mean 70, sd 10; mocha: mean 42, sd 2 (42 + 2 < 70 - 10: marked);
    # dot: mean 65, sd 10 (overlaps: not marked); general: mean 90, sd 3
    # (90 - 3 > 70 + 10: marked worse).
    assert rows[:4] == ["| rnn additive | 70.0 ± 10.0 (3) |",
                        "| rnn dot | 65.0 ± 10.0 (3) |",
                        "| rnn general | _90.0 ± 3.0 (3)_ |",
                        "| rnn mocha | **42.0 ± 2.0 (3)** |"]
    assert rows[4] == "| rnn additive | 3.00 ± 1.00 |"  # mean distances: 2, 3, 4
    assert "## French verb inflection" in text and "| attention | 100 triples |" in text


@pytest.mark.backend_independent
def test_low_resource_plan_seeds_the_small_sizes_and_reads_the_old_table(tmp_path):
    from benchmarks import low_resource as table

    plan = table.cells(["inflection-es"], [("rnn", "additive")], None, [0, 1, 2])
    assert [(size, seed) for _, _, _, size, seed in plan] == [
        (100, 0), (1000, 0), (10000, 0), (100, 1), (1000, 1), (100, 2), (1000, 2)]
    plan = table.cells(["cmudict"], [("rnn", "dot")], [None], [0, 1])
    assert [(size, seed) for _, _, _, size, seed in plan] == [(None, 0), (None, 1)]
    old = {"rnn/mocha/1000": {"wer": 0.5, "per": 0.1, "steps": 2000, "units": 128,
                              "max_valid": 500, "train_words": 1000}}
    old["transformer/t5/1000"] = old["rnn/mocha/1000"]  # trained before T5's new start
    (tmp_path / "g2p-low-resource.json").write_text(json.dumps(old))
    results = table.read_results(tmp_path)
    assert results == {"cmudict/rnn/mocha/1000/0": {**old["rnn/mocha/1000"],
                                                     "train_items": 1000}}

    # A cell is kept when it trained as asked: the same budget, and as many
    # passes per epoch (cells from before min_epoch_steps made one pass).
    args = argparse.Namespace(steps=2000, units=128, min_epoch_steps=50)
    cell = {"steps": 2000, "units": 128, "train_items": 1000}  # 16 batches a pass
    assert not table._same_budget(cell, args)  # 4 passes asked for, 1 made
    assert table._same_budget({**cell, "min_epoch_steps": 50}, args)
    assert table._same_budget({**cell, "min_epoch_steps": 49}, args)  # 4 passes too
    assert table._same_budget({**cell, "train_items": 4000}, args)  # 63 batches: 1 pass
    assert not table._same_budget({**cell, "min_epoch_steps": 50, "units": 64}, args)
    assert not table._same_budget(None, args)


@pytest.mark.backend_independent
def test_low_resource_cells_cover_every_kind_the_trainer_offers():
    from attnkit.models import ATTENTION_KINDS, POSITION_KINDS
    from benchmarks import low_resource as table

    kinds = {f"{model}/{attention}" for model, attention in table.KINDS}
    assert {f"rnn/{kind}" for kind in ATTENTION_KINDS} <= kinds
    assert {f"transformer/{kind}" for kind in POSITION_KINDS} <= kinds
    assert {"rnn/additive+sparsemax", "rnn/additive+entmax15"} <= kinds


@pytest.mark.backend_independent
def test_benchmarks_page_shows_the_low_resource_tables_of_the_results_file():
    from benchmarks import low_resource as table

    results = table.read_results(ROOT / "benchmarks" / "results")
    want = [line for line in table.markdown(results).splitlines() if line.startswith("| ")]
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    section = page[page.index("## Attention with little data"):]
    section = section[:section.index("### What the tables show")]
    assert [line for line in section.splitlines() if line.startswith("| ")] == want


@pytest.mark.slow
@pytest.mark.backend_independent  # the runner's logic; training is tested on each backend
def test_low_resource_runner_trains_inflection_cells_with_seeds(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.low_resource", "--tasks", "inflection-es",
         "--kinds", "rnn/additive", "--sizes", "100", "--seeds", "0,1", "--steps", "2",
         "--units", "8", "--max-valid", "5", "--out", str(tmp_path),
         "--work", str(tmp_path / "work"), "--backend", "torch"],  # the quickest to start
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads((tmp_path / "low-resource.json").read_text())
    assert set(results) == {"inflection-es/rnn/additive/100/0",
                            "inflection-es/rnn/additive/100/1"}
    for r in results.values():
        assert r["steps_run"] == 2 and r["train_items"] == 100 and r["min_epoch_steps"] == 50
        assert abs(r["accuracy"] - (1 - r["wer"])) < 1e-9 and r["mean_distance"] > 0
    if (ROOT / ".git").exists():  # each cell names the commit it trained with
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
        assert {r["code"].split("+")[0] for r in results.values()} == {head}
    text = (tmp_path / "low-resource.md").read_text()
    assert "## Spanish verb inflection" in text and "(2) |" in text
    from matplotlib import pyplot as plt

    image = plt.imread(tmp_path / "low-resource.png")  # a drawn chart, not a blank page
    assert image.shape[1] > 300 and len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 20


@pytest.mark.slow
@pytest.mark.backend_independent  # JAX subprocesses, the same from any session
def test_low_resource_cells_read_from_the_compilation_cache_train_the_same(tmp_path):
    """Under JAX the runner's cells share `attnkit train`'s compilation
    cache: a cell whose programs all come from it ends with the same weights
    and scores as the cell that compiled them."""
    from attnkit.app import training
    from benchmarks import low_resource

    clean = {k: v for k, v in os.environ.items()  # the runner's settings, not the suite's
             if not k.startswith(("JAX_PERSISTENT_CACHE", "JAX_COMPILATION_CACHE",
                                  "JAX_DISABLE_MOST_OPTIMIZATIONS"))}
    env = low_resource.worker_env("jax", {**clean, "XDG_CACHE_HOME": str(tmp_path)})
    cache = tmp_path / "attnkit" / "jax"
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(cache)
    assert low_resource.worker_env("jax", {"JAX_COMPILATION_CACHE_DIR": ""})[
        "JAX_COMPILATION_CACHE_DIR"] == ""  # empty: no cache, as the user asked
    assert "JAX_COMPILATION_CACHE_DIR" not in low_resource.worker_env("torch", clean)
    results = []
    for name in ("compiles", "reads"):  # the second cell starts with the first one's cache
        cell = {"task": "inflection-fr", "model": "rnn", "attention": "location", "size": 100,
                "seed": 0, "steps": 3, "units": 8, "max_valid": 3, "min_epoch_steps": 1,
                "out": str(tmp_path / name)}
        run = subprocess.run(
            [sys.executable, "-m", "benchmarks.low_resource", "--worker", json.dumps(cell)],
            capture_output=True, text=True, timeout=900, cwd=ROOT,
            env={**env, "PYTHONWARNINGS": "ignore"})
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        line = next(l for l in run.stdout.splitlines() if l.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT "):]))
        if name == "compiles":
            compiled = sorted((f.name, f.stat().st_mtime_ns) for f in cache.iterdir())
            assert len(compiled) > 5
    # The second cell compiled nothing: it wrote no program, new or again.
    assert sorted((f.name, f.stat().st_mtime_ns) for f in cache.iterdir()) == compiled
    for field in ("wer", "per", "dev_wer", "mean_distance", "steps_run"):
        assert results[0][field] == results[1][field], field
    weights = [training.load(tmp_path / name).model.get_weights()
               for name in ("compiles", "reads")]
    assert len(weights[0]) == len(weights[1]) > 5
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def _mask_row(backend, mask, length, passes, competitor, ms):
    return dict(backend=backend, mask=mask, length=length, passes=passes,
                competitor=competitor, ms=ms, first_s=0.1, mib=1.0, note="")


@pytest.mark.backend_independent
def test_mask_benchmark_targets_read_the_rows():
    from benchmarks import masks

    rows = [_mask_row("jax", "full", 4096, "fwd", "attnkit", 400.0),
            _mask_row("jax", "causal", 4096, "fwd", "attnkit", 200.0),
            _mask_row("jax", "window 256", 4096, "fwd", "attnkit", 60.0),
            _mask_row("jax", "window 256", 16384, "fwd", "attnkit", 300.0),
            _mask_row("torch", "window 256", 4096, "fwd", "flex", 50.0),
            # The first steps (memory) are rows of the same layer; the ratio
            # reads the timed steps only.
            _mask_row("jax", "causal (layer)", 4096, "first train step, compiled",
                      "keras MHA", 9000.0),
            _mask_row("jax", "causal (layer)", 4096, "first train step, compiled",
                      "attnkit MHA", 3000.0),
            _mask_row("jax", "causal (layer)", 4096, "train step", "attnkit MHA", 100.0),
            _mask_row("jax", "causal (layer)", 4096, "train step", "keras MHA", 120.0)]
    found = {name: (value, met) for name, backend, value, met in masks.targets(rows)
             if backend == "jax"}
    assert found["causal >= 1.8x faster than full, L=4096, fwd"] == (2.0, True)
    assert found["causal >= 1.8x faster than full, L=4096, fwd+bwd"] == (None, False)
    assert found["window 256: L=16384 <= 4.5x its L=4096 time"] == (5.0, False)
    assert found["window 256, L=4096: <= 1.5x FlexAttention's time"] == (1.2, True)
    assert found["MHA causal train step >= 1.5x keras's, L=4096"] == (1.2, False)
    text = masks.markdown(rows)
    assert "| causal >= 1.8x faster than full, L=4096, fwd | jax | 2.00 | yes |" in text


@pytest.mark.slow
def test_mask_benchmark_runs_every_mask_beside_its_peers():
    from benchmarks import masks

    rows = []
    masks.measure(keras.backend.backend(), [256], [256], 1, rows.append, layer_length=64)
    assert {r["mask"] for r in rows} == set(masks.MASKS) | {"causal (layer)"}
    peers = {"attnkit", "keras"} | ({"flex"} if keras.backend.backend() == "torch" else set())
    for mask in masks.MASKS:
        ran = {r["competitor"] for r in rows if r["mask"] == mask and r["passes"] == "fwd"}
        assert ran == peers, (mask, ran)
    assert all(r["ms"] > 0 and r["first_s"] > 0 for r in rows)
    # At L=256 the default never goes chunked: attnkit's math path, or SDPA on PyTorch.
    assert {r["note"] for r in rows if r["competitor"] == "attnkit" and r["mask"] == "full"} \
        == {"fused" if keras.backend.backend() == "torch" else "math"}


@pytest.mark.slow
def test_mask_benchmark_times_backward_lengths_alone():
    from benchmarks import masks

    rows = []
    masks.measure(keras.backend.backend(), [], [128], 1, rows.append, layer_length=0,
                  masks=("causal",))
    assert rows and {(r["length"], r["passes"], r["mask"]) for r in rows} \
        == {(128, "fwd+bwd", "causal")}
