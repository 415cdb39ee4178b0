"""`solve`: four formulations, an independent integral identity, scipy, batching, status."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import jaxmirror as jm

from .helpers import CLOSED_FORM_PAIRS, PAIR_IDS, random_instance


# Tight solver tolerances: the four formulations are integrated to ~1e-12, so they must
# agree to 1e-8 relative with a wide margin for error growth over the horizon.
TIGHT = dict(solver=dfx.Dopri8(), rtol=1e-12, atol=1e-12, max_steps=200_000)
TIMES = jnp.array([0.5, 2.0, 3.0, 5.0, 12.0, 30.0])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("pair", CLOSED_FORM_PAIRS, ids=PAIR_IDS)
def test_formulations_agree(pair, seed):
    problem, w0, _ = random_instance(jax.random.PRNGKey(seed), pair)
    schedule = jm.SwitchOff(0.2, 3.0)
    sols = {
        f: jm.solve(
            problem, pair, schedule, w0, t1=30.0, saveat=TIMES, formulation=f, **TIGHT
        )
        for f in ("parameter", "mirror", "dual", "rowspace")
    }
    for f, sol in sols.items():
        assert int(sol.status) == jm.Status.SUCCESS, f
    ref = np.asarray(sols["parameter"].xs)
    scale = np.max(np.abs(ref), axis=1, keepdims=True)
    for f in ("mirror", "dual", "rowspace"):
        rel = np.max(np.abs(np.asarray(sols[f].xs) - ref) / scale)
        assert rel <= 1e-8, f"{f} vs parameter: max relative difference {rel:.2e}"


@pytest.mark.parametrize("pair", CLOSED_FORM_PAIRS, ids=PAIR_IDS)
def test_mirror_identity_along_parameter_flow(pair):
    r"""grad R_{a_t}(x_t) - grad R_0(x_0) = -int_0^t grad f(x_s) ds, from an independent solve.

    The test integrates the parameter flow and the integral of grad f together, with its
    own vector field built from `jax.grad` of f(g(w)) + alpha h(w).
    """
    problem, w0, _ = random_instance(jax.random.PRNGKey(7), pair)
    schedule = jm.SwitchOff(0.15, 4.0)

    def field(t, state, args):
        w, _ = state
        objective = lambda w_: problem.loss(pair.g(w_)) + schedule(t) * pair.h(w_)
        dw = jax.tree_util.tree_map(jnp.negative, jax.grad(objective)(w))
        return dw, jax.grad(problem.loss)(pair.g(w))

    sol = dfx.diffeqsolve(
        dfx.ODETerm(field),
        dfx.Dopri8(),
        0.0,
        20.0,
        None,
        (w0, jnp.zeros(12)),
        saveat=dfx.SaveAt(ts=TIMES[:5]),
        stepsize_controller=dfx.ClipStepSizeController(
            dfx.PIDController(rtol=1e-12, atol=1e-12), jump_ts=jnp.array([4.0])
        ),
        max_steps=100_000,
    )
    ws, integral = sol.ys
    xs = jax.vmap(pair.g)(ws)
    leg = pair.legendre(w0)
    lhs = (
        jax.vmap(leg.grad)(xs, schedule.a(TIMES[:5])) - leg.grad(pair.g(w0), 0.0)[None]
    )
    np.testing.assert_allclose(lhs, -integral, rtol=0, atol=1e-9)
    # And jaxmirror's parameter formulation reproduces the same trajectory.
    ours = jm.solve(
        problem,
        pair,
        schedule,
        w0,
        t1=20.0,
        saveat=TIMES[:5],
        formulation="parameter",
        **TIGHT,
    )
    np.testing.assert_allclose(ours.xs, xs, rtol=1e-9, atol=1e-11)


def test_against_scipy_dop853():
    """The Hadamard primal ODE written in NumPy, integrated by scipy."""
    pair = jm.Hadamard()
    problem, w0, _ = random_instance(jax.random.PRNGKey(3), pair)
    Z, y = np.asarray(problem.Z), np.asarray(problem.y)
    alpha, t_off = 0.1, 2.0

    def rhs(t, mw):
        m, w = np.split(mw, 2)
        gf = Z.T @ (Z @ (m * w) - y)
        a = alpha if t < t_off else 0.0
        return np.concatenate([-w * gf - a * m, -m * gf - a * w])

    ref = scipy.integrate.solve_ivp(
        rhs,
        (0.0, 10.0),
        np.concatenate([np.asarray(w) for w in w0]),
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
        t_eval=[1.0, 2.0, 5.0, 10.0],
    )
    m, w = np.split(ref.y.T, 2, axis=1)
    for formulation in ("parameter", "dual"):
        sol = jm.solve(
            problem,
            pair,
            jm.SwitchOff(alpha, t_off),
            w0,
            t1=10.0,
            saveat=jnp.array([1.0, 2.0, 5.0, 10.0]),
            formulation=formulation,
            **TIGHT,
        )
        np.testing.assert_allclose(sol.xs, m * w, rtol=1e-8, atol=1e-10)


# Batched and unbatched solves may differ by rounding (different kernels, e.g. on a
# GPU), amplified by error control: both sides run at rtol = atol = 1e-12, so each is
# within ~1e-10 of the exact flow, and they are compared at 1e-9, the accuracy of the
# computation, never bit for bit.
BATCH = dict(rtol=1e-12, atol=1e-12, max_steps=200_000)


def test_vmap_over_schedules_equals_loop_and_does_not_recompile():
    pair = jm.Hadamard()
    problem, w0, _ = random_instance(jax.random.PRNGKey(0), pair)
    alphas, t_offs = jnp.array([0.0, 0.05, 0.2]), jnp.array([1.0, 3.0, 5.0])

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def final(schedule):
        sol = jm.solve(problem, pair, schedule, w0, t1=15.0, **BATCH)
        return sol.x_final, sol.num_steps

    batched, steps = jax.vmap(final)(jm.SwitchOff(alpha=alphas, t_off=t_offs))
    loop = [final(jm.SwitchOff(a, t)) for a, t in zip(alphas, t_offs)]
    assert batched.shape == (3, 12)
    np.testing.assert_allclose(
        batched, np.stack([x for x, _ in loop]), rtol=1e-9, atol=1e-9
    )
    # Each configuration has its own step-size controller under vmap.
    assert len(set(np.asarray(steps).tolist())) == 3, steps
    np.testing.assert_array_equal(steps, [int(n) for _, n in loop])


def test_vmap_over_initialisations():
    pair = jm.DiffSquares()
    problem, _, _ = random_instance(jax.random.PRNGKey(0), pair)
    scales = jnp.array([1e-3, 0.1, 1.0])

    def run(s):
        sol = jm.solve(
            problem,
            pair,
            jm.Constant(0.0),
            pair.init(jnp.zeros(12), s),
            t1=50.0,
            formulation="dual",
            **BATCH,
        )
        return sol.x_final, sol.num_steps

    batched, steps = jax.vmap(run)(scales)
    np.testing.assert_allclose(
        batched, np.stack([run(s)[0] for s in scales]), rtol=1e-9, atol=1e-9
    )
    assert len(set(np.asarray(steps).tolist())) == 3, steps


def test_user_pair_needs_only_g_h_and_init():
    class MyHadamard(jm.AbstractPair):
        def g(self, w):
            return w["m"] * w["w"]

        def h(self, w):
            return 0.5 * (jnp.sum(w["m"] ** 2) + jnp.sum(w["w"] ** 2))

        def init(self, x0=None, scale=1.0, *, key=None):
            m0 = jnp.sqrt(0.5 * (jnp.hypot(scale**2, 2.0 * x0) + scale**2))
            return {"m": m0, "w": x0 / m0}

    problem, (m0, v0), _ = random_instance(jax.random.PRNGKey(2), jm.Hadamard())
    x0 = m0 * v0
    mine = MyHadamard().init(x0, scale=0.5)
    np.testing.assert_allclose(mine["m"], m0, rtol=1e-14)  # the same convention
    schedule = jm.SwitchOff(0.1, 2.0)
    ours = jm.solve(
        problem,
        MyHadamard(),
        schedule,
        mine,
        t1=8.0,
        formulation="parameter",
        **TIGHT,
    )
    ref = jm.solve(
        problem, jm.Hadamard(), schedule, (m0, v0), t1=8.0, formulation="dual", **TIGHT
    )
    assert set(ours.ws) == {"m", "w"}
    np.testing.assert_allclose(ours.x_final, ref.x_final, rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="closed-form Legendre"):
        jm.solve(problem, MyHadamard(), schedule, mine, t1=8.0, formulation="dual")
    # "auto" (the default) picks the formulation that can run: the parameter flow.
    auto = jm.solve(problem, MyHadamard(), schedule, mine, t1=8.0, **TIGHT)
    assert auto.formulation == jm.ParameterFormulation.name


def test_status_max_steps():
    pair = jm.Hadamard()
    problem, w0, _ = random_instance(jax.random.PRNGKey(0), pair)
    sol = jm.solve(problem, pair, jm.Constant(0.0), w0, t1=1e4, max_steps=10)
    assert int(sol.status) == jm.Status.MAX_STEPS
    assert int(sol.num_steps) == 10


def test_status_nonfinite():
    """A loss whose gradient is NaN is reported, not returned as a silent NaN."""
    pair = jm.Square()
    problem = jm.Problem(lambda x: jnp.sum(jnp.sqrt(x - 1.0)), n=3)
    sol = jm.solve(problem, pair, jm.Constant(0.0), pair.init(jnp.full(3, 0.5)), t1=1.0)
    assert int(sol.status) == jm.Status.NONFINITE


def test_logistic_gradient_and_flow(getkey):
    Z = jax.random.normal(getkey(), (8, 5))
    y = jnp.sign(jax.random.normal(getkey(), (8,)))
    problem = jm.Logistic(Z, y)
    x = jax.random.normal(getkey(), (5,))
    eps = 1e-5  # truncation ~eps^2, roundoff ~1e-16 |f| / eps: both << 1e-9
    fd = jnp.array(
        [
            (problem.loss(x + eps * e) - problem.loss(x - eps * e)) / (2 * eps)
            for e in jnp.eye(5)
        ]
    )
    np.testing.assert_allclose(problem.grad(x), fd, rtol=1e-8, atol=1e-9)
    pair = jm.Hadamard()
    w0 = pair.init(jnp.zeros(5), scale=0.5)
    sol = jm.solve(
        problem, pair, jm.Constant(0.01), w0, t1=20.0, saveat=jnp.array([0.0, 20.0])
    )
    assert int(sol.status) == jm.Status.SUCCESS
    assert problem.loss(sol.xs[1]) < problem.loss(sol.xs[0])


def test_callable_problem():
    pair = jm.Square()
    target = jnp.array([1.0, 2.0])
    sol = jm.solve(
        lambda x: 0.5 * jnp.sum((x - target) ** 2),
        pair,
        jm.Constant(0.0),
        pair.init(jnp.array([0.5, 0.5])),
        t1=50.0,
    )
    np.testing.assert_allclose(sol.x_final, target, rtol=1e-6)


@pytest.mark.parametrize(
    "kind", ["logistic", "matrix_sensing", "batched_over_x0"], ids=str
)
def test_rowspace_formulation_matches_dual(kind, getkey):
    """The row-space flow (d coordinates) and the dual flow (n coordinates) agree for
    every loss of the predictions, and under vmap over initialisations."""
    pair = jm.Hadamard()
    if kind == "logistic":
        Z = jax.random.normal(getkey(), (6, 15))
        labels = jnp.where(jax.random.normal(getkey(), (6,)) > 0, 1.0, -1.0)
        problem = jm.Logistic(Z, labels)
    else:
        A = jax.random.normal(getkey(), (7, 3, 4)) / jnp.sqrt(7.0)
        problem = jm.MatrixSensing(A, jax.random.normal(getkey(), (7,)))
    n = problem.dim()
    schedule = jm.SwitchOff(0.1, 2.0)

    def both(x0):
        w0 = pair.init(x0, 0.7)
        return [
            jm.solve(
                problem,
                pair,
                schedule,
                w0,
                t1=15.0,
                saveat=TIMES[:5],
                formulation=f,
                **TIGHT,
            ).xs
            for f in ("dual", "rowspace")
        ]

    if kind == "batched_over_x0":
        dual, row = jax.vmap(both)(0.3 * jax.random.normal(getkey(), (3, n)))
    else:
        dual, row = both(0.3 * jax.random.normal(getkey(), (n,)))
    np.testing.assert_allclose(row, dual, rtol=1e-8, atol=1e-10)


def test_rowspace_state_is_the_integral_of_the_prediction_gradient():
    r"""theta_t - theta_0 = D^T mu_t: the dual flow's mirror coordinate stays in the row
    space, and mu is recovered by least squares from an independent dual solve."""
    pair = jm.DiffSquares()
    problem, w0, _ = random_instance(jax.random.PRNGKey(3), pair)
    schedule = jm.LinearDecay(0.3, 6.0)
    leg = pair.legendre(w0)
    dual = jm.solve(
        problem,
        pair,
        schedule,
        w0,
        t1=10.0,
        saveat=TIMES[:4],
        formulation="dual",
        **TIGHT,
    )
    thetas = jax.vmap(leg.grad)(dual.xs, jax.vmap(schedule.a)(TIMES[:4]))
    shift = thetas - leg.grad(pair.g(w0), 0.0)[None]
    D = np.asarray(problem.design())
    mu, *_ = np.linalg.lstsq(D.T, np.asarray(shift).T, rcond=None)
    np.testing.assert_allclose(D.T @ mu, np.asarray(shift).T, atol=1e-9)


def test_step_size_controller_is_pi_where_estimates_are_clean():
    """PI control where `rtol` is above the dtype's roundoff floor (100 epsilons);
    integral-only below it (float32 at rtol 1e-6), where roundoff near rtol makes the
    proportional term take more steps (RESULTS.md)."""
    from jaxmirror._solve import default_controller

    double = default_controller(1e-6, 1e-9, jnp.zeros(3, jnp.float64))
    single = default_controller(1e-6, 1e-9, (jnp.zeros(3, jnp.float32),))
    single_default = default_controller(1.2e-5, 1.2e-7, jnp.zeros(3, jnp.float32))
    assert (double.pcoeff, double.icoeff) == (0.3, 0.3)
    assert (single.pcoeff, single.icoeff) == (0, 1)
    assert (single_default.pcoeff, single_default.icoeff) == (0.3, 0.3)


@pytest.mark.parametrize(
    "alpha, t_off, converged",
    [
        (0.1, 100.0, False),
        (0.094, 100.0, False),
        (0.02, 100.0, True),
        (0.1, 10.0, True),
    ],
)
def test_converged_flags_the_unfinished_flow(alpha, t_off, converged):
    """A strong weight-decay phase (alpha t_off = 10) shrinks the Legendre scale so far
    that the small coordinates have not reached their limit by t1 = 2000, although the
    solve succeeds: `converged` says so, and `distance_to_limit` is the right size
    (checked against the predicted limit). Its neighbours with less total weight
    decay have converged."""
    problem, _ = jm.datasets.sparse_regression(n=100, d=40, sparsity=5, seed=0)
    pair = jm.Hadamard()
    w0 = pair.init(jnp.zeros(100), scale=1.0)
    schedule = jm.SwitchOff(alpha, t_off)
    sol = jm.solve(problem, pair, schedule, w0, t1=2000.0, rtol=1e-8, atol=1e-10)
    assert int(sol.status) == jm.Status.SUCCESS
    assert bool(sol.converged) == converged
    remaining = float(
        jnp.max(jnp.abs(sol.x_final - jm.implicit_bias(problem, pair, schedule, w0)))
    )
    estimate = float(sol.distance_to_limit)
    if converged:
        assert remaining < 1e-7 and estimate < 1e-7, (remaining, estimate)
    else:  # the Newton estimate is within a factor of 3 of the true distance
        assert remaining > 1e-4 and remaining / 3 <= estimate <= 3 * remaining


def test_converged_without_a_closed_form():
    """Gaussian matrix sensing with U V^T: no closed form, no prediction. The estimate
    of the distance still to go matches a much longer solve, and the flow counts as
    converged once it is there."""
    problem, _ = jm.datasets.gaussian_sensing(n1=5, n2=4, d=12, rank=2, seed=3)
    pair = jm.MatrixFactorization((5, 4), 4)
    w0 = pair.init(scale=0.3, key=jax.random.PRNGKey(1))
    schedule = jm.SwitchOff(0.05, 20.0)
    options = dict(rtol=1e-10, atol=1e-12, max_steps=10**6)
    limit = jm.solve(problem, pair, schedule, w0, t1=20_000.0, **options)
    assert bool(limit.converged)
    early = jm.solve(problem, pair, schedule, w0, t1=50.0, **options)
    late = jm.solve(problem, pair, schedule, w0, t1=1000.0, **options)
    remaining = float(jnp.max(jnp.abs(early.x_final - limit.x_final)))
    assert not bool(early.converged) and remaining > 1e-6
    np.testing.assert_allclose(float(early.distance_to_limit), remaining, rtol=0.3)
    assert bool(late.converged)
    assert float(jnp.max(jnp.abs(late.x_final - limit.x_final))) < 1e-9


def test_documented_saveat_controllers_and_adjoints():
    """SaveAt(ts=...) equals an array of times; any adaptive controller can be passed
    (and is still clipped at the jumps); the exact adjoints agree, ImplicitAdjoint
    (row space, converged) gives the gradient of the predicted limit, and the adjoints
    that would be wrong here are refused."""
    pair = jm.Hadamard()
    problem, w0, _ = random_instance(jax.random.PRNGKey(4), pair)
    schedule = jm.SwitchOff(0.1, 2.0)
    as_saveat = jm.solve(
        problem, pair, schedule, w0, t1=5.0, saveat=dfx.SaveAt(ts=TIMES[:2]), **TIGHT
    )
    as_array = jm.solve(problem, pair, schedule, w0, t1=5.0, saveat=TIMES[:2], **TIGHT)
    np.testing.assert_array_equal(as_saveat.xs, as_array.xs)
    controller = dfx.PIDController(rtol=1e-12, atol=1e-12, pcoeff=0.4, icoeff=0.3)
    custom = jm.solve(
        problem,
        pair,
        schedule,
        w0,
        t1=5.0,
        saveat=TIMES[:2],
        solver=dfx.Dopri8(),
        stepsize_controller=controller,
    )
    np.testing.assert_allclose(custom.xs, as_array.xs, rtol=1e-9, atol=1e-10)

    def gradient(adjoint, formulation, t1=5.0, options=TIGHT):
        def outcome(alpha):
            return jnp.sum(
                jm.solve(
                    *(problem, pair, jm.SwitchOff(alpha, 2.0), w0),
                    t1=t1,
                    formulation=formulation,
                    adjoint=adjoint,
                    **options,
                ).x_final
            )

        return float(jax.grad(outcome)(0.1))

    reference = gradient(dfx.RecursiveCheckpointAdjoint(), "parameter")
    assert gradient(dfx.DirectAdjoint(), "dual") == pytest.approx(reference, rel=1e-8)
    limit = jax.grad(
        lambda a: jnp.sum(jm.implicit_bias(problem, pair, jm.SwitchOff(a, 2.0), w0))
    )(0.1)
    # ImplicitAdjoint's root solve (optimistix) mixes int and float dtypes, which the
    # strict promotion of these tests refuses.
    with jax.numpy_dtype_promotion("standard"):
        loose = dict(rtol=1e-10, atol=1e-12, max_steps=10**5)
        implicit = gradient(dfx.ImplicitAdjoint(), "rowspace", 2000.0, loose)
    assert implicit == pytest.approx(float(limit), rel=1e-7)
    with pytest.raises(ValueError, match="`adjoint`: BacksolveAdjoint"):
        gradient(dfx.BacksolveAdjoint(), "dual")
    with pytest.raises(ValueError, match="`adjoint`: ImplicitAdjoint .* dual"):
        gradient(dfx.ImplicitAdjoint(), "dual")
