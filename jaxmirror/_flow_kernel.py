r"""The fused flow kernel (Pallas): a block of configurations integrated to t1 in one launch.

`jm.sweep(..., backend="pallas")` solves each chunk with one `pallas_call`: every
kernel instance takes a block of configurations and integrates each of them from 0 to
t1 with its own adaptive step, while the design matrix and the targets stay resident.
The XLA path instead steps a batched array through a chain of XLA operations, one
`while_loop` iteration (and its launches and round trips through memory) per step.

**What it integrates.** The row-space formulation of least squares
(`jm.RowSpaceFormulation`), for the closed-form (diagonal) pairs and any schedule:
$$\dot\mu = -\kappa(a_t)\,(D x_t - y),\qquad
x_t = (\nabla R_{a_t})^{-1}(\theta_0 + D^\top\mu_t),\qquad \mu_0 = 0,$$
with the formulation's own `field` and `point`, so the kernel computes what the XLA
path computes.

**How.** Each configuration runs the algorithm of `diffrax.diffeqsolve` as the XLA
path configures it, written out vectorised over the block:

- an explicit Runge-Kutta step from the solver's Butcher tableau (`Tsit5` or
  `Dopri5`: first-same-as-last, re-evaluated after a jump), its embedded error
  estimate measured in the RMS norm of $e / (\text{atol} + \text{rtol}\max(|y_0|,
  |y_1|))$;
- diffrax's first step and `PIDController` as `default_controller` configures it (PI
  control with coefficients 0.3 where `rtol` is above the dtype's roundoff floor,
  integral-only below; safety 0.9, factors in [0.2, 10]);
- `ClipStepSizeController`'s jump landing: a step ends just before each of its own
  schedule's jump times and the next starts just after it;
- the end: a step that would end within 100 ulps of t1 ends at t1;
- a budget of `max_steps` attempted steps per configuration. A finished configuration
  keeps its state while the others go on (masked out), and the launch ends when every
  configuration of the block has finished.

Statuses and `num_steps` mean what they mean on the XLA path (`jm.Status`: success,
max steps, non-finite). The state is padded (problem sizes and the block to at least
16 and to powers of two, as Triton's block shapes need) with zero rows and columns of
the design, which leave every real coordinate unchanged; the error norm averages over
the d real coordinates only.

**Where it runs.** On a CPU, in Pallas interpret mode (for tests: it computes the
same thing, with no speed-up). On a GPU it lowers through Triton: the tests check
that lowering from a CPU, in float32 and float64; it has never run on a GPU, so its
compilation there and its speed are unverified (`backend="auto"` compiles it first
and falls back to XLA with a warning). Forward only: gradients take the XLA path.
"""

import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._formulations import RowSpaceFormulation
from ._gd_step import is_finite
from ._kernels import (
    BACKENDS,
    compile_failure,
    fits_on_chip,
    pad_axis,
    pad_design,
    padded_side,
    pallas_target,
    platform,
    power_of_two,
)
from ._pairs import AbstractClosedFormPair
from ._problems import LeastSquares
from ._solve import default_controller
from ._status import Status


KERNEL_SOLVERS = (dfx.Tsit5, dfx.Dopri5)
BLOCK = 16  # configurations per kernel instance


def flow_kernel_unsupported(formulation, problem, pair, options, problem_batched):
    """Why the flow kernel cannot run this sweep, or None."""
    if not isinstance(formulation, RowSpaceFormulation):
        return (
            "the kernel integrates the row-space formulation, got "
            f"formulation={formulation.name!r}"
        )
    if problem_batched or type(problem) is not LeastSquares:
        return (
            "the kernel needs one jm.LeastSquares problem shared by every "
            f"configuration, got {'a batch of ' if problem_batched else ''}"
            f"{type(problem).__name__}"
        )
    if not isinstance(pair, AbstractClosedFormPair):
        return (
            "the kernel runs the closed-form (diagonal) pairs, not "
            f"{type(pair).__name__}"
        )
    if type(options.solver) not in KERNEL_SOLVERS:
        return (
            "the kernel has the Tsit5 and Dopri5 steps, not "
            f"{type(options.solver).__name__}"
        )
    if options.controller is not None:
        return (
            "the kernel has the default PI controller only (stepsize_controller=None)"
        )
    return None


def triton_shapes_reason(schedules) -> str | None:
    """Why Triton cannot take these schedules' parameters, or None: it needs every
    array in a kernel to have a power-of-two size (per configuration, here)."""
    for leaf in jax.tree_util.tree_leaves(schedules):
        size = math.prod(leaf.shape[1:]) if eqx.is_array(leaf) else 1
        if size & (size - 1):
            return (
                "on a GPU (Triton) the kernel needs schedule parameters of "
                f"power-of-two sizes per configuration, got shape {leaf.shape[1:]}"
            )
    return None


def choose_sweep_backend(
    backend,
    formulation_setting,
    formulation,
    strategy,
    problem,
    pair,
    schedules,
    options,
    problem_batched,
):
    """`(formulation, backend)` for a sweep: `backend` is `"xla"` or `"pallas"`.

    With `"pallas"`, a `formulation="auto"` means the kernel's row-space formulation,
    and a sweep the kernel cannot run gives a `ValueError` with the reason. `"auto"`
    takes the kernel only on a GPU, for the formulation `"auto"` chose, when the
    design fits on chip; everything else falls back to XLA.
    """
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")
    if backend == "xla":
        return formulation, "xla"
    if backend == "pallas":
        auto = isinstance(formulation_setting, str) and formulation_setting == "auto"
        if auto and RowSpaceFormulation().unsupported(problem, pair) is None:
            formulation = RowSpaceFormulation()
        reason = flow_kernel_unsupported(
            formulation, problem, pair, options, problem_batched
        )
        if reason is None and "interpret" not in pallas_target():
            reason = triton_shapes_reason(schedules)
        if reason is None and strategy == "batched":
            reason = (
                "it solves each configuration with its own step, not strategy='batched'"
            )
        if reason is not None:
            raise ValueError(f"`backend='pallas'`: {reason}; use backend='xla'.")
        return formulation, "pallas"
    runs = flow_kernel_unsupported(formulation, problem, pair, options, problem_batched)
    runs = runs or triton_shapes_reason(schedules)
    usable = runs is None and strategy != "batched" and fits_on_chip(problem)
    return formulation, "pallas" if usable and platform() == "gpu" else "xla"


def _pad_coordinates(tree, n, size):
    """Pad the per-coordinate leaves (last axis n) by repeating the last coordinate:
    valid values, which the design's zero columns keep out of every real coordinate."""

    def pad(leaf):
        if eqx.is_array(leaf) and leaf.ndim >= 2 and leaf.shape[-1] == n:
            return pad_axis(leaf, size, -1, "edge")
        return leaf

    return jax.tree_util.tree_map(pad, tree)


@eqx.filter_jit
def solve_chunk(formulation, problem, pair, schedules, w0, t1, options, batch, mesh):
    """The flow kernel on one chunk: what `_strategies._solve_vmap` returns.

    With several devices, each solves its shard of the configurations (`shard_map`:
    a kernel launch is not partitioned by XLA, which would otherwise run it whole on
    every device).

    **Returns:** `(x_final, status, num_steps, (mu_last, args))`, one row per
    configuration.
    """
    if mesh.size == 1:
        return _solve_local(
            formulation, problem, pair, schedules, w0, t1, options, batch
        )
    from jax.sharding import PartitionSpec

    dynamic, static = eqx.partition((problem, schedules, w0), eqx.is_array)
    shard, whole = PartitionSpec("config"), PartitionSpec()
    specs = (
        jax.tree_util.tree_map(lambda _: whole, dynamic[0]),
        jax.tree_util.tree_map(lambda _: shard, dynamic[1]),
        jax.tree_util.tree_map(lambda _: shard if batch.w0 else whole, dynamic[2]),
    )
    local_batch = type(batch)(batch.size // mesh.size, batch.w0, batch.problem)

    def local(dynamic):
        problem, schedules, w0 = eqx.combine(dynamic, static)
        return _solve_local(
            formulation, problem, pair, schedules, w0, t1, options, local_batch
        )

    from ._strategies import shard_map  # (imports this module)

    mapped = shard_map(local, mesh, (specs,), shard)
    return mapped(dynamic)


def probe(formulation, problem, pair, schedules, w0, w0_batched, options):
    """Why the kernel does not compile here for a block of these configurations, or
    None (see `_kernels.compile_failure`)."""
    from jax.sharding import Mesh

    from ._strategies import Batch

    count = min(BLOCK, jax.tree_util.tree_leaves(schedules)[0].shape[0])

    def first(tree):
        return jax.tree_util.tree_map(
            lambda x: x[:count] if eqx.is_array(x) else x, tree
        )

    return compile_failure(
        solve_chunk,
        formulation,
        problem,
        pair,
        first(schedules),
        first(w0) if w0_batched else w0,
        1.0,
        options,
        Batch(count, w0_batched, False),
        Mesh(np.array(jax.devices()[:1]), ("config",)),
    )


def _solve_local(formulation, problem, pair, schedules, w0, t1, options, batch):
    from ._strategies import _pad as pad_configurations  # (imports this module)

    each = eqx.if_array(0)
    w_axis = batch.axis(batch.w0)
    mu0, args = eqx.filter_vmap(formulation.init, in_axes=(None, None, each, w_axis))(
        problem, pair, schedules, w0
    )
    dtype = mu0.dtype
    size, (d, n) = mu0.shape[0], problem.Z.shape
    np_ = padded_side(n)
    blocks = -(-size // BLOCK)

    jump_ts = schedules.jump_ts()
    if jump_ts is None:
        jump_ts = jnp.full((size, 1), jnp.inf, dtype)
    jump_ts = jnp.sort(jnp.asarray(jump_ts, dtype).reshape(size, -1), axis=1)
    jumps = jump_ts.shape[1]  # padded with inf to a power of two (Triton)
    jump_ts = jnp.pad(
        jump_ts, ((0, 0), (0, power_of_two(jumps) - jumps)), constant_values=jnp.inf
    )
    kernel_args = eqx.tree_at(
        lambda a: (a.legendre, a.theta0),
        args,
        (
            _pad_coordinates(args.legendre, n, np_),
            pad_axis(args.theta0, np_, 1, "edge"),
        ),
    )
    # The last configuration repeated up to a whole block, as a chunk is padded.
    kernel_args, jump_ts = pad_configurations(
        (kernel_args, jump_ts), True, blocks * BLOCK
    )
    Z, y = pad_design(problem)
    t1 = jnp.asarray(t1, dtype)
    t1_floor = t1
    for _ in range(100):  # diffrax ends a step at t1 from 100 ulps before it
        t1_floor = jnp.nextafter(t1_floor, jnp.asarray(-jnp.inf, dtype))
    times = jnp.stack([t1, t1_floor])
    controller = default_controller(options.rtol, options.atol, mu0)
    settings = _Settings(
        tableau=options.solver.tableau,
        error_order=float(options.solver.error_order(dfx.ODETerm(lambda t, y, a: y))),
        rtol=options.rtol,
        atol=options.atol,
        pcoeff=float(controller.pcoeff),
        icoeff=float(controller.icoeff),
        max_steps=options.max_steps,
        d=d,
    )
    resident = eqx.tree_at(
        lambda p: (p.Z, p.y), problem, (Z.astype(dtype), y.astype(dtype))
    )
    x, mu, steps, status = _launch(
        formulation, resident, kernel_args, jump_ts, times, settings, blocks
    )
    return x[:size, :n], status[:size], steps[:size], (mu[:size, :d], args)


class _Settings(eqx.Module):
    tableau: object = eqx.field(static=True)
    error_order: float = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    pcoeff: float = eqx.field(static=True)
    icoeff: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    d: int = eqx.field(static=True)


def _launch(formulation, problem, args, jump_ts, times, settings, blocks):
    """One `pallas_call` over `blocks` blocks of `BLOCK` configurations: the problem's
    arrays whole (resident), the configurations' arrays a block at a time."""
    from jax.experimental import pallas as pl

    problem_leaves, problem_def = jax.tree_util.tree_flatten(problem)
    leaves, treedef = jax.tree_util.tree_flatten(args)
    dtype = problem.Z.dtype
    dp, np_ = problem.Z.shape
    count = len(problem_leaves)

    def kernel(times_ref, jumps_ref, *refs):
        problem_refs, arg_refs = refs[:count], refs[count:-4]
        x_ref, mu_ref, steps_ref, status_ref = refs[-4:]
        problem = jax.tree_util.tree_unflatten(
            problem_def, [ref[...] for ref in problem_refs]
        )
        block_args = jax.tree_util.tree_unflatten(
            treedef, [ref[...] for ref in arg_refs]
        )
        field = jax.vmap(formulation.field, in_axes=(0, 0, None, 0))
        point = jax.vmap(formulation.point, in_axes=(0, 0, None, 0))
        t1, t1_floor = times_ref[0], times_ref[1]
        t, mu, steps, finished = integrate_block(
            lambda t, mu: field(t, mu, problem, block_args),
            jnp.zeros((BLOCK, dp), dtype),
            t1,
            t1_floor,
            jumps_ref[...],
            settings,
        )
        x = point(t, mu, problem, block_args)
        x_finite = _all(is_finite(x), axis=1)
        field_finite = _all(is_finite(field(t, mu, problem, block_args)), axis=1)
        # Codes by arithmetic on traced flags: `jnp.where` of two Python ints would
        # make constants, which a kernel may not capture (JAX < 0.6).
        failed = _code(~field_finite, Status.MAX_STEPS, Status.NONFINITE)
        done = _code(~x_finite, Status.SUCCESS, Status.NONFINITE)
        x_ref[...] = jnp.where(finished[:, None], x, jnp.inf)
        mu_ref[...] = mu
        steps_ref[...] = steps
        status_ref[...] = jnp.where(finished, done, failed).astype(jnp.int32)

    def per_config(shape):
        rest = (0,) * (len(shape) - 1)
        return pl.BlockSpec((BLOCK, *shape[1:]), lambda i: (i, *rest))

    def whole(shape):
        zeros = (0,) * len(shape)
        return pl.BlockSpec(tuple(shape), lambda i: zeros)

    in_specs = [
        whole(times.shape),
        per_config(jump_ts.shape),
        *[whole(leaf.shape) for leaf in problem_leaves],
        *[per_config(leaf.shape) for leaf in leaves],
    ]
    rows = BLOCK * blocks
    out_shape = [
        jax.ShapeDtypeStruct((rows, np_), dtype),
        jax.ShapeDtypeStruct((rows, dp), dtype),
        jax.ShapeDtypeStruct((rows,), jnp.int32),
        jax.ShapeDtypeStruct((rows,), jnp.int32),
    ]
    out_specs = [per_config(s.shape) for s in out_shape]
    call = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(blocks,),
        in_specs=in_specs,
        out_specs=out_specs,
        **pallas_target(),
    )
    return call(times, jump_ts, *problem_leaves, *leaves)


def _code(flag, when_false: int, when_true: int):
    """`when_true` where `flag`, else `when_false`, as int32."""
    return int(when_false) + (int(when_true) - int(when_false)) * flag.astype(jnp.int32)


def _any(mask, axis=None):
    """`jnp.any` as a max over integers (Triton's lowering has no boolean reductions)."""
    return jnp.max(mask.astype(jnp.int32), axis=axis) > 0


def _all(mask, axis=None):
    return jnp.min(mask.astype(jnp.int32), axis=axis) > 0


def _nextafter(t):
    """The float after t (the smallest normal after 0, as diffrax: no denormals)."""
    after = jnp.nextafter(t, jnp.asarray(jnp.inf, t.dtype))
    return jnp.where(t == 0, jnp.finfo(t.dtype).tiny, after)


def _prevbefore(t):
    before = jnp.nextafter(t, jnp.asarray(-jnp.inf, t.dtype))
    return jnp.where(t == 0, -jnp.finfo(t.dtype).tiny, before)


def _next_jump(t, jump_ts):
    """The first of each configuration's jump times after t (inf if none)."""
    later = jnp.where(jump_ts > t[:, None], jump_ts, jnp.inf)
    return jnp.min(later, axis=1)


def integrate_block(field, y0, t1, t1_floor, jump_ts, settings):
    r"""Integrate $\dot y = F(t, y)$ from $y_0$ at 0 to t1 for each row, independently.

    `field(t, y)` takes per-row times `(B,)` and states `(B, d_padded)`; `jump_ts` is
    `(B, J)`, sorted per row (inf where a row has fewer jumps).

    **Returns:** the last time and state reached, the attempted steps, and whether
    each row reached t1.
    """
    tab = settings.tableau
    dtype = y0.dtype
    rows = y0.shape[0]
    rtol, atol, order = settings.rtol, settings.atol, settings.error_order
    a_lower = [np.asarray(a, np.float64) for a in tab.a_lower]
    b_sol = np.asarray(tab.b_sol, np.float64)
    b_error = np.asarray(tab.b_error, np.float64)
    c = np.asarray(tab.c, np.float64)

    def norm(e):  # RMS over the d real coordinates (the padding holds zeros)
        return jnp.sqrt(jnp.sum(e * e, axis=1) / settings.d)

    def combine(y, dt, weights, ks):
        total = sum(float(w) * k for w, k in zip(weights, ks) if w != 0)
        return y + dt[:, None] * total

    # diffrax's first step: `diffeqsolve` hands its controller a wrapped term, for
    # which the initial-step heuristic returns 0.01 (diffrax 0.7); then the clipping.
    t0 = jnp.zeros((rows,), dtype)
    f0 = field(t0, y0)
    tnext = jnp.full((rows,), 0.01, dtype)
    tnext = jnp.minimum(_prevbefore(_next_jump(t0, jump_ts)), tnext)
    tnext = jnp.minimum(tnext, t1)
    one = jnp.ones((rows,), dtype)
    zero_steps = jnp.zeros((rows,), jnp.int32)
    state = (
        t0,
        tnext,
        y0,
        f0,
        jnp.zeros((rows,), bool),
        one,
        one,
        zero_steps,
    )

    def active(state):
        t, _, _, _, _, _, _, steps = state
        return (t < t1) & (steps < settings.max_steps)

    def step(state):
        t, tnext, y, fy, made_jump, inv_prev, inv_prev2, steps = state
        go = active(state)
        dt = tnext - t
        # First same as last, but not across a jump: the field may change there.
        fy = jax.lax.cond(
            _any(made_jump & go),
            lambda t, y, fy: jnp.where(made_jump[:, None], field(t, y), fy),
            lambda t, y, fy: fy,
            t,
            y,
            fy,
        )
        ks = [fy]
        for i in range(len(c)):
            stage = combine(y, dt, a_lower[i], ks)
            ks.append(field(t + float(c[i]) * dt, stage))
        y1 = combine(y, dt, b_sol, ks)
        f_y1 = ks[-1]  # the last stage is at (t + dt, y1): first same as last
        error = dt[:, None] * sum(float(w) * k for w, k in zip(b_error, ks) if w != 0)
        error = jnp.where(jnp.isnan(error), jnp.inf, error)

        # PIDController.adapt_step_size
        nan = _any(jnp.isnan(y1), axis=1)[:, None]
        y_size = jnp.maximum(jnp.abs(y), jnp.abs(jnp.where(nan, y, y1)))
        scaled_error = norm(error / (atol + y_size * rtol))
        keep = scaled_error < 1
        inv = 1 / scaled_error
        factor = 0.9 * inv ** ((settings.icoeff + settings.pcoeff) / order)
        if settings.pcoeff != 0:
            factor = factor * inv_prev ** (-settings.pcoeff / order)
        factor = jnp.clip(
            factor, jnp.where(keep, 1.0, 0.2), jnp.where(keep, 10.0, 0.9)
        ).astype(dtype)
        new_dt = dt * factor
        inv = jnp.where((inv == 0) | jnp.isinf(inv), 1, inv)
        next_t0 = jnp.where(keep, tnext, t)
        next_t1 = next_t0 + new_dt
        new_inv = jnp.where(keep, inv, inv_prev)
        new_inv_prev = jnp.where(keep, inv_prev, inv_prev2)

        # ClipStepSizeController: step over a jump landed on, end before the next.
        after = _nextafter(next_t0)
        jumped_before = _any(after[:, None] == jump_ts, axis=1)
        jumped_at = _any(next_t0[:, None] == jump_ts, axis=1)
        next_t0 = jnp.where(jumped_before, _nextafter(after), next_t0)
        next_t0 = jnp.where(jumped_at, after, next_t0)
        jumped = jumped_before | jumped_at
        next_t1 = jnp.maximum(_nextafter(next_t0), next_t1)
        next_t1 = jnp.minimum(_prevbefore(_next_jump(next_t0, jump_ts)), next_t1)

        # The end of the interval (diffrax's `_clip_to_end`).
        new_t = jnp.minimum(next_t0, t1)
        end = jnp.where(keep, t1, new_t + 0.5 * (t1 - new_t))
        new_tnext = jnp.where(next_t1 > t1_floor, end, next_t1)

        def pick(new, old):
            mask = go.reshape((rows,) + (1,) * (new.ndim - 1))
            return jnp.where(mask, new, old)

        kept = lambda new, old: jnp.where(keep[:, None], new, old)
        return (
            pick(new_t, t),
            pick(new_tnext, tnext),
            pick(kept(y1, y), y),
            pick(kept(f_y1, fy), fy),
            pick(jnp.where(keep, jumped, made_jump), made_jump),
            pick(new_inv, inv_prev),
            pick(new_inv_prev, inv_prev2),
            pick(steps + 1, steps),
        )

    state = jax.lax.while_loop(lambda s: _any(active(s)), step, state)
    t, _, y, _, _, _, _, steps = state
    return t, y, steps, t >= t1
