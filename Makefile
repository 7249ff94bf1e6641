# attnkit development commands. Every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS := tensorflow jax torch
PYTEST_ARGS ?=
# Two pytest-xdist workers (2 cores, as on CI); tests that share a session
# fixture (a trained model, the fresh-process loads) run on one worker (see
# tests/conftest.py). `make test PYTEST_WORKERS=` runs in one process. A
# worker that crashes ends the run: pytest-xdist (3.8) replaces it otherwise,
# and its loadgroup scheduler then waits forever for the replacement.
PYTEST_WORKERS ?= -n 2 --dist loadgroup --max-worker-restart=0
# `make test` leaves out the tests marked slow (real training runs, the demo,
# benchmark runs, fresh processes); `make test-all` (what CI runs) keeps them.
TEST_MARKERS ?= not slow

BACKEND_TESTS := $(addprefix test-,$(BACKENDS))
# KerasHub for the drop-in tests, and mlconjug3 for its conjugation tables
# (attnkit.datasets.inflection; its declared dependencies pin numpy<2),
# installed without their dependencies (see the dev extra in pyproject.toml).
NO_DEPS := keras-hub==0.32.0 kagglesdk==0.1.28 tensorflow-text==2.21.1 mlconjug3==4.0.1

.PHONY: install test test-all $(BACKEND_TESTS) keras-hub-tests demo g2p bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,dev,docs]"
	$(PY) -m pip install --quiet --no-deps $(NO_DEPS)
	touch $(STAMP)

# The suite once per backend; fails if any backend fails. Tests marked
# backend_independent run with the first backend only.
test: $(STAMP)
	@status=0; once=0; for b in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$b ==="; \
	  ATTNKIT_ONCE_PER_SUITE=$$once KERAS_BACKEND=$$b $(PY) -m pytest $(PYTEST_WORKERS) \
	    -m "$(TEST_MARKERS)" $(PYTEST_ARGS) || status=1; \
	  once=1; \
	done; exit $$status

# Every test, the slow ones included, on every backend.
test-all:
	$(MAKE) test TEST_MARKERS=

$(BACKEND_TESTS): test-%: $(STAMP)
	KERAS_BACKEND=$* $(PY) -m pytest $(PYTEST_WORKERS) -m "$(TEST_MARKERS)" $(PYTEST_ARGS)

# KerasHub's own layer and model tests with attnkit's layers in place, on
# every backend. Its test files are not in its wheel: point KERAS_HUB_SRC at
# a checkout of keras-team/keras-hub. Some of its modules import `grain`.
keras-hub-tests: $(STAMP)
	@test -n "$(KERAS_HUB_SRC)" || { echo "usage: make keras-hub-tests KERAS_HUB_SRC=/path/to/keras-hub"; exit 2; }
	@status=0; for b in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$b ==="; \
	  KERAS_BACKEND=$$b $(PY) -m tests.compat.keras_hub_upstream $(KERAS_HUB_SRC) $(PYTEST_ARGS) || status=1; \
	done; exit $$status

# The main job: learn to read dates in five languages (JAX unless KERAS_BACKEND is set).
demo: $(STAMP)
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(VENV)/bin/attnkit demo --overwrite $(DEMO_ARGS)

# English pronunciation on the CMU dictionary: G2P_MODELS models (random seeds
# 0..N-1) train side by side within G2P_MINUTES on the whole training split,
# one CPU thread each (logs in out/g2p-I.log; on 2 cores two models make
# about 1.2x the updates of one with both threads), then their ensemble's
# test WER/PER beside the published ones. G2P_MODELS=1 trains one model,
# with every thread, into out/g2p.
G2P_MINUTES ?= 60
G2P_ARGS ?= --model rnn
G2P_MODELS ?= 2
G2P_TRAIN = KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(VENV)/bin/attnkit train --data cmudict \
  --time-budget $(G2P_MINUTES) --epochs 100 $(G2P_ARGS) --overwrite
G2P_EVALUATE = KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(VENV)/bin/attnkit evaluate \
  --data cmudict --beam 4
ONE_THREAD = XLA_FLAGS="$${XLA_FLAGS:-} --xla_cpu_multi_thread_eigen=false" \
  OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
G2P_IDS = $(shell seq 0 $$(($(G2P_MODELS) - 1)))
g2p: $(STAMP)
ifeq ($(G2P_MODELS),1)
	$(G2P_TRAIN) --out out/g2p
	$(G2P_EVALUATE) --model out/g2p --predictions out/g2p/test-predictions.tsv
else
	@test -n "$(G2P_IDS)" || { echo "G2P_MODELS must be 1 or more"; exit 2; }
	@mkdir -p out; pids=""; trap 'kill $$pids 2>/dev/null; exit 130' INT TERM; \
	for i in $(G2P_IDS); do \
	  echo "training out/g2p-$$i (log: out/g2p-$$i.log)"; \
	  $(ONE_THREAD) $(G2P_TRAIN) --seed $$i --out out/g2p-$$i > out/g2p-$$i.log 2>&1 & \
	  pids="$$pids $$!"; done; \
	status=0; for pid in $$pids; do wait $$pid || status=1; done; \
	for i in $(G2P_IDS); do tail -n 1 out/g2p-$$i.log; done; \
	exit $$status
	$(G2P_EVALUATE) $(foreach i,$(G2P_IDS),--model out/g2p-$(i)) \
	  --predictions out/g2p-ensemble-predictions.tsv
endif

# attnkit against keras and the frameworks' kernels on all three backends
# (about 40 minutes on 2 cores); writes benchmarks/results/results.{csv,md,png}.
bench: $(STAMP)
	$(PY) -m benchmarks.attention --out benchmarks/results $(BENCH_ARGS)

# The documentation site (MkDocs, API reference from the docstrings) into
# build/site; --strict fails on a broken link or reference.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
