"""Schedules: exact integrals against quadrature, limits, batching, validation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import jaxmirror as jm

from .helpers import SCHEDULES


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_integral_matches_quadrature(name):
    schedule = SCHEDULES[name]
    jumps = schedule.jump_ts()
    points = None if jumps is None else list(np.asarray(jumps))
    for t in [0.0, 0.3, 1.7, 3.0, 4.5, 12.0]:
        ref, _ = scipy.integrate.quad(
            lambda s: float(schedule(s)),
            0.0,
            t,
            points=points,
            epsabs=1e-13,
            epsrel=1e-13,
            limit=200,
        )
        np.testing.assert_allclose(
            float(schedule.integral(t)), ref, rtol=1e-11, atol=1e-13
        )
        np.testing.assert_allclose(float(schedule.a(t)), -ref, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_limits(name):
    schedule = SCHEDULES[name]
    far = 1e4
    np.testing.assert_allclose(
        float(schedule.alpha_inf()), float(schedule(far)), atol=1e-14
    )
    a_inf = float(schedule.a_inf())
    if float(schedule.alpha_inf()) > 0:
        assert a_inf == -np.inf
    else:
        np.testing.assert_allclose(a_inf, float(schedule.a(far)), rtol=1e-12)


def test_jump_ts():
    np.testing.assert_array_equal(SCHEDULES["switch_off"].jump_ts(), [3.0])
    np.testing.assert_array_equal(SCHEDULES["piecewise"].jump_ts(), [1.0, 2.5])
    assert SCHEDULES["constant"].jump_ts() is None
    # alpha is right-continuous at a switch-off: off from t_off on.
    s = jm.SwitchOff(0.1, 3.0)
    assert float(s(3.0)) == 0.0 and float(s(np.nextafter(3.0, 0.0))) == 0.1


def test_vmap_over_a_batch_of_schedules():
    alphas = jnp.linspace(0.0, 0.2, 5)
    t_offs = jnp.linspace(1.0, 9.0, 5)
    batch = jm.SwitchOff(alpha=alphas, t_off=t_offs)
    ts = jnp.array([0.5, 4.0, 20.0])
    got = jax.vmap(lambda s: jax.vmap(s.a)(ts))(batch)
    loop = np.array(
        [[float(jm.SwitchOff(a, t).a(t_)) for t_ in ts] for a, t in zip(alphas, t_offs)]
    )
    np.testing.assert_allclose(got, loop, rtol=1e-15)
    built = eqx.filter_vmap(jm.SwitchOff)(alphas, t_offs)
    np.testing.assert_allclose(jax.vmap(lambda s: s.a_inf())(built), -alphas * t_offs)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jm.Constant(-0.1), "`alpha` must be finite and >= 0"),
        (lambda: jm.Constant(jnp.nan), "`alpha` must be finite and >= 0"),
        (lambda: jm.SwitchOff(jnp.inf, 1.0), "`alpha` must be finite and >= 0"),
        (lambda: jm.SwitchOff(0.1, -1.0), "`t_off` must be finite and >= 0"),
        (lambda: jm.LinearDecay(0.1, 0.0), "`t_end` must be finite and > 0"),
        (lambda: jm.Cosine(0.1, 1.0, alpha_end=-1.0), "`alpha_end` must be finite"),
        (lambda: jm.ExponentialDecay(0.1, -1.0), "`rate` must be finite and >= 0"),
        (
            lambda: jm.PiecewiseConstant([2.0, 1.0], [0.1, 0.2, 0.0]),
            "strictly increasing",
        ),
        (lambda: jm.PiecewiseConstant([1.0], [0.1]), "one more entry"),
        (lambda: jm.PiecewiseConstant([1.0], [0.1, -0.2]), "`values` must be finite"),
    ],
)
def test_bad_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_parameters_raise_under_vmap():
    with pytest.raises(Exception, match="`alpha` must be finite and >= 0"):
        built = eqx.filter_vmap(jm.SwitchOff)(jnp.array([0.1, -0.1]), jnp.ones(2))
        jax.block_until_ready(built.alpha)
