"""Bad input raises a clear ValueError naming the argument, before any solve starts."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmirror as jm


Z = jnp.ones((3, 4))
y = jnp.ones(3)
PAIR = jm.Hadamard()
W0 = PAIR.init(jnp.zeros(4), scale=1.0)
PROBLEM = jm.LeastSquares(Z, y)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: jm.LeastSquares(Z.at[0, 0].set(jnp.nan), y), "`Z` must be finite"),
        (lambda: jm.LeastSquares(Z, y.at[1].set(jnp.inf)), "`y` must be finite"),
        (
            lambda: jm.LeastSquares(Z, jnp.ones(4)),
            r"`y` must have shape \(d,\) = \(3,\)",
        ),
        (lambda: jm.LeastSquares(jnp.ones(3), y), "`Z` must be a matrix"),
        (
            lambda: jm.Logistic(Z, jnp.array([1.0, 0.0, 1.0])),
            r"`y` must be labels in \{-1, \+1\}",
        ),
        (
            lambda: jm.solve(PROBLEM, PAIR, jm.SwitchOff(0.1, 1.0), W0, t1=-1.0),
            "`t1` must be finite and > 0",
        ),
        (
            lambda: jm.solve(
                PROBLEM, PAIR, jm.SwitchOff(0.1, 1.0), W0, t1=1.0, formulation="primal"
            ),
            "`formulation` must be one of",
        ),
        (
            lambda: jm.solve(
                lambda x: jnp.sum(x**2),
                PAIR,
                jm.SwitchOff(0.1, 1.0),
                W0,
                t1=1.0,
                formulation="rowspace",
            ),
            "`formulation='rowspace'` needs a loss of the predictions",
        ),
        (
            lambda: jm.solve(
                PROBLEM,
                PAIR,
                jm.SwitchOff(0.1, 1.0),
                (jnp.ones(5), jnp.ones(5)),
                t1=1.0,
            ),
            "`w0` gives x = g",
        ),
        (
            lambda: jm.solve(
                PROBLEM,
                PAIR,
                jm.SwitchOff(0.1, 1.0),
                (jnp.ones(4), jnp.ones(3)),
                t1=1.0,
            ),
            "`w0` does not fit",
        ),
        (
            lambda: jm.solve(
                PROBLEM,
                PAIR,
                jm.SwitchOff(0.1, 1.0),
                (jnp.full(4, jnp.nan), jnp.ones(4)),
                t1=1.0,
                formulation="parameter",
            ),
            "`w0` must be finite",
        ),
        (
            lambda: jm.solve(
                PROBLEM,
                PAIR,
                jm.SwitchOff(0.1, 1.0),
                (jnp.ones(4), jnp.ones(4)),
                t1=1.0,
            ),
            "`w0` must be a non-degenerate",
        ),
        (
            lambda: jm.implicit_bias(
                PROBLEM, PAIR, jm.SwitchOff(0.1, 1.0), (jnp.ones(4), -jnp.ones(4))
            ),
            "`w0` must be a non-degenerate",
        ),
        (
            lambda: jm.solve(
                PROBLEM, PAIR, jm.SwitchOff(jnp.ones(2), jnp.ones(2)), W0, t1=1.0
            ),
            "`schedule` must be a single schedule",
        ),
        (
            lambda: jm.solve(PROBLEM, PAIR, 0.1, W0, t1=1.0),
            "`schedule` must be a jaxmirror schedule",
        ),
        (
            lambda: jm.solve(PROBLEM, "hadamard", jm.Constant(0.1), W0, t1=1.0),
            "`pair` must be a jaxmirror pair",
        ),
        (
            lambda: jm.solve(
                PROBLEM,
                PAIR,
                jm.Constant(0.1),
                W0,
                t1=1.0,
                saveat=jnp.array([0.5, 2.0]),
            ),
            r"`saveat` times must lie in \[0, t1\]",
        ),
        (
            lambda: jm.solve(
                PROBLEM,
                PAIR,
                jm.Constant(0.1),
                W0,
                t1=1.0,
                saveat=jnp.array([0.5, 0.2]),
            ),
            "non-decreasing",
        ),
        (lambda: PAIR.init(jnp.zeros(4), scale=0.0), r"`scale` must be in \["),
        (lambda: jm.Square().init(jnp.array([1.0, -1.0])), "`x0` must be > 0"),
        (lambda: jm.Square().init(jnp.ones(2), 0.5), "`scale` must be None for Square"),
        (
            lambda: PAIR.init(jnp.zeros(4), scale=1e-300),
            r"`scale` must be in \[1.49e-154",
        ),
        (
            lambda: PAIR.init(jnp.zeros(4), scale=1e300),
            r"`scale` must be in \[.*1.34e\+154\]",
        ),
        (
            lambda: jm.DiffSquares().init(-jnp.ones(4), scale=1e-160),
            r"`scale` must be in \[",
        ),
        (
            lambda: jm.MatrixFactorization((3, 3), 2).init(jax.random.PRNGKey(0)),
            "`x0` must be None .* got a PRNG key; pass it as `.*key=key",
        ),
        (lambda: jm.MatrixFactorization((3, 3), 2).init(), "`key` is required"),
        (lambda: PAIR.init(jax.random.PRNGKey(0)), "`x0` must be a model point"),
        (
            lambda: jm.solve(PROBLEM, PAIR, jm.Constant(0.1), W0, t1=float("inf")),
            "`t1` must be finite and > 0",
        ),
        (lambda: jm.SwitchOff(jnp.ones(3), jnp.ones(2)), "batch shapes disagree"),
        (lambda: jm.Constant(jnp.ones(0)), "an empty batch of schedules"),
        *[
            (
                lambda kwargs=kwargs: jm.solve(
                    PROBLEM, PAIR, jm.SwitchOff(0.1, 1.0), W0, t1=1.0, **kwargs
                ),
                match,
            )
            for kwargs, match in [
                (dict(rtol=0.0), "`rtol` must be a finite number > 0"),
                (dict(rtol=-1e-6), "`rtol` must be a finite number > 0"),
                (dict(rtol=float("nan")), "`rtol` must be a finite number > 0"),
                (dict(atol=-1.0), "`atol` must be a finite number > 0"),
                (dict(max_steps=0), "`max_steps` must be an int >= 1"),
                (dict(max_steps=-1), "`max_steps` must be an int >= 1"),
                (dict(max_steps=10.5), "`max_steps` must be an int >= 1"),
                (dict(solver=dfx.Euler()), "`solver` must be an adaptive"),
                (
                    dict(stepsize_controller=dfx.ConstantStepSize()),
                    "`stepsize_controller` must be an adaptive",
                ),
            ]
        ],
        (
            lambda: jm.sweep(
                PROBLEM, PAIR, jm.SwitchOff(jnp.ones(2), 1.0), W0, 1.0, chunk_size=2.5
            ),
            "`chunk_size` must be an int >= 1",
        ),
        (
            lambda: jm.train(
                PROBLEM, PAIR, jm.Constant(0.1), W0, optax.sgd(0.2), lr=0.1, steps=5
            ),
            "`optimizer`: its first step moves a unit gradient by 0.2",
        ),
        (lambda: jm.DiffSquares().init(jnp.zeros((2, 2))), "`x0` must be a vector"),
    ],
)
def test_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_solve_parameter_formulation_accepts_degenerate_init():
    """m0 = w0 is a legitimate flow (x keeps its sign); only the Legendre view rejects it."""
    w0 = (jnp.full(4, 0.5), jnp.full(4, 0.5))
    sol = jm.solve(PROBLEM, PAIR, jm.Constant(0.0), w0, t1=5.0, formulation="parameter")
    assert int(sol.status) == jm.Status.SUCCESS
    assert np.all(np.asarray(sol.x_final) >= 0)


def test_value_errors_fire_under_jit():
    @jax.jit
    def make(alpha):
        return jm.SwitchOff(alpha, 1.0).alpha

    with pytest.raises(Exception, match="`alpha` must be finite and >= 0"):
        jax.block_until_ready(make(-1.0))


def test_constant_inputs_inside_jit_are_checked_eagerly():
    @jax.jit
    def run(lr):
        sched = jm.SwitchOff(0.1, 2.0)
        return jm.train(PROBLEM, PAIR, sched, W0, lr=lr, steps=5).x_final

    assert run(0.1).shape == (4,)
    with pytest.raises(ValueError, match="`t_off` must be finite and >= 0"):
        jax.jit(lambda: jm.SwitchOff(0.1, -2.0).alpha)()


def test_traced_negative_t1_is_refused_under_jit():
    """A traced t1 cannot be checked before the solve: eqx.error_if refuses it inside,
    instead of integrating backwards."""
    run = jax.jit(
        lambda t1: jm.solve(PROBLEM, PAIR, jm.Constant(0.1), W0, t1=t1).x_final
    )
    assert run(1.0).shape == (4,)
    with pytest.raises(Exception, match="`t1` must be finite and > 0"):
        jax.block_until_ready(run(-1.0))


def test_flagged_records_each_check_instead_of_raising():
    """Inside `flagged`, a check on traced values becomes a flag: False where it fails
    (per row under `vmap`), True where it holds, and no host callback in the program
    (so the persistent compilation cache can keep it)."""
    from jaxmirror._checking import check_positive, flagged

    positive = flagged(lambda x: 2.0 * check_positive("x", x))
    out, ok = jax.jit(positive)(jnp.array([1.0, 3.0]))
    np.testing.assert_allclose(out, [2.0, 6.0], rtol=1e-15)
    assert bool(ok)
    assert not bool(jax.jit(positive)(jnp.array([1.0, -3.0]))[1])
    rows_ok = jax.jit(jax.vmap(positive))(jnp.array([[1.0, 2.0], [0.0, 1.0]]))[1]
    assert rows_ok.tolist() == [True, False]
    jaxpr = jax.make_jaxpr(positive)(jnp.ones(2))
    assert not any("callback" in eqn.primitive.name for eqn in jaxpr.eqns)
    # Outside `flagged`, the same traced check still raises at run time.
    with pytest.raises(Exception, match="`x` must be finite and > 0"):
        jax.block_until_ready(jax.jit(lambda x: check_positive("x", x))(-jnp.ones(2)))


@pytest.mark.parametrize("formulation", ["rowspace", "mirror", "parameter"])
def test_solve_builds_its_initial_state_as_the_eager_init_does(formulation):
    """`jm.solve` builds (y0, args) in one compiled program: the same state as the
    formulation's eager `init`, to rounding."""
    from jaxmirror._formulations import as_formulation
    from jaxmirror._solve import initial_state

    problem, _ = jm.datasets.sparse_regression(n=12, d=5, sparsity=2, seed=3)
    pair = jm.Hadamard()
    w0 = pair.init(jnp.linspace(-0.5, 0.5, 12), scale=0.3)
    schedule = jm.SwitchOff(0.1, 2.0)
    chosen = as_formulation(formulation, problem, pair, jnp.float64, 1e-8)
    compiled = initial_state(chosen, problem, pair, schedule, w0)
    eager = chosen.init(problem, pair, schedule, w0)
    leaves = jax.tree_util.tree_leaves(compiled)
    assert len(leaves) == len(jax.tree_util.tree_leaves(eager))
    for got, want in zip(leaves, jax.tree_util.tree_leaves(eager)):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-300)


def test_a_degenerate_w0_is_reported_by_solve_inside_jit_too():
    """With traced inputs the initial state is built in the caller's trace, and a
    degenerate w0 still stops the run with the check's message."""

    @jax.jit
    def final(m0):
        w0 = (m0, jnp.ones(4))
        return jm.solve(PROBLEM, PAIR, jm.SwitchOff(0.1, 1.0), w0, t1=1.0).x_final

    assert np.all(np.isfinite(final(jnp.full(4, 2.0))))
    with pytest.raises(Exception, match="`w0` must be a non-degenerate"):
        jax.block_until_ready(final(jnp.ones(4)))
