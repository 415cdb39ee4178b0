"""The demo reproduces the switch-off effect; every public name is documented."""

import ast
import inspect
import textwrap

import numpy as np

import jaxmirror as jm
from jaxmirror import demo


def test_demo_switch_off_beats_never_and_always(tmp_path):
    results = demo.run()
    rows = {row["schedule"].split()[0]: row for row in results["rows"]}
    for row in rows.values():
        assert row["status"] == "SUCCESS"
        assert row["gap"] < 1e-6, row  # simulated endpoint = predicted limit
    assert rows["switch-off"]["simulated"] < rows["constant"]["simulated"]
    assert rows["switch-off"]["simulated"] < rows["no"]["simulated"]
    # Prediction and flow agree along the a_inf axis too.
    predicted = np.interp(
        results["a_simulated"],
        results["a_grid"][::-1],
        results["predicted_errors"][::-1],
    )
    np.testing.assert_allclose(results["simulated_errors"], predicted, rtol=1e-3)
    path = tmp_path / "demo.png"
    demo.plot(results, path)
    assert path.stat().st_size > 10_000


def _written_docstring(obj) -> str | None:
    """The docstring written in the object's own source (not one that equinox or
    dataclasses generate, and not one inherited from a base class)."""
    source = textwrap.dedent(inspect.getsource(obj))
    tree = ast.parse(source)
    node = tree if inspect.ismodule(obj) else tree.body[0]
    return ast.get_docstring(node)


def _public_methods(cls):
    """Public methods and properties of `cls` defined by jaxmirror (itself or a base)."""
    for klass in cls.__mro__:
        if not klass.__module__.startswith("jaxmirror"):
            continue
        for name, member in vars(klass).items():
            if name.startswith("_") or not (
                inspect.isfunction(member)
                or isinstance(member, property | classmethod | staticmethod)
            ):
                continue
            yield name


def test_public_api_is_documented():
    """Every public name has a docstring written for it, and every public method one
    written for it or for the abstract method it implements."""
    names = [n for n in dir(jm) if not n.startswith("_")]
    assert "solve" in names and "implicit_bias" in names
    missing = []
    for name in names:
        obj = getattr(jm, name)
        if inspect.ismodule(obj) and not obj.__name__.startswith("jaxmirror"):
            continue  # a module that an import hook placed in the namespace
        if not (inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj)):
            missing.append(f"jm.{name} (a {type(obj).__name__}: not documentable)")
            continue
        if not _written_docstring(obj):
            missing.append(f"jm.{name}")
        if inspect.isclass(obj):
            for method in sorted(set(_public_methods(obj))):
                if not inspect.getdoc(getattr(obj, method)):
                    missing.append(f"jm.{name}.{method}")
    assert not missing, "undocumented: " + ", ".join(missing)


def test_documentation_check_can_fail():
    """The check above tells a written docstring from a generated or inherited one."""

    class Undocumented(jm.AbstractSchedule):
        rate: float

    assert inspect.getdoc(Undocumented)  # equinox/dataclasses generate one ...
    assert _written_docstring(Undocumented) is None  # ... which does not count


def test_version_from_a_source_tree_without_metadata(monkeypatch):
    """Run from a source tree that was never installed, the version comes from
    pyproject.toml, marked `+source`."""
    import importlib.metadata
    import pathlib
    import tomllib

    from jaxmirror import _version

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    pyproject = pathlib.Path(__file__).parents[1] / "pyproject.toml"
    expected = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert _version.package_version() == expected + "+source"
    assert jm.__version__ == importlib.metadata.distribution("jaxmirror").version
