"""The deeper and logarithmic pairs: every formulation against the parameter-space flow,
the predicted limits against the flow, the depth-L pair against an independent
implementation of Woodworth et al.'s potential, range shrinking, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jaxmirror as jm


N, D = 6, 3
PAIRS = {
    "power3-matched": jm.PowerDifference(3, "matched"),
    "power4-matched": jm.PowerDifference(4, "matched"),
    "power3-l2": jm.PowerDifference(3, "l2"),
    "power4-l2": jm.PowerDifference(4, regularizer="l2"),
    "log": jm.LogDifference(),
}


def _instance(seed=0):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((D, N))
    y = rng.standard_normal(D)
    x0 = 0.5 * rng.standard_normal(N)
    return jm.LeastSquares(jnp.asarray(Z), jnp.asarray(y)), jnp.asarray(x0)


def _endpoint(problem, pair, schedule, w0, t1, formulation):
    solution = jm.solve(
        problem, pair, schedule, w0, t1, formulation=formulation, rtol=1e-11, atol=1e-12
    )
    assert solution.status == jm.Status.SUCCESS
    return solution.x_final


@pytest.mark.parametrize("name", list(PAIRS))
def test_every_formulation_follows_the_parameter_flow(name):
    """x0 != 0, weight decay switched off midway: mirror, dual and row-space
    formulations agree with the parameter-space flow to 1e-8 (measured: about 1e-11)."""
    pair = PAIRS[name]
    problem, x0 = _instance()
    w0 = pair.init(x0, 0.7)
    schedule = jm.SwitchOff(0.2, 3.0)
    reference = _endpoint(problem, pair, schedule, w0, 20.0, "parameter")
    for formulation in ("mirror", "dual", "rowspace"):
        x = _endpoint(problem, pair, schedule, w0, 20.0, formulation)
        np.testing.assert_allclose(x, reference, rtol=0, atol=1e-8, err_msg=formulation)


@pytest.mark.parametrize("depth", [3, 4])
@pytest.mark.parametrize(
    "schedule",
    [jm.SwitchOff(0.3, 2.0), jm.ExponentialDecay(0.4, 0.5)],
    ids=["switch-off", "decaying"],
)
def test_matched_implicit_bias_is_the_flow_endpoint(depth, schedule):
    pair = jm.PowerDifference(depth, "matched")
    problem, x0 = _instance(1)
    w0 = pair.init(x0, 0.6)
    solution = jm.solve(problem, pair, schedule, w0, 400.0, rtol=1e-10, atol=1e-12)
    assert bool(solution.converged)
    predicted = jm.implicit_bias(problem, pair, schedule, w0)
    np.testing.assert_allclose(predicted, solution.x_final, rtol=0, atol=1e-6)


def _woodworth_limit(Z, y, scale, depth):
    r"""Woodworth et al. (2020), section on depth D, written from the paper: from
    $w_+ = w_- = \alpha$ the flow ends at $\arg\min Q^D_\alpha$ s.t. $X\beta = y$, with
    $\nabla Q^D_\alpha(\beta) = h_D^{-1}(\beta/\alpha^D)$ and
    $h_D(s) = (1 - s)^{-D/(D-2)} - (1 + s)^{-D/(D-2)}$; so
    $\beta = \alpha^D h_D(X^\top\nu)$ where $X\alpha^D h_D(X^\top\nu) = y$."""
    k = depth / (depth - 2)

    def h(s):
        return (1 - s) ** -k - (1 + s) ** -k

    def equations(nu):
        return Z @ (scale**depth * h(Z.T @ nu)) - y

    result = scipy.optimize.root(equations, np.zeros(len(y)), tol=1e-14)
    assert np.max(np.abs(equations(result.x))) < 1e-12
    return scale**depth * h(Z.T @ result.x)


@pytest.mark.parametrize("depth", [3, 4, 5])
def test_no_weight_decay_is_woodworths_depth_potential(depth):
    rng = np.random.default_rng(depth)
    Z, y = rng.standard_normal((D, N)), 0.3 * rng.standard_normal(D)
    problem = jm.LeastSquares(jnp.asarray(Z), jnp.asarray(y))
    pair, scale = jm.PowerDifference(depth), 0.8
    w0 = pair.init(jnp.zeros(N), scale)
    reference = _woodworth_limit(Z, y, scale, depth)
    predicted = jm.implicit_bias(problem, pair, jm.SwitchOff(0.0, 1.0), w0)
    np.testing.assert_allclose(predicted, reference, rtol=0, atol=1e-8)
    flow = _endpoint(problem, pair, jm.SwitchOff(0.0, 1.0), w0, 300.0, "dual")
    np.testing.assert_allclose(flow, reference, rtol=0, atol=1e-8)


def test_depth_two_matched_is_diff_squares():
    problem, x0 = _instance(2)
    schedule = jm.SwitchOff(0.25, 4.0)
    power, squares = jm.PowerDifference(2), jm.DiffSquares()
    w_power, w_squares = power.init(x0, 0.5), squares.init(x0, 0.5)
    for a, b in zip(w_power, w_squares):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    for formulation in ("parameter", "dual"):
        np.testing.assert_allclose(
            _endpoint(problem, power, schedule, w_power, 30.0, formulation),
            _endpoint(problem, squares, schedule, w_squares, 30.0, formulation),
            rtol=0,
            atol=1e-12,
        )
    np.testing.assert_allclose(
        jm.implicit_bias(problem, power, schedule, w_power),
        jm.implicit_bias(problem, squares, schedule, w_squares),
        rtol=0,
        atol=1e-12,
    )


def test_matched_constant_weight_decay_tends_to_the_scaled_lasso():
    """Constant alpha: the flow's limit minimises f + (alpha / L)|x|_1 (checked by the
    lasso's optimality conditions, independent of jaxmirror's prox solver)."""
    pair, alpha = jm.PowerDifference(3, "matched"), 0.5
    problem, _ = _instance(3)
    w0 = pair.init(jnp.zeros(N), 0.5)
    predicted = jm.implicit_bias(problem, pair, jm.Constant(alpha), w0)
    gradient = np.asarray(problem.grad(predicted))
    support = np.abs(np.asarray(predicted)) > 1e-9
    assert support.any()
    np.testing.assert_allclose(
        gradient[support], -alpha / 3 * np.sign(predicted[support]), atol=1e-8
    )
    assert np.all(np.abs(gradient[~support]) <= alpha / 3 + 1e-8)


def test_log_pair_limit_does_not_depend_on_the_schedule():
    pair = jm.LogDifference()
    problem, x0 = _instance(4)
    w0 = pair.init(x0, 1.0)
    limits = [
        jm.implicit_bias(problem, pair, schedule, w0)
        for schedule in (
            jm.SwitchOff(0.0, 1.0),
            jm.SwitchOff(0.5, 3.0),
            jm.Constant(0.05),
        )
    ]
    for limit in limits[1:]:
        np.testing.assert_allclose(limit, limits[0], rtol=0, atol=1e-12)
    flow = _endpoint(problem, pair, jm.Constant(0.05), w0, 40.0, "dual")
    np.testing.assert_allclose(flow, limits[0], rtol=0, atol=1e-7)


def test_range_shrinking_of_the_log_pair():
    """Along the parameter flow, u^2 + v^2 = s0 e^{2 a_t} (the range of u^2/2 shrinks
    with weight decay), and e^{-2 a_t} u^2/2 is the fixed mirror coordinate
    (s0/2) sigmoid(2x)."""
    pair = jm.LogDifference()
    problem, x0 = _instance(5)
    w0 = pair.init(x0, 1.2)
    schedule = jm.SwitchOff(0.3, 4.0)
    ts = jnp.linspace(0.5, 8.0, 9)
    import diffrax

    solution = jm.solve(
        problem,
        pair,
        schedule,
        w0,
        8.0,
        formulation="parameter",
        saveat=diffrax.SaveAt(ts=ts),
        rtol=1e-11,
        atol=1e-12,
    )
    u, v = solution.ws
    a = jax.vmap(schedule.a)(ts)
    width = jax.vmap(lambda a_: pair.range_width(w0, a_))(a)
    np.testing.assert_allclose(0.5 * (u**2 + v**2), width, rtol=1e-9)
    assert np.all(0.5 * u**2 < width)
    assert float(width[-1, 0]) < 0.2 * float(pair.range_width(w0, 0.0)[0])
    legendre = pair.legendre(w0)
    theta = np.exp(-2 * np.asarray(a))[:, None] * 0.5 * np.asarray(u) ** 2
    expected = jax.vmap(lambda x: legendre.grad(x, 0.0))(solution.xs)
    np.testing.assert_allclose(theta, expected, rtol=1e-9)


@pytest.mark.parametrize("name", list(PAIRS))
def test_legendre_closed_forms_are_consistent(name):
    """grad and grad_inverse invert each other, the Hessian is the derivative of the
    mirror map, and the conjugate's gradient is the inverse mirror map (autodiff)."""
    pair = PAIRS[name]
    _, x0 = _instance(6)
    legendre = pair.legendre(pair.init(x0, 0.9))
    x, a = 0.8 * x0 + 0.1, jnp.asarray(-0.4)
    theta = legendre.grad(x, a)
    np.testing.assert_allclose(legendre.grad_inverse(theta, a), x, rtol=1e-12)
    slope = jax.jvp(lambda x_: legendre.grad(x_, a), (x,), (jnp.ones_like(x),))[1]
    np.testing.assert_allclose(legendre.hessian_diag(x, a), slope, rtol=1e-10)
    np.testing.assert_allclose(
        jax.grad(legendre.conjugate)(theta, a), x, rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(jax.grad(legendre.value)(x, a), theta, rtol=1e-10)


def test_brackets_vanish_or_are_proportional():
    x0 = 0.5 * np.random.default_rng(7).standard_normal(5)
    expected = {
        "power3-matched": 0.0,
        "power4-matched": 0.0,
        "power3-l2": -1.0,
        "power4-l2": -2.0,
        "log": 2.0,
    }
    for name, coefficient in expected.items():
        pair = PAIRS[name]
        brackets = jm.lie_brackets(pair, pair.init(jnp.asarray(x0), 0.8))
        assert float(brackets.max_gg) < 1e-12, name
        assert float(brackets.max_gh_residual) < 1e-12, name
        np.testing.assert_allclose(brackets.gh_coefficient, coefficient, atol=1e-12)
    generic = jm.lie_brackets(jm.Hadamard(), (jnp.ones(3), jnp.arange(3.0)))
    assert float(generic.max_gh) == 0.0


def test_default_regularizer_is_weight_decay():
    pair = jm.PowerDifference(3)
    assert pair.regularizer == "l2"
    w = (jnp.array([0.3, 1.2]), jnp.array([0.7, 0.1]))
    np.testing.assert_allclose(pair.h(w), 0.5 * (0.09 + 1.44 + 0.49 + 0.01))


def test_l2_power_pair_refuses_constant_weight_decay_with_the_reason():
    problem, x0 = _instance()
    pair = jm.PowerDifference(3, "l2")
    w0 = pair.init(x0, 0.5)
    with pytest.raises(ValueError, match="non-convex induced penalty") as caught:
        jm.implicit_bias(problem, pair, jm.Constant(0.1), w0)
    assert "local minimum" in str(caught.value) and "Simulate" in str(caught.value)


@pytest.mark.parametrize("depth", [3, 4])
def test_l2_constant_weight_decay_ends_at_nonzero_sparse_local_minima(depth):
    """Why the refusal: under constant weight decay the plain deep pair's flow ends
    neither at 0 nor at a convex program's answer but at a nonzero, sparse strict
    local minimum of f + alpha |x|^{2/L}/2 on the true support (stationary there, a
    positive definite Hessian on the support), which depends on the path."""
    problem, truth = jm.datasets.sparse_regression(n=20, d=10, sparsity=2, seed=3)
    pair = jm.PowerDifference(depth)
    w0 = pair.init(jnp.zeros(20), 0.5)
    Z = np.asarray(problem.design())
    for alpha in (0.01, 0.1):
        sol = jm.solve(
            problem,
            pair,
            jm.Constant(alpha),
            w0,
            3000.0,
            formulation="parameter",
            rtol=1e-10,
            atol=1e-12,
        )
        assert int(sol.status) == jm.Status.SUCCESS and bool(sol.converged)
        x = np.asarray(sol.x_final)
        support = np.abs(x) > 1e-6
        assert support.any(), alpha  # not the minimum at 0
        assert set(np.flatnonzero(support)) <= set(np.flatnonzero(np.asarray(truth)))
        xs = x[support]
        slope = np.sign(xs) * np.abs(xs) ** (2.0 / depth - 1.0) / depth
        gradient = np.asarray(problem.grad(jnp.asarray(x)))[support]
        np.testing.assert_allclose(gradient + alpha * slope, 0.0, atol=1e-7)
        curvature = (2.0 / depth - 1.0) / depth * np.abs(xs) ** (2.0 / depth - 2.0)
        hessian = Z[:, support].T @ Z[:, support] + alpha * np.diag(curvature)
        assert np.linalg.eigvalsh(hessian).min() > 0, alpha


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jm.PowerDifference(1), "`depth` must be an int >= 2"),
        (lambda: jm.PowerDifference(2.5), "`depth` must be an int >= 2"),
        (lambda: jm.PowerDifference(True), "`depth` must be an int >= 2"),
        (lambda: jm.PowerDifference(3, "l1"), "`regularizer` must be one of"),
    ],
)
def test_bad_pair_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_non_positive_log_parameters_are_refused_before_any_solve():
    problem, _ = _instance()
    pair = jm.LogDifference()
    w0 = (jnp.ones(N), -jnp.ones(N))
    for formulation in ("parameter", "dual"):
        with pytest.raises(ValueError, match="`w0` must be positive in both factors"):
            jm.solve(problem, pair, jm.Constant(0.1), w0, 1.0, formulation=formulation)
    with pytest.raises(ValueError, match="`w0` must be positive"):
        jm.implicit_bias(problem, pair, jm.Constant(0.1), w0)
    with pytest.raises(ValueError, match="`w0` must be positive in both factors"):
        jm.PowerDifference(3).legendre((jnp.ones(N), -jnp.ones(N)))


def test_prox_of_the_matched_penalty_is_the_scaled_soft_threshold():
    """prox of tau |x|_1 / L, against its definition minimised by brute force."""
    pair = jm.PowerDifference(3, "matched")
    z, step = jnp.array([-1.0, -0.1, 0.05, 0.7]), 0.6
    grid = jnp.linspace(-2.0, 2.0, 400_001)
    objective = (
        step * jnp.abs(grid)[:, None] / 3 + 0.5 * (grid[:, None] - z[None, :]) ** 2
    )
    brute = grid[jnp.argmin(objective, axis=0)]
    np.testing.assert_allclose(pair.penalty_prox(z, step), brute, atol=1e-5)
    with pytest.raises(ValueError, match="non-convex induced penalty"):
        jm.PowerDifference(3, "l2").penalty_prox(z, step)
