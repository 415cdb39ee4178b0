"""jaxmirror's version: from the installed package's metadata, else from the source tree.

Running from a source tree that was never installed (`PYTHONPATH=...`, as on a machine
without network) has no metadata; the version is then read from `pyproject.toml` beside
the package and marked `+source`.
"""

import importlib.metadata
import pathlib
import tomllib


def _from_source_tree() -> str:
    pyproject = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        with pyproject.open("rb") as file:
            return tomllib.load(file)["project"]["version"] + "+source"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"


def package_version() -> str:
    """The version string of jaxmirror."""
    try:
        return importlib.metadata.version("jaxmirror")
    except importlib.metadata.PackageNotFoundError:
        return _from_source_tree()


__version__ = package_version()
