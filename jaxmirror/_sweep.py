r"""Vectorized sweeps: many flows at once, sharded over devices, saved chunk by chunk.

A sweep is a schedule whose parameters carry a leading configuration axis of length K
(and, optionally, initialisations and problem instances batched the same way). The K
configurations are cut into chunks; each chunk is solved as one jitted computation with
its configuration axis sharded over all devices (`jax.sharding`), and handed to the
sweep's store (`_store.py`) as soon as it is done, so an interrupted sweep resumes
without recomputing or losing finished chunks.

Two batching strategies, both through the formulation's `init`, `field` and `point`:

- `"vmap"`: `jax.vmap` of independent solves; each configuration has its own step-size
  controller (robust: one failing configuration never affects another);
- `"batched"`: one solve whose state holds all configurations of a chunk; the
  formulation's init, field and readout are vmapped per configuration while the problem
  stays unbatched, so the products with its design matrix are GEMMs. The configurations
  share the step-size controller, with the error measured per configuration and the
  maximum taken (each configuration meets `rtol`/`atol`); the schedules' jump times
  are merged. If a chunk fails (a shared failure), it is re-solved with `"vmap"`, so
  failures stay per-configuration.
"""

import dataclasses
import os
import sys
import time
from collections.abc import Mapping

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._formulations import AbstractFormulation, as_formulation, prefers_shared_step
from ._formulations._legendre_args import legendre_args
from ._implicit_bias import _implicit_bias, default_tol, prediction_regime
from ._inputs import check_count, check_pair, check_point_of, check_schedule, check_t1
from ._problems import as_problem, LeastSquares, Logistic
from ._solve import (
    default_controller,
    integrate,
    solver_options,
    SolverOptions,
)
from ._status import Status
from ._store import SweepStore
from ._validation import as_float_array, is_concrete
from ._version import __version__


STRATEGIES = ("auto", "vmap", "batched")


def grid(**axes) -> dict[str, np.ndarray]:
    """The outer product of 1-D axes, flattened: `grid(alpha=a, t_off=t)` gives arrays of
    length `len(a) * len(t)` (the last axis varies fastest), ready for a schedule.
    """
    names = list(axes)
    mesh = np.meshgrid(
        *[np.asarray(axes[k], dtype=float) for k in names], indexing="ij"
    )
    return {k: m.ravel() for k, m in zip(names, mesh)}


@dataclasses.dataclass(frozen=True)
class _Batch:
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
class _Plan:
    """Everything a sweep decided before its first chunk."""

    formulation: AbstractFormulation
    strategy: str
    chunk: int
    n_chunks: int
    t1: object
    options: SolverOptions
    regime: bool | None  # see `prediction_regime`
    predict: bool
    prediction_note: str


def _batch_size(schedules) -> int:
    leaves = [x for x in jax.tree_util.tree_leaves(schedules) if eqx.is_array(x)]
    sizes = {leaf.shape[0] if leaf.ndim else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "`schedules` must be a schedule whose parameters all carry the same leading "
            "configuration axis, e.g. jm.SwitchOff(alpha=A, t_off=T) with A and T of "
            f"shape (K,); got leading sizes {sorted(map(str, sizes))}."
        )
    return sizes.pop()


def _batch(problem, pair, schedules, w0) -> _Batch:
    size = _batch_size(schedules)
    x_shape = jax.eval_shape(pair.g, w0).shape
    w0_batched = len(x_shape) == 2
    problem_batched = (
        isinstance(problem, LeastSquares | Logistic) and problem.Z.ndim == 3
    )
    for name, batched, lead in (
        ("w0", w0_batched, x_shape[0] if w0_batched else None),
        ("problem", problem_batched, problem.Z.shape[0] if problem_batched else None),
    ):
        if batched and lead != size:
            raise ValueError(
                f"`{name}` is batched with leading size {lead}, but `schedules` has {size} "
                "configurations; batched inputs must share the configuration axis."
            )
    return _Batch(size, w0_batched, problem_batched)


def _auto_strategy(formulation: AbstractFormulation) -> str:
    on_cpu = jax.default_backend() == "cpu"
    return "batched" if on_cpu and prefers_shared_step(formulation) else "vmap"


def _plan(problem, pair, schedules, w0, t1, batch, settings) -> _Plan:
    """Resolve and check every option before any computation."""
    first = batch.take(w0, batch.w0, 0)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(first))
    one_problem = batch.take(problem, batch.problem, 0)
    formulation = as_formulation(settings["formulation"], one_problem, pair, dtype)
    strategy = settings["strategy"]
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}, got {strategy!r}.")
    if strategy == "auto":
        strategy = _auto_strategy(formulation)
    n_devices = len(jax.devices())
    chunk = settings["chunk_size"]
    chunk = min(batch.size, 4096) if chunk is None else check_count("chunk_size", chunk)
    chunk = -(-chunk // n_devices) * n_devices
    regime, note = None, "computed"
    try:
        regime = prediction_regime(one_problem, pair, schedules)
    except ValueError as reason:
        note = f"not available: {reason}"
    predict = settings["predict"] and note == "computed"
    if not settings["predict"]:
        note = "not requested"
    return _Plan(
        formulation=formulation,
        strategy=strategy,
        chunk=chunk,
        n_chunks=-(-batch.size // chunk),
        t1=t1,
        options=settings["options"],
        regime=regime,
        predict=predict,
        prediction_note=note,
    )


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
    controller = options.controller
    if controller is None:
        controller = default_controller(
            options.rtol, options.atol, y0, norm=_max_rms_norm
        )
    if jump_ts is not None:
        controller = dfx.ClipStepSizeController(controller, jump_ts=jump_ts)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, a: field(t, y, problem, a)),
        options.solver,
        0.0,
        t1,
        None,
        y0,
        args=args,
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
    )
    steps = jnp.broadcast_to(sol.stats["num_steps"], (batch.size,))
    return xs, status.astype(jnp.int32), steps, ok


@eqx.filter_jit
def _solve_vmap(formulation, problem, pair, schedules, w0, t1, options, batch):
    """Independent solves, one per configuration, each with its own controller."""
    save = dfx.SubSaveAt(t1=True)

    def single(problem, schedule, w):
        y0, args = formulation.init(problem, pair, schedule, w)
        jump_ts = schedule.jump_ts()
        sol = integrate(formulation, problem, y0, args, jump_ts, t1, save, options)
        return sol.x_final, sol.status, sol.num_steps

    in_axes = (batch.axis(batch.problem), eqx.if_array(0), batch.axis(batch.w0))
    return eqx.filter_vmap(single, in_axes=in_axes)(problem, schedules, w0)


@eqx.filter_jit
def _predict(problem, pair, schedules, w0, tol, regime, batch):
    def single(problem, schedule, w):
        args = None if regime is False else legendre_args(pair, schedule, w)
        x0 = pair.g(w)
        return _implicit_bias(problem, pair, schedule, x0, args, tol, None, regime)

    in_axes = (batch.axis(batch.problem), eqx.if_array(0), batch.axis(batch.w0))
    return eqx.filter_vmap(single, in_axes=in_axes)(problem, schedules, w0)


def _devices_mesh() -> Mesh:
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


def _gather(x, n):
    """The first `n` rows of `x`, from every process, as a NumPy array."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)[:n]


def _run_chunk(plan: _Plan, inputs, batch: _Batch, lo: int, hi: int, mesh) -> dict:
    """Solve (and predict) configurations `lo:hi`, padded to the chunk size."""
    problem, pair, schedules, w0 = inputs
    index = np.arange(lo, hi)
    sub = _Batch(plan.chunk, batch.w0, batch.problem)

    def take(tree, batched):
        chunk = _pad(batch.take(tree, batched, index), batched, plan.chunk)
        return _shard(chunk, batched, mesh)

    problem_c, w0_c = take(problem, batch.problem), take(w0, batch.w0)
    schedules_c = take(schedules, True)
    solved = None
    if plan.strategy == "batched":
        jumps = schedules_c.jump_ts()
        jump_ts = None if jumps is None else jnp.asarray(np.unique(np.asarray(jumps)))
        xs, status, steps, ok = _solve_batched(
            *(plan.formulation, problem_c, pair, schedules_c, w0_c, jump_ts),
            *(plan.t1, plan.options, sub),
        )
        solved = (xs, status, steps) if bool(ok) else None
    if solved is None:
        solved = _solve_vmap(
            *(plan.formulation, problem_c, pair, schedules_c, w0_c),
            *(plan.t1, plan.options, sub),
        )
    xs, status, steps = solved
    n = hi - lo
    part = dict(
        x_final=_gather(xs, n), status=_gather(status, n), num_steps=_gather(steps, n)
    )
    if plan.predict:
        predicted, bias_status = _predict(
            problem_c, pair, schedules_c, w0_c, default_tol(), plan.regime, sub
        )
        part["x_predicted"] = _gather(predicted, n)
        part["bias_status"] = _gather(bias_status, n)
    losses = eqx.filter_vmap(
        lambda p, x: p.loss(x), in_axes=(sub.axis(sub.problem), 0)
    )(problem_c, jnp.asarray(xs))
    part["loss"] = _gather(losses, n)
    return part


def _schedule_coordinates(schedules) -> dict[str, np.ndarray]:
    """The schedule's per-configuration scalar parameters, named by field."""
    coords = {}
    for field in dataclasses.fields(schedules):
        value = getattr(schedules, field.name)
        if eqx.is_array(value) and value.ndim == 1:
            coords[field.name] = np.asarray(value)
    return coords


def _check_labels_and_truth(labels, truth, size, n):
    for name, value in (labels or {}).items():
        if np.shape(value) != (size,):
            raise ValueError(
                f"`labels[{name!r}]` must have shape ({size},), got {np.shape(value)}."
            )
    if truth is None:
        return None
    truth = np.asarray(truth, dtype=float)
    if truth.shape not in ((n,), (size, n)):
        raise ValueError(f"`truth` must have shape (n,) or (K, n), got {truth.shape}.")
    return truth


def _to_dataset(part, coords, truth, lo, hi):
    import xarray as xr

    data = {
        "x_final": (("config", "coord"), part["x_final"]),
        "loss": ("config", part["loss"]),
        "status": ("config", part["status"].astype(np.int32)),
        "num_steps": ("config", part["num_steps"].astype(np.int32)),
    }
    if "x_predicted" in part:
        data["x_predicted"] = (("config", "coord"), part["x_predicted"])
        data["bias_status"] = ("config", part["bias_status"].astype(np.int32))
    if truth is not None:
        target = truth if truth.ndim == 1 else truth[lo:hi]
        data["recovery_error"] = (
            "config",
            np.linalg.norm(part["x_final"] - target, axis=1),
        )
        if "x_predicted" in part:
            data["predicted_recovery_error"] = (
                "config",
                np.linalg.norm(part["x_predicted"] - target, axis=1),
            )
    config_coords = {k: ("config", np.asarray(v)[lo:hi]) for k, v in coords.items()}
    config_coords["config"] = np.arange(lo, hi)
    return xr.Dataset(data, coords=config_coords)


def _record(problem, pair, schedules, batch, plan) -> dict:
    """The sweep's configuration, stored beside its results and compared on resume."""
    options = plan.options
    return dict(
        jaxmirror_version=__version__,
        configurations=batch.size,
        chunk_size=plan.chunk,
        pair=type(pair).__name__,
        schedule=type(schedules).__name__,
        problem=type(problem).__name__,
        w0_batched=batch.w0,
        problem_batched=batch.problem,
        t1=float(plan.t1),
        formulation=plan.formulation.name,
        strategy=plan.strategy,
        rtol=options.rtol,
        atol=options.atol,
        max_steps=options.max_steps,
        solver=type(options.solver).__name__,
        prediction=plan.prediction_note,
    )


def _progress(done, total, chunk_index, n_chunks, start, resumed):
    elapsed = time.perf_counter() - start
    new = done - resumed
    rate = new / elapsed if elapsed > 0 else float("nan")
    left = (total - done) / rate if rate > 0 else float("nan")
    print(
        f"[jaxmirror sweep] chunk {chunk_index + 1}/{n_chunks}: {done}/{total} "
        f"configurations, {rate:.1f} configurations/s, about {left:.0f} s left",
        file=sys.stderr,
        flush=True,
    )


def sweep(
    problem,
    pair,
    schedules,
    w0,
    t1,
    *,
    truth=None,
    labels: Mapping[str, np.ndarray] | None = None,
    formulation="auto",
    strategy: str = "auto",
    chunk_size: int | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    predict: bool = True,
    progress: bool = True,
    solver=None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    max_steps: int = 100_000,
    stepsize_controller=None,
):
    r"""Solve K flows at once and collect where they end, as a labelled xarray Dataset.

    **Arguments:**

    - `problem`: a problem, or a `LeastSquares`/`Logistic` whose `Z` and `y` carry a
      leading configuration axis (one instance per configuration).
    - `pair`: the (g, h) pair.
    - `schedules`: a schedule whose parameters have a leading axis of length K.
    - `w0`: initial parameters, shared or with a leading configuration axis.
    - `t1`: the final time.
    - `truth`: optional ground truth x*, shape `(n,)` or `(K, n)`: adds recovery errors.
    - `labels`: extra per-configuration coordinates (e.g. `seed`, `scale`), each `(K,)`.
    - `formulation`: as for `jm.solve`, default `"auto"`: in float64 the row-space
      formulation for a closed-form pair and a loss of the predictions (least squares,
      logistic, matrix sensing), the dual formulation for other losses; the parameter
      formulation for pairs without a closed form and in float32, where the exponential
      inverse mirror map amplifies roundoff (measured in `benchmarks/RESULTS.md`).
    - `strategy`: `"vmap"`, `"batched"` or `"auto"` (see the module docstring; `"auto"`
      picks `"batched"` for the parameter formulation on CPU and `"vmap"` otherwise,
      as measured by `benchmarks/sweep.py`).
    - `chunk_size`: configurations per chunk (memory stays bounded by it; default
      min(K, 4096)), rounded up to a multiple of the device count.
    - `out`: a directory: chunks are written there as they finish, with `config.json`
      (the sweep's configuration and jaxmirror's version) beside them, and the
      combined `results.nc` at the end.
    - `resume`: continue a sweep in `out`, skipping finished chunks; the configuration
      must match.
    - `predict`: also compute `jm.implicit_bias` where a limit can be predicted (the
      dataset's `prediction` attribute says why not otherwise).
    - `progress`: report chunks done, configurations per second and time left.
    - `solver`, `rtol`, `atol`, `max_steps`, `stepsize_controller`: as for `jm.solve`,
      but the tolerances default to 1e-6 and 1e-9 (`jm.solve`: 1e-8 and 1e-10), which
      resolve the differences a sweep compares, at about half the steps.

    **Returns:** an `xarray.Dataset` over `config` (and `coord`, the index of x) with
    `x_final` (K, n), `loss`, `status`, `num_steps`, the schedule parameters and labels as
    coordinates, and, where available, `x_predicted`, `bias_status`, `recovery_error`,
    `predicted_recovery_error`. A failing configuration is recorded in `status`, never
    raised.

    Several hosts: call `jax.distributed.initialize()` first; the configuration axis is
    then sharded over every host's devices, and only process 0 writes.
    """
    problem, w0, batch = _check_batch(problem, pair, schedules, w0)
    truth = _check_labels_and_truth(labels, truth, batch.size, problem.dim())
    options = solver_options(solver, rtol, atol, max_steps, None, stepsize_controller)
    settings = dict(
        formulation=formulation,
        strategy=strategy,
        chunk_size=chunk_size,
        predict=predict,
        options=options,
    )
    plan = _plan(problem, pair, schedules, w0, check_t1(t1), batch, settings)
    _check_initialisations(plan, problem, pair, schedules, w0, batch)
    record = _record(problem, pair, schedules, batch, plan)
    store = None if out is None else SweepStore(out, record, resume)
    coords = _schedule_coordinates(schedules)
    coords.update({k: np.asarray(v) for k, v in (labels or {}).items()})
    inputs = (problem, pair, schedules, w0)
    parts = _solve_chunks(plan, inputs, batch, coords, truth, store, progress)
    return _combine(parts, record, store)


def _check_batch(problem, pair, schedules, w0):
    """The sweep's inputs checked, with which of them carry the configuration axis."""
    problem = as_problem(problem)
    check_pair(pair)
    check_schedule(schedules, "schedules")
    w0 = jax.tree_util.tree_map(as_float_array, w0)
    w0 = check_point_of(problem, pair, w0, batched=_is_batched_w0(pair, w0))
    batch = _batch(problem, pair, schedules, w0)
    if not is_concrete(schedules, w0, problem):
        raise ValueError(
            "`sweep` runs eagerly: pass concrete arrays, not traced values."
        )
    return problem, w0, batch


def _solve_chunks(plan, inputs, batch, coords, truth, store, progress) -> list:
    """The chunk loop: each chunk solved, stored and reported as soon as it is done;
    chunks that a resumed sweep already finished are read back, not recomputed."""
    mesh = _devices_mesh()
    start, parts, resumed = time.perf_counter(), [], 0
    for index in range(plan.n_chunks):
        lo, hi = index * plan.chunk, min((index + 1) * plan.chunk, batch.size)
        dataset = None if store is None else store.finished_chunk(index)
        if dataset is None:
            part = _run_chunk(plan, inputs, batch, lo, hi, mesh)
            dataset = _to_dataset(part, coords, truth, lo, hi)
            if store is not None:
                store.write_chunk(index, dataset)
            if progress:
                _progress(hi, batch.size, index, plan.n_chunks, start, resumed)
        else:
            resumed += hi - lo
        parts.append(dataset)
    return parts


def _combine(parts, record, store):
    import xarray as xr

    result = xr.concat(parts, dim="config") if len(parts) > 1 else parts[0]
    result.attrs.update({k: str(v) for k, v in record.items()})
    if store is not None:
        store.write_result(result)
    return result


def _is_batched_w0(pair, w0) -> bool:
    """Whether `w0` carries a configuration axis: g(w0) has two axes instead of one."""
    try:
        return len(jax.eval_shape(pair.g, w0).shape) == 2
    except Exception:  # noqa: BLE001 - `check_point_of` reports it with the argument
        return False


def _check_initialisations(plan, problem, pair, schedules, w0, batch) -> None:
    """Build every configuration's initial state once, eagerly, so that a bad
    initialisation (a degenerate Legendre scale, say) is reported before any solve."""
    one_problem = batch.take(problem, batch.problem, 0)
    schedule = batch.take(schedules, True, 0)
    if batch.w0:
        jax.vmap(lambda w: plan.formulation.init(one_problem, pair, schedule, w))(w0)
    else:
        plan.formulation.init(one_problem, pair, schedule, w0)
