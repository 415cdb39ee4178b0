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


def _one_cpu_device():
    import jax

    return jax.default_backend() == "cpu" and len(jax.devices()) == 1


# Host threads are for a CPU with one JAX device; elsewhere a sweep never splits.
one_cpu_device = pytest.mark.skipif(
    not _one_cpu_device(), reason="host threads need a CPU with one JAX device"
)


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
    sweep = (tmp_path / "sweep_benchmark.txt").read_text()
    assert "jaxmirror sweep (batched, parameter)" in sweep
    assert "scipy solve_ivp RK45 loop" in sweep and "GEMM peak" in sweep
    discrete = (tmp_path / "discrete_benchmark.txt").read_text()
    assert "jaxmirror vmap(train) scan" in discrete and "Python loop" in discrete
    assert "Pallas kernel" in discrete
    _check_first_call_table((tmp_path / "first_call.txt").read_text())
    assert (tmp_path / "reproduce" / "range.md").exists()


def _check_first_call_table(out: str) -> None:
    """Fresh processes on a shared cache: a row per call, its first call slower than
    the same call again (the first traces or loads programs, the second does not)."""
    rows = [line.split(" | ") for line in out.splitlines() if "| jm." in line]
    assert [row[1] for row in rows] == [
        "jm.sweep, the process's first",
        "jm.sweep, a second new shape",
        "jm.solve",
    ], out
    for row in rows:
        first, again = float(row[2].split()[0]), float(row[3].split()[0])
        assert first > again and float(row[4].split()[0]) > 1.0
        assert int(row[5].rstrip(" |")) >= 1


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


@one_cpu_device
@pytest.mark.parametrize(
    "size, cores, parts",
    [(16, 1, 1), (16, 2, 2), (16, 3, 2), (64, 8, 8), (6, 4, 1), (24, 4, 4), (4, 2, 1)],
)
def test_host_parts_one_per_core_in_equal_powers_of_two(
    monkeypatch, size, cores, parts
):
    """On one CPU device a chunk splits into the most parts that are a power of two,
    at most the core count, divide the chunk and hold at least `MIN_PART` (4)."""
    from jaxmirror._sweep import _threads as _cores

    monkeypatch.setattr(_cores, "available_cores", lambda: cores)
    assert _cores.host_parts(size) == parts


def _threaded_sweep(monkeypatch, cores, problem=None, solver=None):
    """A small sweep with `cores` cores, and the parts each chunk's solves ran in.

    With a `solver`, threads are refused (an implicit solver in two threads can
    deadlock XLA:CPU: a regression must fail here, not hang)."""
    import jax.numpy as jnp

    import jaxmirror as jm
    from jaxmirror._sweep import _strategies, _threads as _cores

    monkeypatch.setattr(_cores, "available_cores", lambda: cores)
    used = []

    def spy(solve_part, size, parts):
        used.append(parts)
        assert solver is None or parts == 1, "an implicit solver ran in threads"
        return _cores.map_parts(solve_part, size, parts)

    monkeypatch.setattr(_strategies, "map_parts", spy)
    linear, truth = jm.datasets.sparse_regression(n=20, d=8, sparsity=2, seed=1)
    pair = jm.Hadamard()
    grid = jm.grid(alpha=np.linspace(0, 0.1, 4), t_off=np.linspace(5, 20, 4))
    ds = jm.sweep(
        linear if problem is None else problem(linear),
        pair,
        jm.SwitchOff(**grid),
        pair.init(jnp.zeros(20)),
        100.0,
        formulation="dual" if problem is not None else "auto",
        rtol=1e-10,
        atol=1e-12,
        progress=False,
        **({} if solver is None else {"solver": solver}),
    )
    return ds, used


@one_cpu_device
def test_threaded_solves_equal_one_call(monkeypatch):
    """With two cores on one device a chunk's solves run in two host threads, and
    every configuration ends where the one-call sweep ends (rtol 1e-10: same steps
    per configuration, so agreement to roundoff of the batched products), with the
    same status and step counts."""
    whole, used_whole = _threaded_sweep(monkeypatch, 1)
    split, used_split = _threaded_sweep(monkeypatch, 2)
    assert used_whole == [1] and used_split == [2]
    np.testing.assert_allclose(split.x_final, whole.x_final, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(split.status, whole.status)
    assert np.all(split.status.values == 0)
    assert np.abs(split.num_steps.values - whole.num_steps.values).max() <= 1
    np.testing.assert_allclose(split.x_predicted, whole.x_predicted, rtol=0, atol=1e-12)


@one_cpu_device
def test_user_code_is_threaded_only_without_lapack(monkeypatch):
    """Whether a flow may run in host threads is read from its traced program: a
    user's problem (`jm.Problem`) whose loss calls LAPACK (two such programs at once
    can deadlock XLA:CPU) runs its solves in one call, even with two cores; the same
    loss without LAPACK runs in two threads, to the same results."""
    import jax.numpy as jnp

    import jaxmirror as jm

    def plain(linear):
        return jm.Problem(linear.loss, n=linear.dim())

    def through_lapack(linear):
        Z, y = linear.Z, linear.y
        gram = Z @ Z.T + jnp.eye(Z.shape[0])

        def loss(x):  # 1/2 |Zx - y|^2 written through a solve with Z Z^T + I
            r = Z @ x - y
            return 0.5 * r @ (gram @ jnp.linalg.solve(gram, r))

        return jm.Problem(loss, n=linear.dim())

    lapack, used_lapack = _threaded_sweep(monkeypatch, 2, problem=through_lapack)
    user, used_user = _threaded_sweep(monkeypatch, 2, problem=plain)
    assert used_lapack == [1] and used_user == [2]
    assert np.all(lapack.status.values == 0) and np.all(user.status.values == 0)
    np.testing.assert_allclose(lapack.x_final, user.x_final, rtol=0, atol=1e-8)


def test_the_thread_rule_reads_the_flows_program():
    """`splits_over_cores` finds LAPACK and host callbacks in a flow's program
    (nested in loops and custom solves too), and nothing in the built-in flows."""
    import diffrax as dfx
    import jax
    import jax.numpy as jnp

    import jaxmirror as jm
    from jaxmirror._solve import solver_options
    from jaxmirror._sweep._threads import splits_over_cores

    linear, _ = jm.datasets.sparse_regression(n=20, d=8, sparsity=2, seed=1)
    pair = jm.Hadamard()
    w0, schedule = pair.init(jnp.zeros(20)), jm.SwitchOff(0.1, 5.0)
    explicit, implicit = solver_options(), solver_options(dfx.Kvaerno5())

    def splits(problem, formulation=jm.DualFormulation(), options=explicit):
        return splits_over_cores(formulation, problem, pair, schedule, w0, options)

    class HostGradient(jm.AbstractProblem):  # its gradient computed by NumPy
        def loss(self, x):
            return 0.5 * jnp.sum(x**2)

        def grad(self, x):
            shape = jax.ShapeDtypeStruct(x.shape, x.dtype)
            return jax.pure_callback(lambda v: np.asarray(v), shape, x)

        def dim(self):
            return 20

    assert splits(linear, jm.RowSpaceFormulation())
    assert splits(linear, jm.ParameterFormulation())
    assert not splits(linear, jm.RowSpaceFormulation(), implicit)
    assert splits(jm.Problem(linear.loss, n=20))
    spectral = lambda x: jnp.linalg.norm(x[:16].reshape(4, 4), 2) ** 2  # an SVD
    solved = lambda x: jnp.sum(jnp.linalg.solve(jnp.eye(20) + jnp.outer(x, x), x))
    assert not splits(jm.Problem(spectral, n=20))
    assert not splits(jm.Problem(solved, n=20))
    assert not splits(HostGradient())


@one_cpu_device
def test_implicit_solver_is_never_threaded(monkeypatch):
    """An implicit solver (Kvaerno5: LAPACK in every Newton step) runs a chunk's
    solves in one call even with two cores: two such programs at once hung XLA:CPU
    (0% CPU at the first chunk). The sweep finishes with every configuration solved,
    where the explicit solver's threaded sweep ends (rtol 1e-10)."""
    import diffrax as dfx

    ds, used = _threaded_sweep(monkeypatch, 2, solver=dfx.Kvaerno5())
    assert used == [1]
    assert np.all(ds.status.values == 0)
    explicit, used_explicit = _threaded_sweep(monkeypatch, 2)
    assert used_explicit == [2]
    np.testing.assert_allclose(ds.x_final, explicit.x_final, rtol=0, atol=1e-7)


def test_map_parts_runs_each_part_in_the_callers_context():
    """Parts run in threads, in copies of the caller's context: inside `validated()`
    the programs trust their inputs (no runtime checks, which would keep them out
    of the compilation cache); the slices cover the configurations in order."""
    import jax.numpy as jnp

    from jaxmirror._checking import _VALIDATED, validated
    from jaxmirror._sweep._threads import map_parts

    def part(lo, hi):
        return jnp.arange(lo, hi), jnp.full((hi - lo,), _VALIDATED.get())

    with validated():
        rows, trusted = map_parts(part, 16, 4)
    np.testing.assert_array_equal(rows, np.arange(16))
    assert trusted.all()
    assert not map_parts(part, 16, 2)[1].any()


def test_lapack_runs_in_one_thread_inside_a_chunk_and_is_restored_after(monkeypatch):
    """Inside a sweep's chunk, OpenBLAS (scipy's, which jaxlib's CPU linear algebra
    calls) runs one thread; outside it, whatever the caller had. Checked
    where the chunk's LAPACK work runs (the predictions), through threadpoolctl, in a
    process that has already swept and loaded OpenMP (scikit-learn), as in the suite."""
    import jax
    import threadpoolctl

    import jaxmirror as jm
    from jaxmirror._sweep import _chunks

    if jax.default_backend() != "cpu":
        pytest.skip("LAPACK threads concern the CPU backend")
    seen = []
    predict = _chunks.predict

    def threads():  # OpenBLAS only (scikit-learn loads OpenMP, left alone)
        info = threadpoolctl.threadpool_info()
        return {
            lib["filepath"]: lib["num_threads"]
            for lib in info
            if lib["internal_api"] == "openblas"
        }

    def spying(*args):
        seen.append(set(threads().values()))
        return predict(*args)

    problem, _ = jm.datasets.sparse_regression(n=20, d=8, sparsity=2, seed=1)
    pair = jm.Hadamard()

    def sweep():
        jm.sweep(
            problem,
            pair,
            jm.SwitchOff(np.linspace(0, 0.1, 8), np.full(8, 5.0)),
            pair.init(np.zeros(20)),
            20.0,
            progress=False,
        )

    sweep()
    import sklearn.datasets  # noqa: F401 - loads OpenMP, whose threads stay as they are

    monkeypatch.setattr(_chunks, "predict", spying)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = threads()
        sweep()
        after = threads()
    assert seen and all(counts == {1} for counts in seen)
    assert after == before and 2 in before.values()


def _parameter_sweep(monkeypatch, cores, **options):
    """A small sweep of the parameter flow with `cores` cores and `strategy="auto"`."""
    import jax.numpy as jnp

    import jaxmirror as jm
    from jaxmirror._sweep import _threads as _cores

    monkeypatch.setattr(_cores, "available_cores", lambda: cores)
    problem, _ = jm.datasets.sparse_regression(n=20, d=8, sparsity=2, seed=1)
    pair = jm.Hadamard()
    return jm.sweep(
        problem,
        pair,
        jm.SwitchOff(np.linspace(0, 0.1, 8), np.full(8, 5.0)),
        pair.init(jnp.zeros(20)),
        20.0,
        formulation="parameter",
        predict=False,
        progress=False,
        **options,
    )


@one_cpu_device
@pytest.mark.parametrize("cores, strategy", [(1, "batched"), (2, "vmap")])
def test_auto_strategy_for_the_parameter_flow_follows_the_cores(
    monkeypatch, cores, strategy
):
    """The parameter flow's shared-step batch only where solves run in one thread
    (measured: equal there; independent solves win in two threads)."""
    ds = _parameter_sweep(monkeypatch, cores)
    assert ds.attrs["strategy"] == strategy
    assert np.all(ds.status.values == 0)


@one_cpu_device
@pytest.mark.parametrize("cores", [1, 2])
def test_auto_strategy_shares_the_step_of_a_matrix_pair_on_any_cpu(monkeypatch, cores):
    """A matrix pair's flows share a step on a CPU even in two threads (measured:
    their vmapped independent solves are slower there); the shared-step results
    match each configuration's own solve at the tolerance's accuracy."""
    import jax

    import jaxmirror as jm
    from jaxmirror._sweep import _threads as _cores

    monkeypatch.setattr(_cores, "available_cores", lambda: cores)
    problem, *_ = jm.datasets.commuting_sensing(n=5, d=4, rank=2, seed=0)
    pair = jm.MatrixFactorization((5, 5), 5)
    w0 = pair.init(scale=0.5, key=jax.random.PRNGKey(0))
    alphas = np.array([0.0, 0.05, 0.1, 0.2])
    tight = dict(rtol=1e-10, atol=1e-12)
    ds = jm.sweep(
        problem,
        pair,
        jm.SwitchOff(alphas, np.full(4, 3.0)),
        w0,
        10.0,
        predict=False,
        progress=False,
        **tight,
    )
    assert ds.attrs["strategy"] == "batched"
    for i, alpha in enumerate(alphas):
        single = jm.solve(problem, pair, jm.SwitchOff(alpha, 3.0), w0, 10.0, **tight)
        np.testing.assert_allclose(
            ds.x_final.values[i], single.x_final, rtol=0, atol=1e-8
        )


@one_cpu_device
def test_auto_strategy_never_batches_an_implicit_solver(monkeypatch):
    """With one core the parameter flow would share a step, but not under an implicit
    solver: its Newton steps would factor the Jacobian of the whole batch's state.
    The independent solves match the explicit solver's (rtol 1e-9)."""
    import diffrax as dfx

    tight = dict(rtol=1e-9, atol=1e-11)
    implicit = _parameter_sweep(monkeypatch, 1, solver=dfx.Kvaerno5(), **tight)
    explicit = _parameter_sweep(monkeypatch, 1, solver=dfx.Tsit5(), **tight)
    assert implicit.attrs["strategy"] == "vmap"
    assert explicit.attrs["strategy"] == "batched"
    assert np.all(implicit.status.values == 0)
    np.testing.assert_allclose(implicit.x_final, explicit.x_final, rtol=0, atol=1e-6)
