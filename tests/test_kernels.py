"""The fused gradient-descent kernel (Pallas, interpret mode on a CPU) against the XLA
path of `jm.train`: the same iterates, statuses and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmirror as jm


SCHEDULES = {
    "switch-off": jm.SwitchOff(0.1, 2.0),
    "piecewise": jm.PiecewiseSwitchOff.from_values(
        jnp.array([1.0, 3.0]), jnp.array([0.2, 0.05])
    ),
    "exponential": jm.ExponentialDecay(0.2, 0.5),
}


def _instance(dtype, seed=1):
    problem, _ = jm.datasets.sparse_regression(n=20, d=8, sparsity=2, seed=seed)
    problem = jm.LeastSquares(
        jnp.asarray(problem.Z, dtype), jnp.asarray(problem.y, dtype)
    )
    x0 = 0.3 * np.random.default_rng(seed).standard_normal(20)
    return problem, jnp.asarray(x0, dtype)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize(
    "pair", [jm.Hadamard(), jm.DiffSquares(), jm.Square()], ids=["had", "ds", "sq"]
)
@pytest.mark.parametrize("dtype, tol", [(jnp.float64, 1e-10), (jnp.float32, 1e-5)])
def test_kernel_iterates_equal_the_xla_path(schedule, pair, dtype, tol):
    problem, x0 = _instance(dtype)
    if isinstance(pair, jm.Square):  # x > 0, and no free scale
        w0 = pair.init(jnp.abs(x0) + jnp.asarray(0.1, dtype))
    else:
        w0 = pair.init(x0, jnp.asarray(0.8, dtype))
    kw = dict(lr=jnp.asarray(0.01, dtype), steps=1000, save_every=300)
    xla = jm.train(problem, pair, SCHEDULES[schedule], w0, backend="xla", **kw)
    fused = jm.train(problem, pair, SCHEDULES[schedule], w0, backend="pallas", **kw)
    assert fused.xs.dtype == dtype
    np.testing.assert_array_equal(fused.steps, xla.steps)
    np.testing.assert_allclose(fused.xs, xla.xs, rtol=0, atol=tol)
    assert int(fused.status) == int(xla.status) == jm.Status.SUCCESS


def test_kernel_reports_the_first_nonfinite_step_as_xla_does():
    problem, x0 = _instance(jnp.float64)
    pair = jm.Hadamard()
    w0 = pair.init(x0, 3.0)
    kw = dict(lr=2.0, steps=50, save_every=10)  # far beyond stability: diverges
    xla = jm.train(problem, pair, jm.Constant(0.0), w0, backend="xla", **kw)
    fused = jm.train(problem, pair, jm.Constant(0.0), w0, backend="pallas", **kw)
    assert int(xla.status) == jm.Status.NONFINITE
    assert int(fused.status) == int(xla.status)
    assert int(fused.nonfinite_step) == int(xla.nonfinite_step)
    np.testing.assert_allclose(fused.xs, xla.xs, rtol=1e-12)


def test_kernel_under_vmap_over_schedules():
    problem, x0 = _instance(jnp.float64)
    pair = jm.DiffSquares()
    w0 = pair.init(x0, 0.8)
    schedules = jm.SwitchOff(jnp.array([0.0, 0.1, 0.2]), jnp.array([1.0, 2.0, 3.0]))

    def run(backend):
        return jax.vmap(
            lambda s: (
                jm.train(
                    problem, pair, s, w0, lr=0.01, steps=400, backend=backend
                ).x_final
            )
        )(schedules)

    np.testing.assert_allclose(run("pallas"), run("xla"), rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(optimizer="adam"), "optimizer='sgd' only"),
        (dict(pair=jm.MatrixFactorization((4, 5), 2)), "exact discrete steps"),
        (dict(problem="logistic"), "one jm.LeastSquares problem"),
    ],
)
def test_kernel_refuses_what_it_cannot_run_and_auto_falls_back(change, match):
    problem, x0 = _instance(jnp.float64)
    pair = change.get("pair", jm.Hadamard())
    if change.get("problem") == "logistic":
        problem = jm.Logistic(problem.Z, jnp.sign(problem.y))
    if isinstance(pair, jm.MatrixFactorization):
        w0 = pair.init(scale=0.3, key=jax.random.PRNGKey(0))
    else:
        w0 = pair.init(x0)
    kw = dict(lr=0.01, steps=20, optimizer=change.get("optimizer", "sgd"))
    with pytest.raises(ValueError, match=rf"`backend='pallas'`: .*{match}"):
        jm.train(problem, pair, jm.Constant(0.1), w0, backend="pallas", **kw)
    auto = jm.train(problem, pair, jm.Constant(0.1), w0, backend="auto", **kw)
    xla = jm.train(problem, pair, jm.Constant(0.1), w0, backend="xla", **kw)
    np.testing.assert_array_equal(auto.xs, xla.xs)
    with pytest.raises(ValueError, match="`backend` must be one of"):
        jm.train(problem, pair, jm.Constant(0.1), w0, backend="cuda", **kw)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_kernels_lower_to_triton_for_a_gpu(dtype):
    """Both kernels, built for a GPU from this CPU, lower to Triton's IR (a Triton
    custom call in the CUDA program), in float32 and float64. This checks JAX's
    Pallas-to-Triton lowering of every operation they use; compiling that IR for a
    GPU (PTX) needs one."""
    from jaxmirror import _discrete, _kernels
    from jaxmirror._batch import Batch
    from jaxmirror._checking import validated
    from jaxmirror._formulations import RowSpaceFormulation
    from jaxmirror._kernels import _flow
    from jaxmirror._solve import solver_options

    problem, x0 = _instance(dtype)
    pair = jm.Hadamard()
    w0 = pair.init(x0, jnp.asarray(0.8, dtype))
    schedule = jm.SwitchOff(jnp.asarray(0.1, dtype), jnp.asarray(2.0, dtype))
    schedules = jm.SwitchOff(
        jnp.linspace(0.0, 0.2, 16).astype(dtype), jnp.linspace(1, 5, 16).astype(dtype)
    )
    options = solver_options(rtol=1e-6, atol=1e-9)
    batch = Batch(16, False, False)

    def flow(schedules, w0):
        return _flow._solve_local(
            RowSpaceFormulation(), problem, pair, schedules, w0, 10.0, options, batch
        )

    def train(w0):
        lr = jnp.asarray(0.01, dtype)
        return _discrete._train(problem, pair, schedule, w0, lr, 100, 50, "sgd", True)

    with _kernels.lowering_for_gpu(), validated():
        for f, args in ((flow, (schedules, w0)), (train, (w0,))):
            lowered = jax.jit(f).trace(*args).lower(lowering_platforms=("cuda",))
            assert "xla.gpu.triton" in lowered.as_text()
