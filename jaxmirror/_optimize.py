r"""Learning the weight-decay schedule itself by gradient descent through the flow."""

import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from ._arguments import check_steps
from ._implicit_bias import implicit_bias
from ._schedules import AbstractSchedule
from ._solve import solve


class ScheduleOptimization(eqx.Module):
    """The result of `optimize_schedule`.

    **Fields:**

    - `schedule`: the best schedule found (lowest objective).
    - `history`: the objective at each step, shape `(steps_done,)`.
    - `num_solves`: outcome evaluations used (flow solves for `via="solve"`, dual
      Newton solves for `via="implicit_bias"`), each with its gradient.
    - `nonfinite_step`: the step at which a non-finite objective or gradient appeared
      (the optimisation stops there), or -1.
    - `seconds`: wall time.
    """

    schedule: AbstractSchedule
    history: Float[Array, " steps"]
    num_solves: int = eqx.field(static=True)
    nonfinite_step: int = eqx.field(static=True)
    seconds: float = eqx.field(static=True)


def optimize_schedule(
    problem,
    pair,
    w0,
    objective: Callable[[Array], Array],
    schedule: AbstractSchedule,
    *,
    steps: int = 100,
    optimizer: optax.GradientTransformation | None = None,
    via: str = "implicit_bias",
    t1: float | None = None,
    solve_options: dict | None = None,
    progress: bool = False,
) -> ScheduleOptimization:
    r"""Minimise `objective(x_end)` over the schedule's parameters with Optax.

    $x_{end}$ is where training ends: `jm.implicit_bias` (`via="implicit_bias"`,
    differentiated implicitly; needs a schedule whose $a_\infty$ is finite, such as
    `jm.PiecewiseSwitchOff`) or the flow at `t1` (`via="solve"`, differentiated through
    diffrax's adjoint). Every inexact array leaf of `schedule` is a parameter; a family
    such as `jm.PiecewiseSwitchOff` keeps $\alpha \ge 0$ for every parameter value.

    **Arguments:**

    - `problem`, `pair`, `w0`: as for `jm.solve`.
    - `objective`: a scalar function of the final x, e.g. a validation loss.
    - `schedule`: the starting schedule.
    - `steps`: optimisation steps; `optimizer`: default `optax.adam(0.1)`.
    - `via`: `"implicit_bias"` or `"solve"`; `t1`, `solve_options`: for `"solve"`.
    - `progress`: print one line per step.

    **Returns:** a `ScheduleOptimization`.
    """
    if via not in ("implicit_bias", "solve"):
        raise ValueError(f"`via` must be 'implicit_bias' or 'solve', got {via!r}.")
    if via == "solve" and t1 is None:
        raise ValueError("`t1` is required with via='solve'.")
    steps = check_steps(steps)
    if not isinstance(schedule, AbstractSchedule):
        raise TypeError(
            f"`schedule` must be a jaxmirror schedule, got {type(schedule)}."
        )
    optimizer = optax.adam(0.1) if optimizer is None else optimizer
    solve_options = {} if solve_options is None else solve_options
    params, static = eqx.partition(schedule, eqx.is_inexact_array)

    def outcome(params):
        sched = eqx.combine(params, static)
        if via == "implicit_bias":
            x = implicit_bias(problem, pair, sched, w0)
        else:
            x = solve(problem, pair, sched, w0, t1=t1, **solve_options).x_final
        return objective(x)

    step = _gradient_step(outcome, optimizer)
    start = time.perf_counter()
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimizer.init(params)
    history, best, best_value, bad_step = [], params, np.inf, -1
    for k in range(steps):
        value, finite, new_params, opt_state = step(params, opt_state)
        if not bool(finite):
            bad_step = k
            break
        history.append(float(value))
        if history[-1] < best_value:
            best, best_value = params, history[-1]
        if progress:
            print(f"step {k + 1}/{steps}: objective {history[-1]:.6g}", flush=True)
        params = new_params
    return ScheduleOptimization(
        schedule=eqx.combine(best, static),
        history=jnp.asarray(history),
        num_solves=len(history) + (bad_step >= 0),
        nonfinite_step=bad_step,
        seconds=time.perf_counter() - start,
    )


def _gradient_step(outcome, optimizer):
    """One jitted optimizer step on `outcome`, with a finiteness flag."""

    @eqx.filter_jit
    def step(params, opt_state):
        value, grads = jax.value_and_grad(outcome)(params)
        leaves = jax.tree_util.tree_leaves(grads)
        finite = jnp.isfinite(value) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(g)) for g in leaves])
        )
        # Optax mixes int step counts with floats: not clean under strict promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return value, finite, optax.apply_updates(params, updates), opt_state

    return step
