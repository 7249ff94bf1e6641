"""Every `>>>` example in the public docstrings runs and prints what it says."""

import doctest

import keras
import numpy as np
import pytest
from keras import ops

import attnkit

PUBLIC = [getattr(attnkit.layers, n) for n in attnkit.layers.__all__] + \
    [getattr(attnkit.ops, n) for n in attnkit.ops.__all__] + \
    [attnkit.losses.CoverageLoss, attnkit.losses.GuidedAlignmentLoss]
WITH_EXAMPLES = [obj for obj in PUBLIC if ">>>" in (obj.__doc__ or "")]


def test_the_main_classes_have_examples():
    names = {obj.__name__ for obj in WITH_EXAMPLES}
    assert {"MultiHeadAttention", "RelativePositionalAttention", "ShawRelativePosition",
            "T5RelativeBias", "AlibiBias", "RotaryEmbedding", "PositionEmbedding",
            "SinusoidalPositionEncoding", "DotProductAttention", "attention"} <= names


@pytest.mark.parametrize("obj", WITH_EXAMPLES, ids=lambda obj: obj.__name__)
def test_docstring_example_runs(obj):
    run_examples(obj, obj.__name__)


def run_examples(obj, name):
    globs = {"keras": keras, "attnkit": attnkit, "ops": ops, "np": np}
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(obj, name, globs=globs):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0


@pytest.mark.parametrize("module", ["attnkit.datasets.cmudict", "attnkit.datasets.dates",
                                    "attnkit.datasets.inflection", "attnkit.app.metrics",
                                    "attnkit.app.vocabulary"])
def test_module_examples_run(module):
    import importlib

    module = importlib.import_module(module)
    run_examples(module, module.__name__)
