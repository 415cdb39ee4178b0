"""Initialisation converters against published potentials; bias diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import jaxmirror as jm


BETAS = jnp.array([-3.0, -0.2, 0.0, 1e-4, 0.7, 5.0])


@pytest.mark.parametrize("alpha", [1e-3, 0.1, 2.0])
def test_woodworth_converter(alpha):
    """Our R_0 equals Q_alpha / 4 + const (same argmin under any linear constraint)."""
    pair, scale = jm.conventions.from_woodworth(alpha)
    leg = pair.legendre(pair.init(jnp.zeros(BETAS.shape[0]), scale=scale))
    ours = jax.grad(leg.value)(BETAS, 0.0)
    theirs = jax.grad(jm.conventions.woodworth_potential)(BETAS, alpha)
    np.testing.assert_allclose(ours, theirs / 4, rtol=1e-13, atol=1e-300)
    gap = leg.value(BETAS, 0.0) - jm.conventions.woodworth_potential(BETAS, alpha) / 4
    gap0 = (
        leg.value(jnp.zeros(6), 0.0)
        - jm.conventions.woodworth_potential(jnp.zeros(6), alpha) / 4
    )
    np.testing.assert_allclose(gap, gap0, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("alpha", [1e-3, 0.1, 2.0])
def test_pesme_converter(alpha):
    """Our R_0 equals psi_alpha + const for m0 = sqrt(2) alpha, w0 = 0."""
    pair, scale = jm.conventions.from_pesme(alpha)
    w0 = pair.init(jnp.zeros(6), scale=scale)
    np.testing.assert_allclose(w0[0], np.sqrt(2) * alpha, rtol=1e-14)
    leg = pair.legendre(w0)
    ours = jax.grad(leg.value)(BETAS, 0.0)
    theirs = jax.grad(jm.conventions.pesme_potential)(BETAS, alpha)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-300)


def test_positional_bias_centre_hadamard():
    """x_hat = x0 u_a / u_0 = x0 e^{2a} for the Hadamard pair (docs/theory.md, section 5)."""
    pair = jm.Hadamard()
    x0 = jnp.array([0.3, -1.2, 2.0])
    leg = pair.legendre(pair.init(x0, scale=0.8))
    for a in [0.0, -0.4, -3.0]:
        np.testing.assert_allclose(
            jm.positional_bias_centre(leg, x0, a), x0 * np.exp(2 * a), rtol=1e-12
        )


def test_type_of_bias_moves_from_l2_to_l1():
    pair = jm.Hadamard()
    x0 = jnp.zeros(3)
    leg = pair.legendre(pair.init(x0, scale=1.0))
    x = jnp.array([0.5, -0.2, 1.0])
    exponents = [float(jm.type_of_bias(leg, x0, x, a)) for a in [2.0, 0.0, -2.0, -6.0]]
    assert exponents[0] > 1.99 and exponents[-1] < 1.1
    assert np.all(np.diff(exponents) < 0)
    # Closed form per coordinate around 0: 1 + |x| / (sqrt(x^2 + c^2) arcsinh(|x|/c)).
    c = float(leg.scale(0.0)[0])
    xi = jnp.array([0.7])
    one = pair.legendre(pair.init(jnp.zeros(1), scale=1.0))
    expected = 1 + 0.7 / (np.hypot(0.7, c) * np.arcsinh(0.7 / c))
    np.testing.assert_allclose(
        jm.type_of_bias(one, jnp.zeros(1), xi, 0.0), expected, rtol=1e-12
    )


def test_paper_alpha_is_half_of_ours():
    """The paper's objective f + alpha_paper (m^2 + w^2) has the same gradient field
    as ours, f + alpha h with h = (m^2 + w^2)/2, exactly when alpha = 2 alpha_paper."""
    rng = np.random.default_rng(0)
    Z, y = jnp.asarray(rng.standard_normal((3, 5))), jnp.asarray(rng.standard_normal(3))
    pair = jm.Hadamard()
    w = (jnp.asarray(rng.standard_normal(5)), jnp.asarray(rng.standard_normal(5)))
    alpha_paper = 0.37

    def paper(w):
        m, v = w
        return 0.5 * jnp.sum((Z @ (m * v) - y) ** 2) + alpha_paper * jnp.sum(
            m**2 + v**2
        )

    def ours(w, alpha):
        return 0.5 * jnp.sum((Z @ pair.g(w) - y) ** 2) + alpha * pair.h(w)

    alpha = jm.conventions.from_paper_alpha(alpha_paper)
    assert float(jm.conventions.to_paper_alpha(alpha)) == pytest.approx(alpha_paper)
    for a, b in zip(jax.grad(paper)(w), jax.grad(ours)(w, alpha)):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    wrong = jax.grad(ours)(w, alpha_paper)
    assert not np.allclose(wrong[0], jax.grad(paper)(w)[0])


def test_paper_a_is_half_of_ours_on_the_flow():
    """The paper's Legendre time integrates its weight decay (alpha / 2), and the
    Hadamard flow's m^2 - w^2 decays as scale^2 e^{2 a_t} = scale^2 e^{4 a_paper}:
    measured on the parameter flow at several times of a switch-off schedule."""
    rng = np.random.default_rng(1)
    problem = jm.LeastSquares(
        jnp.asarray(rng.standard_normal((3, 6))), jnp.asarray(rng.standard_normal(3))
    )
    pair, scale = jm.Hadamard(), 0.8
    w0 = pair.init(jnp.asarray(0.2 * rng.standard_normal(6)), scale)
    schedule = jm.SwitchOff(0.3, 2.0)
    ts = jnp.array([0.5, 1.5, 3.0])
    sol = jm.solve(
        problem,
        pair,
        schedule,
        w0,
        3.0,
        saveat=ts,
        formulation="parameter",
        rtol=1e-11,
        atol=1e-13,
    )
    m, w = sol.ws
    for i, t in enumerate(np.asarray(ts)):
        integral = scipy.integrate.quad(
            lambda s: float(jm.conventions.to_paper_alpha(schedule(s))),
            0.0,
            t,
            points=[2.0],
        )[0]
        a_paper = jm.conventions.to_paper_a(schedule.a(t))
        np.testing.assert_allclose(a_paper, -integral, rtol=1e-10)
        np.testing.assert_allclose(
            m[i] ** 2 - w[i] ** 2, scale**2 * np.exp(4.0 * a_paper), rtol=1e-8
        )
        np.testing.assert_allclose(jm.conventions.from_paper_a(a_paper), schedule.a(t))
