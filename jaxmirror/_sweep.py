r"""Vectorized sweeps: many flows at once, sharded over devices, saved chunk by chunk.

A sweep is a schedule whose parameters carry a leading configuration axis of length K
(and, optionally, initialisations and problem instances batched the same way). The K
configurations are cut into chunks; each chunk is solved as one jitted computation with
its configuration axis sharded over all devices (`jax.sharding`), and written to disk
atomically as soon as it is done, so an interrupted sweep resumes without recomputing or
losing finished chunks.

Two batching strategies:

- `"vmap"`: `jax.vmap` of independent solves; each configuration has its own step-size
  controller (robust: one failing configuration never affects another);
- `"batched"`: one solve whose state holds all configurations of a chunk; they share the
  step-size controller, with the error measured per configuration and the maximum taken
  (each configuration meets `rtol`/`atol`); the schedules' jump times are merged. If a
  chunk fails (a shared failure), it is re-solved with `"vmap"`, so failures stay
  per-configuration.
"""

import dataclasses
import json
import os
import pathlib
import sys
import time
from collections.abc import Mapping

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._flows import (
    dual_field,
    mirror_field,
    parameter_field,
    rowspace_field,
    rowspace_point,
)
from ._implicit_bias import _implicit_bias, can_interpolate, can_penalise, default_tol
from ._pairs import AbstractClosedFormPair
from ._problems import AbstractLinearProblem, as_problem, LeastSquares, Logistic
from ._schedules import AbstractSchedule
from ._solve import _solve, check_inputs, FORMULATIONS, Status, step_size_controller
from ._validation import as_float_array, is_concrete


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
class _Layout:
    """Which inputs carry the configuration axis."""

    size: int
    w0: bool
    problem: bool


def _auto_formulation(problem, closed_form: bool, w0) -> str:
    """The fastest formulation measured by `benchmarks/sweep.py` (see `sweep`)."""
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(w0))
    if not closed_form or jnp.finfo(dtype).bits < 64:
        return "parameter"
    return "rowspace" if isinstance(problem, AbstractLinearProblem) else "dual"


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


def _layout(problem, pair, schedules, w0) -> _Layout:
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
    return _Layout(size, w0_batched, problem_batched)


def _take(tree, batched, index):
    if not batched:
        return tree
    return jax.tree_util.tree_map(lambda x: x[index] if eqx.is_array(x) else x, tree)


def _element(problem, schedules, w0, layout, i):
    return (
        _take(problem, layout.problem, i),
        _take(schedules, True, i),
        _take(w0, layout.w0, i),
    )


def _schedule_coordinates(schedules) -> dict[str, np.ndarray]:
    """The schedule's per-configuration scalar parameters, named by field."""
    coords = {}
    for field in dataclasses.fields(schedules):
        value = getattr(schedules, field.name)
        if eqx.is_array(value) and value.ndim == 1:
            coords[field.name] = np.asarray(value)
    return coords


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
    problem,
    pair,
    legendres,
    schedules,
    w0,
    t1,
    formulation,
    jump_ts,
    solver,
    rtol,
    atol,
    max_steps,
    layout,
):
    """One diffeqsolve whose state holds every configuration of the chunk."""
    in_problem = 0 if layout.problem else None
    in_leg = 0 if layout.w0 else None
    x0 = jax.vmap(pair.g)(w0) if layout.w0 else pair.g(w0)
    x0 = x0 if layout.w0 else jnp.broadcast_to(x0, (layout.size,) + x0.shape)
    # The problem stays unbatched (in_axes None) unless it carries the configuration
    # axis, so that the batched products are GEMMs against one shared design matrix.
    legendre_args = (problem, legendres, schedules)
    legendre_axes = (in_problem, in_leg, 0)
    if formulation == "parameter":
        field = parameter_field
        y0 = (
            w0
            if layout.w0
            else jax.tree_util.tree_map(
                lambda x: jnp.broadcast_to(x, (layout.size,) + x.shape), w0
            )
        )
        args, args_axes = (problem, pair, schedules), (in_problem, None, 0)
    elif formulation == "mirror":
        field, y0, args, args_axes = mirror_field, x0, legendre_args, legendre_axes
    else:
        theta0 = jax.vmap(
            lambda leg, x: leg.grad(x, jnp.zeros((), x.dtype)), in_axes=(in_leg, 0)
        )(legendres, x0)
        if formulation == "dual":
            field, y0 = dual_field, theta0
            args, args_axes = legendre_args, legendre_axes
        else:
            field = rowspace_field
            d = problem.design().shape[-2]
            y0 = jnp.zeros((layout.size, d), theta0.dtype)
            args, args_axes = legendre_args + (theta0,), legendre_axes + (0,)

    def batched_field(t, y, _):
        return jax.vmap(field, in_axes=(None, 0, args_axes))(t, y, args)

    controller = step_size_controller(rtol, atol, y0, norm=_max_rms_norm)
    if jump_ts is not None:
        controller = dfx.ClipStepSizeController(controller, jump_ts=jump_ts)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, y, args: batched_field(t, y, args)),
        solver,
        0.0,
        t1,
        None,
        y0,
        saveat=dfx.SaveAt(t1=True),
        stepsize_controller=controller,
        max_steps=max_steps,
        throw=False,
    )
    y1 = jax.tree_util.tree_map(lambda leaf: leaf[0], sol.ys)
    if formulation == "parameter":
        xs = jax.vmap(pair.g)(y1)
    elif formulation == "mirror":
        xs = y1
    elif formulation == "rowspace":
        xs = jax.vmap(rowspace_point, in_axes=(0, None, args_axes))(y1, t1, args)
    else:
        a1 = jax.vmap(lambda s: s.a(t1))(schedules)
        xs = jax.vmap(
            lambda leg, th, a: leg.grad_inverse(th, a), in_axes=(in_leg, 0, 0)
        )(legendres, y1, a1)
    ok = sol.result == dfx.RESULTS.successful
    finite = jnp.all(jnp.isfinite(xs), axis=1)
    status = jnp.where(ok & finite, Status.SUCCESS, Status.NONFINITE)
    status = jnp.where(ok, status, Status.MAX_STEPS).astype(jnp.int32)
    steps = jnp.broadcast_to(sol.stats["num_steps"], (layout.size,))
    return xs, status, steps, ok


@eqx.filter_jit
def _solve_vmap(
    problem,
    pair,
    legendres,
    schedules,
    w0,
    t1,
    formulation,
    solver,
    rtol,
    atol,
    max_steps,
    layout,
):
    in_problem = 0 if layout.problem else None
    in_w0 = 0 if layout.w0 else None
    in_leg = 0 if (legendres is not None and layout.w0) else None

    def single(problem, legendre, schedule, w):
        sol = _solve(
            problem,
            pair,
            legendre,
            schedule,
            w,
            t1,
            dfx.SubSaveAt(t1=True),
            formulation,
            solver,
            rtol,
            atol,
            max_steps,
            dfx.RecursiveCheckpointAdjoint(),
        )
        return sol.x_final, sol.status, sol.num_steps

    return jax.vmap(single, in_axes=(in_problem, in_leg, 0, in_w0))(
        problem, legendres, schedules, w0
    )


@eqx.filter_jit
def _predict(problem, pair, legendres, schedules, x0, tol, regime, layout):
    in_problem = 0 if layout.problem else None
    in_w0 = 0 if layout.w0 else None
    single = lambda p, leg, s, x: _implicit_bias(p, pair, leg, s, x, tol, None, regime)
    return jax.vmap(single, in_axes=(in_problem, in_w0, 0, in_w0))(
        problem, legendres, schedules, x0
    )


def _devices_mesh():
    devices = jax.devices()
    return Mesh(np.array(devices), ("config",)), len(devices)


def _shard(tree, batched, mesh):
    """Put the configuration axis of batched leaves across the mesh."""
    if not batched or mesh is None:
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


def _gather(x):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)


def _atomic_write(dataset, path: pathlib.Path):
    tmp = path.with_suffix(path.suffix + ".tmp")
    dataset.to_netcdf(tmp, engine="scipy")
    os.replace(tmp, path)  # a crash leaves no half-written chunk under the final name


def _chunk_path(out: pathlib.Path, index: int) -> pathlib.Path:
    return out / "chunks" / f"chunk_{index:06d}.nc"


def _config_record(
    problem, pair, schedules, layout, t1, formulation, strategy, chunk, options
):
    from . import __version__

    return dict(
        jaxmirror_version=__version__,
        configurations=layout.size,
        chunk_size=chunk,
        pair=type(pair).__name__,
        schedule=type(schedules).__name__,
        problem=type(problem).__name__,
        w0_batched=layout.w0,
        problem_batched=layout.problem,
        t1=float(t1),
        formulation=formulation,
        strategy=strategy,
        **{
            k: (float(v) if isinstance(v, float | int) else str(v))
            for k, v in options.items()
        },
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
    schedules: AbstractSchedule,
    w0,
    t1,
    *,
    truth=None,
    labels: Mapping[str, np.ndarray] | None = None,
    formulation: str = "auto",
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
    - `formulation`: as for `jm.solve`, or `"auto"` (default): in float64, `"rowspace"`
      for a closed-form pair and a loss of the predictions (least squares, logistic,
      matrix sensing) and `"dual"` for other losses; `"parameter"` for pairs without a
      closed form and in float32, where the exponential inverse mirror map amplifies
      roundoff by about $k|\theta|$, so that error estimates near `rtol` = 1e-6 make
      the dual formulations take ~5x more steps (2,968 against 546 in float64, measured).
    - `strategy`: `"vmap"`, `"batched"` or `"auto"` (see the module docstring; `"auto"`
      picks `"batched"` for the parameter formulation on CPU and `"vmap"` otherwise,
      as measured by `benchmarks/sweep.py`: with the row-space formulation, independent
      solves (each configuration takes its own ~550 steps) beat one shared-step batch
      (~890 steps, cut at every configuration's switch-off time); the parameter
      formulation's elementwise field is cheap enough that its batch wins).
    - `chunk_size`: configurations per chunk (memory stays bounded by it; default
      min(K, 4096)), rounded up to a multiple of the device count.
    - `out`: a directory: chunks are written there as they finish (netCDF), with
      `config.json` (the sweep's configuration and jaxmirror's version) beside them,
      and the combined `results.nc` at the end.
    - `resume`: continue a sweep in `out`, skipping finished chunks; the configuration
      must match.
    - `predict`: also compute `jm.implicit_bias` for closed-form pairs.
    - `progress`: report chunks done, configurations per second and time left.
    - `solver`, `rtol`, `atol`, `max_steps`: as for `jm.solve`.

    **Returns:** an `xarray.Dataset` over `config` (and `coord`, the index of x) with
    `x_final` (K, n), `loss`, `status`, `num_steps`, the schedule parameters and labels as
    coordinates, and, where available, `x_predicted`, `bias_status`, `recovery_error`,
    `predicted_recovery_error`. A failing configuration is recorded in `status`, never
    raised.

    Several hosts: call `jax.distributed.initialize()` first; the configuration axis is
    then sharded over every host's devices, and only process 0 writes.
    """
    import xarray as xr

    problem = as_problem(problem)
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}, got {strategy!r}.")
    if formulation != "auto" and formulation not in FORMULATIONS:
        raise ValueError(
            f"`formulation` must be 'auto' or one of {FORMULATIONS}, got "
            f"{formulation!r}."
        )
    if not isinstance(schedules, AbstractSchedule):
        raise TypeError(
            f"`schedules` must be a jaxmirror schedule, got {type(schedules)}."
        )
    w0 = jax.tree_util.tree_map(as_float_array, w0)
    layout = _layout(problem, pair, schedules, w0)
    K = layout.size
    first_problem, first_schedule, first_w0 = _element(
        problem, schedules, w0, layout, 0
    )
    closed = isinstance(pair, AbstractClosedFormPair)
    if formulation == "auto":
        formulation = _auto_formulation(problem, closed, w0)
    check_inputs(first_problem, pair, first_schedule, first_w0, formulation)
    if not is_concrete(schedules, w0, problem):
        raise ValueError(
            "`sweep` runs eagerly: pass concrete arrays, not traced values."
        )
    t1 = as_float_array(t1)
    if not (np.isfinite(t1) and float(t1) > 0):
        raise ValueError(f"`t1` must be finite and > 0, got {float(t1)}.")
    legendres_all = pair.legendre(w0) if closed else None  # raises on degenerate w0
    if labels is not None:
        for name, value in labels.items():
            if np.shape(value) != (K,):
                raise ValueError(
                    f"`labels[{name!r}]` must have shape ({K},), got {np.shape(value)}."
                )
    if truth is not None:
        truth = np.asarray(truth, dtype=float)
        if truth.shape not in ((problem.dim(),), (K, problem.dim())):
            raise ValueError(
                f"`truth` must have shape (n,) or (K, n), got {truth.shape}."
            )
    if strategy == "auto":
        on_cpu = jax.default_backend() == "cpu"
        strategy = "batched" if (on_cpu and formulation == "parameter") else "vmap"
    mesh, n_devices = _devices_mesh()
    chunk = min(K, 4096) if chunk_size is None else int(chunk_size)
    if chunk <= 0:
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    chunk = -(-chunk // n_devices) * n_devices
    n_chunks = -(-K // chunk)
    solver = dfx.Tsit5() if solver is None else solver
    options = dict(
        rtol=rtol, atol=atol, max_steps=max_steps, solver=type(solver).__name__
    )
    record = _config_record(
        problem, pair, schedules, layout, t1, formulation, strategy, chunk, options
    )

    out_dir = None if out is None else pathlib.Path(out)
    writer = jax.process_index() == 0
    if out_dir is not None:
        (out_dir / "chunks").mkdir(parents=True, exist_ok=True)
        config_path = out_dir / "config.json"
        if config_path.exists():
            if not resume:
                raise ValueError(
                    f"`out`: {out_dir} already holds a sweep; pass resume=True to continue "
                    "it, or choose another directory."
                )
            previous = json.loads(config_path.read_text())
            if previous != record:
                changed = sorted(k for k in record if previous.get(k) != record[k])
                raise ValueError(
                    f"`resume`: the sweep in {out_dir} has another configuration "
                    f"(differs in {changed})."
                )
        elif writer:
            config_path.write_text(json.dumps(record, indent=2))

    coords = _schedule_coordinates(schedules)
    if labels is not None:
        coords.update({k: np.asarray(v) for k, v in labels.items()})
    a_inf = np.asarray(schedules.a_inf())
    regime = (
        True
        if np.all(np.isfinite(a_inf))
        else (False if not np.any(np.isfinite(a_inf)) else None)
    )
    # Which limit each configuration has decides what implicit_bias can predict;
    # a batch mixing both regimes computes both (lax.cond under vmap).
    predictable = {
        True: can_interpolate(problem),
        False: can_penalise(problem),
        None: isinstance(problem, LeastSquares),
    }[regime]
    can_predict = predict and closed and predictable
    settings = _ChunkSettings(
        t1, formulation, strategy, solver, rtol, atol, max_steps, can_predict, regime
    )
    start = time.perf_counter()
    parts, resumed = [], 0
    for index in range(n_chunks):
        lo, hi = index * chunk, min((index + 1) * chunk, K)
        path = None if out_dir is None else _chunk_path(out_dir, index)
        if path is not None and resume and path.exists():
            parts.append(xr.load_dataset(path, engine="scipy"))
            resumed += hi - lo
            continue
        part = _run_chunk(
            problem,
            pair,
            schedules,
            w0,
            legendres_all,
            layout,
            lo,
            hi,
            chunk,
            mesh,
            settings,
        )
        dataset = _to_dataset(part, coords, truth, lo, hi)
        if path is not None and writer:
            _atomic_write(dataset, path)
        parts.append(dataset)
        if progress:
            _progress(hi, K, index, n_chunks, start, resumed)
    result = xr.concat(parts, dim="config") if len(parts) > 1 else parts[0]
    result.attrs.update({k: str(v) for k, v in record.items()})
    if out_dir is not None and writer:
        _atomic_write(result, out_dir / "results.nc")
    return result


@dataclasses.dataclass(frozen=True)
class _ChunkSettings:
    """What every chunk of one sweep is solved with."""

    t1: object
    formulation: str
    strategy: str
    solver: object
    rtol: float
    atol: float
    max_steps: int
    predict: bool
    regime: bool | None


def _run_chunk(
    problem,
    pair,
    schedules,
    w0,
    legendres_all,
    layout,
    lo,
    hi,
    chunk,
    mesh,
    settings: _ChunkSettings,
):
    s = settings
    index = np.arange(lo, hi)
    size = chunk
    sub = _Layout(size, layout.w0, layout.problem)
    take = lambda tree, batched: _pad(_take(tree, batched, index), batched, size)
    prob_c = _shard(take(problem, layout.problem), layout.problem, mesh)
    sched_c = _shard(take(schedules, True), True, mesh)
    w0_c = _shard(take(w0, layout.w0), layout.w0, mesh)
    leg_c = None
    if legendres_all is not None:
        leg_c = _shard(take(legendres_all, layout.w0), layout.w0, mesh)
    leg_for_solve = None if s.formulation == "parameter" else leg_c
    done = False
    if s.strategy == "batched":
        jumps = sched_c.jump_ts()
        jump_ts = None if jumps is None else jnp.asarray(np.unique(np.asarray(jumps)))
        xs, status, steps, ok = _solve_batched(
            prob_c,
            pair,
            leg_for_solve,
            sched_c,
            w0_c,
            s.t1,
            s.formulation,
            jump_ts,
            s.solver,
            s.rtol,
            s.atol,
            s.max_steps,
            sub,
        )
        done = bool(ok)
    if not done:
        xs, status, steps = _solve_vmap(
            prob_c,
            pair,
            leg_for_solve,
            sched_c,
            w0_c,
            s.t1,
            s.formulation,
            s.solver,
            s.rtol,
            s.atol,
            s.max_steps,
            sub,
        )
    x0 = jax.vmap(pair.g)(w0_c) if layout.w0 else pair.g(w0_c)
    n = hi - lo
    part = dict(
        x_final=_gather(xs)[:n],
        status=_gather(status)[:n],
        num_steps=_gather(steps)[:n],
    )
    if s.predict:
        predicted, bias_status = _predict(
            prob_c, pair, leg_c, sched_c, x0, default_tol(), s.regime, sub
        )
        part["x_predicted"] = _gather(predicted)[:n]
        part["bias_status"] = _gather(bias_status)[:n]
    losses = jax.vmap(
        lambda p, x: p.loss(x), in_axes=(0 if layout.problem else None, 0)
    )(prob_c, jnp.asarray(xs))
    part["loss"] = _gather(losses)[:n]
    return part


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
