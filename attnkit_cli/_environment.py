"""What the `attnkit` command needs to know before it imports keras.

Importing keras imports its backend, and a backend that is not installed
ends in keras's `ModuleNotFoundError` traceback; the version string needs
no backend at all. Both are answered here from package metadata and keras's
own configuration rules, without importing keras.
"""

import importlib.metadata
import importlib.util
import json
import os
import sys

# keras's backends and the module each imports.
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch",
                   "numpy": "numpy", "openvino": "openvino"}
# The backends attnkit supports, in the order its extras name them.
SUPPORTED = ("tensorflow", "jax", "torch")


def installed(module):
    """Whether `module` can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken installation counts as none
        return False


def version(distribution):
    """The installed version of `distribution`, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _keras_config_path():
    """Where keras reads `keras.json` (its own rule: $KERAS_HOME, else
    ~/.keras, else /tmp/.keras when the home folder is not writable)."""
    if "KERAS_HOME" in os.environ:
        folder = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        folder = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    return os.path.join(folder, "keras.json")


def configured_backend():
    """(backend keras will use, where that choice comes from)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], "KERAS_BACKEND"
    path = _keras_config_path()
    try:
        with open(path, encoding="utf-8") as f:
            backend = json.load(f).get("backend")
        if backend:
            return backend, path
    except (OSError, ValueError, AttributeError):
        pass
    return "tensorflow", "keras's default (KERAS_BACKEND is not set)"


def backend_problem():
    """A one-line reason keras cannot start with its configured backend, or
    None when it can."""
    if not installed("keras"):
        return "keras is not installed: pip install attnkit"
    backend, source = configured_backend()
    module = BACKEND_MODULES.get(backend)
    if module is None:
        return (f"keras's backend is {backend!r} (from {source}), which keras does not "
                f"know; set KERAS_BACKEND to one of {', '.join(SUPPORTED)}")
    if installed(module):
        return None
    available = [b for b in SUPPORTED if installed(BACKEND_MODULES[b])]
    if available:
        advice = (f"installed: {', '.join(available)}; set KERAS_BACKEND={available[0]} "
                  f"(or pip install 'attnkit[{backend}]')")
    else:
        advice = "no backend is installed: pip install 'attnkit[jax]' (or tensorflow, torch)"
    return f"keras's backend is {backend} (from {source}), which is not installed; {advice}"


def version_line():
    """attnkit's, keras's and the backend's versions, without importing them."""
    backend, _ = configured_backend()
    keras_version = version("keras") or "not installed"
    return f"attnkit {version('attnkit')} (keras {keras_version}, backend {backend})"


def compilation_cache_environment(environ=os.environ):
    """The environment variables that keep JAX's compiled programs between
    processes, to add to `environ`: JAX's persistent cache in
    $XDG_CACHE_HOME/attnkit/jax (~/.cache/attnkit/jax), every program kept.
    A JAX_COMPILATION_CACHE_DIR already set wins (empty turns it off). A
    program read from the cache is the one XLA compiles: the same results."""
    added = {}
    if "JAX_COMPILATION_CACHE_DIR" not in environ:
        home = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        added["JAX_COMPILATION_CACHE_DIR"] = os.path.join(home, "attnkit", "jax")
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in environ:
        added["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return added


def use_compilation_cache():
    """On JAX, keep compiled programs between runs of the command (model
    building and decoding compile a few dozen small XLA programs, ~3 s of
    a short `attnkit translate`; see `compilation_cache_environment`); once
    JAX is imported its settings stay as they are."""
    if configured_backend()[0] != "jax" or "jax" in sys.modules:
        return
    os.environ.update(compilation_cache_environment())


def rerun_under_tensorflow(argv):
    """`attnkit ARGV` in a new process under keras's TensorFlow backend (a
    SavedModel is TensorFlow's; a .keras model from any backend loads
    there); its exit status."""
    import subprocess

    if not installed("tensorflow"):
        from attnkit_cli import CommandError

        raise CommandError("export writes a TensorFlow SavedModel and needs tensorflow, "
                           "which is not installed: pip install 'attnkit[tensorflow]'")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    run = subprocess.run([sys.executable, "-m", "attnkit_cli", *argv], env=env,
                         capture_output=True, text=True)
    sys.stdout.write(run.stdout)
    sys.stderr.write(run.stderr)
    return run.returncode
