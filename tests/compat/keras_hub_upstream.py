"""KerasHub's own layer and model tests, run with attnkit's layers in place.

KerasHub's test files are not in its wheel, so they come from a checkout of
the keras-team/keras-hub repository (the version installed here, or close to
it). This module is both the runner and the pytest plugin it loads:

    python -m tests.compat.keras_hub_upstream /path/to/keras-hub [pytest args]

(or `make keras-hub-tests KERAS_HUB_SRC=/path/to/keras-hub`). The run uses
the checkout's own conftest; around every test the plugin enters
`attnkit.layers.substitute_keras_attention()`, and points the test modules
that imported KerasHub's `CachedMultiHeadAttention` by name at attnkit's.
At the end it fails the run if no attnkit layer was built, so a run that
silently tested keras's layers cannot pass. Some KerasHub modules import
`grain` (`pip install grain`).
"""

import functools
import os
import subprocess
import sys

import pytest

# The test files that build attention layers: the two layers KerasHub takes
# from keras or defines itself, the Transformer blocks on them, and models
# that use them (encoder, decoder, encoder-decoder, vision).
TEST_FILES = [
    "keras_hub/src/layers/modeling/cached_multi_head_attention_test.py",
    "keras_hub/src/layers/modeling/transformer_encoder_test.py",
    "keras_hub/src/layers/modeling/transformer_decoder_test.py",
    "keras_hub/src/models/bert/bert_backbone_test.py",
    "keras_hub/src/models/bert/bert_masked_lm_test.py",
    "keras_hub/src/models/bert/bert_text_classifier_test.py",
    "keras_hub/src/models/gpt2/gpt2_backbone_test.py",
    "keras_hub/src/models/gpt2/gpt2_causal_lm_test.py",
    "keras_hub/src/models/opt/opt_backbone_test.py",
    "keras_hub/src/models/opt/opt_causal_lm_test.py",
    "keras_hub/src/models/bart/bart_backbone_test.py",
    "keras_hub/src/models/bart/bart_seq_2_seq_lm_test.py",
    "keras_hub/src/models/vit/vit_backbone_test.py",
    "keras_hub/src/models/vit/vit_image_classifier_test.py",
]

_BUILT = {"layers": 0}


def main(argv):
    if not argv or not os.path.isdir(argv[0]):
        print(__doc__, file=sys.stderr)
        return 2
    source, extra = os.path.abspath(argv[0]), argv[1:]
    missing = [f for f in TEST_FILES if not os.path.exists(os.path.join(source, f))]
    if missing:
        print(f"Not in {source}: {', '.join(missing)}", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    # The installed keras_hub is the one under test: the checkout supplies
    # only its test files and conftest (`--import-mode=importlib` keeps the
    # checkout's package off sys.path).
    command = [sys.executable, "-m", "pytest", "--import-mode=importlib",
               "-p", "tests.compat.keras_hub_upstream", "--rootdir", source,
               *TEST_FILES, *extra]
    return subprocess.call(command, cwd=source, env=env)


@pytest.fixture(autouse=True)
def _attnkit_in_place():
    import attnkit
    from keras_hub.src.layers.modeling import cached_multi_head_attention as hub

    theirs = hub.CachedMultiHeadAttention
    modules = [m for m in list(sys.modules.values())
               if getattr(m, "CachedMultiHeadAttention", None) is theirs
               and not m.__name__.startswith("keras_hub")]
    for module in modules:
        module.CachedMultiHeadAttention = attnkit.layers.CachedMultiHeadAttention
    try:
        with attnkit.layers.substitute_keras_attention():
            yield
    finally:
        for module in modules:
            module.CachedMultiHeadAttention = theirs


def pytest_configure(config):
    import attnkit

    build = attnkit.layers.MultiHeadAttention.build

    @functools.wraps(build)  # keras reads build's signature
    def counting_build(self, *args, **kwargs):
        _BUILT["layers"] += 1
        return build(self, *args, **kwargs)

    attnkit.layers.MultiHeadAttention.build = counting_build


def pytest_sessionfinish(session, exitstatus):
    if session.testscollected and not _BUILT["layers"]:
        print("\nNo attnkit layer was built: the substitution did not take place.")
        session.exitstatus = 1
    else:
        print(f"\nattnkit layers built during the run: {_BUILT['layers']}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
