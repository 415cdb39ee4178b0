r"""The per-row adaptive Runge-Kutta loop the flow kernel runs, as diffrax steps.

`integrate_rows` integrates $\dot y = F(t, y)$ for a block of rows at once, each row
with its own step: the algorithm of `diffrax.diffeqsolve` with an explicit
Runge-Kutta solver, a `PIDController` and a `ClipStepSizeController`'s jump times,
written out on arrays (a Pallas kernel cannot call diffrax). Every number of that
algorithm comes from diffrax's own objects, never from literals here:

- the Butcher tableau and the error order, from the solver (`Tsit5`, `Dopri5`);
- the controller's `safety`, `factormin`, `factormax` and its P, I and D
  coefficients, from the `PIDController` the XLA path builds (`StepRule.of`);
- the first step, from that controller's own `init`, called as `diffeqsolve`
  calls it (`first_steps`).

What is written here are the rules themselves: the embedded error in the RMS norm
of $e / (\text{atol} + \text{rtol}\max(|y_0|, |y_1|))$, the PID update of
`PIDController.adapt_step_size`, `ClipStepSizeController`'s jump landing (a step
ends just before a jump time and the next starts just after it), and the end of the
interval (a step that would end within `END_ULPS` ulps of t1 ends at t1, diffrax's
`_clip_to_end`). They follow diffrax 0.7 (bounded in `pyproject.toml`); the tests
check that the accepted step times equal diffeqsolve's to 1e-12, with the same
counts.
"""

import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from diffrax._term import WrapTerm  # what diffeqsolve hands its controller (0.7)

from ._pallas import platform


END_ULPS = 100  # diffeqsolve ends a step at t1 from this many ulps before it


class StepRule(eqx.Module):
    """The solver's tableau and the controller's constants, read from diffrax."""

    tableau: object = eqx.field(static=True)
    error_order: float = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    safety: float = eqx.field(static=True)
    factormin: float = eqx.field(static=True)
    factormax: float = eqx.field(static=True)
    coefficients: tuple = eqx.field(static=True)  # exponents of 1/error, n, n-1, n-2
    max_steps: int = eqx.field(static=True)
    norm_size: int = eqx.field(static=True)  # the real coordinates of a row

    @classmethod
    def of(cls, solver, controller, max_steps: int, norm_size: int) -> "StepRule":
        """The rule of `solver` stepped by `controller`, for rows whose first
        `norm_size` coordinates are real (the rest is padding that stays 0)."""
        if not isinstance(controller, dfx.PIDController):
            raise ValueError(f"the kernel steps a PIDController, got {controller}")
        if controller.norm is not optx.rms_norm:
            raise ValueError("the kernel measures errors in diffrax's RMS norm")
        if controller.dtmin is not None or controller.dtmax is not None:
            raise ValueError("the kernel has no dtmin or dtmax")
        term = dfx.ODETerm(lambda t, y, args: y)
        order = controller.error_order or solver.error_order(term)
        p, i, d = (
            float(c) for c in (controller.pcoeff, controller.icoeff, controller.dcoeff)
        )
        return cls(
            tableau=solver.tableau,
            error_order=float(order),
            rtol=float(controller.rtol),
            atol=float(controller.atol),
            safety=float(controller.safety),
            factormin=float(controller.factormin),
            factormax=float(controller.factormax),
            coefficients=((i + p + d) / order, -(p + 2 * d) / order, d / order),
            max_steps=int(max_steps),
            norm_size=int(norm_size),
        )


def first_steps(controller, solver, field, y0, args):
    """Each row's first step end, from `controller.init` as `diffeqsolve` calls it
    (on its wrapped term: diffrax 0.7 then starts every solve with a step of 0.01),
    before the jump times and t1 clip it. Plain JAX, outside the kernel."""
    term = WrapTerm(dfx.ODETerm(field), jnp.asarray(1))
    dtype = y0.dtype

    def one(y, a):
        t0 = jnp.zeros((), dtype)
        order = solver.error_order(term)
        tnext, _ = controller.init(term, t0, t0 + 1, y, None, a, solver.func, order)
        return jnp.asarray(tnext, dtype)

    return eqx.filter_vmap(one)(y0, args)


def end_floor(t1):
    """The time after which a step ends at t1 (`END_ULPS` ulps before it)."""
    floor = t1
    for _ in range(END_ULPS):
        floor = jnp.nextafter(floor, jnp.asarray(-jnp.inf, floor.dtype))
    return floor


def any_(mask, axis=None):
    """`jnp.any` as a max over integers (Triton's lowering has no boolean reductions)."""
    return jnp.max(mask.astype(jnp.int32), axis=axis) > 0


def all_(mask, axis=None):
    return jnp.min(mask.astype(jnp.int32), axis=axis) > 0


def _nextafter(t):
    """The float after t (the smallest normal after 0, as diffrax: no denormals)."""
    after = jnp.nextafter(t, jnp.asarray(jnp.inf, t.dtype))
    return jnp.where(t == 0, jnp.finfo(t.dtype).tiny, after)


def _prevbefore(t):
    before = jnp.nextafter(t, jnp.asarray(-jnp.inf, t.dtype))
    return jnp.where(t == 0, -jnp.finfo(t.dtype).tiny, before)


def _next_jump(t, jump_ts):
    """The first of each row's jump times after t (inf if none)."""
    later = jnp.where(jump_ts > t[:, None], jump_ts, jnp.inf)
    return jnp.min(later, axis=1)


class _Loop(eqx.Module):
    """The loop's state, one entry per row."""

    t: jax.Array  # the time reached
    tnext: jax.Array  # the end of the step to try
    y: jax.Array
    fy: jax.Array  # the field at (t, y): first same as last
    made_jump: jax.Array  # the last accepted step landed after a jump
    inv_error: jax.Array  # 1 / scaled error of the last two accepted steps
    inv_error_prev: jax.Array
    steps: jax.Array  # attempted steps
    accepted: jax.Array | None  # the accepted step ends, when recorded


def _combine(weights, ks: list, stages: int):
    r"""$\sum_j w_j k_j$ over the increments computed so far.

    Where the kernel runs through XLA (Pallas interpret mode, on a CPU), exactly as
    diffrax forms it: one `tensordot` of the full row of weights (zeros past the
    stages computed) with the buffer of all stages (zeros past them). The error
    estimate is a difference of nearly equal increments, which a change of
    summation order would move in its eighth digit, and the step sizes with it.
    Triton has no dot of a vector, so on a GPU the products are summed in order.
    """
    weights = np.asarray(weights, np.float64)
    if platform() == "cpu":
        dtype = ks[0].dtype
        # Built from scalars: a kernel may not capture an array constant.
        row = [jnp.full((), w, dtype) for w in weights]
        row = jnp.stack(row + [jnp.zeros((), dtype)] * (stages - len(row)))
        buffer = jnp.stack(ks + [jnp.zeros_like(ks[0])] * (stages - len(ks)))
        return jnp.tensordot(row, buffer, axes=1, precision=jax.lax.Precision.HIGHEST)
    weighted = [float(w) * k for w, k in zip(weights, ks) if w != 0]
    return sum(weighted[1:], weighted[0])


def _barrier(x):
    """On the XLA path, `x` computed on its own, as diffrax's loop over stages
    computes each stage: XLA would otherwise fuse the unrolled stages and round them
    differently."""
    return jax.lax.optimization_barrier(x) if platform() == "cpu" else x


def _runge_kutta_step(rule: StepRule, field, t, tnext, y, fy):
    r"""One explicit step from the tableau, in diffrax's arithmetic: increments
    $k_i = \Delta t\, F(t_i, y_i)$, stage times $t + c_i\Delta t$ (exactly the
    step's end where $c_i = 1$), the last stage's point as $y_1$ where the tableau
    is stiffly accurate. **Returns:** $y_1$, the field there and the embedded error
    estimate."""
    tab = rule.tableau
    stages = len(tab.c) + 1
    dt = tnext - t
    ks = [_barrier(dt[:, None] * fy)]
    stage, f_stage = y, fy
    for a, c in zip(tab.a_lower, tab.c):
        stage = _barrier(y + _combine(a, ks, stages))
        t_stage = tnext if c == 1 else t + float(c) * dt
        f_stage = field(t_stage, stage)
        ks.append(_barrier(dt[:, None] * f_stage))
    y1 = stage if tab.ssal else y + _combine(tab.b_sol, ks, stages)
    error = _combine(tab.b_error, ks, stages)
    # With first same as last, the last stage is at (t + dt, y1).
    return y1, f_stage, jnp.where(jnp.isnan(error), jnp.inf, error)


def _rms(x, size: int):
    """`optimistix.rms_norm` of each row's first `size` coordinates (the rest is
    zero padding), computed as it computes it."""
    if size == 1:
        return jnp.abs(x[:, 0])
    return jnp.sqrt(jnp.sum(x * x, axis=1)) / math.sqrt(size)


def _pid(rule: StepRule, state: _Loop, y1, error):
    """`PIDController.adapt_step_size`: whether to keep the step, the next step's
    length and the controller's memory."""
    nan = any_(jnp.isnan(y1), axis=1)[:, None]
    y_size = jnp.maximum(jnp.abs(state.y), jnp.abs(jnp.where(nan, state.y, y1)))
    scaled = error / (rule.atol + y_size * rule.rtol)
    scaled_error = _rms(scaled, rule.norm_size)
    keep = scaled_error < 1
    inv = 1 / scaled_error
    factor = rule.safety
    for coefficient, base in zip(
        rule.coefficients, (inv, state.inv_error, state.inv_error_prev)
    ):
        if coefficient != 0:
            factor = factor * base**coefficient
    low = jnp.where(keep, 1.0, rule.factormin)
    high = jnp.where(keep, rule.factormax, rule.safety)
    factor = jnp.clip(factor, low, high).astype(state.y.dtype)
    inv = jnp.where((inv == 0) | jnp.isinf(inv), 1, inv)
    memory = (
        jnp.where(keep, inv, state.inv_error),
        jnp.where(keep, state.inv_error, state.inv_error_prev),
    )
    return keep, (state.tnext - state.t) * factor, memory


def _clip(keep, state: _Loop, dt, t1, t1_floor, jump_ts):
    """`ClipStepSizeController` (step over a jump landed on, end before the next)
    and the end of the interval: the next step's start and end, and whether it
    starts after a jump."""
    next_t0 = jnp.where(keep, state.tnext, state.t)
    next_t1 = next_t0 + dt
    after = _nextafter(next_t0)
    jumped_before = any_(after[:, None] == jump_ts, axis=1)
    jumped_at = any_(next_t0[:, None] == jump_ts, axis=1)
    next_t0 = jnp.where(jumped_before, _nextafter(after), next_t0)
    next_t0 = jnp.where(jumped_at, after, next_t0)
    next_t1 = jnp.maximum(_nextafter(next_t0), next_t1)
    next_t1 = jnp.minimum(_prevbefore(_next_jump(next_t0, jump_ts)), next_t1)
    new_t = jnp.minimum(next_t0, t1)
    end = jnp.where(keep, t1, new_t + 0.5 * (t1 - new_t))
    new_tnext = jnp.where(next_t1 > t1_floor, end, next_t1)
    return new_t, new_tnext, jumped_before | jumped_at


def _active(rule: StepRule, state: _Loop, t1):
    return (state.t < t1) & (state.steps < rule.max_steps)


def _step(rule: StepRule, field, t1, t1_floor, jump_ts, state: _Loop) -> _Loop:
    """One attempted step of every active row; finished rows keep their state."""
    go = _active(rule, state, t1)
    # First same as last, but not across a jump: the field may change there.
    fy = jax.lax.cond(
        any_(state.made_jump & go),
        lambda t, y, fy, jumped: jnp.where(jumped[:, None], field(t, y), fy),
        lambda t, y, fy, jumped: fy,
        *(state.t, state.y, state.fy, state.made_jump),
    )
    state = eqx.tree_at(lambda s: s.fy, state, fy)
    y1, f_y1, error = _runge_kutta_step(rule, field, state.t, state.tnext, state.y, fy)
    keep, next_dt, memory = _pid(rule, state, y1, error)
    new_t, new_tnext, jumped = _clip(keep, state, next_dt, t1, t1_floor, jump_ts)
    kept = lambda new, old: jnp.where(keep[:, None], new, old)
    accepted = state.accepted
    if accepted is not None:
        slot = jnp.sum(jnp.isfinite(accepted), axis=1)
        record = (jnp.arange(accepted.shape[1])[None, :] == slot[:, None]) & (
            keep & go
        )[:, None]
        accepted = jnp.where(record, state.tnext[:, None], accepted)
    new = _Loop(
        new_t,
        new_tnext,
        kept(y1, state.y),
        kept(f_y1, fy),
        jnp.where(keep, jumped, state.made_jump),
        memory[0],
        memory[1],
        state.steps + 1,
        accepted,
    )
    return jax.tree_util.tree_map(
        lambda n, o: jnp.where(go.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
        new,
        state,
    )


def integrate_rows(rule, field, y0, first, t1, t1_floor, jump_ts, record: int = 0):
    r"""Integrate $\dot y = F(t, y)$ from $y_0$ at 0 to t1 for each row, independently.

    **Arguments:**

    - `rule`: the `StepRule`;
    - `field(t, y)`: per-row times `(B,)` and states `(B, d_padded)`;
    - `first`: each row's first step end (`first_steps`);
    - `t1`, `t1_floor`: the end, and `end_floor(t1)`;
    - `jump_ts`: `(B, J)`, sorted per row (inf where a row has fewer jumps);
    - `record`: keep the ends of the first `record` accepted steps (for tests).

    **Returns:** the last time and state reached, the attempted steps, whether each
    row reached t1, and the accepted step ends (inf-padded; None unless `record`).
    """
    dtype = y0.dtype
    rows = y0.shape[0]
    t0 = jnp.zeros((rows,), dtype)
    tnext = jnp.minimum(_prevbefore(_next_jump(t0, jump_ts)), first)
    one = jnp.ones((rows,), dtype)
    state = _Loop(
        t0,
        jnp.minimum(tnext, t1),
        y0,
        field(t0, y0),
        jnp.zeros((rows,), bool),
        one,
        one,
        jnp.zeros((rows,), jnp.int32),
        jnp.full((rows, record), jnp.inf, dtype) if record else None,
    )
    state = jax.lax.while_loop(
        lambda s: any_(_active(rule, s, t1)),
        lambda s: _step(rule, field, t1, t1_floor, jump_ts, s),
        state,
    )
    return state.t, state.y, state.steps, state.t >= t1, state.accepted
