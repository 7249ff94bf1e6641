import os

import hypothesis
import keras
import pytest

hypothesis.settings.register_profile(
    "attnkit", max_examples=int(os.environ.get("ATTNKIT_HYPOTHESIS_EXAMPLES", 30)),
    deadline=None, derandomize=True, print_blob=True,
)
hypothesis.settings.load_profile("attnkit")


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
