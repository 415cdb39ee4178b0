"""The fused flow kernel (Pallas, interpret mode on a CPU) against the XLA path of
`jm.sweep`: the same final points, step counts and statuses, per configuration."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmirror as jm


K = 6  # configurations: fewer than one kernel block, so the block is padded


def _schedules(kind, dtype, top=0.3):
    alpha = jnp.asarray(np.linspace(0.02, top, K), dtype)
    if kind == "switch-off":
        return jm.SwitchOff(alpha, jnp.asarray(np.linspace(1.0, 12.0, K), dtype))
    if kind == "piecewise":
        boundaries = np.stack([np.linspace(0.5, 3.0, K), np.linspace(4.0, 9.0, K)], 1)
        values = np.stack([np.asarray(alpha), 0.5 * np.asarray(alpha), np.zeros(K)], 1)
        return jm.PiecewiseConstant(
            jnp.asarray(boundaries, dtype), jnp.asarray(values, dtype)
        )
    return jm.ExponentialDecay(alpha, jnp.asarray(np.linspace(0.1, 1.0, K), dtype))


def _instance(pair, dtype, seed=3):
    problem, _ = jm.datasets.sparse_regression(n=20, d=8, sparsity=2, seed=seed)
    problem = jm.LeastSquares(
        jnp.asarray(problem.Z, dtype), jnp.asarray(problem.y, dtype)
    )
    x0 = 0.3 * np.random.default_rng(seed).standard_normal(20)  # x0 != 0
    if isinstance(pair, jm.Square):  # x > 0, and no free scale
        return problem, pair.init(jnp.asarray(np.abs(x0) + 0.1, dtype))
    if isinstance(pair, jm.PowerDifference):  # positive factors: x0 = u^L - v^L
        return problem, pair.init(jnp.asarray(x0, dtype), jnp.asarray(0.9, dtype))
    return problem, pair.init(jnp.asarray(x0, dtype), jnp.asarray(0.7, dtype))


def _both(problem, pair, schedules, w0, t1=30.0, **kw):
    """The sweep on both backends, at tolerances where each x(t1) is within about
    1e-9 of the exact flow: a borderline accept/reject that roundoff flips (between
    the two paths, or between `vmap` and a single solve) then moves x(t1) by less
    than the 1e-8 compared."""
    kw = dict(rtol=1e-9, atol=1e-12) | kw
    common = dict(formulation="rowspace", predict=False, progress=False, **kw)
    fused = jm.sweep(problem, pair, schedules, w0, t1, backend="pallas", **common)
    xla = jm.sweep(
        problem, pair, schedules, w0, t1, backend="xla", strategy="vmap", **common
    )
    return fused, xla


def _assert_same_flow(fused, xla, tol, same_steps=True):
    assert fused.attrs["backend"] == "pallas" and xla.attrs["backend"] == "xla"
    np.testing.assert_array_equal(fused.status, xla.status)
    np.testing.assert_allclose(fused.x_final, xla.x_final, rtol=0, atol=tol)
    steps, reference = fused.num_steps.values, xla.num_steps.values
    if same_steps:  # the same algorithm with the same constants: the same steps
        np.testing.assert_array_equal(steps, reference)
    else:
        assert np.all(np.abs(steps - reference) <= 0.1 * reference), (steps, reference)


@pytest.mark.parametrize("schedule", ["switch-off", "piecewise", "exponential"])
@pytest.mark.parametrize(
    "pair", [jm.Hadamard(), jm.DiffSquares(), jm.Square()], ids=["had", "ds", "sq"]
)
def test_kernel_flow_equals_the_xla_path(pair, schedule):
    """Same algorithm, same steps: x(t1) to 1e-8 at the sweep's default tolerances."""
    problem, w0 = _instance(pair, jnp.float64)
    fused, xla = _both(problem, pair, _schedules(schedule, jnp.float64), w0)
    assert np.all(xla.status.values == jm.Status.SUCCESS)
    _assert_same_flow(fused, xla, 1e-8)


@pytest.mark.parametrize(
    "pair",
    [jm.PowerDifference(3, "matched"), jm.LogDifference()],
    ids=["power3", "logdiff"],
)
def test_kernel_runs_the_other_closed_form_pairs(pair):
    problem, w0 = _instance(pair, jnp.float64)
    schedules = _schedules("switch-off", jnp.float64, top=0.1)
    fused, xla = _both(problem, pair, schedules, w0)
    assert np.all(xla.status.values == jm.Status.SUCCESS)
    _assert_same_flow(fused, xla, 1e-8)


def test_kernel_float32_and_dopri5():
    """In float32 the error estimates carry roundoff of the order of the tolerance
    (an embedded error is a difference of nearly equal increments), and the kernel
    forms its fields as a block while the XLA path forms one configuration's (the
    same values to float32's last digits): a borderline accept or reject then goes
    the other way, and the step counts agree within 10%, not exactly (measured: up
    to 3 of about 90 steps at the float32 default tolerances, the same for a single
    diffeqsolve against the kernel's loop). In float64 they are equal."""
    pair = jm.Hadamard()
    problem, w0 = _instance(pair, jnp.float32)
    schedules = _schedules("switch-off", jnp.float32)
    for tolerances in (dict(rtol=None, atol=None), dict(rtol=1e-6, atol=1e-9)):
        fused, xla = _both(problem, pair, schedules, w0, **tolerances)
        assert fused.x_final.dtype == np.float32
        _assert_same_flow(fused, xla, 1e-4, same_steps=False)
    problem, w0 = _instance(pair, jnp.float64)
    schedules = _schedules("exponential", jnp.float64)
    fused, xla = _both(problem, pair, schedules, w0, solver=dfx.Dopri5())
    _assert_same_flow(fused, xla, 1e-8)


def test_stiff_configuration_reports_max_steps_alone():
    """One configuration with a large initial scale (fast, stiff dynamics for an
    explicit solver) runs out of steps; its block neighbours succeed, as on the XLA
    path."""
    pair = jm.Hadamard()
    problem, _ = _instance(pair, jnp.float64)
    scales = np.full(K, 0.7)
    scales[2] = 300.0
    x0 = jnp.asarray(0.3 * np.random.default_rng(0).standard_normal(20))
    w0 = jax.vmap(pair.init, in_axes=(None, 0))(x0, jnp.asarray(scales))
    schedules = _schedules("switch-off", jnp.float64)
    fused, xla = _both(problem, pair, schedules, w0, max_steps=600)
    status = fused.status.values
    assert status[2] == jm.Status.MAX_STEPS
    assert np.all(np.delete(status, 2) == jm.Status.SUCCESS)
    assert np.isinf(fused.x_final.values[2]).all()
    assert fused.num_steps.values[2] == 600
    _assert_same_flow(fused.drop_isel(config=2), xla.drop_isel(config=2), 1e-8)
    np.testing.assert_array_equal(status, xla.status.values)


def test_kernel_blocks_and_chunks_do_not_change_results():
    """Chunks of 5 configurations (padded within the kernel to a whole block) and one
    chunk of all of them give the same per-configuration results."""
    pair = jm.DiffSquares()
    problem, w0 = _instance(pair, jnp.float64)
    schedules = _schedules("switch-off", jnp.float64)
    common = dict(formulation="rowspace", predict=False, progress=False)
    whole = jm.sweep(problem, pair, schedules, w0, 30.0, backend="pallas", **common)
    parts = jm.sweep(
        problem, pair, schedules, w0, 30.0, backend="pallas", chunk_size=5, **common
    )
    np.testing.assert_allclose(parts.x_final, whole.x_final, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(parts.num_steps, whole.num_steps)


def test_kernel_is_refused_with_the_reason_and_auto_falls_back():
    pair = jm.Hadamard()
    problem, w0 = _instance(pair, jnp.float64)
    schedules = _schedules("switch-off", jnp.float64)
    run = lambda **kw: jm.sweep(
        problem,
        kw.pop("pair", pair),
        schedules,
        kw.pop("w0", w0),
        10.0,
        predict=False,
        progress=False,
        **kw,
    )
    cases = [
        (dict(backend="pallas", formulation="dual"), "row-space formulation"),
        (dict(backend="pallas", strategy="batched"), "strategy='batched'"),
        (dict(backend="pallas", solver=dfx.Dopri8()), "Tsit5 and Dopri5"),
        (
            dict(backend="pallas", stepsize_controller=dfx.PIDController(1e-6, 1e-9)),
            "default PI controller",
        ),
        (dict(backend="cuda"), "`backend` must be one of"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match="backend") as error:
            run(**kwargs)
        assert words in str(error.value)
    logistic = jm.Logistic(problem.Z, jnp.sign(problem.y))
    with pytest.raises(ValueError, match="one jm.LeastSquares problem"):
        jm.sweep(logistic, pair, schedules, w0, 10.0, backend="pallas", progress=False)
    # "auto" runs XLA on a CPU (the kernel on a GPU), silently, and says which.
    expected = "pallas" if jax.default_backend() == "gpu" else "xla"
    assert run(backend="auto").attrs["backend"] == expected
    assert run().attrs["backend"] == expected


def test_backend_is_part_of_a_stores_fingerprint(tmp_path):
    pair = jm.Hadamard()
    problem, w0 = _instance(pair, jnp.float64)
    schedules = _schedules("switch-off", jnp.float64)
    kw = dict(predict=False, progress=False, out=tmp_path / "s")
    jm.sweep(problem, pair, schedules, w0, 10.0, backend="pallas", **kw)
    with pytest.raises(ValueError, match="backend"):
        jm.sweep(problem, pair, schedules, w0, 10.0, backend="xla", resume=True, **kw)


def test_triton_needs_power_of_two_schedule_parameters():
    """On a GPU the kernel's arrays must have power-of-two sizes: schedules whose
    per-configuration parameters do not are named (and "auto" falls back to XLA)."""
    from jaxmirror._kernels._flow import triton_shapes_reason

    three = jm.PiecewiseConstant(jnp.ones((16, 2)).cumsum(1), jnp.ones((16, 3)))
    two = jm.PiecewiseConstant(jnp.ones((16, 1)), jnp.ones((16, 2)))
    assert "power-of-two" in triton_shapes_reason(three)
    assert triton_shapes_reason(two) is None
    assert triton_shapes_reason(_schedules("exponential", jnp.float64)) is None


def test_auto_falls_back_with_a_warning_where_the_kernel_does_not_compile():
    """`"auto"` compiles a kernel before it trusts it: built for a GPU on this CPU (as
    on a GPU where Triton failed), the kernel does not compile, and the sweep and the
    training run the XLA path with a warning, with the XLA path's results."""
    from jaxmirror._kernels import lowering_for_gpu

    if jax.default_backend() != "cpu":
        pytest.skip("on a GPU the kernel compiles: nothing to fall back from")
    pair = jm.Hadamard()
    problem, w0 = _instance(pair, jnp.float64)
    schedules = _schedules("switch-off", jnp.float64)
    kw = dict(predict=False, progress=False)
    reference = jm.sweep(problem, pair, schedules, w0, 10.0, backend="xla", **kw)
    with lowering_for_gpu(), pytest.warns(UserWarning, match="did not compile"):
        ds = jm.sweep(problem, pair, schedules, w0, 10.0, **kw)
    assert ds.attrs["backend"] == "xla"
    np.testing.assert_array_equal(ds.x_final, reference.x_final)
    train = dict(lr=0.01, steps=20, save_every=10)
    expected = jm.train(problem, pair, jm.SwitchOff(0.1, 2.0), w0, **train)
    with lowering_for_gpu(), pytest.warns(UserWarning, match="did not compile"):
        run = jm.train(problem, pair, jm.SwitchOff(0.1, 2.0), w0, **train)
    np.testing.assert_array_equal(run.xs, expected.xs)


@eqx.filter_jit
def _diffrax_steps(formulation, problem, schedule, y0, args, options, t1):
    """The ends of the accepted steps of `diffeqsolve`, configured as `jm.solve` and
    the sweep's vmap strategy configure it, and its attempted steps."""
    term = dfx.ODETerm(lambda t, y, a: formulation.field(t, y, problem, a))
    sol = dfx.diffeqsolve(
        term,
        options.solver,
        0.0,
        t1,
        None,
        y0,
        args=args,
        saveat=dfx.SaveAt(steps=True),
        stepsize_controller=options.stepsize_controller(y0, schedule.jump_ts()),
        max_steps=options.max_steps,
    )
    return sol.ts, sol.stats["num_steps"]


@pytest.mark.parametrize("tolerances", [(1e-6, 1e-9), (1e-9, 1e-12)], ids=str)
@pytest.mark.parametrize(
    "solver, schedule",
    [
        (dfx.Tsit5(), "switch-off"),
        (dfx.Tsit5(), "piecewise"),
        (dfx.Tsit5(), "exponential"),
        (dfx.Dopri5(), "piecewise"),
    ],
    ids=[
        "tsit5-switch-off",
        "tsit5-piecewise",
        "tsit5-exponential",
        "dopri5-piecewise",
    ],
)
def test_kernel_steps_are_diffrax_steps(tolerances, solver, schedule):
    """The kernel's Runge-Kutta loop, its constants read from diffrax's controller,
    accepts steps ending at the times diffeqsolve's steps end (relative 1e-12), and
    attempts as many steps, configuration by configuration."""
    from jaxmirror._kernels import _rk
    from jaxmirror._solve import default_controller, solver_options

    pair = jm.Hadamard()
    problem, w0 = _instance(pair, jnp.float64)
    schedules = _schedules(schedule, jnp.float64)
    formulation = jm.RowSpaceFormulation()
    options = solver_options(solver, *tolerances, max_steps=20_000)
    t1 = jnp.asarray(30.0)
    init = jax.vmap(formulation.init, in_axes=(None, None, 0, None))
    y0, args = init(problem, pair, schedules, w0)
    controller = default_controller(*tolerances, y0)
    rule = _rk.StepRule.of(solver, controller, options.max_steps, y0.shape[1])
    field = jax.vmap(formulation.field, in_axes=(0, 0, None, 0))
    row_field = lambda t, y, a: formulation.field(t, y, problem, a)
    jumps = schedules.jump_ts()
    jumps = jnp.full((K, 1), jnp.inf) if jumps is None else jumps.reshape(K, -1)
    _, _, steps, finished, ends = _rk.integrate_rows(
        rule,
        lambda t, y: field(t, y, problem, args),
        y0,
        _rk.first_steps(controller, solver, row_field, y0, args),
        t1,
        _rk.end_floor(t1),
        jnp.sort(jumps, axis=1),
        record=4096,
    )
    assert np.all(np.asarray(finished))
    for k in range(K):
        one = jax.tree_util.tree_map(lambda leaf: leaf[k], (schedules, y0, args))
        reference, attempted = _diffrax_steps(
            formulation, problem, one[0], one[1], one[2], options, t1
        )
        reference = np.asarray(reference)[np.isfinite(reference)]
        kernel = np.asarray(ends[k])
        kernel = kernel[np.isfinite(kernel)]
        assert len(reference) < 4096
        assert int(steps[k]) == attempted
        np.testing.assert_allclose(kernel, reference, rtol=1e-12, atol=0)
