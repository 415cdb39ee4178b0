"""Gradients through `solve` and `implicit_bias` against central finite differences,
and learning a schedule with `optimize_schedule`."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate

import jaxmirror as jm

from .helpers import random_instance


# Central differences with h = 1e-4 have truncation error ~1e-8 and solver noise
# ~ tol / h ~ 1e-8 at tol = 1e-12: both far below the 1e-5 relative target.
H = 1e-4
TIGHT = dict(solver=dfx.Dopri8(), rtol=1e-12, atol=1e-12, max_steps=200_000)


def _central_difference(fn, params):
    return np.array(
        [
            (fn(params + H * e) - fn(params - H * e)) / (2 * H)
            for e in np.eye(len(params))
        ]
    )


def _instance():
    pair = jm.Hadamard()
    problem, _, x_star = random_instance(jax.random.PRNGKey(11), pair)
    return problem, pair, x_star


@pytest.mark.parametrize("formulation", ["parameter", "dual", "rowspace"])
def test_solve_gradients_in_alpha_t_off_and_scale(formulation):
    problem, pair, x_star = _instance()

    def outcome(params):
        alpha, t_off, scale = params
        w0 = pair.init(jnp.zeros(12), scale=scale)
        x = jm.solve(
            problem,
            pair,
            jm.SwitchOff(alpha, t_off),
            w0,
            t1=8.0,
            formulation=formulation,
            **TIGHT,
        ).x_final
        return jnp.sum((x - x_star) ** 2)

    params = jnp.array([0.3, 2.5, 0.8])
    grad = np.asarray(jax.grad(outcome)(params))
    fd = _central_difference(
        lambda p: float(outcome(jnp.asarray(p))), np.asarray(params)
    )
    assert (
        abs(grad[1]) > 1e-3
    )  # t_off matters, and its gradient is not lost at the jump
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def test_solve_gradient_in_problem_data():
    problem, pair, x_star = _instance()
    w0 = pair.init(jnp.zeros(12), scale=0.7)
    direction = jax.random.normal(jax.random.PRNGKey(0), problem.Z.shape)

    def outcome(eps):
        prob = jm.LeastSquares(problem.Z + eps * direction, problem.y)
        x = jm.solve(prob, pair, jm.SwitchOff(0.2, 2.0), w0, t1=8.0, **TIGHT).x_final
        return jnp.sum((x - x_star) ** 2)

    grad = float(jax.grad(outcome)(jnp.array(0.0)))
    fd = (float(outcome(jnp.array(H))) - float(outcome(jnp.array(-H)))) / (2 * H)
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def test_implicit_bias_gradients_in_alpha_t_off_and_scale():
    problem, pair, x_star = _instance()

    def outcome(params):
        alpha, t_off, scale = params
        w0 = pair.init(jnp.zeros(12), scale=scale)
        x = jm.implicit_bias(problem, pair, jm.SwitchOff(alpha, t_off), w0)
        return jnp.sum((x - x_star) ** 2)

    params = jnp.array([0.3, 2.5, 0.8])
    grad = np.asarray(jax.grad(outcome)(params))
    fd = _central_difference(
        lambda p: float(outcome(jnp.asarray(p))), np.asarray(params)
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def test_learnable_schedule_gradients_match_flow_and_prediction():
    """d outcome / d raw through implicit_bias equals the flow's (long horizon)."""
    problem, pair, x_star = _instance()
    w0 = pair.init(jnp.zeros(12), scale=0.8)
    boundaries = jnp.array([1.0, 2.5, 4.0])

    def via_bias(raw):
        x = jm.implicit_bias(problem, pair, jm.PiecewiseSwitchOff(boundaries, raw), w0)
        return jnp.sum((x - x_star) ** 2)

    raw = jnp.array([-1.0, 0.3, -2.0])
    grad = np.asarray(jax.grad(via_bias)(raw))
    fd = _central_difference(lambda r: float(via_bias(jnp.asarray(r))), np.asarray(raw))
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def test_piecewise_switch_off_is_nonnegative_and_exact():
    raw = jnp.array([-30.0, 0.0, 4.0])
    sched = jm.PiecewiseSwitchOff(jnp.array([1.0, 2.0, 5.0]), raw)
    ts = jnp.linspace(0.0, 8.0, 81)
    alphas = jax.vmap(sched)(ts)
    assert np.all(np.asarray(alphas) >= 0)
    assert float(sched(5.0)) == 0.0
    for t in [0.5, 1.5, 3.0, 7.0]:
        ref, _ = scipy.integrate.quad(
            lambda s: float(sched(s)), 0.0, t, points=[1.0, 2.0, 5.0], epsabs=1e-13
        )
        np.testing.assert_allclose(
            float(sched.integral(t)), ref, rtol=1e-12, atol=1e-14
        )
    np.testing.assert_allclose(float(sched.a_inf()), -float(sched.integral(100.0)))
    back = jm.PiecewiseSwitchOff.from_values(
        jnp.array([1.0, 2.0]), jnp.array([0.1, 0.02])
    )
    np.testing.assert_allclose(back.values()[:2], [0.1, 0.02], rtol=1e-12)
    with pytest.raises(ValueError, match="`boundaries` must be strictly increasing"):
        jm.PiecewiseSwitchOff(jnp.array([2.0, 1.0]), jnp.zeros(2))
    with pytest.raises(ValueError, match="`raw` must have the shape of `boundaries`"):
        jm.PiecewiseSwitchOff(jnp.array([1.0, 2.0]), jnp.zeros(3))


def test_optimize_schedule_lowers_the_validation_error():
    pair = jm.Hadamard()
    problem, x_star = jm.datasets.sparse_regression(n=40, d=16, sparsity=3, seed=2)
    rng = np.random.default_rng(7)
    Z_val = rng.standard_normal((30, 40)) / np.sqrt(16)
    y_val = Z_val @ x_star

    def validation(x):
        return jnp.mean((jnp.asarray(Z_val) @ x - jnp.asarray(y_val)) ** 2)

    w0 = pair.init(jnp.zeros(40), scale=1.0)
    start = jm.PiecewiseSwitchOff.from_values(
        jnp.array([5.0, 10.0]), jnp.array([0.01, 0.01])
    )
    result = jm.optimize_schedule(
        problem, pair, w0, validation, start, steps=30, optimizer=optax.adam(0.3)
    )
    assert result.num_solves == 30 and result.nonfinite_step == -1
    assert isinstance(result.schedule, jm.PiecewiseSwitchOff)
    assert float(result.history[-1]) < 0.5 * float(result.history[0])
    best = validation(jm.implicit_bias(problem, pair, result.schedule, w0))
    np.testing.assert_allclose(float(best), float(jnp.min(result.history)), rtol=1e-10)


def test_optimize_schedule_reports_nonfinite_gradients():
    problem, pair, _ = _instance()
    w0 = pair.init(jnp.zeros(12), scale=0.8)
    start = jm.PiecewiseSwitchOff.from_values(jnp.array([1.0]), jnp.array([0.1]))
    result = jm.optimize_schedule(
        problem, pair, w0, lambda x: jnp.sqrt(-jnp.sum(x**2)), start, steps=5
    )
    assert result.nonfinite_step == 0
    assert result.history.shape == (0,)
    with pytest.raises(ValueError, match="`via` must be"):
        jm.optimize_schedule(problem, pair, w0, jnp.sum, start, via="grid")
