import os
import sys

# Under JAX most of the suite's time is XLA compiling small programs that run
# once: compile them without XLA's optimization passes (jax reads this when
# it is imported, here and in the suite's subprocesses). The float32 results
# are checked against the same float64 references at the same tolerances;
# ATTNKIT_TEST_XLA_OPTIMIZE=1 runs the suite with the optimizations on.
if os.environ.get("ATTNKIT_TEST_XLA_OPTIMIZE") != "1":
    if os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1") == "1" \
            and "jax" in sys.modules:  # imported already (by a plugin): set it there too
        sys.modules["jax"].config.update("jax_disable_most_optimizations", True)

# Many tests build the same models and train, decode and save them: keras
# makes new jitted functions for each model, which XLA compiled again to the
# same programs. One JAX compilation cache on disk for the whole run (made by
# the first process to read this file, the pytest-xdist controller, whose
# workers and subprocesses inherit it; removed when the run ends) compiles
# each program once. It starts empty, so a run reuses only its own programs.
# ATTNKIT_TEST_JAX_CACHE=0 runs without it; a JAX_COMPILATION_CACHE_DIR
# already set is used instead, and kept.
_JAX_CACHE_OWNED = None
if os.environ.get("ATTNKIT_TEST_JAX_CACHE") != "0" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    from attnkit_cli._environment import compilation_cache_environment

    _JAX_CACHE_OWNED = tempfile.mkdtemp(prefix="attnkit-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE_OWNED
    os.environ.update(compilation_cache_environment())  # the command's settings otherwise
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_compilation_cache_dir", _JAX_CACHE_OWNED)
        sys.modules["jax"].config.update("jax_persistent_cache_min_compile_time_secs", float(
            os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

# Under pytest-xdist the workers share the cores: each worker's OpenMP
# (PyTorch's threads) gets its share of them, and its subprocesses inherit
# it. With a thread per core in each of two workers, OpenMP threads, which
# spin while they wait, made PyTorch training 6-8 times slower on 2 cores.
# (TensorFlow's and XLA's own thread pools lost time when limited so.)
WORKERS = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
THREADS = max(1, (os.cpu_count() or 1) // int(WORKERS)) if WORKERS else None
if THREADS:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import hypothesis  # noqa: E402
import keras  # noqa: E402
import pytest

if THREADS and keras.backend.backend() == "torch":  # in case a plugin imported torch first
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

hypothesis.settings.register_profile(
    "attnkit", max_examples=int(os.environ.get("ATTNKIT_HYPOTHESIS_EXAMPLES", 30)),
    deadline=None, derandomize=True, print_blob=True,
)
hypothesis.settings.load_profile("attnkit")


# Session fixtures that train or load models: under pytest-xdist, the tests
# that use them share one worker (`--dist loadgroup`), so each is made once;
# they are `slow` too.
SHARED_FIXTURES = {"fresh_loads", "demo", "transformer_demo", "trained"}


def pytest_itemcollected(item):
    # Marked as each test is collected: xdist reads the groups in its own
    # pytest_collection_modifyitems, which can run before this file's.
    if SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.xdist_group("shared_fixtures"))
        item.add_marker(pytest.mark.slow)


def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite once per backend; tests marked
    `backend_independent` give the same result on each, so with
    ATTNKIT_ONCE_PER_SUITE=1 (every backend after the first) they are
    deselected."""
    for item in items:
        # pytest-xdist (3.8) names a grouped test `id@group` in `_nodeid`, but
        # pytest 9 reads `nodeid` from `_id`: without this, `--dist loadgroup`
        # silently spreads a group over the workers.
        grouped = getattr(item, "_nodeid", None)
        if grouped and grouped != item.nodeid and hasattr(type(item._id), "parse"):
            item._id = type(item._id).parse(grouped)
    # The slow tests first (the shared-fixture group among them): two
    # workers that take the long tests early end together, where long tests
    # late in the order kept one busy while the other idled.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if os.environ.get("ATTNKIT_ONCE_PER_SUITE") != "1":
        return
    once = [item for item in items if item.get_closest_marker("backend_independent")]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if not item.get_closest_marker("backend_independent")]


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


def _memory_mappings():
    with open("/proc/self/maps") as maps:
        return sum(1 for _ in maps)


def _mapping_limit():
    try:
        with open("/proc/sys/vm/max_map_count") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return None


# XLA maps the code of every program it compiles into memory, and JAX keeps
# the programs of every function that lives on (keras's and the suite's
# jitted functions, per input shape). A worker of the whole suite compiles
# tens of thousands of small programs and reached 60,000 mappings, next to
# Linux's limit per process (vm.max_map_count, 65,530 by default), past
# which XLA's compiler crashed the worker. Past half the limit, JAX's caches
# are cleared between two test files (what they held is compiled again when
# needed).
MAPPING_LIMIT = _mapping_limit() if keras.backend.backend() == "jax" else None


def pytest_runtest_teardown(item, nextitem):
    if MAPPING_LIMIT and (nextitem is None or nextitem.path != item.path) \
            and _memory_mappings() > MAPPING_LIMIT // 2:
        import gc

        import jax

        jax.clear_caches()
        gc.collect()


@pytest.fixture(scope="session")
def fresh_loads(tmp_path_factory):
    """Every saving case of the collected modules, loaded in one fresh
    process (see tests/fresh_process.py): {name: Loaded}."""
    from tests import fresh_process

    return fresh_process.load_all(tmp_path_factory.mktemp("fresh_process"))


def _demo(folder, *args):
    """`attnkit demo` at a tiny setting, in process: (folder, its stdout)."""
    from tests.helpers import run_cli

    run = run_cli("demo", "--epochs", "1", "--test", "20", "--units", "8", "--out", folder,
                  *args)
    assert run.code == 0, run.err[-3000:]
    return folder, run.out


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The RNN demo's output folder and what it printed."""
    return _demo(tmp_path_factory.mktemp("demo"), "--train", "200")


@pytest.fixture(scope="session")
def transformer_demo(tmp_path_factory):
    """The Transformer demo's output folder and what it printed."""
    return _demo(tmp_path_factory.mktemp("transformer_demo"), "--train", "100",
                 "--model", "transformer")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The session's one trained run: a small RNN learns to reverse words
    (`attnkit.app.training.train`, 5 epochs). (output folder, result)."""
    from attnkit.app import training
    from tests.helpers import reversal_pairs

    out = tmp_path_factory.mktemp("reversal")
    config = training.TrainConfig(model="rnn", units=32, epochs=5, batch_size=32,
                                  target_unit="word", max_valid=200, seed=0)
    result = training.train(reversal_pairs(2000, 0), reversal_pairs(200, 1), out, config,
                            verbose=0, log=lambda line: None)
    return out, result


def pytest_unconfigure(config):
    if _JAX_CACHE_OWNED:
        import shutil

        shutil.rmtree(_JAX_CACHE_OWNED, ignore_errors=True)
