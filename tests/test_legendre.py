"""Closed-form Legendre functions against autodiff and an arbitrary-precision reference."""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import jaxmirror as jm

from .helpers import CLOSED_FORM_PAIRS, domain, PAIR_IDS


SCALES = [1e-30, 1e-10, 1e-3, 1.0, 1e3]


def _legendre_and_points(pair, scale, key):
    n = 7
    if domain(pair).positive:
        x0 = scale * (0.5 + jax.random.uniform(key, (n,)))
        w0 = pair.init(x0)
        xs = x0 * jnp.exp(jax.random.normal(key, (n,)))
    else:
        # x0 of the order of scale**2: (m0, w0) can only hold m0**2 - w0**2 = scale**2
        # to a relative precision of eps * |x0| / scale**2.
        x0 = scale**2 * jnp.zeros(n).at[0].set(0.3).at[1].set(-2.0)
        w0 = pair.init(x0, scale=scale)
        xs = jnp.array([0.0, 1e-40, -1e-12, 0.5, -3.0, 1e4, -1e-3])
    return pair.legendre(w0), xs


@pytest.mark.parametrize("scale", SCALES, ids=lambda s: f"scale={s:g}")
@pytest.mark.parametrize("pair", CLOSED_FORM_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("a", [0.0, -0.5, -20.0])
def test_closed_forms_match_autodiff(pair, scale, a, getkey):
    leg, xs = _legendre_and_points(pair, scale, getkey())
    a = jnp.asarray(a)
    # grad = d value / dx and hessian_diag = d grad / dx, coordinate-wise.
    auto_grad = jax.grad(leg.value)(xs, a)
    auto_hess = jnp.diag(jax.jacfwd(leg.grad)(xs, a))
    np.testing.assert_allclose(leg.grad(xs, a), auto_grad, rtol=1e-12, atol=0)
    np.testing.assert_allclose(leg.hessian_diag(xs, a), auto_hess, rtol=1e-10, atol=0)
    # grad_inverse inverts grad, and is the gradient of the conjugate.
    theta = leg.grad(xs, a)
    assert np.all(np.isfinite(theta))
    np.testing.assert_allclose(leg.grad_inverse(theta, a), xs, rtol=1e-12, atol=0)
    np.testing.assert_allclose(
        jax.grad(leg.conjugate)(theta, a),
        leg.grad_inverse(theta, a),
        rtol=1e-12,
        atol=0,
    )
    # Fenchel-Young equality R(x) + R*(theta) = <theta, x> at theta = grad R(x).
    lhs = leg.value(xs, a) + leg.conjugate(theta, a)
    rhs = jnp.dot(theta, xs)
    assert abs(float(lhs - rhs)) <= 1e-10 * (1.0 + abs(float(rhs)))


def _mp_hyperbolic(x, c, k):
    """arcsinh(x/c)/k and c sinh(k theta) at 50 digits."""
    mpmath.mp.dps = 50
    return float(mpmath.asinh(mpmath.mpf(x) / mpmath.mpf(c)) / k)


@pytest.mark.parametrize("log_c", [-700.0, -138.0, -23.0, 0.0, 6.9])
def test_hyperbolic_entropy_against_mpmath(log_c):
    """Log-space evaluation keeps full relative precision where direct formulas overflow."""
    leg = jm.HyperbolicEntropy(log_c0=jnp.full(6, log_c), k=2.0)
    xs = jnp.array([1e-300, -1e-20, 0.7, -5.0, 1e10, 1e300])
    mpmath.mp.dps = 50
    c = mpmath.exp(mpmath.mpf(log_c))
    expected = [float(mpmath.asinh(mpmath.mpf(float(x)) / c) / 2) for x in xs]
    got = leg.grad(xs, 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    # And back: c sinh(2 theta) at the same 50 digits.
    thetas = jnp.array([-400.0, -3.0, 1e-8, 0.4, 50.0, 300.0])
    expected_x = [float(c * mpmath.sinh(2 * mpmath.mpf(float(t)))) for t in thetas]
    # Compare within float64's normal range (XLA flushes subnormals to zero).
    expected_x = np.asarray(expected_x)
    finite = (np.abs(expected_x) < 1e300) & (np.abs(expected_x) > np.finfo(float).tiny)
    got_x = np.asarray(leg.grad_inverse(thetas, 0.0))
    np.testing.assert_allclose(got_x[finite], expected_x[finite], rtol=1e-12)


def test_inverse_map_is_accurate_to_a_few_ulps_near_zero():
    r"""$c\sinh s$ and its derivative $c\cosh s$ at 50 digits for $10^{-15} \le |s| \le 20$,
    where $1 - e^{-2|s|}$ cancels unless it is evaluated in a form that keeps its
    relative accuracy: within 4 ulps (the exponential's own error included)."""
    rng = np.random.default_rng(0)
    s = 10 ** rng.uniform(-15, np.log10(20.0), 300) * rng.choice([-1.0, 1.0], 300)
    log_c = -3.0
    leg = jm.HyperbolicEntropy(log_c0=jnp.full(s.size, log_c), k=1.0)
    got = np.asarray(leg.grad_inverse(jnp.asarray(s), 0.0))
    got_slope = np.asarray(
        jax.jvp(lambda t: leg.grad_inverse(t, 0.0), (s,), (np.ones_like(s),))[1]
    )
    mpmath.mp.dps = 50
    c = mpmath.exp(log_c)
    expected = [float(c * mpmath.sinh(mpmath.mpf(float(v)))) for v in s]
    expected_slope = [float(c * mpmath.cosh(mpmath.mpf(float(v)))) for v in s]
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(got, expected, rtol=4 * eps, atol=0)
    np.testing.assert_allclose(got_slope, expected_slope, rtol=4 * eps, atol=0)


def test_scale_decays_with_a():
    """c_a = c_0 e^{2a}: the Hadamard invariant m^2 - w^2 decays at exactly this rate."""
    pair = jm.Hadamard()
    w0 = pair.init(jnp.array([0.5, -1.0]), scale=2.0)
    leg = pair.legendre(w0)
    np.testing.assert_allclose(leg.scale(-1.5), 0.5 * 4.0 * np.exp(-3.0), rtol=1e-14)


@pytest.mark.parametrize(
    "pair, w0",
    [
        (jm.Hadamard(), (jnp.array([1.0, 2.0]), jnp.array([0.5, -2.0]))),
        (jm.DiffSquares(), (jnp.array([1.0, 0.0]), jnp.array([0.5, 1.0]))),
        (jm.Square(), jnp.array([1.0, 0.0])),
    ],
    ids=PAIR_IDS,
)
def test_degenerate_initialisation_is_a_clear_error(pair, w0):
    with pytest.raises(
        ValueError, match="`w0` must be .*non-degenerate|`w0` must be non-zero"
    ):
        pair.legendre(w0)


def test_degenerate_hadamard_under_vmap_raises():
    pair = jm.Hadamard()
    m = jnp.array([[1.0, 2.0], [1.0, 1.0]])
    w = jnp.array([[0.5, 0.0], [0.5, 1.0]])
    with pytest.raises(Exception, match="non-degenerate"):
        jax.vmap(lambda m_, w_: pair.legendre((m_, w_)).log_c0)(
            m, w
        ).block_until_ready()


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e3])
@pytest.mark.parametrize("pair", CLOSED_FORM_PAIRS[:2], ids=PAIR_IDS[:2])
def test_init_convention(pair, scale):
    x0 = jnp.array([0.0, 1e-3, -2.0, 5.0])
    w0 = pair.init(x0, scale=scale)
    # u^2 - v^2 cancels: its absolute error is a few eps * (u^2 + v^2).
    size = sum(leaf**2 for leaf in w0)
    assert np.all(np.abs(pair.g(w0) - x0) <= 1e-13 * np.abs(x0) + 8e-16 * size)
    # The invariant is representable when |x0| is comparable to scale**2.
    first, second = pair.init(scale**2 * x0, scale=scale)
    invariant = {
        "Hadamard": lambda: first**2 - second**2,  # m0^2 - w0^2 = scale^2
        "DiffSquares": lambda: first * second,  # u0 v0 = scale^2
    }[type(pair).__name__]()
    np.testing.assert_allclose(invariant, scale**2, rtol=1e-12)


@pytest.mark.parametrize("log_c", [-800.0, -355.0, -40.0, 0.0, 5.0])
def test_derivative_in_a_is_finite_and_exact(log_c):
    r"""d/da grad R_a(x) = -(2/k) z / sqrt(1 + z^2), z = x / c_a; drives the mirror field.

    Regression: x / c had the derivative -x / c^2, which underflows to NaN for c < 1e-154.
    """
    leg = jm.HyperbolicEntropy(log_c0=jnp.full(5, log_c), k=2.0)
    xs = jnp.array([1e-160, -5e-155, 1e-153, 0.3, -7.0])
    _, got = jax.jvp(lambda a: leg.grad(xs, a), (jnp.array(0.0),), (jnp.array(1.0),))
    mpmath.mp.dps = 50
    c = mpmath.exp(mpmath.mpf(log_c))
    expected = []
    for x in np.asarray(xs):
        z = mpmath.mpf(float(x)) / c
        expected.append(float(-z / mpmath.sqrt(1 + z**2)))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("log_c", [-700.0, -40.0, 0.0, 5.0])
def test_inverse_map_derivatives_against_mpmath(log_c):
    r"""d/dtheta c sinh(k theta) = k c cosh(k theta) and d/da = 2 c sinh(k theta), also at
    theta = 0, where a formula through sign(theta) and |theta| would give 0.

    The dual and rowspace flows start at theta = 0 for x0 = 0, so their gradients with
    respect to the initial scale go through this derivative.
    """
    leg = jm.HyperbolicEntropy(log_c0=jnp.full(5, log_c), k=2.0)
    thetas = jnp.array([0.0, -1e-9, 0.3, -4.0, 60.0])
    a = jnp.asarray(-0.25)
    got_theta = jax.vmap(jax.grad(lambda t: leg.grad_inverse(t[None], a)[0]))(thetas)
    _, got_a = jax.jvp(lambda a_: leg.grad_inverse(thetas, a_), (a,), (jnp.array(1.0),))
    mpmath.mp.dps = 50
    c = mpmath.exp(mpmath.mpf(log_c) + 2 * mpmath.mpf(float(a)))
    ts = [mpmath.mpf(float(t)) for t in np.asarray(thetas)]
    expected_theta = [float(2 * c * mpmath.cosh(2 * t)) for t in ts]
    expected_a = [float(2 * c * mpmath.sinh(2 * t)) for t in ts]
    np.testing.assert_allclose(got_theta, expected_theta, rtol=1e-12)
    np.testing.assert_allclose(got_a, expected_a, rtol=1e-12, atol=1e-300)
