r"""How one chunk of a sweep is solved: the two batching strategies and the predictions.

Both strategies go through the formulation's `init`, `field` and `point`:

- `"vmap"`: `jax.vmap` of independent solves; each configuration has its own step-size
  controller (robust: one failing configuration never affects another);
- `"batched"`: one solve whose state holds all configurations of a chunk; the
  formulation's init, field and readout are vmapped per configuration while the problem
  stays unbatched, so the products with its design matrix are GEMMs. The configurations
  share the step-size controller, with the error measured per configuration and the
  maximum taken (each configuration meets `rtol`/`atol`); the schedules' jump times
  are merged. If a chunk fails (a shared failure), it is re-solved with `"vmap"`, so
  failures stay per-configuration.

A chunk's configuration axis is padded to a fixed size (so that a handful of compiled
programs serve every chunk) and sharded over all devices (`jax.sharding`); under
`"vmap"` each device solves its shard in a loop of its own (`shard_map`), and on a
CPU with one device the solves run in parts, one host thread per core (`_cores.py`).
"""

import dataclasses
import typing

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _flow_kernel as flow_kernel
from ._cores import host_parts, lapack_in_one_thread, map_parts
from ._formulations import AbstractFormulation
from ._formulations._legendre_args import legendre_args
from ._implicit_bias import _implicit_bias, default_tol
from ._pairs import AbstractMatrixPair
from ._pairs._matrix import lift_diagonal
from ._problems import LeastSquares, Logistic, MatrixSensing
from ._solve import final_convergence, integrate, SolverOptions, state_dtype
from ._status import Status
from ._validation import validated


@dataclasses.dataclass(frozen=True)
class Batch:
    """Which inputs carry the configuration axis, and how long it is."""

    size: int
    w0: bool
    problem: bool

    def axis(self, batched: bool):
        return eqx.if_array(0) if batched else None

    def take(self, tree, batched: bool, index):
        """Rows `index` of the configuration axis (the whole tree when unbatched)."""
        if not batched:
            return tree
        return jax.tree_util.tree_map(
            lambda x: x[index] if eqx.is_array(x) else x, tree
        )


@dataclasses.dataclass(frozen=True)
class ChunkSolver:
    """What every chunk of one sweep is solved with."""

    formulation: AbstractFormulation
    strategy: str
    t1: object
    options: SolverOptions
    predict: bool
    regime: bool | None  # see `prediction_regime`
    backend: str = "xla"  # or "pallas": the fused flow kernel
    threaded: bool = False  # vmap solves may run in host threads (`splits_over_cores`)


class Solved(typing.NamedTuple):
    """What a chunk's solves give, one row per configuration."""

    x_final: jax.Array
    status: jax.Array
    converged: jax.Array
    distance_to_limit: jax.Array
    num_steps: jax.Array


def _max_rms_norm(y):
    """The largest per-configuration RMS norm: every configuration meets the tolerance."""
    per_config = jax.tree_util.tree_map(
        lambda leaf: jnp.mean(leaf.reshape(leaf.shape[0], -1) ** 2, axis=1), y
    )
    total = sum(jax.tree_util.tree_leaves(per_config))
    count = len(jax.tree_util.tree_leaves(y))
    return jnp.sqrt(jnp.max(total / count))


@eqx.filter_jit
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
    ok = sol.result == dfx.RESULTS.successful
    status = jnp.where(
        jnp.all(jnp.isfinite(xs), axis=1), Status.SUCCESS, Status.NONFINITE
    ).astype(jnp.int32)
    steps = jnp.broadcast_to(sol.stats["num_steps"], (batch.size,))
    return xs, status, steps, ok, (y1, args)


@eqx.filter_jit
def _convergence(formulation, problem, final, status, t1, options, batch):
    """`converged` and `distance_to_limit` per configuration, from the final states.

    A program of its own, run on one device: on XLA:CPU with several devices, its
    least-squares solves inside the sharded solve programs deadlocked. Mapped in
    batches of `_CONVERGENCE_BATCH` configurations, so that its per-configuration
    Jacobians never hold a whole chunk in memory at once.
    """
    y1, args = final
    batched = (y1, args, problem if batch.problem else None)
    dynamic, static = eqx.partition(batched, eqx.is_array)

    def one(item):
        y, a, p = eqx.combine(item[0], static)
        p = problem if p is None else p
        return final_convergence(formulation, p, t1, y, a, item[1], options)

    size = min(_CONVERGENCE_BATCH, batch.size)
    return jax.lax.map(one, (dynamic, status), batch_size=size)


_CONVERGENCE_BATCH = 256


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


@eqx.filter_jit
def _solve_vmap(formulation, problem, pair, schedules, w0, t1, options, batch, mesh):
    """Independent solves (`_vmapped_solves`) of a chunk sharded over `mesh`.

    With several devices each solves its shard in a loop of its own (`shard_map`): a
    vmapped while loop partitioned by XLA instead runs until every configuration of
    every shard is done, the devices agreeing at every step (measured on 2 CPU
    devices: no faster than one device, against 1.5x faster with a loop per device).
    Implicit solvers keep the partitioned loop: inside `shard_map`, lineax's linear
    solves of their Newton steps reject their own operands ("pytree does not match
    out_structure"); `_solve_and_predict` keeps them on one device on a CPU.
    """
    if mesh.size == 1 or not explicit(options.solver):
        return _vmapped_solves(
            formulation, problem, pair, schedules, w0, t1, options, batch
        )
    dynamic, static = eqx.partition((problem, schedules, w0, t1), eqx.is_array)
    shard, whole = PartitionSpec("config"), PartitionSpec()

    def specs(tree, batched):
        return jax.tree_util.tree_map(lambda _: shard if batched else whole, tree)

    in_specs = (
        specs(dynamic[0], batch.problem),
        specs(dynamic[1], True),
        specs(dynamic[2], batch.w0),
        specs(dynamic[3], False),
    )
    local_batch = Batch(batch.size // mesh.size, batch.w0, batch.problem)

    def local(dynamic):
        problem, schedules, w0, t1 = eqx.combine(dynamic, static)
        return _vmapped_solves(
            formulation, problem, pair, schedules, w0, t1, options, local_batch
        )

    return shard_map(local, mesh, (in_specs,), shard)(dynamic)


def shard_map(f, mesh, in_specs, out_specs):
    """`jax.shard_map` (JAX >= 0.7), or its experimental form on older JAX; no
    replication checks (diffrax's loops and a kernel launch have no rule for them)."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(
            f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
        )
    from jax.experimental.shard_map import shard_map as experimental

    return experimental(
        f, mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False
    )


def _on_one_device(tree):
    """The arrays of `tree` gathered onto the first device (one host's copy)."""
    device = jax.local_devices()[0]
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(_gather(x, None), device) if eqx.is_array(x) else x,
        tree,
    )


@eqx.filter_jit
def _predict(problem, pair, schedules, w0, tol, regime, batch, x_flow):
    """`jm.implicit_bias` per configuration, each started from where its flow ended
    (`x_flow`; a failed solve's non-finite end starts from 0): the same limit to the
    tolerance, in a few Newton iterations instead of up to 20 from 0."""

    def single(problem, schedule, w, x_end):
        args = None if regime is False else legendre_args(pair, schedule, w)
        x0 = pair.g(w)
        return _implicit_bias(
            problem, pair, schedule, x0, args, tol, None, regime, x_end
        )

    in_axes = (batch.axis(batch.problem), eqx.if_array(0), batch.axis(batch.w0), 0)
    return eqx.filter_vmap(single, in_axes=in_axes)(problem, schedules, w0, x_flow)


def commuting_reductions(problem, pair, w0, batch: Batch) -> list:
    """Each configuration's commuting reduction of a matrix pair (one when neither
    the problem nor `w0` is batched), computed eagerly with NumPy as `implicit_bias`
    does; a `ValueError` says why there is none (measurements without a common
    basis, an initialisation that is not aligned)."""
    rows = range(batch.size) if (batch.problem or batch.w0) else range(1)
    return [
        pair.commuting_reduction(
            batch.take(problem, batch.problem, k), batch.take(w0, batch.w0, k)
        )
        for k in rows
    ]


def _stack(trees):
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def _predict_commuting(problem, pair, schedules, w0, tol, batch, x_flow):
    r"""`jm.implicit_bias` of a matrix pair after a switch-off, per configuration.

    Each configuration reduces exactly to a diagonal pair on its aligned singular
    values (`commuting_reduction`, eager); the reduced limits are computed in one
    `vmap`, each started from the flow's end read in the common basis,
    $z = \operatorname{diag}(L^\top X R)$, and lifted back,
    $X = L\,\mathrm{diag}(z)R^\top$.
    """
    reductions = commuting_reductions(problem, pair, w0, batch)
    shared = len(reductions) == 1
    lefts, rights = zip(*(r.aligned_bases() for r in reductions))
    if shared:
        left, right = lefts[0], rights[0]
        reduced_problem, reduced_w0 = reductions[0].problem, reductions[0].w0
    else:
        left, right = jnp.stack(lefts), jnp.stack(rights)
        reduced_problem = _stack([r.problem for r in reductions])
        reduced_w0 = _stack([r.w0 for r in reductions])
    reduced = Batch(batch.size, w0=not shared, problem=not shared)
    X = x_flow.reshape(batch.size, left.shape[-2], right.shape[-2])
    z_flow = jnp.einsum("...ik,cij,...jk->ck", left, X, right)
    diagonal_pair = reductions[0].pair
    z, status = _predict(
        reduced_problem,
        diagonal_pair,
        schedules,
        reduced_w0,
        tol,
        True,
        reduced,
        z_flow,
    )

    in_axes = (None, None, 0) if shared else 0
    return jax.vmap(lift_diagonal, in_axes=in_axes)(left, right, z), status


@eqx.filter_jit
def _losses(problem, xs, batch):
    return eqx.filter_vmap(
        lambda p, x: p.loss(x), in_axes=(batch.axis(batch.problem), 0)
    )(problem, xs)


def devices_mesh() -> Mesh:
    """All devices (of every process), along the configuration axis."""
    return Mesh(np.array(jax.devices()), ("config",))


def _shard(tree, batched, mesh):
    """Put the configuration axis of batched leaves across the mesh."""
    if not batched:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec("config"))
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x, sharding) if eqx.is_array(x) else x, tree
    )


def _pad(tree, batched, size):
    """Repeat the last configuration until the leading axis has length `size`."""
    if not batched:
        return tree

    def pad(x):
        if not eqx.is_array(x) or x.shape[0] == size:
            return x
        extra = jnp.repeat(x[-1:], size - x.shape[0], axis=0)
        return jnp.concatenate([x, extra], axis=0)

    return jax.tree_util.tree_map(pad, tree)


@eqx.filter_jit
def _rows(tree, rows):
    """Rows `rows` of every array of `tree` (one program for the whole tree: op by
    op, each leaf's indexing would compile several small programs per shape)."""
    return jax.tree_util.tree_map(lambda x: x[rows] if eqx.is_array(x) else x, tree)


def _gather(x, n=None):
    """The first `n` rows (all with None) of `x`, from every process, as NumPy."""
    if jax.process_count() > 1 and not getattr(x, "is_fully_addressable", True):
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)[:n]


def run_chunk(solver: ChunkSolver, inputs, batch: Batch, index, padded: int, mesh):
    """Solve (and predict) the configurations `index`, padded to `padded` of them.

    **Returns:** a dict of NumPy arrays with one row per configuration of `index`.
    """
    problem, pair, schedules, w0 = inputs
    sub = Batch(padded, batch.w0, batch.problem)

    # The chunk's rows, the last one repeated up to `padded`: one compiled gather.
    rows = np.concatenate([index, np.repeat(index[-1:], padded - len(index))])

    def take(tree, batched):
        return _shard(_rows(tree, rows) if batched else tree, batched, mesh)

    problem_c, w0_c = take(problem, batch.problem), take(w0, batch.w0)
    schedules_c = take(schedules, True)
    # `sweep` checked every input eagerly; LAPACK's own threads would compete with the
    # solves' threads for cores while gaining nothing on small matrices (`_cores.py`).
    with validated(), lapack_in_one_thread():
        return _solve_and_predict(
            solver, problem_c, pair, schedules_c, w0_c, sub, len(index), mesh
        )


_FIXED_PROBLEMS = (LeastSquares, Logistic, MatrixSensing)  # no user code inside


def _is_jaxmirror_type(obj) -> bool:
    return type(obj).__module__.split(".")[0] == "jaxmirror"


def explicit(solver) -> bool:
    """Whether `solver` is an explicit Runge-Kutta method: no linear solves (LAPACK on
    a CPU) inside its steps."""
    return isinstance(solver, dfx.AbstractERK)


def splits_over_cores(problem, pair, schedules, solver) -> bool:
    """Whether a sweep's independent solves may run in host threads (`_cores.py`):
    only for jaxmirror's own linear problems, pairs and schedules, stepped by an
    explicit Runge-Kutta solver (see `_solve_and_predict`: an implicit solver's
    Newton iterations call LAPACK at every step). Decided once per sweep, in
    `ChunkSolver.threaded`."""
    return (
        type(problem) in _FIXED_PROBLEMS
        and all(_is_jaxmirror_type(obj) for obj in (pair, schedules))
        and explicit(solver)
    )


def _solve_and_predict(solver, problem_c, pair, schedules_c, w0_c, sub, n, mesh):
    # On a CPU with one device, independent solves run in parts, one host thread per
    # core (`_cores.py`). Not the batched strategy (its results depend on how
    # configurations are grouped), nor the convergence check and the predictions:
    # their LAPACK solves inside loops deadlock XLA:CPU's thread pool when two of
    # their programs run at once (measured: the second chunk of a sweep hung). So
    # only jaxmirror's own problems, pairs and schedules, whose flows are GEMMs and
    # elementwise functions, run in threads, and only under an explicit solver; a
    # user's code (a `jm.Problem`'s loss, a pair or schedule of their own) might call
    # LAPACK, and an implicit solver does (measured: Kvaerno5 in two threads hung at
    # its first chunk, 0% CPU).
    parts = host_parts(sub.size) if solver.threaded else 1

    def part_batch(lo, hi):
        return Batch(hi - lo, sub.w0, sub.problem)

    if (
        mesh.size > 1
        and not explicit(solver.options.solver)
        and jax.default_backend() == "cpu"
    ):
        # LAPACK inside a program partitioned over CPU devices deadlocks XLA:CPU
        # (measured: Kvaerno5 on 2 devices hung, 0% CPU), so implicit steps run on one.
        problem_c, schedules_c, w0_c = _on_one_device((problem_c, schedules_c, w0_c))
        mesh = Mesh(np.array(jax.local_devices()[:1]), ("config",))
    common = (solver.formulation, problem_c, pair, schedules_c, w0_c)
    results = None
    if solver.backend == "pallas":
        results = flow_kernel.solve_chunk(*common, solver.t1, solver.options, sub, mesh)
    elif solver.strategy == "batched":
        jumps = schedules_c.jump_ts()
        jump_ts = None if jumps is None else jnp.asarray(np.unique(np.asarray(jumps)))
        xs, status, steps, ok, final = _solve_batched(
            *common, jump_ts, solver.t1, solver.options, sub
        )
        results = (xs, status, steps, final) if bool(ok) else None
    if results is None:
        results = map_parts(
            lambda lo, hi: _solve_vmap(
                solver.formulation,
                sub.take(problem_c, sub.problem, slice(lo, hi)),
                pair,
                sub.take(schedules_c, True, slice(lo, hi)),
                sub.take(w0_c, sub.w0, slice(lo, hi)),
                solver.t1,
                solver.options,
                part_batch(lo, hi),
                mesh,
            ),
            sub.size,
            parts,
        )
    xs, status, steps, final = results
    # The convergence check and the predictions run on one device: their LAPACK solves
    # inside while loops deadlock XLA:CPU when a program is sharded over devices.
    one_problem, one_final, one_status = _on_one_device((problem_c, final, status))
    converged, distance = _convergence(
        solver.formulation,
        one_problem,
        one_final,
        one_status,
        solver.t1,
        solver.options,
        sub,
    )
    solved = Solved(xs, status, converged, distance, steps)
    part = {name: _gather(value, n) for name, value in solved._asdict().items()}
    if solver.predict:
        one_schedules, one_w0, one_xs = _on_one_device((schedules_c, w0_c, xs))
        inputs = (one_problem, pair, one_schedules, one_w0, default_tol())
        if isinstance(pair, AbstractMatrixPair) and solver.regime:
            # Through the commuting reduction, computed eagerly (NumPy): not in a jit.
            predicted, bias_status = _predict_commuting(*inputs, sub, one_xs)
        else:
            predicted, bias_status = _predict(*inputs, solver.regime, sub, one_xs)
        part["x_predicted"] = _gather(predicted, n)
        part["bias_status"] = _gather(bias_status, n)
    part["loss"] = _gather(_losses(problem_c, solved.x_final, sub), n)
    return part
