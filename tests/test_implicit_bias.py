"""`implicit_bias` against flows, Woodworth et al.'s potential, and scikit-learn's Lasso."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from sklearn.linear_model import Lasso

import jaxmirror as jm
from jaxmirror._formulations._legendre_args import legendre_args
from jaxmirror._implicit_bias import constrained_limit, default_tol

from .helpers import CLOSED_FORM_PAIRS, domain, PAIR_IDS, random_instance


FLOW = dict(rtol=1e-10, atol=1e-12, max_steps=1_000_000)

SCHEDULES = {
    "switch_off": jm.SwitchOff(0.2, 3.0),
    "exponential": jm.ExponentialDecay(0.3, 0.5),
    "piecewise": jm.PiecewiseConstant([1.0, 2.0], [0.3, 0.1, 0.0]),
    "constant": jm.Constant(0.05),
}


@pytest.mark.parametrize("schedule", list(SCHEDULES.values()), ids=list(SCHEDULES))
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pair", CLOSED_FORM_PAIRS, ids=PAIR_IDS)
def test_prediction_equals_flow_endpoint(pair, seed, schedule):
    problem, w0, _ = random_instance(jax.random.PRNGKey(seed), pair)
    predicted, status = jm.implicit_bias(
        problem, pair, schedule, w0, return_status=True
    )
    assert int(status) == jm.BiasStatus.CONVERGED
    sol = jm.solve(problem, pair, schedule, w0, t1=3000.0, **FLOW)
    assert int(sol.status) == jm.Status.SUCCESS
    np.testing.assert_allclose(predicted, sol.x_final, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [1e-2, 0.3, 2.0])
def test_diff_squares_matches_woodworth_potential(scale, getkey):
    """At alpha = 0, argmin Q_s(x) s.t. Zx = y (Woodworth et al. 2020), solved by scipy.

    KKT of their problem: grad Q_s(x) = arcsinh(x / (2 s^2)) = Z^T lam, i.e.
    x = 2 s^2 sinh(Z^T lam) with Z x = y: the minimiser of the convex dual
    sum(2 s^2 cosh(Z^T lam)) - <lam, y>, found by scipy's trust-region Newton.
    """
    n, d = 15, 6
    Z = np.asarray(jax.random.normal(getkey(), (d, n))) / np.sqrt(d)
    x_star = np.zeros(n)
    x_star[:2] = [1.5, -0.8]
    y = Z @ x_star
    x_of = lambda lam: 2 * scale**2 * np.sinh(Z.T @ lam)
    c = 2 * scale**2
    dual = scipy.optimize.minimize(
        lambda lam: np.sum(c * np.cosh(Z.T @ lam)) - lam @ y,
        np.zeros(d),
        jac=lambda lam: Z @ x_of(lam) - y,
        hess=lambda lam: (Z * (c * np.cosh(Z.T @ lam))) @ Z.T,
        method="trust-exact",
        options=dict(gtol=1e-13, maxiter=10_000),
    )
    # trust-exact stops where its objective stalls in rounding; polish with plain Newton.
    lam = dual.x
    for _ in range(5):
        hess = (Z * (c * np.cosh(Z.T @ lam))) @ Z.T
        lam = lam - np.linalg.solve(hess, Z @ x_of(lam) - y)
    reference = x_of(lam)
    assert np.max(np.abs(Z @ reference - y)) < 1e-11, dual.message
    pair, our_scale = jm.conventions.from_woodworth(scale)
    w0 = pair.init(jnp.zeros(n), scale=our_scale)
    problem = jm.LeastSquares(Z, y)
    np.testing.assert_allclose(
        jm.implicit_bias(problem, pair, jm.Constant(0.0), w0),
        reference,
        rtol=0,
        atol=1e-9,
    )


@pytest.mark.parametrize(
    "pair, sk_alpha_factor, positive",
    [
        (jm.Hadamard(), 1.0, False),
        (jm.DiffSquares(), 0.5, False),
        (jm.Square(), 0.5, True),
    ],
    ids=PAIR_IDS,
)
def test_constant_weight_decay_matches_sklearn_lasso(
    pair, sk_alpha_factor, positive, getkey
):
    """Constant alpha: f(x) + alpha * rho(x); sklearn's Lasso divides the loss by d."""
    n, d, alpha = 30, 12, 0.05
    Z = np.asarray(jax.random.normal(getkey(), (d, n))) / np.sqrt(d)
    x_star = np.zeros(n)
    x_star[:3] = [1.5, 0.8, 2.0]
    y = Z @ x_star
    lasso = Lasso(
        alpha=sk_alpha_factor * alpha / d,
        fit_intercept=False,
        tol=1e-14,
        max_iter=1_000_000,
        positive=positive,
    ).fit(Z, y)
    problem = jm.LeastSquares(Z, y)
    where = domain(pair)
    # Start at 0 where the pair allows it (x0 > 0 for the square pair).
    w0 = pair.init(jnp.full(n, 0.1 if where.positive else 0.0), **where.init)
    predicted = jm.implicit_bias(problem, pair, jm.Constant(alpha), w0)
    np.testing.assert_allclose(predicted, lasso.coef_, rtol=0, atol=1e-8)
    # Coordinates near the lasso boundary die out slowly: a long horizon.
    flow = jm.solve(problem, pair, jm.Constant(alpha), w0, t1=30_000.0, **FLOW).x_final
    np.testing.assert_allclose(flow, lasso.coef_, rtol=0, atol=1e-6)


def test_tiny_initial_scale_rich_regime():
    """Scale 1e-30 (rich regime): finite, and equal to the dual flow's endpoint."""
    pair = jm.Hadamard()
    problem, _, _ = random_instance(jax.random.PRNGKey(4), pair)
    w0 = pair.init(jnp.zeros(12), scale=1e-30)
    predicted = jm.implicit_bias(problem, pair, jm.SwitchOff(0.1, 5.0), w0)
    assert np.all(np.isfinite(predicted))
    sol = jm.solve(problem, pair, jm.SwitchOff(0.1, 5.0), w0, t1=3000.0, **FLOW)
    assert int(sol.status) == jm.Status.SUCCESS
    np.testing.assert_allclose(predicted, sol.x_final, rtol=0, atol=1e-6)
    # In the rich regime the limit is the minimum-L1 interpolant (linear program).
    Z, y = np.asarray(problem.Z), np.asarray(problem.y)
    n = Z.shape[1]
    lp = scipy.optimize.linprog(
        np.ones(2 * n),
        A_eq=np.hstack([Z, -Z]),
        b_eq=y,
        bounds=(0, None),
        method="highs",
    )
    min_l1 = lp.x[:n] - lp.x[n:]
    np.testing.assert_allclose(predicted, min_l1, rtol=0, atol=1e-6)


def test_vmap_over_mixed_schedules():
    pair = jm.Hadamard()
    problem, w0, _ = random_instance(jax.random.PRNGKey(0), pair)
    alphas = jnp.array([0.0, 0.05])
    batched = jax.vmap(lambda s: jm.implicit_bias(problem, pair, s, w0))(
        jm.Constant(alphas)
    )
    loop = [jm.implicit_bias(problem, pair, jm.Constant(a), w0) for a in alphas]
    np.testing.assert_allclose(batched, np.stack(loop), rtol=0, atol=1e-12)


def test_bad_problems_raise():
    pair = jm.Hadamard()
    w0 = pair.init(jnp.zeros(3), scale=1.0)
    logistic = jm.Logistic(jnp.ones((4, 3)), jnp.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="`problem`: .*LeastSquares"):
        jm.implicit_bias(logistic, pair, jm.SwitchOff(0.1, 1.0), w0)
    tall = jm.LeastSquares(jnp.ones((5, 3)), jnp.ones(5))
    with pytest.raises(ValueError, match="d <= n"):
        jm.implicit_bias(tall, pair, jm.SwitchOff(0.1, 1.0), w0)


def _switch_off_case():
    """A wide sparse-recovery instance with strong weight decay, and its limit's inputs."""
    problem, _ = jm.datasets.sparse_regression(n=30, d=12, sparsity=3, seed=0)
    pair = jm.Hadamard()
    schedule = jm.SwitchOff(0.1, 40.0)
    w0 = pair.init(jnp.zeros(30), scale=0.5)
    args = legendre_args(pair, schedule, w0)
    return problem, args.legendre, args.theta0, schedule.a_inf()


@pytest.mark.parametrize(
    "guess",
    ["limit", "flow", "non-finite", "far"],
)
def test_constrained_limit_from_a_guess_is_the_limit_from_zero(guess):
    """Newton's method started from a point's multiplier (a sweep starts it where each
    flow ended) finds the limit it finds from 0, to the tolerance; a non-finite or poor
    guess falls back to 0. Started at the limit itself it needs one iteration, where
    from 0 it needs many: the guess is used."""
    problem, legendre, theta0, a_inf = _switch_off_case()
    tol = default_tol()
    cold, status = constrained_limit(legendre, theta0, a_inf, problem, tol, 200)
    assert int(status) == jm.BiasStatus.CONVERGED
    x_guess = {
        "limit": cold,
        # where a flow that has not quite converged ends
        "flow": cold + 1e-3 * np.sin(np.arange(cold.size)),
        "non-finite": jnp.full_like(cold, jnp.inf),
        "far": jnp.full_like(cold, 1e3),
    }[guess]
    warm, status = constrained_limit(
        legendre, theta0, a_inf, problem, tol, 200, x_guess
    )
    assert int(status) == jm.BiasStatus.CONVERGED
    # Both stop at a constraint residual within 1e-12 (relative); their points then
    # agree to that residual times the problem's conditioning (3.5e-12 measured).
    np.testing.assert_allclose(warm, cold, rtol=0, atol=1e-10)
    if guess == "limit":
        _, one_step = constrained_limit(
            legendre, theta0, a_inf, problem, tol, 1, x_guess
        )
        _, one_cold = constrained_limit(legendre, theta0, a_inf, problem, tol, 1)
        assert int(one_step) == jm.BiasStatus.CONVERGED
        assert int(one_cold) == jm.BiasStatus.MAX_ITERATIONS


def test_constrained_limit_gradient_does_not_flow_through_the_guess():
    """The limit's derivative (implicit function theorem) is the same with a guess,
    and the guess itself gets a zero gradient."""
    problem, legendre, theta0, a_inf = _switch_off_case()
    tol = default_tol()
    cold, _ = constrained_limit(legendre, theta0, a_inf, problem, tol, 200)

    def loss(theta, guess):
        x, _ = constrained_limit(legendre, theta, a_inf, problem, tol, 200, guess)
        return jnp.sum(x**2)

    g_theta, g_guess = jax.grad(loss, argnums=(0, 1))(theta0, cold)
    g_cold = jax.grad(
        lambda th: jnp.sum(
            constrained_limit(legendre, th, a_inf, problem, tol, 200)[0] ** 2
        )
    )(theta0)
    np.testing.assert_allclose(g_theta, g_cold, rtol=1e-9, atol=1e-12)
    assert not np.any(np.asarray(g_guess))
