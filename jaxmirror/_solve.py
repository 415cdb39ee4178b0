r"""`solve`: the regularized gradient flow, integrated by diffrax in a chosen formulation."""

import inspect

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PyTree

from ._arguments import check_count, check_inputs, check_t1, check_tolerance
from ._checking import as_float_array, call_checked, is_concrete, validated
from ._convergence import distance_to_limit, is_converged, precise
from ._formulations import AbstractFormulation, as_formulation, ParameterFormulation
from ._formulations._legendre_args import check_legendre
from ._programs import stored_program
from ._status import Status, status_code, with_precision
from ._tolerances import MAX_ATOL, MAX_RTOL, precision_tolerances, roundoff_rtol


class Solution(eqx.Module):
    r"""The result of `solve`.

    **Fields:**

    - `ts`: the saved times, shape `(times,)`.
    - `xs`: the model point x(t) at those times, shape `(times, n)`.
    - `ws`: the parameters w(t) (leading `times` axis), or `None` for formulations that
      never form w (mirror, dual, rowspace).
    - `status`: a `jm.Status` code (0 success, 1 max steps, 2 non-finite, 3 solver
      failure). Times after a failure hold `inf` in `xs`.
    - `converged`: whether x at the last time reached is at the flow's limit to within
      `rtol` and `atol`, judged by a Newton step towards $\dot x = 0$ from the final
      state (see `distance_to_limit`); always False unless `status` is success.
    - `distance_to_limit`: that step's size, $\max_i|\Delta x_i|$, an estimate of how
      far x(t1) still is from where the flow ends.
    - `num_steps`, `num_accepted_steps`, `num_rejected_steps`: solver statistics.
    - `formulation`: the name of the formulation that was integrated.
    """

    ts: Float[Array, " times"]
    xs: Float[Array, "times n"]
    ws: PyTree | None
    status: Int[Array, ""]
    converged: Bool[Array, ""]
    distance_to_limit: Float[Array, ""]
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    formulation: str = eqx.field(static=True)

    @property
    def x_final(self) -> Float[Array, " n"]:
        """x at the last saved time."""
        return self.xs[..., -1, :]


class SolverOptions(eqx.Module):
    """How every flow is integrated: solver, tolerances, step budget, adjoint, controller.

    Built and checked by `solver_options`; shared by `solve` and `sweep`.
    """

    solver: dfx.AbstractAdaptiveSolver
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    adjoint: dfx.AbstractAdjoint
    controller: dfx.AbstractAdaptiveStepSizeController | None

    @property
    def explicit(self) -> bool:
        """Whether the solver is an explicit Runge-Kutta method: no linear solves
        (LAPACK on a CPU) inside its steps."""
        return isinstance(self.solver, dfx.AbstractERK)

    def stepsize_controller(
        self, y0, jump_ts, norm=None
    ) -> dfx.AbstractStepSizeController:
        """The controller for a state like `y0`, clipped to the schedule's jump times
        (in the state's dtype); `norm` replaces the default controller's error norm."""
        controller = self.controller
        if controller is None:
            controller = default_controller(self.rtol, self.atol, y0, norm=norm)
        if jump_ts is None:
            return controller
        jump_ts = jump_ts.astype(state_dtype(y0))
        return dfx.ClipStepSizeController(controller, jump_ts=jump_ts)


def state_dtype(y0):
    """The floating dtype of a state. Times are given this dtype too: diffrax promotes
    the state to the dtype of the times, so float64 times would silently run a
    float32 flow in float64."""
    return jnp.result_type(*jax.tree_util.tree_leaves(y0))


SOLVE_TOLERANCES = (1e-8, 1e-10)
"""`jm.solve`'s default `rtol` and `atol` in float64 (see `_tolerances.py` for others)."""


def check_solver(solver):
    """An adaptive diffrax solver."""
    if not isinstance(solver, dfx.AbstractAdaptiveSolver):
        raise ValueError(
            "`solver` must be an adaptive diffrax solver (e.g. `diffrax.Tsit5()`, "
            f"`diffrax.Dopri8()`), got {type(solver).__name__}."
        )
    return solver


def check_controller(controller):
    """None (the default controller) or an adaptive diffrax step-size controller."""
    if controller is not None and not isinstance(
        controller, dfx.AbstractAdaptiveStepSizeController
    ):
        raise ValueError(
            "`stepsize_controller` must be an adaptive diffrax step-size controller "
            f"(e.g. `diffrax.PIDController`), got {type(controller).__name__}."
        )
    return controller


def solver_options(
    solver=None,
    rtol=SOLVE_TOLERANCES[0],
    atol=SOLVE_TOLERANCES[1],
    max_steps=100_000,
    adjoint=None,
    stepsize_controller=None,
) -> SolverOptions:
    """Check the solver options of `solve` and `sweep` and bundle them."""
    solver = dfx.Tsit5() if solver is None else check_solver(solver)
    check_controller(stepsize_controller)
    adjoint = dfx.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
    if not isinstance(adjoint, dfx.AbstractAdjoint):
        raise ValueError(
            f"`adjoint` must be a diffrax adjoint, got {type(adjoint).__name__}."
        )
    return SolverOptions(
        solver=solver,
        rtol=check_tolerance("rtol", rtol, MAX_RTOL),
        atol=check_tolerance("atol", atol, MAX_ATOL),
        max_steps=check_count("max_steps", max_steps),
        adjoint=adjoint,
        controller=stepsize_controller,
    )


def check_adjoint(adjoint, formulation) -> None:
    """Refuse the adjoints that would give wrong gradients for this formulation.

    Recursive checkpointing (the default) and `DirectAdjoint` differentiate the
    discretised solve exactly. `BacksolveAdjoint` re-integrates the flow backwards in
    time, which these dissipative flows amplify (its gradients were off by 0.4% to 70%
    in our checks). `ImplicitAdjoint` differentiates the final state as a fixed point:
    right only where that point is isolated (the row-space formulation) and reached.
    """
    if isinstance(adjoint, dfx.BacksolveAdjoint):
        raise ValueError(
            "`adjoint`: BacksolveAdjoint re-integrates the flow backwards in time, which "
            "these dissipative flows amplify into wrong gradients; use the default "
            "(RecursiveCheckpointAdjoint) or DirectAdjoint."
        )
    if isinstance(adjoint, dfx.ImplicitAdjoint) and not formulation.isolated_limit:
        raise ValueError(
            "`adjoint`: ImplicitAdjoint differentiates the final state as an isolated "
            f"fixed point, which the {formulation.name} formulation's state is not; "
            "use formulation='rowspace' (and a flow that has converged by t1), or the "
            "default adjoint."
        )


def default_controller(rtol, atol, state, norm=None) -> dfx.PIDController:
    """The adaptive step-size controller of every jaxmirror flow.

    PI control (proportional and integral coefficients 0.3) where the error estimates
    are clean, that is where `rtol` is at least the roundoff floor of the state's dtype
    (`_tolerances.roundoff_rtol`, 100 epsilons): these flows are stiff for explicit
    solvers once the support coordinates have grown, the step then sits at the
    stability limit, and diffrax's default integral-only controller oscillates there,
    rejecting about one step in five. Below that floor (e.g. float32 at rtol 1e-6) the
    error estimate carries roundoff of the order of `rtol` and the proportional term
    chases it, so there the controller stays integral-only. Both measured in
    `benchmarks/RESULTS.md`.
    """
    kwargs = {} if norm is None else dict(norm=norm)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(state))
    if rtol >= roundoff_rtol(dtype):
        kwargs.update(pcoeff=0.3, icoeff=0.3)
    return dfx.PIDController(rtol=rtol, atol=atol, **kwargs)


_DEFAULT_SAVE_FN = inspect.signature(dfx.SubSaveAt).parameters["fn"].default


def check_saveat(saveat, t1) -> dfx.SubSaveAt:
    """A `diffrax.SubSaveAt` of the user's times in `[0, t1]`."""
    if saveat is None:
        return dfx.SubSaveAt(t1=True)
    if isinstance(saveat, dfx.SaveAt):
        sub = saveat.subs
        if (
            not isinstance(sub, dfx.SubSaveAt)
            or sub.steps
            or sub.fn is not _DEFAULT_SAVE_FN
            or saveat.dense
        ):
            raise ValueError(
                "`saveat` must save at given times (SaveAt(ts=...), t0=, t1=); "
                "`steps`, `dense`, `subs` and a custom `fn` are not supported."
            )
        if sub.ts is not None:
            _check_save_times(as_float_array(sub.ts, "saveat"), t1)
        return sub
    ts = as_float_array(saveat, "saveat")
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(
            f"`saveat` must be a 1-D array of times, got shape {ts.shape}."
        )
    _check_save_times(ts, t1)
    return dfx.SubSaveAt(ts=ts)


def _check_save_times(ts, t1):
    if not is_concrete(ts, t1):
        return
    ts_np, t1_np = np.asarray(ts), float(np.asarray(t1))
    if not (np.all(np.isfinite(ts_np)) and np.all(np.diff(ts_np) >= 0)):
        raise ValueError("`saveat` times must be finite and non-decreasing.")
    if ts_np[0] < 0 or ts_np[-1] > t1_np:
        raise ValueError(
            f"`saveat` times must lie in [0, t1] = [0, {t1_np}], got "
            f"[{ts_np[0]}, {ts_np[-1]}]."
        )


def solve(
    problem,
    pair,
    schedule,
    w0,
    t1,
    *,
    formulation="auto",
    saveat=None,
    solver=None,
    rtol=None,
    atol=None,
    max_steps=100_000,
    adjoint=None,
    stepsize_controller=None,
) -> Solution:
    # Arguments are validated below with messages that name them; no annotations here,
    # so a runtime type checker does not pre-empt those messages.
    r"""Integrate the regularized gradient flow from $w_0$ at $t = 0$ to `t1`.

    $$\dot w = -\nabla_w\big[f(g(w)) + \alpha_t h(w)\big],\qquad x_t = g(w_t),$$
    in one of four equivalent formulations (`formulation`, a name or an object):

    - `"parameter"` (`jm.ParameterFormulation`): integrate $w$ itself (any pair);
    - `"mirror"` (`jm.MirrorFormulation`): integrate $x$ in the Hessian metric of
      $R_{a_t}$;
    - `"dual"` (`jm.DualFormulation`): integrate $\theta = \nabla R_{a_t}(x)$,
      where $\dot\theta = -\nabla f(x)$; cheapest, and stable for tiny initial scales;
    - `"rowspace"` (`jm.RowSpaceFormulation`): for losses of the predictions,
      integrate the d coordinates of $\theta - \theta_0$ in the row space of the design;
    - `"auto"` (default, as in `jm.sweep`): the fastest that can run, as measured:
      `"rowspace"` for a closed-form pair and a loss of the predictions, `"dual"` for
      other losses, `"parameter"` for pairs without a closed form, and in float32
      when `rtol` is below its default (where roundoff drives the Legendre
      formulations' error estimates).

    Each formulation's docstring gives its equations and when to prefer it. The
    schedule's jump times clip the step-size controller, so switch-offs neither stall
    it nor zero the gradient with respect to their time. Works under `jax.jit` and
    `jax.vmap`; a failure never raises inside: it is reported in `Solution.status`.

    **Arguments:**

    - `problem`: a loss (`jm.LeastSquares`, `jm.Logistic`, `jm.Problem` or a callable).
    - `pair`: the (g, h) pair; all formulations but `"parameter"` need an
      `AbstractClosedFormPair`.
    - `schedule`: the weight-decay schedule $\alpha_t$.
    - `w0`: the initial parameters (e.g. `pair.init(x0, scale)`).
    - `t1`: the final time, finite and $> 0$.
    - `formulation`: see above.
    - `saveat`: `None` (only `t1`), an array of times in `[0, t1]`, or a
      `diffrax.SaveAt` that saves at given times.
    - `solver`: a diffrax adaptive solver (default `diffrax.Tsit5()`). Near its limit
      the flow is stiff for an explicit solver, whose step count then grows with
      `t1`: for horizons long after the fit, `diffrax.Kvaerno5()` (implicit) takes
      far fewer steps (406 against 58,824 to t1 = 30,000 in the demo).
    - `rtol`, `atol`: tolerances of the step-size controller, finite, $> 0$ and at
      most 0.1 and 1e-2 (`jaxmirror._tolerances.MAX_RTOL`, `MAX_ATOL`: looser ones
      make the flow's accuracy, and the `converged` flag, meaningless).
      Default by precision: 1e-8 and 1e-10 in float64; in float32 100 and 1 times
      its machine epsilon (1.2e-5, 1.2e-7), above the roundoff of the inverse mirror
      map (see `jaxmirror._tolerances`).
    - `max_steps`: the step budget, an int $\ge 1$; running out gives
      `Status.MAX_STEPS`.
    - `adjoint`: a diffrax adjoint for reverse-mode gradients: the default (recursive
      checkpointing) or `DirectAdjoint`, exact for the discretised solve; or
      `ImplicitAdjoint` with the row-space formulation, for a flow that has converged
      by `t1` (the gradient of its limit). `BacksolveAdjoint` is refused (its backward
      re-integration is unstable for these flows).
    - `stepsize_controller`: any adaptive diffrax controller, replacing the default
      PID controller built from `rtol` and `atol` (which are then unused); it is
      still clipped to the schedule's jump times.

    **Returns:** a `Solution` with `ts`, `xs`, `ws`, `status` and solver statistics.

    ```python
    sol = jm.solve(jm.LeastSquares(Z, y), jm.Hadamard(), jm.SwitchOff(0.05, 20.0),
                   w0, t1=500.0, saveat=jnp.linspace(0, 500, 101))
    ```
    """
    problem, w0 = check_inputs(problem, pair, schedule, w0)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(w0))
    rtol, atol = precision_tolerances(dtype, rtol, atol, SOLVE_TOLERANCES)
    options = solver_options(
        solver, rtol, atol, max_steps, adjoint, stepsize_controller
    )
    t1 = check_t1(t1)
    precision = (w0, schedule.a(t1)) if is_concrete(w0, schedule, t1) else None
    formulation = as_formulation(
        formulation, problem, pair, dtype, options.rtol, precision
    )
    check_adjoint(options.adjoint, formulation)
    saveat = check_saveat(saveat, t1)
    # The initial state (and the Legendre function, theta_0) once, before any solve,
    # so that a degenerate w0 is reported there.
    y0, args = initial_state(formulation, problem, pair, schedule, w0)
    # Everything the compiled solve sees was checked above (eagerly, or through
    # error_if on traced inputs): it carries no runtime checks of its own, so the
    # persistent compilation cache can keep it.
    with validated():
        return _solve(
            formulation, problem, y0, args, schedule.jump_ts(), t1, saveat, options
        )


def initial_state(formulation, problem, pair, schedule, w0):
    """`formulation.init(problem, pair, schedule, w0)`, its checks raising now
    (`_checking.call_checked`: one compiled program when every check holds)."""
    if not isinstance(formulation, ParameterFormulation):
        check_legendre(pair, w0)
    return call_checked(formulation.init, problem, pair, schedule, w0)


@stored_program
def _solve(formulation, problem, y0, args, jump_ts, t1, saveat, options) -> Solution:
    return integrate(formulation, problem, y0, args, jump_ts, t1, saveat, options)[0]


def integrate(
    formulation: AbstractFormulation,
    problem,
    y0,
    args,
    jump_ts,
    t1,
    saveat: dfx.SubSaveAt,
    options: SolverOptions,
    convergence: bool = True,
) -> tuple[Solution, object]:
    """Integrate one flow from its initial state (traceable; `jit` it).

    **Returns:** the `Solution` and the last state reached (for `final_convergence`;
    with `convergence=False`, `converged` and `distance_to_limit` are left for the
    caller to compute from it).
    """

    def field(t, y, problem_and_args):
        # The problem travels in `args`: adjoints that re-solve backwards (diffrax's
        # BacksolveAdjoint) refuse vector fields that close over traced arrays.
        return formulation.field(t, y, *problem_and_args)

    dtype = state_dtype(y0)  # times in the state's precision
    t1 = jnp.asarray(t1).astype(dtype)
    if saveat.ts is not None:
        saveat = dfx.SubSaveAt(
            t0=saveat.t0, t1=saveat.t1, ts=saveat.ts.astype(dtype), fn=saveat.fn
        )
    sol = _diffeqsolve(field, problem, y0, args, jump_ts, t1, saveat, options)
    return _solution(
        formulation, problem, sol, args, saveat, field, options, convergence
    )


def _diffeqsolve(field, problem, y0, args, jump_ts, t1, saveat, options):
    return dfx.diffeqsolve(
        dfx.ODETerm(field),
        options.solver,
        t0=jnp.zeros((), t1.dtype),
        t1=t1,
        dt0=None,
        y0=y0,
        args=(problem, args),
        # Always save the last state reached (t1, or where a failure stopped the
        # solve), to diagnose it; one SaveAt without `subs`, which every adjoint takes.
        saveat=dfx.SaveAt(t0=saveat.t0, ts=saveat.ts, t1=True),
        stepsize_controller=options.stepsize_controller(y0, jump_ts),
        max_steps=options.max_steps,
        adjoint=options.adjoint,
        throw=False,
    )


def _solution(formulation, problem, sol, args, saveat, field, options, convergence):
    ts, ys, t_last, y_last = _requested_and_last(sol, saveat.t1)
    field_finite = all_finite(field(t_last, y_last, (problem, args)))
    xs = jax.vmap(formulation.point, in_axes=(0, 0, None, None))(ts, ys, problem, args)
    # Unreached times hold inf in x too (the readout of an inf state may be NaN).
    xs = jnp.where(jnp.isinf(ts)[:, None], jnp.inf, xs)
    status = solver_status(sol.result, xs, field_finite)
    converged, distance = jnp.zeros((), bool), jnp.full((), jnp.nan, xs.dtype)
    if convergence:
        status, converged, distance = final_convergence(
            formulation, problem, t_last, y_last, args, status, options
        )
    solution = Solution(
        ts=ts,
        xs=xs,
        ws=formulation.parameters(ys),
        status=status,
        converged=converged,
        distance_to_limit=distance,
        num_steps=sol.stats["num_steps"],
        num_accepted_steps=sol.stats["num_accepted_steps"],
        num_rejected_steps=sol.stats["num_rejected_steps"],
        formulation=formulation.name,
    )
    return solution, y_last


def _requested_and_last(sol, t1_requested: bool):
    """Split the saves into the requested times and the last state reached.

    The solve saved the requested times and then t1. After a failure, diffrax stores
    the last state reached in the first slot no requested time filled, and `inf` after
    it: that slot is the state to diagnose, and every requested time from there on
    holds `inf`, as unreached.
    """
    reached = jnp.sum(jnp.isfinite(sol.ts)) - 1  # the slot of the last state reached
    ok = sol.result == dfx.RESULTS.successful
    t_last = sol.ts[reached]
    y_last = jax.tree_util.tree_map(lambda leaf: leaf[reached], sol.ys)
    count = sol.ts.shape[0] - (0 if t1_requested else 1)
    valid = ok | (jnp.arange(count) < reached)

    def requested(leaf):
        mask = valid.reshape((count,) + (1,) * (leaf.ndim - 1))
        return jnp.where(mask, leaf[:count], jnp.inf)

    return requested(sol.ts), jax.tree_util.tree_map(requested, sol.ys), t_last, y_last


def final_convergence(formulation, problem, t, y, args, status, options):
    """`(status, converged, distance_to_limit)` at the final state (not
    differentiated): a successful solve whose state no longer holds x to the
    requested accuracy becomes `Status.PRECISION_LOST` (`_convergence.precise`)."""
    t, y, args = jax.lax.stop_gradient((t, y, args))
    step = distance_to_limit(formulation, t, y, problem, args)
    x = formulation.point(t, y, problem, args)
    converged = is_converged(step, x, options.rtol, options.atol)
    held = precise(formulation, t, y, x, problem, args, options, at_rest=converged)
    status = with_precision(status, held)
    return status, converged & (status == Status.SUCCESS), jnp.max(jnp.abs(step))


def all_finite(tree) -> Array:
    """True when every entry of every leaf is finite."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def solver_status(result, xs, field_finite) -> Int[Array, ""]:
    """The `Status` of one diffrax solve (`_status.status_code`)."""
    return status_code(
        result == dfx.RESULTS.successful,
        result == dfx.RESULTS.max_steps_reached,
        jnp.all(jnp.isfinite(xs)),
        field_finite,
    )
