"""The benchmark scripts run (tiny presets). The sweep, discrete-speed and first-call
benchmarks run as stages of the GPU device script, whose smoke test checks their
tables (tests/test_accelerators.py)."""

import pathlib
import subprocess
import sys


BENCHMARKS = pathlib.Path(__file__).parents[1] / "benchmarks"


def _run(*args):
    result = subprocess.run(
        [sys.executable, *args],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_float32_benchmark_small():
    out = _run("float32.py", "--sizes", "12x30", "--configs", "8", "--once", "")
    rows = [line for line in out.splitlines() if line.startswith("| (12, 30)")]
    assert [row.split(" | ")[1] for row in rows] == ["float64", "float32"]
    assert "rowspace (vmap)" in rows[1] and rows[1].endswith("| 8/8 |")


def test_default_path_benchmark_small():
    """Fresh processes, then rounds that alternate the sweep with scipy's loop on
    configurations spread over the grid (alpha = 0 and alpha = 0.1 both sampled);
    jaxmirror's final points agree with scipy's to within the tolerances' reach."""
    import re

    out = _run("default_path.py", "--configs", "16", "--scipy-configs", "3")
    assert "process 2 (cache warm)" in out
    assert "in 3 rounds between scipy loops" in out
    assert "3 configurations spread over the grid" in out
    diff = float(re.search(r"max \|x diff\| ([0-9.e+-]+)", out).group(1))
    assert diff <= 1e-4


def test_user_pair_benchmark_small():
    out = _run(
        "user_pair.py",
        "--n",
        "12",
        "--d",
        "4",
        "--repeat",
        "1",
        "--formulations",
        "parameter,dual",
    )
    assert "user copy (flows)" in out and "| dual |" in out
