"""Matrix pairs: the commuting reduction, the nuclear-norm limit, Lie brackets, models."""

import cvxpy as cp
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmirror as jm
from jaxmirror.models import (
    attention_task,
    lora_task,
    LoRALinear,
    SoftmaxAttention,
    spectral_trace,
)

from .helpers import CLOSED_FORM_PAIRS, domain, PAIR_IDS


TIGHT = dict(
    formulation=jm.ParameterFormulation(), rtol=1e-11, atol=1e-12, max_steps=10**6
)
TIMES = jnp.array([1.0, 5.0, 20.0, 60.0])


def _diagonal_problem(problem, left, right):
    """The measurements in the common basis, built independently of jaxmirror."""
    A = np.asarray(problem.A)
    return jm.LeastSquares(np.einsum("ai,dab,bi->di", left, A, right), problem.y)


def test_commuting_uv_reduces_to_hadamard_on_singular_values():
    problem, X_star, P, Q = jm.datasets.commuting_sensing(n=6, d=4, rank=2, seed=1)
    pair = jm.MatrixFactorization((6, 6), 6)
    w0 = pair.init_aligned(P, scale=0.8)
    schedule = jm.SwitchOff(0.1, 5.0)
    matrix = jm.solve(problem, pair, schedule, w0, t1=60.0, saveat=TIMES, **TIGHT)
    diagonal = _diagonal_problem(problem, P, Q)
    hadamard = jm.Hadamard()
    h0 = hadamard.init(jnp.zeros(6), scale=0.8)
    reference = jm.solve(
        diagonal, hadamard, schedule, h0, t1=60.0, saveat=TIMES, **TIGHT
    )
    rotated = np.einsum("ai,tab,bj->tij", P, np.asarray(pair.matrix(matrix.xs)), Q)
    np.testing.assert_allclose(np.einsum("tii->ti", rotated), reference.xs, atol=1e-6)
    off = rotated - np.einsum("ti,ij->tij", np.einsum("tii->ti", rotated), np.eye(6))
    assert np.max(np.abs(off)) < 1e-6
    # implicit_bias through the reduction equals the matrix flow's endpoint.
    long = jm.solve(problem, pair, schedule, w0, t1=3000.0, **TIGHT)
    predicted = jm.implicit_bias(problem, pair, schedule, w0)
    np.testing.assert_allclose(predicted, long.x_final, atol=1e-6)


def test_commuting_symmetric_reduces_to_square_on_eigenvalues():
    problem, X_star, P, _ = jm.datasets.commuting_sensing(
        n=5, d=3, rank=2, seed=2, symmetric=True
    )
    pair = jm.SymmetricFactorization(5, 5)
    w0 = pair.init_aligned(P, scale=0.6)
    schedule = jm.SwitchOff(0.2, 3.0)
    matrix = jm.solve(problem, pair, schedule, w0, t1=60.0, saveat=TIMES, **TIGHT)
    diagonal = _diagonal_problem(problem, P, P)
    square = jm.Square()
    reference = jm.solve(
        diagonal,
        square,
        schedule,
        square.init(jnp.full(5, 0.36)),
        t1=60.0,
        saveat=TIMES,
        **TIGHT,
    )
    rotated = np.einsum("ai,tab,bj->tij", P, np.asarray(pair.matrix(matrix.xs)), P)
    np.testing.assert_allclose(np.einsum("tii->ti", rotated), reference.xs, atol=1e-6)
    long = jm.solve(problem, pair, schedule, w0, t1=3000.0, **TIGHT)
    np.testing.assert_allclose(
        jm.implicit_bias(problem, pair, schedule, w0), long.x_final, atol=1e-6
    )


def test_reduction_refuses_noncommuting_or_unaligned():
    problem, _ = jm.datasets.gaussian_sensing(n1=4, n2=4, d=5, rank=1)
    pair = jm.MatrixFactorization((4, 4), 4)
    with pytest.raises(ValueError, match="do not share a common"):
        jm.implicit_bias(
            problem, pair, jm.SwitchOff(0.1, 1.0), pair.init(key=jax.random.PRNGKey(0))
        )
    commuting, _, P, _ = jm.datasets.commuting_sensing(n=4, d=3, rank=1)
    with pytest.raises(ValueError, match="`w0`: the initialisation is not aligned"):
        jm.implicit_bias(
            commuting,
            pair,
            jm.SwitchOff(0.1, 1.0),
            pair.init(scale=1.0, key=jax.random.PRNGKey(0)),
        )


def test_nuclear_norm_limit_flow_prox_and_cvxpy():
    """Constant weight decay on UV^T (Gaussian sensing, random init): flow endpoint =
    proximal (SVT) solution = cvxpy's nuclear-norm solution, to 1e-4."""
    problem, _ = jm.datasets.gaussian_sensing(n1=5, n2=4, d=12, rank=2, seed=3)
    pair = jm.MatrixFactorization((5, 4), 4)
    alpha = 0.05
    w0 = pair.init(scale=0.3, key=jax.random.PRNGKey(1))
    prox = jm.implicit_bias(problem, pair, jm.Constant(alpha), w0)
    flow = jm.solve(problem, pair, jm.Constant(alpha), w0, t1=4000.0, **TIGHT).x_final
    np.testing.assert_allclose(flow, prox, atol=1e-4)
    X = cp.Variable((5, 4))
    A = np.asarray(problem.A)
    residual = cp.hstack([cp.sum(cp.multiply(A[i], X)) for i in range(A.shape[0])])
    residual = residual - np.asarray(problem.y)
    cp.Problem(
        cp.Minimize(0.5 * cp.sum_squares(residual) + alpha * cp.normNuc(X))
    ).solve(solver=cp.SCS, eps=1e-10, max_iters=200_000)
    np.testing.assert_allclose(np.asarray(prox).reshape(5, 4), X.value, atol=1e-4)


@pytest.mark.parametrize("pair", CLOSED_FORM_PAIRS, ids=PAIR_IDS)
def test_lie_brackets_vanish_for_diagonal_pairs(pair):
    x0 = jnp.array([0.3, 0.2, 0.5, 0.1])
    w = pair.init(x0, **domain(pair).init_at(0.7))
    gaussian = np.random.default_rng(0).standard_normal((3, 4))
    for measurements in (None, gaussian):
        brackets = jm.lie_brackets(pair, w, measurements=measurements)
        assert float(brackets.max_gg) < 1e-10 and float(brackets.max_gh) < 1e-10


def test_lie_brackets_do_not_vanish_for_uv():
    problem, _ = jm.datasets.gaussian_sensing(n1=3, n2=4, d=5, rank=1)
    pair = jm.MatrixFactorization((3, 4), 2)
    w = pair.init(scale=1.0, key=jax.random.PRNGKey(0))
    brackets = jm.lie_brackets(
        pair, w, measurements=np.asarray(problem.A).reshape(5, -1)
    )
    assert float(brackets.max_gg) > 1e-2 * float(brackets.scale)
    # Weight decay commutes with the product map ([grad g_i, grad h] = 0 for U V^T).
    assert float(brackets.max_gh) < 1e-10


@pytest.mark.parametrize("task", ["attention", "lora"])
def test_weight_decay_lowers_rank_and_switch_off_keeps_it(task):
    if task == "attention":
        problem, pair, w0, _, held_out = attention_task()
    else:
        problem, pair, w0, _, _, held_out = lora_task()
    runs = {
        name: jm.train(problem, pair, schedule, w0, lr=0.05, steps=6000, save_every=500)
        for name, schedule in [
            ("none", jm.Constant(0.0)),
            ("constant", jm.Constant(0.01)),
            ("switch-off", jm.SwitchOff(0.01, 100.0)),
        ]
    }
    traces = {
        k: spectral_trace(r.xs, pair.shape, threshold=1e-2) for k, r in runs.items()
    }
    assert float(traces["constant"].nuclear_norm[-1]) < float(
        traces["none"].nuclear_norm[-1]
    )
    switch = runs["switch-off"]
    off_index = int(np.searchsorted(np.asarray(switch.ts), 100.0))
    assert int(traces["switch-off"].rank[-1]) <= int(
        traces["switch-off"].rank[off_index]
    )
    assert int(traces["switch-off"].rank[-1]) == 2  # the target's rank
    assert float(switch.loss) < 0.1 * float(problem.loss(switch.xs[off_index]))
    assert float(held_out.loss(switch.x_final)) < float(
        held_out.loss(runs["constant"].x_final)
    )


def test_models_train_with_plain_optax():
    _, _, (B, At), W0, _, _ = lora_task()
    model = LoRALinear(jnp.asarray(W0), B, At.T)
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((30, 12)))
    Y = X @ (jnp.asarray(W0) + 0.3 * jnp.ones((10, 12))).T
    params, frozen = eqx.partition(model, model.trainable())
    optimizer = optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.05))
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        loss_fn = lambda p: jnp.mean((eqx.combine(p, frozen)(X) - Y) ** 2)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    first = None
    for _ in range(300):
        params, state, loss = step(params, state)
        first = float(loss) if first is None else first
    model = eqx.combine(params, frozen)
    assert float(loss) < 0.1 * first
    np.testing.assert_array_equal(model.W0, W0)  # frozen
    attention = SoftmaxAttention(jnp.eye(4), jnp.eye(4))
    assert attention(jnp.ones((3, 4))).shape == (3, 4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: jm.MatrixFactorization((3, 4), 0), "`rank` must be an int >= 1"),
        (lambda: jm.MatrixFactorization((3, 4), 5), "`rank` = 5 exceeds min"),
        (lambda: jm.SymmetricFactorization(3, 4), "`rank` = 4 exceeds min"),
        (
            lambda: jm.MatrixSensing(jnp.ones((2, 3)), jnp.ones(2)),
            r"`A` must have shape",
        ),
        (
            lambda: jm.solve(
                jm.MatrixSensing(jnp.ones((2, 3, 4)), jnp.ones(2)),
                jm.MatrixFactorization((4, 4), 2),
                jm.Constant(0.1),
                (jnp.ones((4, 2)), jnp.ones((4, 2))),
                t1=1.0,
                formulation="parameter",
            ),
            r"`problem`: measurements of shape \(3, 4\) do not match",
        ),
    ],
)
def test_bad_matrix_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_overparameterized_rank_is_an_explicit_opt_in():
    pair = jm.MatrixFactorization((3, 4), 6, allow_overparameterized=True)
    U, V = pair.init(key=jax.random.PRNGKey(0))
    assert U.shape == (3, 6) and V.shape == (4, 6)


def test_matrix_experiment_gives_the_same_tables_with_seeds_together_or_one_by_one():
    """The matrix experiment's two paths (all seeds of a schedule in one sweep, as on
    an accelerator, or one `jm.solve` per seed, as on a CPU) agree: final errors to
    the solvers' tolerance, the flow-to-prediction gaps, the ranks."""
    from jaxmirror.experiments import matrix

    together = matrix.run("tiny", together=True)
    one_by_one = matrix.run("tiny", together=False)
    for key in ("none", "constant", "switch-off"):
        errors, gaps = together["commuting"][key]
        errors_1, gaps_1 = one_by_one["commuting"][key]
        np.testing.assert_allclose(errors, errors_1, rtol=0, atol=1e-8)
        np.testing.assert_allclose(gaps, gaps_1, rtol=0, atol=1e-8)
        errors, ranks = together["gaussian"][key]
        errors_1, ranks_1 = one_by_one["gaussian"][key]
        np.testing.assert_allclose(errors, errors_1, rtol=1e-4, atol=0)
        assert ranks == ranks_1
        # The same solve in both paths: equal at the computation's accuracy (never
        # bit for bit, which a GPU need not give).
        np.testing.assert_allclose(
            together["traces"][key][1], one_by_one["traces"][key][1], rtol=1e-12, atol=0
        )
