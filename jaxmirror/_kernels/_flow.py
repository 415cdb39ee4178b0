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

**How.** Each configuration runs diffrax's algorithm as the XLA path configures it
(`_rk.py`: the solver's tableau, the `PIDController` of `jm.sweep` with its constants
read from it, the jump times of its own schedule, a budget of `max_steps` attempted
steps). A finished configuration keeps its state while the others go on, and the
launch ends when every configuration of the block has finished. Statuses come from
`_status.status_code`, as on the XLA path.

The state is padded (problem sizes and the block to at least 16 and to powers of
two, as Triton's block shapes need) with zero rows and columns of the design, which
leave every real coordinate unchanged; the error norm averages over the d real
coordinates only.

**Where it runs.** On a CPU, in Pallas interpret mode (for tests: it computes the
same thing, with no speed-up). On a GPU it lowers through Triton: the tests check
that lowering from a CPU, in float32 and float64; it has never run on a GPU, so its
compilation there and its speed are unverified (`backend="auto"` compiles it first
and falls back to XLA with a warning). Forward only: gradients take the XLA path.
"""

import math
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp

from .._batch import Batch, ceil_power_of_two, first_device_mesh, pad, shard_over
from .._formulations import AbstractFormulation, RowSpaceFormulation
from .._gd_step import is_finite
from .._pairs import AbstractClosedFormPair, AbstractSeparablePair
from .._problems import AbstractLeastSquares
from .._solve import default_controller, SolverOptions
from .._status import status_code
from ._backends import AbstractKernel
from ._pallas import (
    compile_failure,
    fits_on_chip,
    pad_axis,
    pad_design,
    padded_side,
    pallas_target,
    platform,
)
from ._rk import all_, end_floor, first_steps, integrate_rows, StepRule


KERNEL_SOLVERS = (dfx.Tsit5, dfx.Dopri5)
BLOCK = 16  # configurations per kernel instance


class FlowKernel(AbstractKernel):
    """The flow kernel for one sweep's configurations."""

    name: ClassVar[str] = "the flow kernel"
    formulation: AbstractFormulation
    problem: object  # the first configuration's
    stacked: bool  # one problem per configuration
    pair: object
    schedules: object
    w0: object
    w0_batched: bool
    options: SolverOptions
    shared_step: bool  # the user asked for one step shared by a chunk

    def unsupported(self) -> str | None:
        reasons = (
            self._formulation_reason(),
            self._solver_reason(),
            "it solves each configuration with its own step, not strategy='batched'"
            if self.shared_step
            else None,
            triton_shapes_reason(self.schedules) if platform() == "gpu" else None,
        )
        return next((reason for reason in reasons if reason is not None), None)

    def _formulation_reason(self):
        if not isinstance(self.formulation, RowSpaceFormulation):
            return (
                "the kernel integrates the row-space formulation, got "
                f"formulation={self.formulation.name!r}"
            )
        if self.stacked or not isinstance(self.problem, AbstractLeastSquares):
            return (
                "the kernel needs one jm.LeastSquares problem (or another "
                "`jm.AbstractLeastSquares`) shared by every configuration, got "
                f"{'a stack of ' if self.stacked else ''}"
                f"{type(self.problem).__name__}"
            )
        if not isinstance(self.pair, AbstractClosedFormPair) or isinstance(
            self.pair, AbstractSeparablePair
        ):
            return (
                "the kernel runs the closed-form (diagonal) pairs, not "
                f"{type(self.pair).__name__}"
            )
        return None

    def _solver_reason(self):
        if type(self.options.solver) not in KERNEL_SOLVERS:
            return (
                "the kernel has the Tsit5 and Dopri5 steps, not "
                f"{type(self.options.solver).__name__}"
            )
        if self.options.controller is not None:
            return "the kernel has the default PI controller only (stepsize_controller=None)"
        return None

    def fits_on_chip(self) -> bool:
        return fits_on_chip(self.problem.design())

    def compile_failure(self) -> str | None:
        count = min(BLOCK, jax.tree_util.tree_leaves(self.schedules)[0].shape[0])
        batch = Batch(count, self.w0_batched, False)
        first = lambda tree: batch.take(tree, True, slice(0, count))
        w0 = first(self.w0) if self.w0_batched else self.w0
        one = jnp.ones((), jax.tree_util.tree_leaves(self.w0)[0].dtype)
        return compile_failure(
            solve_flow_chunk,
            *(self.formulation, self.problem, self.pair, first(self.schedules), w0),
            *(one, self.options, batch, first_device_mesh()),
        )


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


@eqx.filter_jit
def solve_flow_chunk(
    formulation, problem, pair, schedules, w0, t1, options, batch, mesh
):
    """The flow kernel on one chunk, as a sweep strategy solves it.

    With several devices, each solves its shard of the configurations (`shard_map`:
    a kernel launch is not partitioned by XLA, which would otherwise run it whole on
    every device).

    **Returns:** `(x_final, status, num_steps, (mu_last, args))`, one row per
    configuration.
    """

    def local(problem, schedules, w0, t1, batch):
        return _solve_local(
            formulation, problem, pair, schedules, w0, t1, options, batch
        )

    if mesh.size == 1:
        return local(problem, schedules, w0, t1, batch)
    return shard_over(mesh, local, batch, problem, schedules, w0, t1)


class _Resident(AbstractLeastSquares):
    """The least-squares problem inside the kernel, from its resident arrays."""

    Z: jax.Array
    y: jax.Array

    def design(self):
        return self.Z

    def dim(self):
        return self.Z.shape[-1]


def _jump_times(schedules, size: int, dtype):
    """Each configuration's jump times, sorted, inf-padded to a power of two
    (Triton)."""
    jump_ts = schedules.jump_ts()
    if jump_ts is None:
        jump_ts = jnp.full((size, 1), jnp.inf, dtype)
    jump_ts = jnp.sort(jnp.asarray(jump_ts, dtype).reshape(size, -1), axis=1)
    jumps = jump_ts.shape[1]
    return jnp.pad(
        jump_ts,
        ((0, 0), (0, ceil_power_of_two(jumps) - jumps)),
        constant_values=jnp.inf,
    )


def _padded_coordinates(args, n: int, size: int):
    """The field's arguments with every per-coordinate leaf (last axis n) padded by
    repeating the last coordinate: valid values, which the design's zero columns
    keep out of every real coordinate."""

    def pad_leaf(leaf):
        if eqx.is_array(leaf) and leaf.ndim >= 2 and leaf.shape[-1] == n:
            return pad_axis(leaf, size, -1, "edge")
        return leaf

    return eqx.tree_at(
        lambda a: (a.legendre, a.theta0),
        args,
        (
            jax.tree_util.tree_map(pad_leaf, args.legendre),
            pad_axis(args.theta0, size, 1, "edge"),
        ),
    )


def _solve_local(formulation, problem, pair, schedules, w0, t1, options, batch):
    each = eqx.if_array(0)
    mu0, args = eqx.filter_vmap(
        formulation.init, in_axes=(None, None, each, batch.axis(batch.w0))
    )(problem, pair, schedules, w0)
    dtype, size = mu0.dtype, mu0.shape[0]
    d, n = problem.design().shape
    blocks = -(-size // BLOCK)
    controller = default_controller(options.rtol, options.atol, mu0)
    rule = StepRule.of(options.solver, controller, options.max_steps, d)
    field = lambda t, mu, a: formulation.field(t, mu, problem, a)
    first = first_steps(controller, options.solver, field, mu0, args)
    kernel_args = _padded_coordinates(args, n, padded_side(n))
    # The last configuration repeated up to a whole block, as a chunk is padded.
    kernel_args, jump_ts, first = pad(
        (kernel_args, _jump_times(schedules, size, dtype), first), True, blocks * BLOCK
    )
    Z, y = pad_design(problem)
    t1 = jnp.asarray(t1, dtype)
    resident = _Resident(Z.astype(dtype), y.astype(dtype))
    x, mu, steps, status = _launch(
        formulation,
        resident,
        kernel_args,
        (jump_ts, first, jnp.stack([t1, end_floor(t1)])),
        rule,
        blocks,
    )
    return x[:size, :n], status[:size], steps[:size], (mu[:size, :d], args)


def _launch(formulation, problem, args, rows_and_times, rule, blocks):
    """One `pallas_call` over `blocks` blocks of `BLOCK` configurations: the problem's
    arrays whole (resident), the configurations' arrays a block at a time."""
    from jax.experimental import pallas as pl

    jump_ts, first, times = rows_and_times
    leaves, treedef = jax.tree_util.tree_flatten(args)
    dtype = problem.Z.dtype
    dp, np_ = problem.Z.shape

    def kernel(times_ref, jumps_ref, first_ref, Z_ref, y_ref, *refs):
        arg_refs, (x_ref, mu_ref, steps_ref, status_ref) = refs[:-4], refs[-4:]
        resident = _Resident(Z_ref[...], y_ref[...])
        block_args = jax.tree_util.tree_unflatten(treedef, [r[...] for r in arg_refs])
        field = jax.vmap(formulation.field, in_axes=(0, 0, None, 0))
        point = jax.vmap(formulation.point, in_axes=(0, 0, None, 0))
        t, mu, steps, finished, _ = integrate_rows(
            rule,
            lambda t, mu: field(t, mu, resident, block_args),
            jnp.zeros((BLOCK, dp), dtype),
            first_ref[...],
            times_ref[0],
            times_ref[1],
            jumps_ref[...],
        )
        x = point(t, mu, resident, block_args)
        x_finite = all_(is_finite(x), axis=1)
        field_finite = all_(is_finite(field(t, mu, resident, block_args)), axis=1)
        x_ref[...] = jnp.where(finished[:, None], x, jnp.inf)
        mu_ref[...] = mu
        steps_ref[...] = steps
        status_ref[...] = status_code(finished, ~finished, x_finite, field_finite)

    def per_config(shape):
        rest = (0,) * (len(shape) - 1)
        return pl.BlockSpec((BLOCK, *shape[1:]), lambda i: (i, *rest))

    def whole(shape):
        zeros = (0,) * len(shape)
        return pl.BlockSpec(tuple(shape), lambda i: zeros)

    inputs = (times, jump_ts, first, problem.Z, problem.y, *leaves)
    in_specs = [whole(times.shape), per_config(jump_ts.shape), per_config(first.shape)]
    in_specs += [whole(problem.Z.shape), whole(problem.y.shape)]
    in_specs += [per_config(leaf.shape) for leaf in leaves]
    rows = BLOCK * blocks
    out_shape = [
        jax.ShapeDtypeStruct((rows, np_), dtype),
        jax.ShapeDtypeStruct((rows, dp), dtype),
        jax.ShapeDtypeStruct((rows,), jnp.int32),
        jax.ShapeDtypeStruct((rows,), jnp.int32),
    ]
    call = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(blocks,),
        in_specs=in_specs,
        out_specs=[per_config(s.shape) for s in out_shape],
        **pallas_target(),
    )
    return call(*inputs)
