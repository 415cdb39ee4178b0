"""Execute notebooks from their paired scripts and store them with their outputs.

Each notebook in `notebooks/` is kept as a jupytext pair: `name.py` (the source, what
is edited and reviewed) and `name.ipynb` (the source executed, with its outputs and
figures). This script rebuilds the `.ipynb` from the `.py`, executes it, and records a
hash of the source in the notebook's metadata (`jaxmirror.source_sha256`), so that a
test can tell stored outputs that came from the current source from stale ones.

    python scripts/execute_notebooks.py                   # every notebook
    python scripts/execute_notebooks.py notebooks/your_pair.py
"""

import hashlib
import pathlib
import sys

import jupytext
import nbformat
from nbclient import NotebookClient


NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def source_hash(notebook) -> str:
    """SHA-256 of the cells' types and sources, in order (outputs excluded)."""
    text = "\n\x00\n".join(
        f"{cell.cell_type}\n{cell.source}" for cell in notebook.cells
    )
    return hashlib.sha256(text.encode()).hexdigest()


def execute(script: pathlib.Path) -> pathlib.Path:
    notebook = jupytext.read(script)
    notebook.metadata.setdefault(
        "kernelspec",
        {"name": "python3", "display_name": "Python 3", "language": "python"},
    )
    NotebookClient(
        notebook,
        timeout=1800,
        kernel_name="python3",
        resources={"metadata": {"path": str(script.parent)}},
    ).execute()
    notebook.metadata["jaxmirror"] = {"source_sha256": source_hash(notebook)}
    target = script.with_suffix(".ipynb")
    nbformat.write(notebook, target)
    return target


if __name__ == "__main__":
    scripts = [pathlib.Path(p) for p in sys.argv[1:]] or sorted(NOTEBOOKS.glob("*.py"))
    for script in scripts:
        print("executed", execute(script.resolve()))
