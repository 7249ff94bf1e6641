"""Saved models loaded back in one fresh interpreter for the whole session.

A test module registers a saving case with `@fresh_process.case(name)`: a
function `build(folder)` returning `(model, inputs)` (optionally a third
item, the modules to import before loading, as a user's own registered
terms need). The session fixture `fresh_loads` (tests/conftest.py) builds
every case registered by the collected modules, saves each model as
`.keras`, and loads them all in one new Python process that imports only
attnkit (and a case's own modules) and no `custom_objects`. Each test then
reads its `Loaded` result: the model, its inputs, the prediction of this
process and that of the fresh one, and the fresh model's layer classes.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASES = {}


def case(name):
    """Registers `build(folder) -> (model, inputs[, imports])` as `name`."""
    def register(build):
        CASES[name] = build
        return build

    return register


@dataclasses.dataclass
class Loaded:
    model: keras.Model  # the model as built (and trained) in this process
    inputs: list
    want: list  # this process's predict, one array per output
    got: list  # the fresh process's predict of the loaded model
    layers: list  # [module, class name] of the loaded model's layers
    build_result: tuple  # everything the builder returned


def _outputs(prediction):
    return list(prediction) if isinstance(prediction, (list, tuple)) else [prediction]


SCRIPT = r"""
import importlib, json, sys
import numpy as np
import keras
import attnkit  # registers attnkit's classes

cases = json.loads(open(sys.argv[1]).read())
report = {}
for name, case in cases.items():
    for module in case["imports"]:
        importlib.import_module(module)
    model = keras.saving.load_model(case["path"])
    with np.load(case["inputs"]) as data:
        inputs = [data[f"x{i}"] for i in range(len(data.files))]
    prediction = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    prediction = list(prediction) if isinstance(prediction, (list, tuple)) else [prediction]
    np.savez(case["outputs"], *[np.asarray(p) for p in prediction])
    report[name] = [[type(l).__module__, type(l).__name__] for l in model.layers]
print("REPORT " + json.dumps(report))
"""


def load_all(folder):
    """Builds, saves and reloads every registered case: {name: Loaded}."""
    folder = pathlib.Path(folder)
    built, manifest = {}, {}
    for name, build in sorted(CASES.items()):
        result = build(folder)
        model, inputs = result[0], result[1]
        imports = list(result[2]) if len(result) > 2 else []
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        path = folder / f"{name}.keras"
        model.save(path)
        np.savez(folder / f"{name}.inputs.npz", **{f"x{i}": x for i, x in enumerate(inputs)})
        want = _outputs(model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0))
        built[name] = (model, inputs, want, result)
        manifest[name] = {"path": str(path), "inputs": str(folder / f"{name}.inputs.npz"),
                          "outputs": str(folder / f"{name}.outputs.npz"), "imports": imports}
    # Cases that import nothing of their own load first: nothing a user
    # registers can help them.
    order = sorted(manifest, key=lambda name: (len(manifest[name]["imports"]), name))
    (folder / "cases.json").write_text(json.dumps({name: manifest[name] for name in order}))
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(folder / "cases.json")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    if run.returncode != 0:
        raise AssertionError(f"the fresh process failed:\n{run.stderr[-4000:]}")
    line = next(l for l in run.stdout.splitlines() if l.startswith("REPORT "))
    layers = json.loads(line[len("REPORT "):])
    loaded = {}
    for name, (model, inputs, want, result) in built.items():
        with np.load(manifest[name]["outputs"]) as data:
            got = [data[f"arr_{i}"] for i in range(len(data.files))]
        loaded[name] = Loaded(model, inputs, want, got, layers[name], result)
    return loaded
