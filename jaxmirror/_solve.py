r"""`solve`: the regularized gradient flow, integrated by diffrax in one of four formulations."""

import enum

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PyTree

from ._flows import (
    dual_field,
    mirror_field,
    parameter_field,
    rowspace_field,
    rowspace_point,
)
from ._pairs import (
    AbstractClosedFormPair,
    AbstractPair,
    MatrixFactorization,
    SymmetricFactorization,
)
from ._problems import AbstractLinearProblem, as_problem, MatrixSensing
from ._schedules import AbstractSchedule
from ._validation import as_float_array, is_concrete


class Status(enum.IntEnum):
    """Per-solve outcome codes stored in `Solution.status` (an int array)."""

    SUCCESS = 0
    MAX_STEPS = 1
    NONFINITE = 2
    SOLVER_FAILURE = 3


FORMULATIONS = ("parameter", "mirror", "dual", "rowspace")


class Solution(eqx.Module):
    """The result of `solve`.

    **Fields:**

    - `ts`: the saved times, shape `(times,)`.
    - `xs`: the model point x(t) at those times, shape `(times, n)`.
    - `ws`: the parameters w(t) (leading `times` axis), or `None` for the mirror, dual
      and rowspace formulations, which never form w.
    - `status`: a `Status` code (0 success, 1 max steps, 2 non-finite, 3 solver failure).
      Times after a failure hold `inf` in `xs`.
    - `num_steps`, `num_accepted_steps`, `num_rejected_steps`: solver statistics.
    - `formulation`: which vector field was integrated.
    """

    ts: Float[Array, " times"]
    xs: Float[Array, "times n"]
    ws: PyTree | None
    status: Int[Array, ""]
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    formulation: str = eqx.field(static=True)

    @property
    def x_final(self) -> Float[Array, " n"]:
        """x at the last saved time."""
        return self.xs[..., -1, :]


def _check_saveat(saveat, t1):
    """A `diffrax.SubSaveAt` of the user's times."""
    if saveat is None:
        return dfx.SubSaveAt(t1=True)
    if isinstance(saveat, dfx.SaveAt):
        sub = saveat.subs
        if (
            not isinstance(sub, dfx.SubSaveAt)
            or sub.steps
            or sub.fn is not dfx.save_y
            or saveat.dense
        ):
            raise ValueError(
                "`saveat` must save at given times (SaveAt(ts=...), t0=, t1=); "
                "`steps`, `dense`, `subs` and a custom `fn` are not supported."
            )
        return sub
    ts = as_float_array(saveat)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(
            f"`saveat` must be a 1-D array of times, got shape {ts.shape}."
        )
    if is_concrete(ts, t1):
        ts_np, t1_np = np.asarray(ts), float(np.asarray(t1))
        if not (np.all(np.isfinite(ts_np)) and np.all(np.diff(ts_np) >= 0)):
            raise ValueError("`saveat` times must be finite and non-decreasing.")
        if ts_np[0] < 0 or ts_np[-1] > t1_np:
            raise ValueError(
                f"`saveat` times must lie in [0, t1] = [0, {t1_np}], got "
                f"[{ts_np[0]}, {ts_np[-1]}]."
            )
    return dfx.SubSaveAt(ts=ts)


def check_inputs(problem, pair, schedule, w0, formulation):
    """Checks shared by `solve`, `implicit_bias` and the discrete optimizers."""
    problem = as_problem(problem)
    if not isinstance(pair, AbstractPair):
        raise TypeError(
            f"`pair` must be a jaxmirror pair (e.g. `jm.Hadamard()`), got "
            f"{type(pair).__name__}."
        )
    if not isinstance(schedule, AbstractSchedule):
        raise TypeError(
            "`schedule` must be a jaxmirror schedule (e.g. `jm.SwitchOff(alpha, t_off)`), "
            f"got {type(schedule).__name__}."
        )
    batch = jnp.shape(schedule(0.0))
    if batch != ():
        raise ValueError(
            f"`schedule` must be a single schedule with scalar parameters, got batch "
            f"shape {batch}. Map over a batch with `jax.vmap` or use `jm.sweep`."
        )
    if formulation not in FORMULATIONS:
        raise ValueError(
            f"`formulation` must be one of {FORMULATIONS}, got {formulation!r}."
        )
    if formulation != "parameter" and not isinstance(pair, AbstractClosedFormPair):
        raise ValueError(
            f"`formulation={formulation!r}` needs a pair with a closed-form Legendre "
            f"function (an `AbstractClosedFormPair`); {type(pair).__name__} has none. "
            "Use formulation='parameter'."
        )
    if formulation == "rowspace" and not isinstance(problem, AbstractLinearProblem):
        raise ValueError(
            "`formulation='rowspace'` needs a loss of the predictions Dx (an "
            "`AbstractLinearProblem`: `jm.LeastSquares`, `jm.Logistic`, "
            f"`jm.MatrixSensing`); got {type(problem).__name__}. Use formulation='dual'."
        )
    if isinstance(problem, MatrixSensing) and isinstance(
        pair, MatrixFactorization | SymmetricFactorization
    ):
        shape = (
            pair.shape if isinstance(pair, MatrixFactorization) else (pair.n, pair.n)
        )
        problem.check_shape(shape)
    w0 = jax.tree_util.tree_map(as_float_array, w0)
    try:
        x_shape = jax.eval_shape(pair.g, w0)
    except Exception as error:  # noqa: BLE001 - re-raised with the argument named
        raise ValueError(
            f"`w0` does not fit the pair {type(pair).__name__}: g(w0) failed with "
            f"{type(error).__name__}: {error}"
        ) from error
    n = problem.dim()
    if x_shape.ndim != 1 or (n is not None and x_shape.shape != (n,)):
        raise ValueError(
            f"`w0` gives x = g(w0) of shape {x_shape.shape}, but the problem expects "
            f"shape ({n},)."
        )
    if is_concrete(w0):
        leaves = jax.tree_util.tree_leaves(w0)
        if not all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in leaves):
            raise ValueError("`w0` must be finite (no NaN or inf).")
    return problem, w0


def solve(
    problem,
    pair,
    schedule,
    w0,
    t1,
    *,
    formulation: str = "dual",
    saveat=None,
    solver=None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    adjoint=None,
) -> Solution:
    # Arguments are validated below with messages that name them; no annotations here,
    # so a runtime type checker does not pre-empt those messages.
    r"""Integrate the regularized gradient flow from $w_0$ at $t = 0$ to `t1`.

    $$\dot w = -\nabla_w\big[f(g(w)) + \alpha_t h(w)\big],\qquad x_t = g(w_t),$$
    in one of four equivalent formulations (`formulation`):

    - `"parameter"`: integrate $w$ itself (any pair, including user pairs);
    - `"mirror"`: integrate $x$ with the Hessian metric of $R_{a_t}$;
    - `"dual"` (default): integrate $\theta = \nabla R_{a_t}(x)$, where
      $\dot\theta = -\nabla f(x)$; cheapest, and stable for tiny initial scales.
      When weight decay never switches off, $\theta$ grows without bound and the
      relative error of $x$ grows like `rtol` $\cdot|\theta|$: prefer `"mirror"` or
      `"parameter"` for long constant-weight-decay runs.
    - `"rowspace"`: for losses of the predictions, $f(x) = \phi(Dx)$ (least squares,
      logistic, matrix sensing), $\theta_t = \theta_0 + D^\top\mu_t$ and only the d
      coordinates of $\mu$ are integrated, $\dot\mu = -\nabla\phi(Dx_t)$; `rtol` and
      `atol` then apply to $\mu$. The fastest formulation when d < n (`jm.sweep`'s
      default for these losses).

    The schedule's discontinuities are handed to the step-size controller
    (`diffrax.ClipStepSizeController(jump_ts=...)`), so switch-offs neither stall the
    controller nor zero the gradient with respect to their time.

    Works under `jax.jit` and `jax.vmap` (over schedules, initialisations, problems); a
    failure never raises inside: it is reported in `Solution.status`.

    **Arguments:**

    - `problem`: a loss (`jm.LeastSquares`, `jm.Logistic`, `jm.Problem` or a callable).
    - `pair`: the (g, h) pair; mirror and dual need an `AbstractClosedFormPair`.
    - `schedule`: the weight-decay schedule $\alpha_t$.
    - `w0`: the initial parameters (e.g. `pair.init(x0, scale)`).
    - `t1`: the final time, $> 0$.
    - `saveat`: `None` (only `t1`), an array of times in `[0, t1]`, or a
      `diffrax.SaveAt` that saves at given times.
    - `solver`: a diffrax adaptive solver (default `diffrax.Tsit5()`).
    - `rtol`, `atol`: tolerances of the PID step-size controller.
    - `max_steps`: the step budget; exceeding it gives `Status.MAX_STEPS`.
    - `adjoint`: a diffrax adjoint for reverse-mode gradients (default: recursive
      checkpointing).

    **Returns:** a `Solution` with `ts`, `xs`, `ws`, `status` and solver statistics.

    ```python
    sol = jm.solve(jm.LeastSquares(Z, y), jm.Hadamard(), jm.SwitchOff(0.05, 20.0),
                   w0, t1=500.0, saveat=jnp.linspace(0, 500, 101))
    ```
    """
    problem, w0 = check_inputs(problem, pair, schedule, w0, formulation)
    t1 = as_float_array(t1)
    if is_concrete(t1) and not (np.isfinite(t1) and float(t1) > 0):
        raise ValueError(f"`t1` must be finite and > 0, got {float(t1)}.")
    saveat = _check_saveat(saveat, t1)
    legendre = None if formulation == "parameter" else pair.legendre(w0)
    return _solve(
        problem,
        pair,
        legendre,
        schedule,
        w0,
        t1,
        saveat,
        formulation,
        dfx.Tsit5() if solver is None else solver,
        rtol,
        atol,
        max_steps,
        dfx.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
    )


@eqx.filter_jit
def _solve(
    problem,
    pair,
    legendre,
    schedule,
    w0,
    t1,
    saveat,
    formulation,
    solver,
    rtol,
    atol,
    max_steps,
    adjoint,
):
    zero = jnp.zeros((), t1.dtype)
    x0 = pair.g(w0)
    if formulation == "parameter":
        field, y0, args = parameter_field, w0, (problem, pair, schedule)
    elif formulation == "mirror":
        field, y0, args = mirror_field, x0, (problem, legendre, schedule)
    else:
        theta0 = legendre.grad(x0, schedule.a(zero))
        if formulation == "dual":
            field, y0, args = dual_field, theta0, (problem, legendre, schedule)
        else:
            y0 = jnp.zeros(problem.design().shape[:1], theta0.dtype)
            field, args = rowspace_field, (problem, legendre, schedule, theta0)

    controller = step_size_controller(rtol, atol, y0)
    jump_ts = schedule.jump_ts()
    if jump_ts is not None:
        controller = dfx.ClipStepSizeController(
            controller, jump_ts=jump_ts.astype(t1.dtype)
        )
    sol = dfx.diffeqsolve(
        dfx.ODETerm(field),
        solver,
        t0=zero,
        t1=t1,
        dt0=None,
        y0=y0,
        args=args,
        # The second save is the last state reached, to diagnose failures.
        saveat=dfx.SaveAt(subs=[saveat, dfx.SubSaveAt(t1=True)]),
        stepsize_controller=controller,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=False,
    )
    (ts, (t_last,)), (ys, y_last) = sol.ts, sol.ys
    y_last = jax.tree_util.tree_map(lambda leaf: leaf[0], y_last)
    field_finite = _all_finite(field(t_last, y_last, args))
    if formulation == "parameter":
        ws = ys
        xs = jax.vmap(pair.g)(ws)
    elif formulation == "mirror":
        ws, xs = None, ys
    elif formulation == "dual":
        ws = None
        xs = jax.vmap(legendre.grad_inverse)(ys, jax.vmap(schedule.a)(ts))
    else:
        ws = None
        xs = jax.vmap(rowspace_point, in_axes=(0, 0, None))(ys, ts, args)
    status = _status(sol.result, xs, field_finite)
    return Solution(
        ts=ts,
        xs=xs,
        ws=ws,
        status=status,
        num_steps=sol.stats["num_steps"],
        num_accepted_steps=sol.stats["num_accepted_steps"],
        num_rejected_steps=sol.stats["num_rejected_steps"],
        formulation=formulation,
    )


def step_size_controller(rtol, atol, state, norm=None) -> dfx.PIDController:
    """The adaptive step-size controller of every jaxmirror flow.

    In float64, PI control (proportional and integral coefficients 0.3): these flows are
    stiff for explicit solvers once the support coordinates have grown, the step then
    sits at the stability limit, and diffrax's default integral-only controller
    oscillates there, rejecting about one step in five. PI control takes 14-16% fewer
    steps on the demo problem and 10% fewer on the sweep benchmark. In lower precision
    the error estimate carries roundoff of the order of `rtol`, the proportional term
    chases it, and PI control takes more steps (1,922 against 1,056 on the float32
    sweep benchmark), so there the controller stays integral-only. Measured in
    benchmarks/RESULTS.md.
    """
    kwargs = {} if norm is None else dict(norm=norm)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(state))
    if jnp.finfo(dtype).bits >= 64:
        kwargs.update(pcoeff=0.3, icoeff=0.3)
    return dfx.PIDController(rtol=rtol, atol=atol, **kwargs)


def _all_finite(tree) -> Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _status(result, xs, field_finite) -> Int[Array, ""]:
    """Status code: a non-finite vector field at the last state reached explains a
    failure (the controller rejects non-finite steps until it runs out of steps)."""
    ok = result == dfx.RESULTS.successful
    failed_code = jnp.where(
        ~field_finite,
        Status.NONFINITE,
        jnp.where(
            result == dfx.RESULTS.max_steps_reached,
            Status.MAX_STEPS,
            Status.SOLVER_FAILURE,
        ),
    )
    finite = jnp.all(jnp.isfinite(xs)) & field_finite
    code = jnp.where(
        ok, jnp.where(finite, Status.SUCCESS, Status.NONFINITE), failed_code
    )
    return code.astype(jnp.int32)
