"""The package layout's rules, read from the source: which way the imports
run, where backend-specific code lives, and the old paths that still work."""

import ast
import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import pytest

import attnkit
from attnkit import _moved

ROOT = Path(attnkit.__file__).parent
BACKEND_PACKAGES = {"jax", "tensorflow", "torch"}


def _imports(path):
    """(imported module, names) of every import statement in `path`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module, tuple(alias.name for alias in node.names)


def _library_files(*skip):
    return [p for p in sorted(ROOT.rglob("*.py"))
            if not any(p.relative_to(ROOT).parts[0] == s for s in skip)]


def _private_ops(module, names):
    if module.startswith("attnkit.ops._"):
        return [module]
    if module == "attnkit.ops":
        return [f"attnkit.ops.{n}" for n in names if n.startswith("_")]
    return []


def test_no_module_outside_ops_imports_a_private_ops_module():
    found = {str(p.relative_to(ROOT)): hit for p in _library_files("ops")
             for module, names in _imports(p) for hit in _private_ops(module, names)}
    assert found == {}


def test_private_ops_modules_are_found_when_imported():
    # The rule above sees both ways of importing a private module.
    assert _private_ops("attnkit.ops._plan", ()) == ["attnkit.ops._plan"]
    assert _private_ops("attnkit.ops", ("_math", "attention")) == ["attnkit.ops._math"]
    assert _private_ops("attnkit.ops.masks", ("causal_mask",)) == []


def test_backend_packages_are_imported_in_one_module():
    # Only `_backends` runs a backend's own code; serving exports with
    # TensorFlow's SavedModel and says so.
    found = sorted(str(p.relative_to(ROOT)) for p in _library_files()
                   for module, _ in _imports(p) if module.split(".")[0] in BACKEND_PACKAGES)
    assert set(found) <= {"_backends.py", "serving.py"}, found
    assert "_backends.py" in found


def test_the_library_does_not_import_the_application():
    # The data sets build the application's vocabularies; nothing else
    # outside `attnkit.app` imports it.
    found = sorted(str(p.relative_to(ROOT)) for p in _library_files("app", "datasets")
                   for module, _ in _imports(p) if module.startswith("attnkit.app"))
    assert found == []


def test_every_layer_is_in_one_family_and_at_the_flat_name():
    families = [importlib.import_module(f"attnkit.layers.{f}")
                for f in ("multi_head", "positions", "seq2seq")]
    seen = [n for f in families for n in f.__all__]
    assert sorted(seen) == sorted(attnkit.layers.__all__)
    for family in families:
        for name in family.__all__:
            assert getattr(attnkit.layers, name) is getattr(family, name)


OLD_PATHS = dict(_moved.MOVED, **{"attnkit.cli": "attnkit.app.cli"})


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_an_old_module_path_warns_and_is_the_new_module(old, monkeypatch):
    new = importlib.import_module(OLD_PATHS[old])
    spec = new.__spec__
    monkeypatch.delitem(sys.modules, old, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is new and new.__spec__ is spec
    messages = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(messages) == 1 and OLD_PATHS[old] in str(messages[0].message)
    assert messages[0].filename == __file__  # pointed at the importing line


def test_the_old_paths_are_the_modules_that_moved():
    # Every old path is gone from the tree (else the file would answer) and
    # every new path exists.
    for old, new in OLD_PATHS.items():
        assert importlib.util.find_spec(new).origin.startswith(str(ROOT))
        if old != "attnkit.cli":
            assert not (ROOT.parent / (old.replace(".", "/") + ".py")).exists()


def test_a_moved_term_class_warns_and_is_the_new_class():
    from attnkit.ops import masks

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from attnkit.ops.terms import CausalMask
    assert CausalMask is masks.CausalMask is attnkit.ops.CausalMask
    assert [w.filename for w in caught] == [__file__]
    with pytest.raises(AttributeError, match="no_such_term"):
        attnkit.ops.terms.no_such_term
