"""attnkit: the attention toolkit for Keras 3."""

from attnkit import _moved
from attnkit import distribution
from attnkit import layers
from attnkit import losses
from attnkit import models
from attnkit import ops
from attnkit import testing

_moved.install()  # old module paths answer, with a warning

__version__ = "0.1.0"

__all__ = ["distribution", "layers", "losses", "models", "ops", "testing", "__version__"]
