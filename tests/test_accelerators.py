"""Runs anywhere JAX runs: every CPU core as a device, a source tree without metadata,
and the prepared GPU script at its smoke size."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest


ROOT = pathlib.Path(__file__).parents[1]


def _python(code, env=None, cwd=None):
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_use_all_cores_makes_one_device_per_core_before_any_computation():
    env = {"XLA_FLAGS": ""}
    out = _python(
        "import jaxmirror as jm, jax\n"
        "print(jm.use_all_cores(3), len(jax.devices('cpu')))",
        env,
    )
    assert out.split() == ["3", "3"]
    out = _python(
        "import jaxmirror as jm, jax.numpy as jnp\n"
        "jnp.ones(2).block_until_ready()\n"
        "try:\n"
        "    jm.use_all_cores(2)\n"
        "except RuntimeError as error:\n"
        "    print(error)\n",
        env,
    )
    assert "must run before any JAX computation" in out


def test_runs_from_a_source_tree_without_installed_metadata(tmp_path):
    """As on a machine without network: PYTHONPATH to the source tree, no metadata.
    The version falls back to pyproject.toml (+source) and a flow runs."""
    code = (
        "import importlib.metadata as m\n"
        "installed = m.version\n"
        "def hidden(name):\n"
        "    if name == 'jaxmirror':\n"
        "        raise m.PackageNotFoundError(name)\n"
        "    return installed(name)\n"
        "m.version = hidden\n"
        "import jax; jax.config.update('jax_enable_x64', True)\n"
        "import jax.numpy as jnp, jaxmirror as jm\n"
        "problem, _ = jm.datasets.sparse_regression(n=8, d=3, sparsity=1)\n"
        "pair = jm.Hadamard()\n"
        "s = jm.solve(problem, pair, jm.SwitchOff(0.1, 1.0), pair.init(jnp.zeros(8)), 5.0)\n"
        "print(jm.__version__, jm.__file__, int(s.status))\n"
    )
    version, path, status = _python(
        code, {"PYTHONPATH": str(ROOT)}, cwd=tmp_path
    ).split()
    assert version.endswith("+source")
    assert pathlib.Path(path).is_relative_to(ROOT / "jaxmirror") and status == "0"


@pytest.mark.skipif(sys.platform != "linux", reason="bash and timeout(1)")
def test_device_script_at_its_smoke_size(tmp_path):
    """Every stage of the prepared GPU script runs on the CPU at its smallest size and
    leaves its output under OUT."""
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "device_check.sh"), str(tmp_path)],
        env={**os.environ, "SMOKE": "1", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.count("rc=0") == summary.count("== "), summary
    for name in ("environment", "tests", "sweep_benchmark", "discrete_benchmark"):
        assert (tmp_path / f"{name}.txt").stat().st_size > 0, name
    assert "jaxmirror sweep" in (tmp_path / "sweep_benchmark.txt").read_text()
    assert "Pallas kernel" in (tmp_path / "discrete_benchmark.txt").read_text()
    assert (tmp_path / "reproduce" / "range.md").exists()


def test_sweep_with_predictions_on_every_core_finishes_and_agrees():
    """On two CPU devices (`jm.use_all_cores()` on this machine) a sweep with
    predictions completes (its LAPACK solves once deadlocked XLA:CPU when
    sharded) and equals the one-device sweep at the accuracy of the computation."""
    code = (
        "import sys, json\n"
        "import jaxmirror as jm\n"
        "if sys.argv[1] == '2':\n"
        "    jm.use_all_cores(2)\n"
        "import jax; jax.config.update('jax_enable_x64', True)\n"
        "import numpy as np\n"
        "problem, truth = jm.datasets.sparse_regression(n=20, d=8, sparsity=2, seed=1)\n"
        "pair = jm.Hadamard()\n"
        "g = jm.grid(alpha=np.linspace(0, 0.1, 4), t_off=np.linspace(5, 20, 4))\n"
        "ds = jm.sweep(problem, pair, jm.SwitchOff(**g), pair.init(np.zeros(20)), 200.0,\n"
        "              truth=truth, progress=False)\n"
        "print(json.dumps([len(jax.devices()), ds.x_final.values.tolist(),\n"
        "                  ds.x_predicted.values.tolist()]))\n"
    )
    results = {}
    for devices in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", code, devices],
            env={**os.environ, "XLA_FLAGS": ""},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        results[devices] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["1"][0] == 1 and results["2"][0] == 2
    for i in (1, 2):
        np.testing.assert_allclose(results["2"][i], results["1"][i], rtol=0, atol=1e-7)
