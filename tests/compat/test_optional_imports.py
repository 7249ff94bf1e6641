"""The suite without KerasHub installed: its tests skip, the rest collect."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.backend_independent
def test_keras_hub_tests_skip_when_keras_hub_is_missing(tmp_path):
    # A keras_hub that cannot be imported shadows the installed one.
    (tmp_path / "keras_hub").mkdir()
    (tmp_path / "keras_hub" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'keras_hub'\", name='keras_hub')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/compat/test_keras_hub.py", "tests/test_losses.py", "--collect-only"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "tests/test_losses.py::" in run.stdout
    assert "tests/compat/test_keras_hub.py::" not in run.stdout
    assert "could not import 'keras_hub'" in run.stdout  # the skip reason
