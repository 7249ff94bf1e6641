"""Old import paths of modules that moved, kept for one release with a warning.

`install()` (run by `import attnkit`) puts a finder on `sys.meta_path` that
answers an old path with the module now at the new one, warning the line
that imported it. `attnkit.cli` keeps a file of its own, so that
`python -m attnkit.cli` still runs the command.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

REMOVED_IN = "0.3"

MOVED = {
    "attnkit.training": "attnkit.app.training",
    "attnkit.viz": "attnkit.app.plots",
    "attnkit.datasets.metrics": "attnkit.app.metrics",
    "attnkit.datasets.vocabulary": "attnkit.app.vocabulary",
    "attnkit.layers.cached_multi_head_attention": "attnkit.layers.multi_head.cached_multi_head_attention",
    "attnkit.layers.multi_head_attention": "attnkit.layers.multi_head.multi_head_attention",
    "attnkit.layers.relative_positional_attention": "attnkit.layers.multi_head.relative_positional_attention",
    "attnkit.layers.alibi_bias": "attnkit.layers.positions.alibi_bias",
    "attnkit.layers.position_embedding": "attnkit.layers.positions.position_embedding",
    "attnkit.layers.position_scheme": "attnkit.layers.positions.position_scheme",
    "attnkit.layers.rotary_embedding": "attnkit.layers.positions.rotary_embedding",
    "attnkit.layers.shaw_relative_position": "attnkit.layers.positions.shaw_relative_position",
    "attnkit.layers.sinusoidal_position_encoding": "attnkit.layers.positions.sinusoidal_position_encoding",
    "attnkit.layers.t5_relative_bias": "attnkit.layers.positions.t5_relative_bias",
    "attnkit.layers.additive_attention": "attnkit.layers.seq2seq.additive_attention",
    "attnkit.layers.attention_decoder": "attnkit.layers.seq2seq.attention_decoder",
    "attnkit.layers.coverage_attention": "attnkit.layers.seq2seq.coverage_attention",
    "attnkit.layers.dot_product_attention": "attnkit.layers.seq2seq.dot_product_attention",
    "attnkit.layers.location_sensitive_attention": "attnkit.layers.seq2seq.location_sensitive_attention",
    "attnkit.layers.monotonic_attention": "attnkit.layers.seq2seq.monotonic_attention",
    "attnkit.layers.stateful_attention": "attnkit.layers.seq2seq.stateful_attention",
}


def warn_moved(old: str, new: str):
    """Warns the code importing `old` that it moved to `new`."""
    warnings.warn(
        f"`{old}` moved to `{new}`; the old path will be removed in attnkit "
        f"{REMOVED_IN}.", DeprecationWarning, stacklevel=_importer_level())


def alias(old: str, new: str):
    """Makes the module being imported as `old` the module `new`, warning
    the importer that `old` is deprecated."""
    warn_moved(old, new)
    module = importlib.import_module(new)
    sys.modules[old] = module
    return module


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name in MOVED:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        warn_moved(spec.name, MOVED[spec.name])
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__  # importlib sets the old spec on it
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # its own spec again


_FINDER = _MovedFinder()


def install():
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)


def _importer_level():
    """The stack level of the line that imported the old path, for
    `warnings.warn` (which itself steps over importlib's bootstrap frames):
    the first frame above `warn_moved` outside attnkit and importlib."""
    frame, level = sys._getframe(2), 2
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back
            continue
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] not in ("attnkit", "importlib"):
            break
        frame, level = frame.f_back, level + 1
    return level
