"""Every notebook executes (at the tiny scale: what runs is the test, not the numbers)
and is stored executed, with a figure, from its current source; `jaxmirror reproduce`
writes its figures and tables; the sparse phase diagram's simulated errors agree with
the predicted ones cell by cell."""

import pathlib

import jax.numpy as jnp
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import jaxmirror as jm
from jaxmirror import cli
from jaxmirror.experiments import sparse


NOTEBOOKS = sorted(
    pathlib.Path(__file__).parents[1].joinpath("notebooks").glob("*.ipynb")
)


TAUGHT = {
    "quickstart",
    "sweeps",
    "discrete",
    "three_effects",
    "matrices",
    "deep_and_log",
    "learn_schedule",
    "your_pair",
}
"""The teaching notebooks the documentation promises, one per topic."""


def test_a_sweep_run_from_the_notebooks_folder_runs_no_notebook(tmp_path):
    """Jupyter puts the notebook's folder first on sys.path: a sweep (xarray, zarr)
    started there must not import one of the notebooks' paired scripts."""
    import subprocess
    import sys

    folder = pathlib.Path(__file__).parents[1] / "notebooks"
    code = (
        "import sys, jax; jax.config.update('jax_enable_x64', True); "
        "import numpy as np, jax.numpy as jnp, jaxmirror as jm; "
        "p, _ = jm.datasets.sparse_regression(n=8, d=3); "
        "r = jm.sweep(p, jm.Hadamard(), jm.SwitchOff(np.array([0.1, 0.2]), "
        "np.array([1.0, 2.0])), jm.Hadamard().init(jnp.zeros(8)), 2.0, "
        f"progress=False, out={str(tmp_path / 'store')!r}); print(r.isel(config=0)); "
        "scripts = {p.stem for p in __import__('pathlib').Path('.').glob('*.py')}; "
        "print('IMPORTED', sorted(scripts & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "IMPORTED []" in result.stdout, result.stdout[-500:]


def test_every_notebook_is_paired():
    scripts = sorted(
        pathlib.Path(__file__).parents[1].joinpath("notebooks").glob("*.py")
    )
    assert [p.stem for p in scripts] == [p.stem for p in NOTEBOOKS]
    assert TAUGHT <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMIRROR_SCALE", "tiny")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the inline backend: figures
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    assert _figures(notebook), f"{path.name} drew no figure"


def test_reproduce_command_and_phase_agreement(tmp_path):
    assert (
        cli.main(["reproduce", "sparse", "--scale", "tiny", "--out", str(tmp_path)])
        == 0
    )
    text = (tmp_path / "sparse.md").read_text()
    assert "Sparse regression" in text and "sparse_phase_hadamard.png" in text
    for name in (
        "sparse_phase_hadamard",
        "sparse_phase_diff_squares",
        "sparse_sample_complexity",
    ):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    results = sparse.run("tiny")
    for name, ds in results["phase"].items():
        assert np.all(ds.status.values == 0), name
        # Every schedule switches off before T: simulated = predicted, cell by cell, up
        # to the flow's finite-time residual (solver tolerance 1e-9).
        np.testing.assert_allclose(
            ds.recovery_error.values, ds.predicted_recovery_error.values, atol=1e-5
        )


def test_reproduce_rejects_unknown_names(tmp_path):
    from jaxmirror.experiments.reproduce import reproduce

    with pytest.raises(ValueError, match="`name` must be one of"):
        reproduce("imagenet", scale="tiny", out=tmp_path)
    with pytest.raises(ValueError, match="`scale` must be one of"):
        reproduce("sparse", scale="huge", out=tmp_path)


@pytest.mark.parametrize(
    "schedule",
    [jm.Constant(0.0), jm.Constant(0.1), jm.SwitchOff(0.1, 50.0)],
    ids=["none", "constant", "switch-off"],
)
def test_sample_complexity_pads_problems_without_changing_their_limits(schedule):
    """The sample-complexity curves solve problems of several d in one padded batch:
    each limit is `jm.implicit_bias` of the unpadded problem (zero rows are vacuous
    constraints and add nothing to the loss)."""
    pair, n = jm.Hadamard(), 30
    problems = [
        jm.datasets.sparse_regression(n=n, d=d, seed=100 + seed)[0]
        for d in (8, 16)
        for seed in range(2)
    ]
    w0 = pair.init(jnp.zeros(n), scale=1.0)
    batched = sparse.padded_limits(pair, schedule, problems, 20, w0)
    for problem, x in zip(problems, batched):
        expected = jm.implicit_bias(problem, pair, schedule, w0)
        np.testing.assert_allclose(x, expected, rtol=0, atol=1e-10)


def test_notebooks_import_no_private_module():
    """A notebook is something to adapt: it uses the public API only."""
    import re

    for path in NOTEBOOKS:
        for source in _code_cells(path):
            private = re.findall(r"(?:from|import)\s+(jaxmirror[\w.]*\._\w+)", source)
            assert not private, (path.name, private)


def _code_cells(path):
    notebook = nbformat.read(path, as_version=4)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def _execute_module():
    import importlib.util

    path = pathlib.Path(__file__).parents[1] / "scripts" / "execute_notebooks.py"
    spec = importlib.util.spec_from_file_location("execute_notebooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_outputs_come_from_the_current_source(path):
    """Every notebook is stored executed, with at least one figure, and carries the
    hash of the source it was executed from (`make notebooks`); that source is its
    paired script's."""
    import jupytext

    execute = _execute_module()
    notebook = nbformat.read(path, as_version=4)
    script = jupytext.read(path.with_suffix(".py"))
    assert [c.source for c in notebook.cells] == [c.source for c in script.cells]
    assert _figures(notebook), f"{path.name} is stored without figures: make notebooks"
    errors = [
        o
        for c in notebook.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"{path.name} is stored with an error"
    recorded = notebook.metadata.get("jaxmirror", {}).get("source_sha256")
    assert recorded == execute.source_hash(notebook), (
        f"{path.name}'s outputs are stale: make notebooks"
    )


def test_the_hash_tells_an_edited_source():
    """The check above can fail: editing one cell changes the hash."""
    execute = _execute_module()
    notebook = nbformat.read(NOTEBOOKS[0], as_version=4)
    before = execute.source_hash(notebook)
    notebook.cells[-1].source += "\n# edited"
    assert execute.source_hash(notebook) != before


def _figures(notebook) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
