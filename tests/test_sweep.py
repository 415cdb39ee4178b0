"""Sweeps: equality with single solves, sharding, interruption and resume, failures,
configuration files and the command line."""

import pathlib
import socket
import subprocess
import sys

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import jaxmirror as jm


WORKER = pathlib.Path(__file__).with_name("_sweep_worker.py")


def _run_worker(tmp_path, name, timeout=600, **kwargs):
    save = tmp_path / f"{name}.npz"
    command = [sys.executable, str(WORKER), "--save", str(save)]
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        command += [flag] if value is True else [flag, str(value)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
    return dict(np.load(save))


def test_implicit_solver_on_two_devices_equals_one(tmp_path):
    """An implicit solver (Kvaerno5) on two CPU devices finishes (LAPACK inside a
    program partitioned over CPU devices hung, and `shard_map` broke lineax's solves)
    and gives one device's numbers."""
    one = _run_worker(tmp_path, "one", devices=1, solver="Kvaerno5")
    two = _run_worker(tmp_path, "two", timeout=300, devices=2, solver="Kvaerno5")
    assert np.all(one["status"] == 0)
    np.testing.assert_array_equal(two["status"], one["status"])
    for key in ("x_final", "x_predicted"):
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-12)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_flow_kernel_shards_configurations_over_devices(tmp_path):
    """With two devices, each runs the flow kernel on its shard of a chunk
    (`shard_map`); the results equal one device's XLA path."""
    one = _run_worker(tmp_path, "xla", devices=1, backend="xla")
    two = _run_worker(tmp_path, "kernel", devices=2, backend="pallas")
    np.testing.assert_array_equal(two["status"], one["status"])
    np.testing.assert_allclose(two["x_final"], one["x_final"], rtol=0, atol=1e-8)


def test_two_processes_equal_one_and_only_process_zero_writes(tmp_path):
    """`jax.distributed.initialize` with two processes of two CPU devices each (gloo
    collectives) gives the numbers of one process with four devices; every process gets
    the full result, and only process 0 writes to its `out`."""
    port = _free_port()
    procs = []
    for pid in range(2):
        command = [
            sys.executable,
            str(WORKER),
            "--save",
            str(tmp_path / f"process{pid}.npz"),
            "--devices",
            "2",
            "--processes",
            "2",
            "--process-id",
            str(pid),
            "--port",
            str(port),
            "--out",
            str(tmp_path / f"out{pid}"),
        ]
        procs.append(
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    for proc in procs:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output[-3000:]
    single = _run_worker(tmp_path, "single", devices=4)
    for pid in range(2):
        got = dict(np.load(tmp_path / f"process{pid}.npz"))
        for key in ("x_final", "x_predicted", "status"):
            np.testing.assert_allclose(got[key], single[key], rtol=0, atol=1e-13)
    stored = xr.open_zarr(tmp_path / "out0")
    np.testing.assert_array_equal(stored.x_final.values, single["x_final"])
    assert not (tmp_path / "out1").exists()


# Tight on both sides (each endpoint within ~1e-10 of the exact flow), so that sweeps
# and single solves can be compared at 1e-9, the accuracy of the computation.
TIGHT = dict(rtol=1e-12, atol=1e-12, max_steps=200_000)


def _instance():
    problem, x_star = jm.datasets.sparse_regression(n=30, d=12, sparsity=3, seed=4)
    pair = jm.Hadamard()
    return problem, pair, pair.init(jnp.zeros(30), scale=1.0), x_star


def _stack(trees):
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def _batched_instances(kind):
    """Three instances of one problem family as one batched problem (the problem's
    constructor mapped over a leading axis), with their own w0 and schedules."""
    if kind == "least_squares":
        data = [jm.datasets.sparse_regression(n=20, d=8, seed=s) for s in range(3)]
        problems = [problem for problem, _ in data]
        pair = jm.Hadamard()
        w0s = [pair.init(jnp.zeros(20), scale=s) for s in (0.5, 1.0, 2.0)]
        batched = eqx.filter_vmap(jm.LeastSquares)(
            np.stack([p.Z for p in problems]), np.stack([p.y for p in problems])
        )
        return problems, batched, pair, w0s, jm.ParameterFormulation(), 40.0
    data = [jm.datasets.commuting_sensing(n=6, d=4, rank=2, seed=s) for s in range(3)]
    problems = [problem for problem, *_ in data]
    pair = jm.MatrixFactorization((6, 6), 6)
    w0s = [pair.init_aligned(basis, scale=1.0) for _, _, basis, _ in data]
    batched = eqx.filter_vmap(jm.MatrixSensing)(
        np.stack([p.A for p in problems]), np.stack([p.y for p in problems])
    )
    return problems, batched, pair, w0s, jm.ParameterFormulation(), 40.0


@pytest.mark.parametrize("kind", ["least_squares", "matrix_sensing"])
def test_batched_problem_instances_equal_their_own_solves(kind):
    """A sweep over problem instances (one per configuration, with batched w0) gives
    each instance's own solve, at the accuracy of the computation."""
    problems, batched, pair, w0s, formulation, t1 = _batched_instances(kind)
    alphas = np.array([0.0, 0.05, 0.1])
    ds = jm.sweep(
        batched,
        pair,
        jm.SwitchOff(alphas, np.full(3, 5.0)),
        _stack(w0s),
        t1,
        formulation=formulation,
        predict=False,
        progress=False,
        **TIGHT,
    )
    assert ds.attrs["problem_batched"] == 1
    for i, (problem, w0) in enumerate(zip(problems, w0s)):
        single = jm.solve(
            problem,
            pair,
            jm.SwitchOff(alphas[i], 5.0),
            w0,
            t1,
            formulation=formulation,
            **TIGHT,
        )
        np.testing.assert_allclose(
            ds.x_final.values[i], single.x_final, rtol=0, atol=1e-9
        )


@pytest.mark.parametrize("shared", [False, True])
def test_matrix_sweep_predicts_each_instance_as_implicit_bias_does(shared):
    """A matrix pair's predictions after a switch-off (the commuting reduction, per
    configuration) and under constant weight decay (the nuclear-norm limit) equal
    `jm.implicit_bias` of each configuration on its own; the flows end near them."""
    problems, batched, pair, w0s, formulation, _ = _batched_instances("matrix_sensing")
    if shared:  # one problem and one w0, three schedules
        batched, w0 = problems[0], w0s[0]
        problems, w0s = problems[:1] * 3, w0s[:1] * 3
    else:
        w0 = _stack(w0s)
    for schedules, singles in (
        (
            jm.SwitchOff(np.array([0.0, 0.1, 0.2]), np.full(3, 2.0)),
            [jm.SwitchOff(a, 2.0) for a in (0.0, 0.1, 0.2)],
        ),
        (
            jm.Constant(np.array([0.05, 0.1, 0.2])),
            [jm.Constant(a) for a in (0.05, 0.1, 0.2)],
        ),
    ):
        ds = jm.sweep(
            batched,
            pair,
            schedules,
            w0,
            400.0,
            formulation=formulation,
            progress=False,
            **TIGHT,
        )
        assert ds.attrs["prediction"] == "computed"
        np.testing.assert_array_equal(ds.bias_status.values, 0)
        for i, (problem, w0_i, schedule) in enumerate(zip(problems, w0s, singles)):
            expected = jm.implicit_bias(problem, pair, schedule, w0_i)
            np.testing.assert_allclose(
                ds.x_predicted.values[i], expected, rtol=0, atol=1e-10
            )
        # The flows end at the predicted limits, to the accuracy of t1 = 400.
        np.testing.assert_allclose(
            ds.x_final.values, ds.x_predicted.values, rtol=0, atol=1e-4
        )


def test_symmetric_matrix_sweep_predicts_as_implicit_bias_does():
    """U U^T with symmetric commuting measurements: the sweep's predictions after a
    switch-off (through the reduction to `Square` on the eigenvalues) equal
    `jm.implicit_bias` per instance, and the flows end there."""
    data = [
        jm.datasets.commuting_sensing(n=5, d=3, rank=2, seed=s, symmetric=True)
        for s in range(2)
    ]
    pair = jm.SymmetricFactorization(5, 5)
    w0s = [pair.init_aligned(P, scale=0.6) for _, _, P, _ in data]
    batched = eqx.filter_vmap(jm.MatrixSensing)(
        np.stack([p.A for p, *_ in data]), np.stack([p.y for p, *_ in data])
    )
    ds = jm.sweep(
        batched,
        pair,
        jm.SwitchOff(np.array([0.0, 0.2]), np.full(2, 3.0)),
        _stack(w0s),
        2000.0,
        progress=False,
        **TIGHT,
    )
    np.testing.assert_array_equal(ds.bias_status.values, 0)
    for i, ((problem, *_), w0, alpha) in enumerate(zip(data, w0s, (0.0, 0.2))):
        expected = jm.implicit_bias(problem, pair, jm.SwitchOff(alpha, 3.0), w0)
        np.testing.assert_allclose(
            ds.x_predicted.values[i], expected, rtol=0, atol=1e-10
        )
    np.testing.assert_allclose(
        ds.x_final.values, ds.x_predicted.values, rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("size", [1, 6])
def test_matrix_sweep_of_one_or_n_instances_is_batched(size):
    """Batched factors are recognised by their shapes for any batch size: U V^T
    broadcasts over leading axes, so a batch of one, or of n (the matrix size), once
    passed for one point of the right size and solved the wrong flow."""
    data = [
        jm.datasets.gaussian_sensing(n1=6, n2=6, d=12, rank=2, seed=s)
        for s in range(size)
    ]
    pair = jm.MatrixFactorization((6, 6), 6)
    w0s = [pair.init(scale=0.1, key=jax.random.PRNGKey(s)) for s in range(size)]
    batched = eqx.filter_vmap(jm.MatrixSensing)(
        np.stack([p.A for p, _ in data]), np.stack([p.y for p, _ in data])
    )
    ds = jm.sweep(
        batched,
        pair,
        jm.Constant(np.full(size, 0.05)),
        _stack(w0s),
        20.0,
        predict=False,
        progress=False,
        **TIGHT,
    )
    assert ds.attrs["problem_batched"] == 1
    for i, ((problem, _), w0) in enumerate(zip(data, w0s)):
        single = jm.solve(problem, pair, jm.Constant(0.05), w0, 20.0, **TIGHT)
        np.testing.assert_allclose(
            ds.x_final.values[i], single.x_final, rtol=0, atol=1e-9
        )


def test_matrix_factors_of_the_wrong_shape_are_refused():
    """A factor with an extra axis gives U V^T of the right size by broadcasting;
    `jm.solve` refuses it, naming `w0` and the shapes it expects."""
    problem, _ = jm.datasets.gaussian_sensing(n1=6, n2=6, d=12, rank=2, seed=0)
    pair = jm.MatrixFactorization((6, 6), 6)
    U, V = pair.init(scale=0.1, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"`w0`: MatrixFactorization expects factors"):
        jm.solve(problem, pair, jm.Constant(0.0), (U[None], V[None]), 1.0)


def test_matrix_sweep_without_a_commuting_reduction_says_why_before_solving():
    """Gaussian measurements share no basis: no limit after a switch-off can be
    predicted, which the sweep says (and still solves) instead of failing after."""
    problem, _ = jm.datasets.gaussian_sensing(n1=5, n2=5, d=10, rank=2, seed=0)
    pair = jm.MatrixFactorization((5, 5), 5)
    w0 = pair.init(scale=0.1, key=jax.random.PRNGKey(0))
    ds = jm.sweep(
        problem,
        pair,
        jm.SwitchOff(np.array([0.0, 0.1]), np.full(2, 2.0)),
        w0,
        5.0,
        formulation="parameter",
        progress=False,
    )
    assert ds.attrs["prediction"].startswith("not available: `problem`:")
    assert "common (singular) basis" in ds.attrs["prediction"]
    assert "x_predicted" not in ds
    assert np.all(np.isfinite(ds.x_final.values))


@pytest.mark.parametrize(
    "strategy, formulation",
    [("vmap", "auto"), ("batched", "auto"), ("vmap", "dual"), ("batched", "parameter")],
)
def test_sweep_equals_single_solves(strategy, formulation):
    problem, pair, w0, x_star = _instance()
    axes = jm.grid(alpha=np.array([0.0, 0.05, 0.2]), t_off=np.array([2.0, 6.0]))
    schedules = jm.SwitchOff(**axes)
    ds = jm.sweep(
        problem,
        pair,
        schedules,
        w0,
        40.0,
        truth=x_star,
        strategy=strategy,
        formulation=formulation,
        chunk_size=4,
        progress=False,
        **TIGHT,
    )
    assert ds.x_final.shape == (6, 30)
    np.testing.assert_array_equal(ds.alpha.values, axes["alpha"])
    # "auto" integrates the d = 12 row-space coordinates for least squares.
    used = "rowspace" if formulation == "auto" else formulation
    assert ds.attrs["formulation"] == used
    for i in range(6):
        single = jm.solve(
            problem,
            pair,
            jm.SwitchOff(axes["alpha"][i], axes["t_off"][i]),
            w0,
            t1=40.0,
            formulation=used,
            **TIGHT,
        )
        # Both sides within ~1e-10 of the exact flow (vmap: the same computation in
        # another kernel; batched: a shared step-size sequence), compared at 1e-9.
        np.testing.assert_allclose(
            ds.x_final.values[i], single.x_final, rtol=0, atol=1e-9
        )
        if strategy == "vmap":  # the same algorithm: roundoff may flip one step
            steps, reference = int(ds.num_steps.values[i]), int(single.num_steps)
            assert abs(steps - reference) <= max(2, 0.01 * reference)
        predicted = jm.implicit_bias(
            problem, pair, jm.SwitchOff(axes["alpha"][i], axes["t_off"][i]), w0
        )
        np.testing.assert_allclose(ds.x_predicted.values[i], predicted, atol=1e-12)
    np.testing.assert_allclose(
        ds.recovery_error.values, np.linalg.norm(ds.x_final.values - x_star, axis=1)
    )
    assert np.all(ds.status.values == jm.Status.SUCCESS)
    # vmap: every configuration has its own step-size controller; batched: one shared
    # per chunk (of 4 configurations).
    steps = ds.num_steps.values
    if strategy == "vmap":
        assert len(set(steps.tolist())) > 1, steps
    else:
        assert len(set(steps[:4].tolist())) == len(set(steps[4:].tolist())) == 1, steps


def test_batched_initialisations_and_labels():
    problem, pair, _, _ = _instance()
    scales = np.array([0.1, 0.5, 1.0])
    w0 = jax.vmap(lambda s: pair.init(jnp.zeros(30), scale=s))(jnp.asarray(scales))
    schedules = jm.SwitchOff(alpha=np.full(3, 0.1), t_off=np.full(3, 3.0))
    ds = jm.sweep(
        problem,
        pair,
        schedules,
        w0,
        30.0,
        labels={"scale": scales},
        strategy="vmap",
        progress=False,
    )
    np.testing.assert_array_equal(ds.scale.values, scales)
    for i, s in enumerate(scales):
        single = jm.solve(
            problem,
            pair,
            jm.SwitchOff(0.1, 3.0),
            pair.init(jnp.zeros(30), scale=s),
            t1=30.0,
            rtol=1e-6,
            atol=1e-9,
            formulation=ds.attrs["formulation"],
        )
        np.testing.assert_allclose(ds.x_final.values[i], single.x_final, atol=1e-12)


@pytest.mark.parametrize("strategy", ["vmap", "batched"])
def test_failing_configuration_is_recorded(strategy):
    """The middle configuration starts at scale 1e3: the flow is stiff and runs out of
    steps; its neighbours must still succeed."""
    problem, pair, _, _ = _instance()
    scales = jnp.array([1.0, 1e3, 0.5])
    w0 = jax.vmap(lambda s: pair.init(jnp.zeros(30), scale=s))(scales)
    schedules = jm.SwitchOff(alpha=np.full(3, 0.05), t_off=np.full(3, 5.0))
    ds = jm.sweep(
        problem,
        pair,
        schedules,
        w0,
        40.0,
        strategy=strategy,
        progress=False,
        max_steps=2000,
    )
    status = ds.status.values
    assert status[1] == jm.Status.MAX_STEPS
    assert status[0] == status[2] == jm.Status.SUCCESS
    assert np.all(np.isfinite(ds.x_final.values[[0, 2]]))


def test_running_out_of_steps_suggests_implicit_steps(capsys):
    """The progress report names the configurations that ran out of steps and the
    remedy; with it (implicit steps) the stiff configuration succeeds."""
    problem, pair, _, _ = _instance()
    w0 = jax.vmap(lambda s: pair.init(jnp.zeros(30), scale=s))(jnp.array([1.0, 1e3]))
    schedules = jm.SwitchOff(alpha=np.full(2, 0.05), t_off=np.full(2, 5.0))
    kw = dict(max_steps=2000, predict=False)
    jm.sweep(problem, pair, schedules, w0, 40.0, **kw)
    assert "1 configurations ran out of steps" in capsys.readouterr().err
    ds = jm.sweep(problem, pair, schedules, w0, 40.0, solver=dfx.Kvaerno5(), **kw)
    assert np.all(ds.status.values == jm.Status.SUCCESS)
    assert "ran out of steps" not in capsys.readouterr().err


def test_sharded_equals_single_device(tmp_path):
    for strategy in ("vmap", "batched"):
        one = _run_worker(tmp_path, f"one_{strategy}", devices=1, strategy=strategy)
        four = _run_worker(tmp_path, f"four_{strategy}", devices=4, strategy=strategy)
        # The worker solves at rtol 1e-10: devices (other kernels, other roundoff)
        # agree to the accuracy of the computation, not to the bit.
        for key in one:
            np.testing.assert_allclose(
                four[key], one[key], rtol=0, atol=1e-9, err_msg=f"{strategy}: {key}"
            )


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda p, pr, w: jm.sweep(p, pr, jm.SwitchOff(0.1, 1.0), w, 5.0),
            "`schedules` must be a batch of schedules with one configuration axis",
        ),
        (
            lambda p, pr, w: jm.sweep(
                p, pr, jm.SwitchOff(np.ones(2), np.ones(2)), w, 5.0, strategy="fast"
            ),
            "`strategy` must be one of",
        ),
        (
            lambda p, pr, w: jm.sweep(
                p,
                pr,
                jm.SwitchOff(np.ones(2), np.ones(2)),
                (jnp.ones((3, 30)), jnp.ones((3, 30))),
                5.0,
            ),
            "`w0` is batched with leading size 3",
        ),
        (
            lambda p, pr, w: jm.sweep(
                p,
                pr,
                jm.SwitchOff(np.ones(2), np.ones(2)),
                w,
                5.0,
                labels={"seed": np.arange(3)},
            ),
            r"`labels\['seed'\]` must have shape \(2,\)",
        ),
    ],
)
def test_bad_sweep_input(call, match):
    problem, pair, w0, _ = _instance()
    with pytest.raises(ValueError, match=match):
        call(problem, pair, w0)


def test_auto_formulation_follows_the_measured_table():
    from jaxmirror._formulations import auto_formulation

    problem, pair, _, _ = _instance()
    callable_problem = jm.Problem(lambda x: jnp.sum(x**4), n=30)

    class Product(jm.AbstractPair):  # no closed form
        def g(self, w):
            return w[0] * w[1]

        def h(self, w):
            return 0.5 * (jnp.sum(w[0] ** 2) + jnp.sum(w[1] ** 2))

        def init(self, x0=None, scale=1.0, *, key=None):
            return (jnp.full_like(x0, scale), x0 / scale)

    def name(*args):
        return auto_formulation(*args).name

    assert name(problem, pair, jnp.float64) == jm.RowSpaceFormulation.name
    assert name(callable_problem, pair, jnp.float64) == jm.DualFormulation.name
    assert name(problem, pair, jnp.float32) == jm.RowSpaceFormulation.name
    # rtol near float32's roundoff: the parameter flow, whose estimates stay clean.
    assert name(problem, pair, jnp.float32, 1e-6) == jm.ParameterFormulation.name
    assert name(problem, pair, jnp.float64, 1e-6) == jm.RowSpaceFormulation.name
    assert name(problem, Product(), jnp.float64) == jm.ParameterFormulation.name


def _float_sweeps(dtypes, **options):
    """The same small sweep in each precision of `dtypes`."""
    problem, _ = jm.datasets.sparse_regression(n=30, d=12, sparsity=3, seed=5)
    grid = jm.grid(alpha=np.linspace(0.0, 0.1, 4), t_off=np.linspace(5.0, 20.0, 4))
    results = {}
    for dtype in dtypes:
        prob = jm.LeastSquares(
            jnp.asarray(problem.Z, dtype), jnp.asarray(problem.y, dtype)
        )
        pair = jm.Hadamard()
        w0 = pair.init(jnp.zeros(30, dtype), jnp.asarray(1.0, dtype))
        schedules = jm.SwitchOff(
            jnp.asarray(grid["alpha"], dtype), jnp.asarray(grid["t_off"], dtype)
        )
        ds = jm.sweep(prob, pair, schedules, w0, 300.0, progress=False, **options)
        assert np.all(ds.status.values == jm.Status.SUCCESS)
        results[dtype] = ds
    return results


def test_float32_sweep_reaches_the_float64_result():
    """The default float32 sweep runs in float32 (its times too: diffrax would promote
    the state to float64 times), with the row-space formulation at tolerances by
    precision (100 and 1 float32 epsilons), and ends within 1e-3 of the float64
    sweep (an error of the order of its rtol, 1.2e-5, times |x| <= 10)."""
    results = _float_sweeps((jnp.float32, jnp.float64))
    single, double = results[jnp.float32], results[jnp.float64]
    eps = float(jnp.finfo(jnp.float32).eps)
    assert single.attrs["rtol"] == pytest.approx(100 * eps)
    assert single.attrs["atol"] == pytest.approx(eps)
    assert (double.attrs["rtol"], double.attrs["atol"]) == (1e-6, 1e-9)
    assert single.attrs["formulation"] == double.attrs["formulation"] == "rowspace"
    assert single.x_final.dtype == np.float32
    gap = np.abs(single.x_final.values.astype(np.float64) - double.x_final.values)
    assert np.abs(double.x_final.values).max() < 10
    assert gap.max() < 1e-3


def test_float32_sweep_near_roundoff_takes_the_parameter_flow():
    """Asked for float64's rtol (1e-6, near float32's roundoff), the auto formulation
    is the parameter flow, and it ends within 1e-4 of the float64 sweep."""
    results = _float_sweeps((jnp.float32, jnp.float64), rtol=1e-6, atol=1e-9)
    single, double = results[jnp.float32], results[jnp.float64]
    assert single.attrs["formulation"] == "parameter"
    assert double.attrs["formulation"] == "rowspace"
    gap = np.abs(single.x_final.values.astype(np.float64) - double.x_final.values)
    assert gap.max() < 1e-4


def test_solve_tolerances_by_precision():
    """`jm.solve`'s defaults: 1e-8/1e-10 in float64, 100/1 epsilons in float32
    (float64's 1e-8 is below float32's roundoff); the float32 solve ends within 1e-3
    of the float64 one."""
    from jaxmirror._solve import SOLVE_TOLERANCES
    from jaxmirror._tolerances import precision_tolerances

    eps = float(jnp.finfo(jnp.float32).eps)
    assert precision_tolerances(jnp.float64, None, None, SOLVE_TOLERANCES) == (
        1e-8,
        1e-10,
    )
    assert precision_tolerances(
        jnp.float32, None, None, SOLVE_TOLERANCES
    ) == pytest.approx((100 * eps, eps))
    assert precision_tolerances(jnp.float32, 1e-6, 1e-9, SOLVE_TOLERANCES) == (
        1e-6,
        1e-9,
    )
    problem, pair, _, _ = _instance()
    finals = {}
    for dtype in (jnp.float32, jnp.float64):
        prob = jm.LeastSquares(
            jnp.asarray(problem.Z, dtype), jnp.asarray(problem.y, dtype)
        )
        w0 = pair.init(jnp.zeros(problem.dim(), dtype), jnp.asarray(1.0, dtype))
        schedule = jm.SwitchOff(jnp.asarray(0.05, dtype), jnp.asarray(20.0, dtype))
        sol = jm.solve(prob, pair, schedule, w0, 200.0)
        assert sol.status == jm.Status.SUCCESS
        assert sol.x_final.dtype == dtype
        finals[dtype] = np.asarray(sol.x_final, np.float64)
    np.testing.assert_allclose(
        finals[jnp.float32], finals[jnp.float64], rtol=0, atol=1e-3
    )


def _prediction_cases():
    rng = np.random.default_rng(0)
    wide = jm.LeastSquares(rng.standard_normal((4, 6)), rng.standard_normal(4))
    tall = jm.LeastSquares(rng.standard_normal((8, 6)), rng.standard_normal(8))
    logistic = jm.Logistic(rng.standard_normal((4, 6)), np.sign(rng.standard_normal(4)))
    callable_loss = jm.Problem(lambda x: 0.5 * jnp.sum((x - 1.0) ** 2), n=6)
    schedules = {
        "switch_off": jm.SwitchOff(alpha=np.array([0.1, 0.2]), t_off=np.ones(2)),
        "constant": jm.Constant(np.array([0.1, 0.2])),
        "mixed": jm.Constant(np.array([0.0, 0.2])),  # a_inf = 0 and -inf
    }
    problems = dict(wide=wide, tall=tall, logistic=logistic, callable=callable_loss)
    return [
        pytest.param(problem, schedule, id=f"{pname}-{sname}")
        for pname, problem in problems.items()
        for sname, schedule in schedules.items()
    ]


@pytest.mark.parametrize("problem, schedules", _prediction_cases())
def test_sweep_and_implicit_bias_agree_on_when_a_limit_exists(problem, schedules):
    """One rule decides: the sweep predicts exactly where `implicit_bias` returns for
    every one of its configurations, and then its predictions are the same."""
    pair = jm.Hadamard()
    w0 = pair.init(jnp.zeros(6), scale=1.0)
    ds = jm.sweep(problem, pair, schedules, w0, 1.0, progress=False)
    limits, reasons = [], []
    for i in range(2):
        one = jax.tree_util.tree_map(lambda leaf: leaf[i], schedules)
        try:
            limits.append(jm.implicit_bias(problem, pair, one, w0))
        except ValueError as error:
            reasons.append(str(error).rstrip("."))
    if reasons:
        assert "x_predicted" not in ds, "the sweep predicted where implicit_bias raises"
        note = ds.attrs["prediction"]
        assert note.startswith("not available: ")
        assert all(reason in note for reason in reasons), (note, reasons)
    else:
        assert ds.attrs["prediction"] == "computed"
        np.testing.assert_allclose(ds.x_predicted.values, limits, rtol=0, atol=1e-10)


def test_chunks_cover_the_pending_configurations_in_power_of_two_buckets():
    """Adaptive chunks: every pending configuration exactly once and in order, each
    chunk padded to a power of two of units (a few compiled programs serve all), growing
    while chunks run fast and shrinking when they run slow."""
    from jaxmirror._sweep._chunks import Chunks as _Chunks

    chunks = _Chunks(unit=4, adaptive=True, size=70)
    pending = np.ones(70, bool)
    pending[8:12] = False  # a finished unit
    pending[41] = False  # a finished configuration inside a unit
    seen, sizes = [], []
    for index, padded in chunks.ranges(pending):
        seen.append(index)
        sizes.append(padded)
        assert padded >= len(index) and padded % 4 == 0
        assert (padded // 4) & (padded // 4 - 1) == 0  # a power of two of units
        chunks.measured(0.1)  # fast: grow
    np.testing.assert_array_equal(np.concatenate(seen), np.flatnonzero(pending))
    assert sizes[0] == 4 and max(sizes) > 4
    assert all(np.all(np.diff(i) > 0) for i in seen)
    grown = chunks.units_per_chunk
    chunks.measured(120.0)  # six times the 20 s aimed at: about a sixth
    assert chunks.units_per_chunk == grown // 8
    fixed = _Chunks(unit=4, adaptive=False, size=20)
    for _ in fixed.ranges(np.ones(20, bool)):
        fixed.measured(0.1)
    assert fixed.units_per_chunk == 1  # an explicit chunk size never changes


@pytest.mark.parametrize("batched", [False, True])
def test_a_degenerate_initialisation_is_refused_before_any_solve(batched):
    """A degenerate w0 (m0^2 = w0^2: the Legendre function has no finite scale) is a
    `ValueError` naming `w0` and saying why, shared or batched (where Equinox's
    run-time banner once replaced the reason)."""
    problem, _ = jm.datasets.sparse_regression(n=4, d=2, sparsity=1, seed=0)
    w0 = (jnp.ones(4), jnp.ones(4))
    if batched:
        w0 = _stack([w0, w0])
    with pytest.raises(ValueError, match=r"`w0`.*must be a non-degenerate") as error:
        jm.sweep(
            problem,
            jm.Hadamard(),
            jm.SwitchOff(np.full(2, 0.1), np.ones(2)),
            w0,
            1.0,
            progress=False,
        )
    assert "Above is the stack" not in str(error.value)
