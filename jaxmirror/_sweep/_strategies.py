r"""How one chunk of a sweep is solved: the strategies, as objects, and their registry.

Every strategy goes through the formulation's `init`, `field` and `point`, and
returns per configuration the final point, its `jm.Status` (`_status.status_code`),
the step count and the final state (for the convergence check):

- `VmapStrategy` (`"vmap"`): `jax.vmap` of independent solves; each configuration has
  its own step-size controller (robust: one failing configuration never affects
  another). Sharded over devices, each solving its shard in a loop of its own
  (`shard_map`); on a CPU with one device, in parts from host threads
  (`_threads.py`) where the plan allows it.
- `BatchedStrategy` (`"batched"`): one solve whose state holds all configurations of
  a chunk; the formulation's init, field and readout are vmapped per configuration
  while the problem stays unbatched, so the products with its design matrix are
  GEMMs. The configurations share the step-size controller, with the error measured
  per configuration and the maximum taken (each configuration meets `rtol`/`atol`);
  the schedules' jump times are merged. If a chunk fails (a shared failure), it is
  re-solved with `VmapStrategy`, so failures stay per-configuration.
- `KernelStrategy`: the fused flow kernel (`_kernels`), one launch per block of
  configurations. Not a name a user picks: it runs where the backend is Pallas.

`STRATEGIES` maps the user's names to their classes; `"auto"` is the plan's rule.
"""

import abc
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._arguments import check_choice
from .._batch import Batch, shard_over
from .._kernels import solve_flow_chunk
from .._programs import stored_program
from .._solve import integrate, state_dtype
from .._status import status_code
from ._threads import host_parts, map_parts


class AbstractStrategy(eqx.Module):
    """A way to solve a chunk of configurations."""

    name: ClassVar[str]

    @abc.abstractmethod
    def solve(self, plan, problem, pair, schedules, w0, batch: Batch, mesh):
        """The chunk's flows, on `mesh`: `plan` gives the formulation, t1, solver
        options and whether host threads may be used.

        **Returns:** `(x_final, status, num_steps, (y_last, args))`, one row per
        configuration.
        """


class VmapStrategy(AbstractStrategy):
    """Independent solves, one per configuration (module docstring)."""

    name: ClassVar[str] = "vmap"

    def solve(self, plan, problem, pair, schedules, w0, batch, mesh):
        parts = host_parts(batch.size) if plan.threaded else 1

        def part(lo, hi):
            rows = slice(lo, hi)
            return _solve_vmap(
                plan.formulation,
                batch.take(problem, batch.problem, rows),
                pair,
                batch.take(schedules, True, rows),
                batch.take(w0, batch.w0, rows),
                plan.t1,
                plan.solver_options,
                batch.resized(hi - lo),
                mesh,
            )

        return map_parts(part, batch.size, parts)


class BatchedStrategy(AbstractStrategy):
    """One solve of the whole chunk, one shared step (module docstring)."""

    name: ClassVar[str] = "batched"

    def solve(self, plan, problem, pair, schedules, w0, batch, mesh):
        jumps = schedules.jump_ts()
        jump_ts = None if jumps is None else jnp.asarray(np.unique(np.asarray(jumps)))
        xs, status, steps, ok, final = _solve_batched(
            plan.formulation,
            *(problem, pair, schedules, w0, jump_ts),
            *(plan.t1, plan.solver_options, batch),
        )
        if bool(ok):
            return xs, status, steps, final
        return VmapStrategy().solve(plan, problem, pair, schedules, w0, batch, mesh)


class KernelStrategy(AbstractStrategy):
    """The fused flow kernel (`_kernels`), where the backend is Pallas."""

    name: ClassVar[str] = "kernel"

    def solve(self, plan, problem, pair, schedules, w0, batch, mesh):
        return solve_flow_chunk(
            plan.formulation,
            *(problem, pair, schedules, w0),
            *(plan.t1, plan.solver_options, batch, mesh),
        )


STRATEGIES = {cls.name: cls for cls in (VmapStrategy, BatchedStrategy)}
"""The strategies a user names (`KernelStrategy` comes with the Pallas backend)."""
CHOICES = ("auto", *STRATEGIES)


def strategy_class(strategy) -> type[AbstractStrategy] | None:
    """The strategy class a user's choice names (None for `"auto"`)."""
    return check_choice("strategy", strategy, STRATEGIES, AbstractStrategy)


def _max_rms_norm(y):
    """The largest per-configuration RMS norm: every configuration meets the tolerance."""
    per_config = jax.tree_util.tree_map(
        lambda leaf: jnp.mean(leaf.reshape(leaf.shape[0], -1) ** 2, axis=1), y
    )
    total = sum(jax.tree_util.tree_leaves(per_config))
    count = len(jax.tree_util.tree_leaves(y))
    return jnp.sqrt(jnp.max(total / count))


@stored_program
def _solve_batched(
    formulation, problem, pair, schedules, w0, jump_ts, t1, options, batch
):
    """One diffeqsolve whose state holds every configuration of the chunk."""
    p_axis, w_axis = batch.axis(batch.problem), batch.axis(batch.w0)
    each = eqx.if_array(0)
    y0, args = eqx.filter_vmap(formulation.init, in_axes=(p_axis, None, each, w_axis))(
        problem, pair, schedules, w0
    )
    field = eqx.filter_vmap(formulation.field, in_axes=(None, each, p_axis, each))
    controller = options.stepsize_controller(y0, jump_ts, norm=_max_rms_norm)
    dtype = state_dtype(y0)  # times in the state's precision
    t1 = jnp.asarray(t1).astype(dtype)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, a: field(t, y, a[0], a[1])),
        options.solver,
        jnp.zeros((), dtype),
        t1,
        None,
        y0,
        args=(problem, args),
        saveat=dfx.SaveAt(t1=True),
        stepsize_controller=controller,
        max_steps=options.max_steps,
        throw=False,
    )
    y1 = jax.tree_util.tree_map(lambda leaf: leaf[0], sol.ys)
    point = eqx.filter_vmap(formulation.point, in_axes=(None, each, p_axis, each))
    xs = point(t1, y1, problem, args)
    field_finite = _rows_finite(field(t1, y1, problem, args), batch.size)
    ok = sol.result == dfx.RESULTS.successful
    status = status_code(
        jnp.broadcast_to(ok, (batch.size,)),
        jnp.broadcast_to(sol.result == dfx.RESULTS.max_steps_reached, (batch.size,)),
        jnp.all(jnp.isfinite(xs), axis=1),
        field_finite,
    )
    steps = jnp.broadcast_to(sol.stats["num_steps"], (batch.size,))
    return xs, status, steps, ok, (y1, args)


def _rows_finite(tree, size: int):
    """Per configuration (leading axis), whether every entry of `tree` is finite."""
    leaves = jax.tree_util.tree_leaves(tree)
    rows = [jnp.all(jnp.isfinite(leaf.reshape(size, -1)), axis=1) for leaf in leaves]
    return jnp.all(jnp.stack(rows), axis=0)


def _vmapped_solves(formulation, problem, pair, schedules, w0, t1, options, batch):
    """Independent solves, one per configuration, each with its own controller."""
    save = dfx.SubSaveAt(t1=True)

    def single(problem, schedule, w):
        y0, args = formulation.init(problem, pair, schedule, w)
        jump_ts = schedule.jump_ts()
        sol, y_last = integrate(
            formulation, problem, y0, args, jump_ts, t1, save, options, False
        )
        return sol.x_final, sol.status, sol.num_steps, (y_last, args)

    in_axes = (batch.axis(batch.problem), eqx.if_array(0), batch.axis(batch.w0))
    return eqx.filter_vmap(single, in_axes=in_axes)(problem, schedules, w0)


@stored_program
def _solve_vmap(formulation, problem, pair, schedules, w0, t1, options, batch, mesh):
    """Independent solves (`_vmapped_solves`) of a chunk sharded over `mesh`.

    With several devices each solves its shard in a loop of its own (`shard_map`): a
    vmapped while loop partitioned by XLA instead runs until every configuration of
    every shard is done, the devices agreeing at every step (measured on 2 CPU
    devices: no faster than one device, against 1.5x faster with a loop per device).
    Implicit solvers keep the partitioned loop: inside `shard_map`, lineax's linear
    solves of their Newton steps reject their own operands ("pytree does not match
    out_structure"); on a CPU the chunk then runs on one device (`_chunks.py`).
    """

    def local(problem, schedules, w0, t1, batch):
        return _vmapped_solves(
            formulation, problem, pair, schedules, w0, t1, options, batch
        )

    if mesh.size == 1 or not options.explicit:
        return local(problem, schedules, w0, t1, batch)
    return shard_over(mesh, local, batch, problem, schedules, w0, t1)
