"""The examples in dropcheck's docstrings run and show what they say (they are documentation a
reader trusts, so they are tested like the rest)."""
import doctest
import importlib
import pkgutil

import pytest

import dropcheck

# dropcheck.__main__ runs the CLI when imported.
MODULES = sorted(m.name for m in pkgutil.walk_packages(dropcheck.__path__, "dropcheck.") if m.name != "dropcheck.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, (
        f"{name}: expected every docstring example to hold, {result.failed} of {result.attempted} failed "
        f"(the diffs are above; replay: python -m pytest --doctest-modules {module.__file__})"
    )
