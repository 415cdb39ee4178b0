"""The discrete counterpart: Optax training, its first-order match with the flow, and
the exact discrete mirror descent."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmirror as jm

from .helpers import CLOSED_FORM_PAIRS, PAIR_IDS, random_instance


def _sparse_instance():
    problem, _ = jm.datasets.sparse_regression(n=30, d=12, sparsity=3, seed=1)
    pair = jm.Hadamard()
    return problem, pair, pair.init(jnp.zeros(30), scale=1.0)


def test_optax_is_new_enough_and_scheduled_decay_advances():
    """optax < 0.2.7 froze a scheduled weight decay at its first value."""
    major, minor, patch = (int(p) for p in optax.__version__.split(".")[:3])
    assert (major, minor, patch) >= (0, 2, 7)
    lr, t_off = 0.1, 0.35  # steps 0-3 decay, step 4 on does not
    tx = optax.add_decayed_weights(jm.SwitchOff(0.5, t_off).as_optax(lr))
    w = jnp.ones(3)
    state = tx.init(w)
    decays = []
    for _ in range(6):
        updates, state = tx.update(jnp.zeros(3), state, w)
        decays.append(float(updates[0]))
    np.testing.assert_allclose(decays, [0.5, 0.5, 0.5, 0.5, 0.0, 0.0])


def test_sgd_is_euler_of_the_flow():
    """Three hand-written Euler steps of the parameter flow equal `train`'s."""
    problem, pair, w0 = _sparse_instance()
    schedule, lr = jm.SwitchOff(0.3, 0.15), 0.1
    w = w0
    for k in range(3):
        m, v = w
        grad = problem.grad(m * v)
        alpha = float(schedule(k * lr))
        w = (m - lr * (v * grad + alpha * m), v - lr * (m * grad + alpha * v))
    result = jm.train(problem, pair, schedule, w0, lr=lr, steps=3, save_every=1)
    np.testing.assert_allclose(result.ws[0][-1], w[0], rtol=1e-14)
    np.testing.assert_allclose(result.ts, [0.0, 0.1, 0.2, 0.3])


def test_first_order_convergence_to_the_flow():
    """|x_GD(T) - x_flow(T)| ~ lr: log-log slope in [0.8, 1.2] over lrs spanning 8x."""
    problem, pair, w0 = _sparse_instance()
    schedule, horizon = jm.SwitchOff(0.1, 10.0), 40.0
    flow = jm.solve(
        problem,
        pair,
        schedule,
        w0,
        t1=horizon,
        formulation="parameter",
        rtol=1e-12,
        atol=1e-12,
        max_steps=10**6,
    ).x_final
    lrs = np.array([0.04, 0.02, 0.01, 0.005])
    errors = []
    for lr in lrs:
        steps = int(round(horizon / lr))
        x = jm.train(
            problem, pair, schedule, w0, lr=lr, steps=steps, save_every=steps
        ).x_final
        errors.append(float(jnp.linalg.norm(x - flow)))
    slope = np.polyfit(np.log(lrs), np.log(errors), 1)[0]
    print(f"errors {errors}, slope {slope:.3f}")
    assert 0.8 <= slope <= 1.2


def test_endpoints_small_lr_and_finite_lr_prediction():
    problem, pair, w0 = _sparse_instance()
    schedule = jm.SwitchOff(0.1, 10.0)
    limit = jm.implicit_bias(problem, pair, schedule, w0)
    horizon = 3000.0
    flow_end = jm.solve(
        problem, pair, schedule, w0, t1=horizon, rtol=1e-12, atol=1e-12, max_steps=10**6
    ).x_final
    assert float(jnp.max(jnp.abs(flow_end - limit))) < 1e-8  # the flow has converged

    # Small lr: the GD endpoint is within its own discretisation error of the prediction.
    lr = 0.01
    steps = int(horizon / lr)
    small = jm.train(problem, pair, schedule, w0, lr=lr, steps=steps, save_every=steps)
    discretisation = float(jnp.linalg.norm(small.x_final - flow_end))
    assert float(jnp.linalg.norm(small.x_final - limit)) <= 1.01 * discretisation + 1e-8
    assert discretisation < 0.5 * lr  # first order: the constant here is about 0.14

    # Finite lr: the exact discrete prediction (gains over the first 1% of the steps)
    # beats the flow's prediction by far.
    lr = 0.05
    steps = int(horizon / lr)
    run = jm.train(problem, pair, schedule, w0, lr=lr, steps=steps, save_every=steps)
    predicted = jm.discrete_implicit_bias(
        problem, pair, schedule, w0, lr=lr, steps=steps, gain_steps=steps // 100
    )
    finite_error = float(jnp.linalg.norm(run.x_final - predicted))
    flow_error = float(jnp.linalg.norm(run.x_final - limit))
    print(
        f"lr=0.05: finite-step prediction error {finite_error:.2e}, flow {flow_error:.2e}"
    )
    assert finite_error < flow_error / 10


@pytest.mark.parametrize("pair", CLOSED_FORM_PAIRS, ids=PAIR_IDS)
def test_gd_is_exactly_a_mirror_descent(pair):
    """Iterating (theta, a) with the closed-form step reproduces the GD iterates."""
    problem, w0, _ = random_instance(jax.random.PRNGKey(3), pair)
    schedule, lr = jm.SwitchOff(0.4, 0.5), 0.05
    result = jm.train(problem, pair, schedule, w0, lr=lr, steps=40, save_every=1)
    leg = pair.legendre(w0)
    theta = leg.grad(pair.g(w0), 0.0)
    a = jnp.zeros(12)
    for k in range(40):
        lam = schedule(k * lr)
        theta, a, _, _ = jm.mirror_descent_step(pair, leg, problem, theta, a, lr, lam)
        np.testing.assert_allclose(
            leg.grad_inverse(theta, a), result.xs[k + 1], rtol=1e-11, atol=1e-13
        )


def test_vmap_over_lrs_schedules_and_seeds_equals_loop():
    problem, pair, _ = _sparse_instance()

    def run(lr, alpha, key):
        w0 = pair.init(0.1 * jax.random.normal(key, (30,)), scale=1.0)
        sched = jm.SwitchOff(alpha, 5.0)
        return jm.train(problem, pair, sched, w0, lr=lr, steps=200, save_every=50).xs

    lrs = jnp.array([0.01, 0.02, 0.05])
    alphas = jnp.array([0.0, 0.1, 0.2])
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    batched = jax.vmap(run)(lrs, alphas, keys)
    assert batched.shape == (3, 5, 30)
    for i in range(3):
        np.testing.assert_allclose(
            batched[i], run(lrs[i], alphas[i], keys[i]), rtol=1e-13
        )


@pytest.mark.parametrize("optimizer", ["momentum", "adam", "adamw"])
def test_other_optimizers_decrease_the_loss(optimizer):
    problem, pair, w0 = _sparse_instance()
    result = jm.train(
        problem,
        pair,
        jm.SwitchOff(0.01, 2.0),
        w0,
        optimizer=optimizer,
        lr=0.01,
        steps=2000,
    )
    assert int(result.status) == jm.Status.SUCCESS
    assert float(result.loss) < 1e-2 * float(problem.loss(pair.g(w0)))


def test_user_optax_transformation_equals_named_sgd():
    problem, pair, w0 = _sparse_instance()
    sched = jm.SwitchOff(0.1, 1.0)
    named = jm.train(problem, pair, sched, w0, "sgd", lr=0.05, steps=100).x_final
    custom = jm.train(
        problem, pair, sched, w0, optax.sgd(0.05), lr=0.05, steps=100
    ).x_final
    np.testing.assert_allclose(named, custom, rtol=1e-14)


def test_nonfinite_update_is_recorded_with_its_step():
    problem, pair, w0 = _sparse_instance()
    result = jm.train(problem, pair, jm.Constant(0.0), w0, lr=50.0, steps=100)
    assert int(result.status) == jm.Status.NONFINITE
    assert 0 <= int(result.nonfinite_step) < 100
    assert np.all(np.isfinite(np.asarray(result.xs)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=0.0, steps=10), "`lr` must be finite and > 0"),
        (dict(lr=-1.0, steps=10), "`lr` must be finite and > 0"),
        (dict(lr=0.1, steps=0), "`steps` must be a positive int"),
        (dict(lr=0.1, steps=10, optimizer="adagrad"), "`optimizer` must be one of"),
        (dict(lr=0.1, steps=10, save_every=20), "`save_every` must be an int"),
    ],
)
def test_bad_input(kwargs, match):
    problem, pair, w0 = _sparse_instance()
    with pytest.raises(ValueError, match=match):
        jm.train(problem, pair, jm.Constant(0.1), w0, **kwargs)


def test_pair_whose_h_is_not_weight_decay_is_rejected():
    class Quartic(jm.AbstractPair):
        def g(self, w):
            return w

        def h(self, w):
            return jnp.sum(w**4)

        def init(self, x0=None, scale=None, *, key=None):
            return x0

    problem, _, _ = _sparse_instance()
    with pytest.raises(ValueError, match="`pair`: train applies weight decay"):
        jm.train(problem, Quartic(), jm.Constant(0.1), jnp.ones(30), lr=0.1, steps=10)


def test_compare_to_flow():
    problem, pair, w0 = _sparse_instance()
    sched = jm.SwitchOff(0.1, 5.0)
    result = jm.train(problem, pair, sched, w0, lr=0.01, steps=1000, save_every=100)
    comparison = jm.compare_to_flow(
        problem, pair, sched, w0, result, rtol=1e-10, atol=1e-12
    )
    assert comparison.distance.shape == (11,)
    assert float(comparison.distance[0]) == 0.0
    assert 0 < float(comparison.endpoint_to_flow) < 1e-2
    limit = jm.implicit_bias(problem, pair, sched, w0)
    np.testing.assert_allclose(
        comparison.endpoint_to_limit,
        jnp.linalg.norm(result.x_final - limit),
        rtol=1e-12,
    )


class _ClosedFormWithoutDiscreteSteps(jm.AbstractClosedFormPair):
    """Hadamard's flow, but without the exact discrete mirror descent capability."""

    def g(self, w):
        return jm.Hadamard().g(w)

    def h(self, w):
        return jm.Hadamard().h(w)

    def init(self, x0=None, scale=1.0, *, key=None):
        return jm.Hadamard().init(x0, scale)

    def legendre(self, w0):
        return jm.Hadamard().legendre(w0)


def test_exact_discrete_steps_need_the_capability():
    """A pair that does not declare `remainder_and_gain` is refused with the capability
    named, never given another pair's formulas."""
    problem, _, _ = _sparse_instance()
    pair = _ClosedFormWithoutDiscreteSteps()
    w0 = pair.init(jnp.zeros(30), scale=1.0)
    leg = pair.legendre(w0)
    theta = leg.grad(pair.g(w0), 0.0)
    with pytest.raises(ValueError, match="`AbstractMirrorDescentPair`"):
        jm.mirror_descent_step(pair, leg, problem, theta, jnp.zeros(30), 0.1, 0.0)
    with pytest.raises(ValueError, match="`AbstractMirrorDescentPair`"):
        jm.discrete_implicit_bias(
            problem, pair, jm.SwitchOff(0.1, 1.0), w0, lr=0.1, steps=10
        )
    # The flow itself needs only the closed form.
    sol = jm.solve(problem, pair, jm.SwitchOff(0.1, 1.0), w0, t1=2.0)
    assert int(sol.status) == jm.Status.SUCCESS
