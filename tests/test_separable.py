"""Bring your own pair: the numerical Legendre function of a separable pair against
every closed form, its limits against independent scipy flows, and the refusal of a
pair whose brackets do not close."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from scipy.integrate import solve_ivp

import jaxmirror as jm


# Users' copies: g, h and init only (init borrowed from the built-in pair).
class UserHadamard(jm.AbstractSeparablePair):
    def g(self, w):
        m, v = w
        return m * v

    def h(self, w):
        m, v = w
        return 0.5 * (jnp.sum(m**2) + jnp.sum(v**2))

    def init(self, x0=None, scale=1.0, *, key=None):
        return jm.Hadamard().init(x0, scale)


class UserDiffSquares(jm.AbstractSeparablePair):
    def g(self, w):
        u, v = w
        return u**2 - v**2

    def h(self, w):
        u, v = w
        return 0.5 * (jnp.sum(u**2) + jnp.sum(v**2))

    def init(self, x0=None, scale=1.0, *, key=None):
        return jm.DiffSquares().init(x0, scale)


class UserSquare(jm.AbstractSeparablePair):
    def g(self, w):
        return w**2

    def h(self, w):
        return 0.5 * jnp.sum(w**2)

    def init(self, x0=None, scale=None, *, key=None):
        return jm.Square().init(x0, scale)


class UserPower(jm.AbstractSeparablePair):
    depth: int
    matched: bool

    def g(self, w):
        u, v = w
        return u**self.depth - v**self.depth

    def h(self, w):
        u, v = w
        if self.matched:
            return (jnp.sum(u**self.depth) + jnp.sum(v**self.depth)) / self.depth
        return 0.5 * (jnp.sum(u**2) + jnp.sum(v**2))

    def init(self, x0=None, scale=1.0, *, key=None):
        return jm.PowerDifference(self.depth).init(x0, scale)


class UserLog(jm.AbstractSeparablePair, jm.AbstractClockOnlyPair):
    def g(self, w):
        u, v = w
        return jnp.log(u) - jnp.log(v)

    def h(self, w):
        u, v = w
        return 0.5 * (jnp.sum(u**2) + jnp.sum(v**2))

    def init(self, x0=None, scale=1.0, *, key=None):
        return jm.LogDifference().init(x0, scale)


class ThreeFactor(jm.AbstractSeparablePair):
    """x = u v z with weight decay: no closed form known; [X, Y] = -X."""

    def g(self, w):
        u, v, z = w
        return u * v * z

    def h(self, w):
        return 0.5 * sum(jnp.sum(leaf**2) for leaf in w)

    def init(self, x0=None, scale=1.0, *, key=None):
        raise NotImplementedError  # the tests build unbalanced w0 by hand


class CubeTimes(jm.AbstractSeparablePair):
    """x = u^3 v with weight decay (homogeneous of degree 4): [X, Y] = -2X."""

    def g(self, w):
        u, v = w
        return u**3 * v

    def h(self, w):
        u, v = w
        return 0.5 * (jnp.sum(u**2) + jnp.sum(v**2))

    def init(self, x0=None, scale=1.0, *, key=None):
        raise NotImplementedError


class NotClosing(jm.AbstractSeparablePair):
    """x = u v + u^3 / 3: [X, Y] = (-u^2, 0), not a multiple of X."""

    def g(self, w):
        u, v = w
        return u * v + u**3 / 3

    def h(self, w):
        u, v = w
        return 0.5 * (jnp.sum(u**2) + jnp.sum(v**2))

    def init(self, x0=None, scale=1.0, *, key=None):
        return jm.Hadamard().init(x0, scale)


N = 5
RNG = np.random.default_rng(11)
X0 = jnp.asarray(0.3 * RNG.standard_normal(N))
POSITIVE_X0 = jnp.asarray(0.2 + RNG.random(N))

# (user pair, closed-form pair, w0, the Legendre times a, points x, duals theta)
CASES = {
    "hadamard": (UserHadamard(), jm.Hadamard(), jm.Hadamard().init(X0, 0.6)),
    "diff_squares": (
        UserDiffSquares(),
        jm.DiffSquares(),
        jm.DiffSquares().init(X0, 0.6),
    ),
    "square": (UserSquare(), jm.Square(), jm.Square().init(POSITIVE_X0, None)),
    "power3_l2": (
        UserPower(3, False),
        jm.PowerDifference(3),
        jm.PowerDifference(3).init(X0, 0.8),
    ),
    "power4_matched": (
        UserPower(4, True),
        jm.PowerDifference(4, "matched"),
        jm.PowerDifference(4).init(X0, 0.8),
    ),
    "log_difference": (UserLog(), jm.LogDifference(), jm.LogDifference().init(X0, 0.7)),
}


def _points(name, closed, theta0, a):
    """Points x inside the domain of R_a, and duals theta, for one case."""
    rng = np.random.default_rng(3)
    if name == "square":
        return jnp.asarray(0.1 + rng.random(N)), jnp.asarray(
            0.3 * rng.standard_normal(N)
        )
    x = jnp.asarray(0.5 * rng.standard_normal(N))
    # Duals near theta0's image of the points: inside every closed form's domain.
    theta = closed.grad(x * 0.8, a) - theta0
    return x, theta


@pytest.mark.parametrize("name", list(CASES))
def test_automatic_map_equals_closed_form(name):
    """Map, inverse, Hessian and R_a (up to the normalisation) to 1e-10 at a = 0 and
    a = -0.6; the clock's rate from the brackets."""
    user, pair, w0 = CASES[name]
    closed, numeric = pair.legendre(w0), user.legendre(w0)
    x0 = pair.g(w0)
    theta0 = closed.grad(x0, jnp.zeros(()))
    assert float(jnp.max(jnp.abs(numeric.grad(x0, 0.0)))) < 1e-12  # normalisation
    for a in (0.0, -0.6):
        a = jnp.asarray(a)
        x, theta = _points(name, closed, theta0, a)
        np.testing.assert_allclose(
            numeric.grad(x, a), closed.grad(x, a) - theta0, rtol=1e-10, atol=1e-10
        )
        np.testing.assert_allclose(
            numeric.grad_inverse(theta, a),
            closed.grad_inverse(theta + theta0, a),
            rtol=1e-10,
            atol=1e-10,
        )
        np.testing.assert_allclose(
            numeric.hessian_diag(x, a), closed.hessian_diag(x, a), rtol=1e-10
        )
        np.testing.assert_allclose(
            numeric.time_scale(a), closed.time_scale(a), rtol=1e-12
        )
        # R_a differs by <theta0, x> and a function of a alone.
        other = x[::-1]
        expected = closed.value(x, a) - closed.value(other, a) - theta0 @ (x - other)
        got = numeric.value(x, a) - numeric.value(other, a)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["hadamard", "power3_l2", "log_difference"])
def test_automatic_derivatives(name):
    """jax derivatives of the numerical map: dR_a/dx is the map, d map/da and the
    derivative in the initialisation match the closed form's."""
    user, pair, w0 = CASES[name]
    a = jnp.asarray(-0.4)
    x0 = pair.g(w0)
    closed = pair.legendre(w0)
    theta0 = closed.grad(x0, jnp.zeros(()))
    x, theta = _points(name, closed, theta0, a)
    numeric = user.legendre(w0)
    np.testing.assert_allclose(
        jax.grad(numeric.value)(x, a), numeric.grad(x, a), rtol=1e-10, atol=1e-12
    )

    def user_inverse(w, b):
        return user.legendre(w).grad_inverse(theta, b)

    def closed_inverse(w, b):
        legendre = pair.legendre(w)
        return legendre.grad_inverse(theta + legendre.grad(pair.g(w), 0.0), b)

    # jacfwd in b and in w0: tangents of the orbits' Jacobians (user) against the
    # closed form's autodiff.
    for argnum in (0, 1):
        got = jax.jacfwd(user_inverse, argnums=argnum)(w0, a)
        expected = jax.jacfwd(closed_inverse, argnums=argnum)(w0, a)
        np.testing.assert_allclose(
            jax.flatten_util.ravel_pytree(got)[0],
            jax.flatten_util.ravel_pytree(expected)[0],
            rtol=1e-9,
            atol=1e-10,
        )


def _sensing(n=8, d=3, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((d, n))
    truth = np.zeros(n)
    truth[:2] = (0.8, 0.5) if positive else (0.8, -0.5)
    return jm.LeastSquares(jnp.asarray(Z), jnp.asarray(Z @ truth))


@pytest.mark.parametrize("name", [name for name in CASES if name != "hadamard"])
def test_user_implicit_bias_equals_closed_form(name):
    """`implicit_bias` of the user's copy equals the built-in pair's (to 1e-10;
    Hadamard: in `test_user_hadamard_at_n_100_and_its_gradient`)."""
    user, pair, _ = CASES[name]
    n = 8
    if name == "square":
        problem, w0 = _sensing(n, positive=True), pair.init(jnp.full(n, 0.05), None)
    else:
        problem = _sensing(n)
        scale = {"hadamard": 0.1, "diff_squares": 0.1, "log_difference": 0.5}.get(
            name, 0.5
        )
        w0 = pair.init(jnp.asarray(0.05 * RNG.standard_normal(n)), scale)
    schedule = jm.SwitchOff(0.5, 2.0)
    got = jm.implicit_bias(problem, user, schedule, w0)
    expected = jm.implicit_bias(problem, pair, schedule, w0)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_user_hadamard_at_n_100_and_its_gradient():
    """The acceptance case: a user's Hadamard at n = 100 gives `jm.Hadamard`'s
    limit to 1e-8, and the same derivative in alpha."""
    rng = np.random.default_rng(0)
    d, n = 40, 100
    Z = rng.standard_normal((d, n))
    truth = np.zeros(n)
    truth[:5] = 1.0
    problem = jm.LeastSquares(jnp.asarray(Z), jnp.asarray(Z @ truth))
    w0 = jm.Hadamard().init(jnp.zeros(n), 0.1)
    schedule = jm.SwitchOff(1.0, 2.0)
    got = jm.implicit_bias(problem, UserHadamard(), schedule, w0)
    expected = jm.implicit_bias(problem, jm.Hadamard(), schedule, w0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)

    def loss(pair, alpha):
        x = jm.implicit_bias(problem, pair, jm.SwitchOff(alpha, 2.0), w0)
        return jnp.sum((x - jnp.asarray(truth)) ** 2)

    np.testing.assert_allclose(
        jax.grad(loss, argnums=1)(UserHadamard(), 1.0),
        jax.grad(loss, argnums=1)(jm.Hadamard(), 1.0),
        rtol=1e-8,
    )


def _scipy_limit(pair, problem, alpha, t_off, w0, t1=4000.0):
    """The end of the parameter flow, integrated by scipy (DOP853) with autodiff's
    gradient of the objective only: no mirror map, no jaxmirror solver."""
    leaves, treedef = jax.tree_util.tree_flatten(w0)
    n = leaves[0].shape[0]

    def objective(flat, alpha_t):
        w = jax.tree_util.tree_unflatten(treedef, list(flat.reshape(len(leaves), n)))
        return problem.loss(pair.g(w)) + alpha_t * pair.h(w)

    grad = jax.jit(jax.grad(objective))

    def rhs(t, flat):
        alpha_t = alpha if t < t_off else 0.0
        return -np.asarray(grad(jnp.asarray(flat), alpha_t))

    start = np.concatenate([np.asarray(leaf) for leaf in leaves])
    first = solve_ivp(rhs, (0, t_off), start, method="DOP853", rtol=1e-12, atol=1e-14)
    second = solve_ivp(
        rhs, (t_off, t1), first.y[:, -1], method="DOP853", rtol=1e-12, atol=1e-14
    )
    w = jax.tree_util.tree_unflatten(
        treedef, list(jnp.asarray(second.y[:, -1]).reshape(len(leaves), n))
    )
    return pair.g(w)


@pytest.mark.parametrize(
    "pair, w0, kappa",
    [
        (
            ThreeFactor(),
            (
                jnp.asarray([0.3, 0.5, 0.2, 0.4, 0.6, 0.35]),
                jnp.asarray([0.2, 0.25, 0.6, 0.3, 0.15, 0.5]),
                jnp.asarray([0.5, 0.1, 0.3, -0.2, 0.25, 0.45]),
            ),
            1.0,
        ),
        (
            CubeTimes(),
            (
                jnp.asarray([0.6, 0.7, 0.5, 0.8, 0.65, 0.75]),
                jnp.asarray([0.2, -0.3, 0.4, 0.1, -0.25, 0.3]),
            ),
            2.0,
        ),
    ],
    ids=["u*v*z", "u^3*v"],
)
def test_limit_of_pairs_without_closed_form(pair, w0, kappa):
    """No closed form known: `implicit_bias` against the end of an independent scipy
    parameter flow to 1e-7, and its derivative in alpha against a finite
    difference."""
    rng = np.random.default_rng(4)
    Z = rng.standard_normal((3, 6))
    problem = jm.LeastSquares(
        jnp.asarray(Z), jnp.asarray(Z @ np.array([0.4, -0.3, 0, 0, 0, 0]))
    )
    assert abs(pair.brackets(w0).kappa - kappa) < 1e-12
    alpha, t_off = 0.3, 2.0
    predicted = jm.implicit_bias(problem, pair, jm.SwitchOff(alpha, t_off), w0)
    flowed = _scipy_limit(pair, problem, alpha, t_off, w0)
    np.testing.assert_allclose(predicted, flowed, rtol=0, atol=1e-7)

    def first(alpha):
        return jm.implicit_bias(problem, pair, jm.SwitchOff(alpha, t_off), w0)[0]

    derivative = jax.grad(first)(alpha)
    step = 1e-5
    difference = (first(alpha + step) - first(alpha - step)) / (2 * step)
    assert np.isfinite(derivative)
    np.testing.assert_allclose(derivative, difference, rtol=1e-6, atol=1e-8)


def test_non_closing_pair_is_refused_naming_the_brackets():
    pair = NotClosing()
    problem = _sensing(8)
    w0 = pair.init(jnp.asarray(0.05 * RNG.standard_normal(8)), 0.5)
    with pytest.raises(
        ValueError, match=r"Lie brackets do not close.*grad g_i, grad h"
    ):
        jm.implicit_bias(problem, pair, jm.SwitchOff(0.5, 2.0), w0)
    with pytest.raises(ValueError, match="Lie brackets do not close"):
        jm.solve(problem, pair, jm.SwitchOff(0.5, 2.0), w0, t1=1.0, formulation="dual")
    # the parameter flow still runs
    solution = jm.solve(problem, pair, jm.SwitchOff(0.5, 2.0), w0, t1=1.0)
    assert np.all(np.isfinite(solution.x_final))


def test_clock_only_declaration_is_checked():
    class NotClockOnly(UserHadamard, jm.AbstractClockOnlyPair):
        pass

    w0 = jm.Hadamard().init(X0, 0.5)
    assert "<grad g_i, grad h> is not 0" in NotClockOnly().closure_problem(w0)
    assert UserLog().closure_problem(jm.LogDifference().init(X0, 0.5)) is None


def test_effects_for_a_user_pair():
    """Positional centre and type of bias from the numerical map equal the closed
    form's (the centre does not depend on the normalisation)."""
    user, pair, w0 = CASES["hadamard"]
    x0, a = pair.g(w0), jnp.asarray(-1.0)
    x = jnp.asarray(np.linspace(-1.0, 1.0, N))
    np.testing.assert_allclose(
        jm.positional_bias_centre(user.legendre(w0), x0, a),
        jm.positional_bias_centre(pair.legendre(w0), x0, a),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        jm.type_of_bias(user.legendre(w0), x0, x, a),
        jm.type_of_bias(pair.legendre(w0), x0, x, a),
        rtol=1e-9,
    )


def test_sweep_of_a_user_pair():
    """`jm.sweep` runs a user's pair in the parameter formulation ("auto": the
    numerical map costs an ODE solve per evaluation) and predicts its limits as
    `jm.Hadamard`'s closed form does."""
    problem = _sensing(8)
    w0 = jm.Hadamard().init(jnp.asarray(0.05 * RNG.standard_normal(8)), 0.3)
    schedules = jm.SwitchOff(**jm.grid(alpha=[0.1, 0.5], t_off=[1.0, 3.0]))
    user = jm.sweep(problem, UserHadamard(), schedules, w0, 200.0, progress=False)
    closed = jm.sweep(problem, jm.Hadamard(), schedules, w0, 200.0, progress=False)
    assert user.attrs["formulation"] == "parameter"
    np.testing.assert_allclose(
        user["x_predicted"], closed["x_predicted"], rtol=0, atol=1e-10
    )
    np.testing.assert_allclose(user["x_final"], closed["x_final"], rtol=0, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    x=hnp.arrays(np.float64, N, elements=st.floats(-3.0, 3.0)),
    a=st.floats(-3.0, 0.0),
    scale=st.floats(0.05, 2.0),
)
def test_map_and_inverse_agree_everywhere(x, a, scale):
    """For every point, time and scale: the numerical inverse undoes the map, and
    the map equals the closed form's less its theta0."""
    w0 = jm.Hadamard().init(X0, scale)
    numeric, closed = UserHadamard().legendre(w0), jm.Hadamard().legendre(w0)
    x, a = jnp.asarray(x), jnp.asarray(a)
    theta = numeric.grad(x, a)
    np.testing.assert_allclose(numeric.grad_inverse(theta, a), x, rtol=1e-9, atol=1e-10)
    theta0 = closed.grad(jm.Hadamard().g(w0), jnp.zeros(()))
    np.testing.assert_allclose(theta, closed.grad(x, a) - theta0, rtol=1e-9, atol=1e-10)
