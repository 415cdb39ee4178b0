r"""A property-based differential harness: every formulation against the parameter flow.

Hypothesis draws random least-squares problems, initial points $x_0 \ne 0$, initial
scales from 1e-3 to 1e2, a schedule family and its total effect $a_\infty$ from 0 to
-20; for every closed-form pair (one test each) every formulation is run and
compared with the parameter flow at tighter tolerances. The property: each run either
agrees with it within `BOUND` tolerances, or reports a status other than success
(max steps, non-finite, precision lost). Never a wrong SUCCESS.

Profiles (`HYPOTHESIS_PROFILE`): `default` (about 200 examples over the seven pairs,
in the suite) and `slow` (thousands: `HYPOTHESIS_PROFILE=slow pytest
tests/test_harness.py`). Every schedule family runs through one schedule type
(`_Family`, which evaluates the drawn family's own `alpha` and `a`) so that each pair
and formulation compiles one program, not one per family: the families' jump times
are all handed to the controller, which only adds step boundaries.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, HealthCheck, settings, strategies as st

import jaxmirror as jm


settings.register_profile(
    "default",
    max_examples=28,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "slow",
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

D, N, T = 4, 8, 40.0  # fixed shapes: one compiled program per pair and formulation
RTOL, ATOL = 1e-8, 1e-11  # the formulations'
REFERENCE = dict(rtol=1e-11, atol=1e-14, max_steps=200_000)  # the parameter flow's
BOUND = 1e4  # agreement, in formulation tolerances: |dx| <= BOUND (ATOL + RTOL |x|)
FORMULATIONS = ("mirror", "dual", "rowspace")

PAIRS = {
    "hadamard": jm.Hadamard(),
    "diff_squares": jm.DiffSquares(),
    "square": jm.Square(),
    "power3_matched": jm.PowerDifference(3, regularizer="matched"),
    "power3_l2": jm.PowerDifference(3, regularizer="l2"),
    "power4_l2": jm.PowerDifference(4, regularizer="l2"),
    "log_difference": jm.LogDifference(),
}
FAMILIES = ("constant", "switch_off", "linear", "cosine", "exponential", "piecewise")


def _horizon(pair, w0):
    """The flow's time: `T`, shortened where the initial metric (the inverse
    Hessian of R_0 at x0) is large and the flow fast, so that a run's steps do not
    grow with the scale."""
    x0 = pair.g(w0)
    metric = 1.0 / pair.legendre(w0).hessian_diag(x0, jnp.zeros(()))
    return T / max(1.0, float(jnp.max(metric)))


def _members(a, t1):
    """Every family with total effect a (a(t1) = a for constant weight decay)."""
    half = t1 / 2
    strength = -a / half
    return (
        jm.Constant(-a / t1),
        jm.SwitchOff(strength, half),
        jm.LinearDecay(2 * strength, half),
        jm.Cosine(2 * strength, half),
        jm.ExponentialDecay(4 * strength, 4 / half),
        jm.PiecewiseSwitchOff.from_values(
            jnp.array([half / 2, half]), jnp.full(2, jnp.maximum(strength, 1e-12))
        ),
    )


class _Family(jm.AbstractSchedule):
    """The drawn member of every family (`index`), behind one schedule type."""

    members: tuple
    index: jax.Array

    def _pick(self, method, *args):
        # Every member evaluated and one taken (a `lax.switch` of fresh closures
        # would be traced again at every eager call).
        return jnp.stack([method(m, *args) for m in self.members])[self.index]

    def __call__(self, t):
        return self._pick(lambda m, t: m(t), t)

    def integral(self, t):
        return self._pick(lambda m, t: m.integral(t), t)

    def jump_ts(self):
        jumps = [m.jump_ts() for m in self.members if m.jump_ts() is not None]
        return jnp.sort(jnp.concatenate([jnp.ravel(j) for j in jumps]))

    def alpha_inf(self):
        return self._pick(lambda m: m.alpha_inf())

    def a_inf(self):
        return self._pick(lambda m: m.a_inf())


@st.composite
def examples(draw, pair_name):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((D, N)) / np.sqrt(D)
    truth = np.zeros(N)
    truth[rng.choice(N, 2, replace=False)] = rng.choice([-1, 1], 2) * rng.uniform(
        0.5, 2.0, 2
    )
    x0 = rng.uniform(-0.3, 0.3, N)
    if pair_name == "square":
        x0, truth = np.abs(x0) + 0.05, np.abs(truth)
    scale = 10.0 ** draw(st.floats(-3.0, 2.0))
    a = -draw(st.floats(0.0, 20.0))
    family = draw(st.integers(0, len(FAMILIES) - 1))
    return Z, Z @ truth, x0, scale, a, family


def _run(pair_name, example):
    Z, y, x0, scale, a, family = example
    pair = PAIRS[pair_name]
    problem = jm.LeastSquares(jnp.asarray(Z), jnp.asarray(y))
    if pair_name == "square":
        w0 = pair.init(jnp.asarray(x0 * scale**2))
    else:
        w0 = pair.init(jnp.asarray(x0), jnp.asarray(scale))
    t1 = _horizon(pair, w0)
    schedule = _Family(_members(jnp.asarray(a), t1), jnp.asarray(family))
    reference = jm.solve(
        problem, pair, schedule, w0, t1, formulation="parameter", **REFERENCE
    )
    assume(int(reference.status) == jm.Status.SUCCESS)
    x_ref = np.asarray(reference.x_final)
    rows = []
    for name in FORMULATIONS:
        sol = jm.solve(
            problem, pair, schedule, w0, t1, formulation=name, rtol=RTOL, atol=ATOL
        )
        x = np.asarray(sol.x_final)
        gap = np.max(np.abs(x - x_ref)) / (ATOL + RTOL * np.max(np.abs(x_ref)))
        rows.append((name, int(sol.status), gap))
    return rows


@pytest.mark.parametrize("pair_name", list(PAIRS))
def test_every_formulation_agrees_with_the_parameter_flow_or_says_why_not(pair_name):
    record = []  # (formulation, status, gap in tolerances)

    @given(examples(pair_name))
    def check(example):
        for name, status, gap in _run(pair_name, example):
            record.append((name, status, gap))
            if status == jm.Status.SUCCESS:
                assert gap <= BOUND, (name, gap, example[3:])

    check()
    # The figures the closing note quotes (shown with -s).
    gaps = [gap for _, status, gap in record if status == jm.Status.SUCCESS]
    others = sorted(jm.Status(status).name for _, status, _ in record if status)
    counts = {name: others.count(name) for name in set(others)}
    print(
        f"\nharness[{pair_name}]: {len(record)} runs, worst agreement "
        f"{max(gaps, default=0):.3g} tolerances, non-success {counts}"
    )
