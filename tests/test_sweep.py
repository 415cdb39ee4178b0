"""Sweeps: equality with single solves, sharding, interruption and resume, failures,
configuration files and the command line."""

import pathlib
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import jaxmirror as jm
from jaxmirror import _config, cli


WORKER = pathlib.Path(__file__).with_name("_sweep_worker.py")


def _run_worker(tmp_path, name, **kwargs):
    save = tmp_path / f"{name}.npz"
    command = [sys.executable, str(WORKER), "--save", str(save)]
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        command += [flag] if value is True else [flag, str(value)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    return dict(np.load(save))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


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
    assert (tmp_path / "out0" / "results.nc").exists()
    assert len(list((tmp_path / "out0" / "chunks").glob("*.nc"))) > 0
    assert not (tmp_path / "out1" / "config.json").exists()
    assert list((tmp_path / "out1").rglob("*.nc")) == []


# Tight on both sides (each endpoint within ~1e-10 of the exact flow), so that sweeps
# and single solves can be compared at 1e-9, the accuracy of the computation.
TIGHT = dict(rtol=1e-12, atol=1e-12, max_steps=200_000)


def _instance():
    problem, x_star = jm.datasets.sparse_regression(n=30, d=12, sparsity=3, seed=4)
    pair = jm.Hadamard()
    return problem, pair, pair.init(jnp.zeros(30), scale=1.0), x_star


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
        if strategy == "vmap":
            assert int(ds.num_steps.values[i]) == int(single.num_steps)
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


def test_sharded_equals_single_device(tmp_path):
    for strategy in ("vmap", "batched"):
        one = _run_worker(tmp_path, f"one_{strategy}", devices=1, strategy=strategy)
        four = _run_worker(tmp_path, f"four_{strategy}", devices=4, strategy=strategy)
        for key in one:
            np.testing.assert_allclose(
                four[key], one[key], rtol=0, atol=1e-13, err_msg=f"{strategy}: {key}"
            )


def test_kill_and_resume_loses_and_recomputes_nothing(tmp_path):
    reference = _run_worker(tmp_path, "reference")
    out = tmp_path / "sweep"
    save = tmp_path / "killed.npz"
    command = [
        sys.executable,
        str(WORKER),
        "--save",
        str(save),
        "--out",
        str(out),
        "--slow",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    chunks = out / "chunks"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(chunks.glob("chunk_*.nc"))) < 2:
        time.sleep(0.05)
    process.kill()
    process.wait()
    finished = sorted(chunks.glob("chunk_*.nc"))
    assert 2 <= len(finished) < 5, "the sweep was not interrupted mid-way"
    # A write torn by a crash leaves only a temporary file, which resume ignores.
    (chunks / "chunk_000004.nc.tmp").write_bytes(b"torn")
    stamps = {p.name: p.stat().st_mtime_ns for p in finished}
    resumed = _run_worker(tmp_path, "resumed", out=out, resume=True)
    for p in finished:  # finished chunks were not recomputed
        assert p.stat().st_mtime_ns == stamps[p.name]
    assert len(list(chunks.glob("chunk_*.nc"))) == 5
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key])
    saved = xr.load_dataset(out / "results.nc", engine="scipy")
    np.testing.assert_array_equal(saved.x_final.values, reference["x_final"])
    assert saved.attrs["jaxmirror_version"] == jm.__version__


def test_out_directory_guards(tmp_path):
    problem, pair, w0, _ = _instance()
    schedules = jm.SwitchOff(alpha=np.array([0.0, 0.1]), t_off=np.array([1.0, 2.0]))
    jm.sweep(problem, pair, schedules, w0, 5.0, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="`out`: .* already holds a sweep"):
        jm.sweep(problem, pair, schedules, w0, 5.0, out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="`resume`: .* another configuration"):
        jm.sweep(
            problem, pair, schedules, w0, 6.0, out=tmp_path, resume=True, progress=False
        )


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda p, pr, w: jm.sweep(p, pr, jm.SwitchOff(0.1, 1.0), w, 5.0),
            "`schedules` must be a schedule whose parameters all carry",
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


GOOD = """
problem: {kind: sparse_regression, n: 20, d: 8, sparsity: 2, seed: 1}
pair: hadamard
init: {scale: 1.0}
schedule:
  kind: switch_off
  grid: {alpha: [0.0, 0.1, 3], t_off: {values: [2.0, 5.0]}}
t1: 20.0
solver: {rtol: 1.0e-8, atol: 1.0e-10}
sweep: {chunk_size: 4}
"""


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            ("t1: 20.0", "t1: 20.0\nepochs: 3"),
            r"unknown key\(s\) \['epochs'\] in `the configuration",
        ),
        (("kind: switch_off", "kind: warmup"), "`schedule.kind` must be one of"),
        (
            ("t_off: {values: [2.0, 5.0]}", "rate: [0, 1, 2]"),
            r"unknown key\(s\) \['rate'\] in `schedule.grid`",
        ),
        (("rtol: 1.0e-8", "rtol: -1.0"), "`solver.rtol` must be a number > 0"),
        (("pair: hadamard", "pair: tanh"), "`pair` must be one of"),
        (
            ("alpha: [0.0, 0.1, 3]", "alpha: [0.0, 0.1]"),
            r"`schedule.grid.alpha` must be \[start, stop, num\]",
        ),
        (("t1: 20.0", ""), r"missing required key\(s\) \['t1'\]"),
        (("n: 20", "n: 2.5"), "`problem.n` must be an integer > 0"),
    ],
)
def test_config_validation_names_the_bad_key(tmp_path, edit, match):
    path = tmp_path / "config.yaml"
    path.write_text(GOOD.replace(*edit))
    with pytest.raises(_config.ConfigError, match=match):
        _config.build(_config.load(path))


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['echo unsafe']\n")
    with pytest.raises(_config.ConfigError, match="not valid YAML"):
        _config.load(path)


def test_command_line_sweep_and_plot(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(GOOD)
    out = tmp_path / "run"
    assert cli.main(["sweep", str(config), "--out", str(out)]) == 0
    assert cli.main(["plot", str(out)]) == 0
    assert (out / "results.nc").exists() and (out / "config.json").exists()
    assert (out / "phase_recovery_error.png").stat().st_size > 10_000
    ds = xr.load_dataset(out / "results.nc", engine="scipy")
    assert ds.x_final.shape == (6, 20)
    assert cli.main(["sweep", str(config), "--out", str(out), "--resume"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("pair: hadamard", "pair: tanh"))
    assert cli.main(["sweep", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "`pair` must be one of" in capsys.readouterr().err


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
    assert name(problem, pair, jnp.float32) == jm.ParameterFormulation.name
    assert name(problem, Product(), jnp.float64) == jm.ParameterFormulation.name


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
