r"""Vectorized sweeps: many flows at once, sharded over devices, saved chunk by chunk.

A sweep is a schedule whose parameters carry a leading configuration axis of length K
(and, optionally, initialisations and problem instances batched the same way). The K
configurations are solved chunk by chunk (`_strategies.py`: one jitted computation per
chunk, its configuration axis sharded over all devices), and each chunk is written to
the sweep's store (`_store.py`) as soon as it is done: an interrupted sweep resumes
without recomputing or losing finished work.

**Chunks.** The configurations are laid out in units (the store's blocks) of
`chunk_size` configurations. With an explicit `chunk_size` every chunk is one unit. By
default a unit is 256 configurations (per device; a smaller sweep is padded to the next
power of two, at least 8, so that any grid reuses a few compiled programs: shape
bucketing; the problem's sizes stay exact), and the `"vmap"` strategy starts with
one unit per chunk and then sizes chunks from the measured rate to take 10-30 s each
(in powers of two of units, so that a few compiled programs serve every chunk): a kill
loses at most one chunk of work, and progress appears after the first.
"""

import dataclasses
import sys
import time
import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._compile_time import CompileTimer
from ._cores import host_threads
from ._flow_kernel import choose_sweep_backend, probe as flow_kernel_probe
from ._formulations import as_formulation, prefers_shared_step
from ._implicit_bias import prediction_regime
from ._inputs import check_count, check_pair, check_point_of, check_schedule, check_t1
from ._pairs import AbstractMatrixPair
from ._problems import as_problem, LeastSquares, Logistic, MatrixSensing
from ._solve import solver_options, state_dtype
from ._status import Status
from ._store import fingerprint, SweepStore, variable_attributes
from ._strategies import (
    Batch,
    ChunkSolver,
    commuting_reductions,
    devices_mesh,
    explicit,
    run_chunk,
    splits_over_cores,
)
from ._tolerances import precision_tolerances
from ._validation import as_float_array, flagged, is_concrete
from ._version import __version__


STRATEGIES = ("auto", "vmap", "batched")
SWEEP_TOLERANCES = (1e-6, 1e-9)  # the default rtol and atol in float64 (_tolerances.py)
_UNIT = 256  # default configurations per unit and device
_MAX_CHUNK = 65_536  # configurations per chunk at the most (memory)
_TARGET_SECONDS = (10.0, 30.0)  # an adaptive chunk's aim


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
class _Plan:
    """Everything a sweep decided before its first chunk."""

    solver: ChunkSolver
    unit: int  # configurations per unit: the store's block, a chunk's granularity
    adaptive: bool  # chunks grow towards _TARGET_SECONDS
    prediction_note: str


def _broadcast_schedules(schedules):
    """The schedules with scalar parameters repeated along the one configuration axis."""
    batch = jax.eval_shape(schedules, 0.0).shape
    if len(batch) != 1:
        raise ValueError(
            "`schedules` must be a batch of schedules with one configuration axis, e.g. "
            "jm.SwitchOff(alpha=A, t_off=T) with A (and T, or a scalar) of shape (K,); "
            f"got batch shape {batch}."
        )

    def broadcast(leaf):
        if eqx.is_array(leaf) and leaf.ndim == 0:
            return jnp.broadcast_to(leaf, batch)
        return leaf

    return jax.tree_util.tree_map(broadcast, schedules), batch[0]


def _is_batched_w0(pair, w0) -> bool:
    """Whether `w0` carries a configuration axis: g(w0) has two axes instead of one,
    or, for a pair whose g takes only one point (a matrix factorization's U U^T),
    g mapped over the leading axis does. A matrix pair's factors say it by their
    shapes: its g flattens a matrix product that broadcasts over leading axes (a
    batch of one, or of n, would otherwise pass for one point)."""
    if isinstance(pair, AbstractMatrixPair):
        leaves = jax.tree_util.tree_leaves(w0)
        return len(leaves) == len(pair.factor_shapes) and all(
            np.ndim(leaf) == len(shape) + 1
            for leaf, shape in zip(leaves, pair.factor_shapes)
        )
    for g in (pair.g, jax.vmap(pair.g)):
        try:
            return len(jax.eval_shape(g, w0).shape) == 2
        except Exception:  # noqa: BLE001, PERF203 - `check_point_of` reports it
            continue
    return False


def _is_batched_problem(problem) -> bool:
    """Whether a jaxmirror linear problem carries a configuration axis: its
    measurements `y` have two axes (a batch built by mapping its constructor, e.g.
    `eqx.filter_vmap(jm.LeastSquares)(Zs, ys)`; the constructors take one instance)."""
    return isinstance(problem, LeastSquares | Logistic | MatrixSensing) and (
        problem.y.ndim == 2
    )


def _check_batch(problem, pair, schedules, w0):
    """The sweep's inputs checked, with which of them carry the configuration axis."""
    problem = as_problem(problem)
    check_pair(pair)
    check_schedule(schedules, "schedules")
    w0 = jax.tree_util.tree_map(as_float_array, w0)
    w0_batched = _is_batched_w0(pair, w0)
    w0 = check_point_of(problem, pair, w0, batched=w0_batched)
    schedules, size = _broadcast_schedules(schedules)
    problem_batched = _is_batched_problem(problem)
    for name, batched, lead in (
        (
            "w0",
            w0_batched,
            jax.eval_shape(jax.vmap(pair.g), w0).shape[0] if w0_batched else None,
        ),
        ("problem", problem_batched, problem.y.shape[0] if problem_batched else None),
    ):
        if batched and lead != size:
            raise ValueError(
                f"`{name}` is batched with leading size {lead}, but `schedules` has "
                f"{size} configurations; batched inputs must share the configuration "
                "axis."
            )
    if not is_concrete(schedules, w0, problem):
        raise ValueError(
            "`sweep` runs eagerly: pass concrete arrays, not traced values."
        )
    return problem, schedules, w0, Batch(size, w0_batched, problem_batched)


def _plan(problem, pair, schedules, w0, t1, batch, settings) -> _Plan:
    """Resolve and check every option before any computation."""
    one_problem = batch.take(problem, batch.problem, 0)
    formulation = as_formulation(
        settings["formulation"],
        one_problem,
        pair,
        settings["dtype"],
        settings["options"].rtol,
    )
    strategy = settings["strategy"]
    if strategy not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}, got {strategy!r}.")
    formulation, backend = choose_sweep_backend(
        settings["backend"],
        settings["formulation"],
        formulation,
        strategy,
        one_problem,
        pair,
        schedules,
        settings["options"],
        batch.problem,
    )
    if backend == "pallas" and settings["backend"] == "auto":
        failure = flow_kernel_probe(
            formulation, one_problem, pair, schedules, w0, batch.w0, settings["options"]
        )
        if failure is not None:
            warnings.warn(
                f"jm.sweep: the flow kernel did not compile here ({failure}); "
                "running the XLA path (backend='xla') instead.",
                stacklevel=3,
            )
            backend = "xla"
    threaded = splits_over_cores(
        one_problem, pair, schedules, settings["options"].solver
    )
    if backend == "pallas":
        strategy = "kernel"
    elif strategy == "auto":
        on_cpu = jax.default_backend() == "cpu"
        threads = host_threads() if threaded else 1
        # An implicit solver's Newton steps would factor the Jacobian of the whole
        # batch's state: (K x state size)^2 entries, so it never shares a step.
        shared = (
            on_cpu
            and explicit(settings["options"].solver)
            and prefers_shared_step(formulation, threads, pair)
        )
        strategy = "batched" if shared else "vmap"
    n_devices = len(jax.devices())
    chunk_size = settings["chunk_size"]
    if chunk_size is None:
        # Shape bucketing: a small sweep is padded to the next power of two (at least
        # 8 configurations), so that sweeps of any size reuse a few compiled programs.
        unit = min(_ceil_power_of_two(max(batch.size, 8)), _UNIT * n_devices)
    else:
        unit = check_count("chunk_size", chunk_size)
    unit = -(-unit // n_devices) * n_devices
    regime, note = None, "computed"
    try:
        regime = prediction_regime(one_problem, pair, schedules)
        if regime and settings["predict"] and isinstance(pair, AbstractMatrixPair):
            commuting_reductions(problem, pair, w0, batch)  # or say why none exists
    except ValueError as reason:
        note = f"not available: {reason}"
    predict = settings["predict"] and note == "computed"
    if not settings["predict"]:
        note = "not requested"
    # Batched chunks share a step sequence, so their results depend on how the
    # configurations are grouped: they keep fixed units, reproducible run to run.
    adaptive = chunk_size is None and strategy == "vmap"
    solver = ChunkSolver(
        formulation,
        strategy,
        t1,
        settings["options"],
        predict,
        regime,
        backend,
        threaded,
    )
    return _Plan(solver, unit, adaptive, note)


class _Chunks:
    """Groups the pending units into chunks, growing them towards 10-30 s each.

    A chunk is a power of two of units (a run of pending units left over at the end
    is split into descending powers of two), so that a few compiled programs serve a
    whole sweep, and any other sweep with the same unit.
    """

    def __init__(self, unit: int, adaptive: bool, size: int):
        self.unit, self.size, self.adaptive = unit, size, adaptive
        self.units_per_chunk = 1
        self.max_units = _floor_power_of_two(max(1, _MAX_CHUNK // unit))

    def ranges(self, pending: np.ndarray):
        """`(index, padded)` per chunk: its pending configurations and padded size."""
        by_unit = [
            np.flatnonzero(pending[lo : lo + self.unit]) + lo
            for lo in range(0, self.size, self.unit)
        ]
        unit = 0
        while unit < len(by_unit):
            if not len(by_unit[unit]):
                unit += 1
                continue
            run = unit  # the contiguous run of pending units from here
            while run < len(by_unit) and len(by_unit[run]):
                run += 1
            count = min(self.units_per_chunk, _floor_power_of_two(run - unit))
            yield np.concatenate(by_unit[unit : unit + count]), count * self.unit
            unit += count

    def measured(self, run_seconds: float) -> None:
        """Resize the next chunks from the time this one took to run (no compiling)."""
        low, high = _TARGET_SECONDS
        if not self.adaptive or low <= run_seconds <= high:
            return
        wanted = self.units_per_chunk * 0.5 * (low + high) / max(run_seconds, 1e-3)
        wanted = _floor_power_of_two(max(1, int(wanted)))
        self.units_per_chunk = min(wanted, self.max_units)


def _floor_power_of_two(count: int) -> int:
    return 1 << (count.bit_length() - 1)


def _ceil_power_of_two(count: int) -> int:
    return 1 << (count - 1).bit_length()


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


def _to_dataset(part, coords, truth, index):
    """One chunk's results as a Dataset over its configurations `index`."""
    import xarray as xr

    data = {
        "x_final": (("config", "coord"), part["x_final"]),
        "loss": ("config", part["loss"]),
        "status": ("config", part["status"].astype(np.int32)),
        "converged": ("config", part["converged"].astype(bool)),
        "distance_to_limit": ("config", part["distance_to_limit"]),
        "num_steps": ("config", part["num_steps"].astype(np.int32)),
    }
    if "x_predicted" in part:
        data["x_predicted"] = (("config", "coord"), part["x_predicted"])
        data["bias_status"] = ("config", part["bias_status"].astype(np.int32))
    if truth is not None:
        target = truth if truth.ndim == 1 else truth[index]
        for name, x in (("", "x_final"), ("predicted_", "x_predicted")):
            if x in part:
                error = np.linalg.norm(part[x] - target, axis=1)
                data[f"{name}recovery_error"] = ("config", error)
    dataset = xr.Dataset(data, coords={"config": index})
    dataset = dataset.assign_coords(
        {k: ("config", np.asarray(v)[index]) for k, v in coords.items()}
    )
    for name, variable in dataset.variables.items():
        variable.attrs.update(variable_attributes(name))
    return dataset


def _attributes(problem, pair, schedules, batch, plan) -> dict:
    """The sweep's settings, as the results' attributes (numbers stay numbers)."""
    solver = plan.solver
    options = solver.options
    return dict(
        jaxmirror_version=__version__,
        jax_version=jax.__version__,
        configurations=batch.size,
        chunk_size=plan.unit,
        pair=type(pair).__name__,
        schedule=type(schedules).__name__,
        problem=type(problem).__name__,
        w0_batched=int(batch.w0),
        problem_batched=int(batch.problem),
        t1=float(solver.t1),
        formulation=solver.formulation.name,
        strategy=solver.strategy,
        backend=solver.backend,
        rtol=options.rtol,
        atol=options.atol,
        max_steps=options.max_steps,
        solver=type(options.solver).__name__,
        prediction=plan.prediction_note,
        grid_view="ds.set_index(config=[<schedule parameters>]).unstack('config')",
    )


def _fingerprint(inputs, truth, labels, plan, options) -> dict[str, str]:
    problem, pair, schedules, w0 = inputs
    solver = plan.solver
    return fingerprint(
        dict(
            problem=problem,
            pair=pair,
            schedules=schedules,
            w0=w0,
            truth=truth,
            labels=labels,
        ),
        dict(
            formulation=solver.formulation.name,
            strategy=solver.strategy,
            backend=solver.backend,
            solver=options.solver,
            rtol=options.rtol,
            atol=options.atol,
            max_steps=options.max_steps,
            stepsize_controller=options.controller,
            t1=float(solver.t1),
            chunk_size=plan.unit,
            predict=solver.predict,
        ),
    )


class _Progress:
    """One line per chunk on stderr: configurations done, rate, time left."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled, self.total, self.done = enabled, total, done
        self.new, self.running, self.compiling = 0, 0.0, 0.0

    def say(self, message: str) -> None:
        if self.enabled:
            print(f"[jaxmirror sweep] {message}", file=sys.stderr, flush=True)

    def chunk(self, count: int, running: float, compiling: float) -> None:
        self.done += count
        self.new += count
        self.running += running
        self.compiling += compiling
        rate = self.new / self.running if self.running > 0 else float("nan")
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        self.say(
            f"{self.done}/{self.total} configurations, {rate:.1f} configurations/s "
            f"(compiling: {self.compiling:.1f} s so far), about {left:.0f} s left"
        )


def sweep(
    problem,
    pair,
    schedules,
    w0,
    t1,
    *,
    truth=None,
    labels=None,
    attrs=None,
    formulation="auto",
    strategy="auto",
    backend="auto",
    chunk_size=None,
    out=None,
    resume=False,
    predict=True,
    progress=True,
    solver=None,
    rtol=None,
    atol=None,
    max_steps=100_000,
    stepsize_controller=None,
):
    # No annotations: the checks below give messages that name the argument, and a
    # runtime type checker would pre-empt them.
    r"""Solve K flows at once and collect where they end, as a labelled xarray Dataset.

    **Arguments:**

    - `problem`: a problem, or a `LeastSquares`, `Logistic` or `MatrixSensing` whose
      arrays carry a leading configuration axis (one instance per configuration),
      built by mapping its constructor: `eqx.filter_vmap(jm.LeastSquares)(Zs, ys)`.
    - `pair`, `t1`: as for `jm.solve`.
    - `schedules`: a schedule whose parameters have a leading axis of length K
      (scalar parameters are shared by every configuration).
    - `w0`: initial parameters, shared or with a leading configuration axis.
    - `truth`: optional ground truth x*, shape `(n,)` or `(K, n)`: adds recovery errors.
    - `labels`: extra per-configuration coordinates (e.g. `seed`, `scale`), each `(K,)`.
    - `attrs`: extra attributes of the results (strings and numbers), e.g. the text
      of a configuration file.
    - `formulation`, `solver`, `max_steps`, `stepsize_controller`: as for `jm.solve`
      (default formulation `"auto"` in both).
    - `rtol`, `atol`: default by precision: in float64 1e-6 and 1e-9, looser than
      `jm.solve`'s 1e-8 and 1e-10 (they resolve the differences a sweep compares at
      about half the steps); in float32 100 and 1 times its machine epsilon (1.2e-5,
      1.2e-7), above the roundoff of the inverse mirror map (`jaxmirror._tolerances`).
    - `strategy`: `"vmap"`, `"batched"` or `"auto"` (the batched strategy for the
      parameter formulation on a CPU whose solves run in one thread, or of a matrix
      pair on any CPU, else vmap, as measured). On a CPU with one JAX device, vmap's
      solves of the built-in problems, pairs and schedules under an explicit solver
      run in parts, one host thread per core (`jaxmirror/_cores.py`); an implicit
      solver's (LAPACK at every step) run in one call, and on one device of a CPU
      with several.
    - `backend`: `"xla"` (the XLA path above), `"pallas"` (the fused flow kernel of
      `_flow_kernel.py`: one launch integrates a block of configurations, each with
      its own adaptive step; the row-space formulation of one shared `LeastSquares`
      problem, closed-form pairs, Tsit5 or Dopri5, the default controller; on a CPU in
      Pallas interpret mode) or `"auto"` (default: the kernel on a GPU where it can run
      and the design fits on chip, with the formulation `"auto"` chose; else XLA).
      With `"pallas"`, `formulation="auto"` means the row-space formulation, and a
      sweep the kernel cannot run is refused with the reason. The results'
      `backend` attribute records which ran.
    - `chunk_size`: configurations per chunk and per block of the store (rounded up to a
      multiple of the device count); default: adaptive (module docstring).
    - `out`: a directory that becomes a Zarr store, written chunk by chunk and locked
      while the sweep runs (see `_store.py`); `xarray.open_zarr(out)` opens it, and
      `.to_netcdf(path)` exports it as one file.
    - `resume`: continue the sweep in `out`, computing only what is missing; any change
      of the inputs (named in the error) is refused.
    - `predict`: also compute `jm.implicit_bias` where a limit can be predicted (else
      the `prediction` attribute says why not).
    - `progress`: one line per chunk on stderr (configurations done, rate, time left).

    **Returns:** an `xarray.Dataset` over `config` (and `coord`, the index of x) with
    `x_final`, `loss`, `status` (`jm.Status`; -1 pending), `converged` and
    `distance_to_limit` (as in `jm.Solution`), `num_steps`, the schedule parameters and
    labels as coordinates, and where available `x_predicted`, `bias_status`,
    `recovery_error`, `predicted_recovery_error`; lazily read from `out` if given. A
    failing configuration is recorded in `status`, never raised. The grid view of a
    grid sweep: `ds.set_index(config=["alpha", "t_off"]).unstack("config")`.

    Several hosts: call `jax.distributed.initialize()` first; the configuration axis is
    then sharded over every host's devices, and only process 0 writes.
    """
    # Lock `out` first: a second run into it is refused before any other work.
    store = None if out is None else SweepStore(out)
    try:
        return _sweep(
            store,
            *(problem, pair, schedules, w0, t1),
            dict(
                truth=truth,
                labels=labels,
                attrs=attrs,
                formulation=formulation,
                strategy=strategy,
                backend=backend,
                chunk_size=chunk_size,
                resume=resume,
                predict=predict,
                progress=progress,
                solver=solver,
                rtol=rtol,
                atol=atol,
                max_steps=max_steps,
                stepsize_controller=stepsize_controller,
            ),
        )
    finally:
        if store is not None:
            store.close()


def _sweep(store, problem, pair, schedules, w0, t1, kw):
    problem, schedules, w0, batch = _check_batch(problem, pair, schedules, w0)
    labels, truth = kw["labels"], kw["truth"]
    truth = _check_labels_and_truth(labels, truth, batch.size, problem.dim())
    dtype = state_dtype(batch.take(w0, batch.w0, 0))
    rtol, atol = precision_tolerances(dtype, kw["rtol"], kw["atol"], SWEEP_TOLERANCES)
    options = solver_options(
        kw["solver"],
        rtol,
        atol,
        kw["max_steps"],
        None,
        kw["stepsize_controller"],
    )
    settings = dict(options=options, dtype=dtype)
    settings.update(
        {
            k: kw[k]
            for k in ("formulation", "strategy", "backend", "chunk_size", "predict")
        }
    )
    plan = _plan(problem, pair, schedules, w0, check_t1(t1), batch, settings)
    _check_initialisations(plan.solver, problem, pair, schedules, w0, batch)
    inputs = (problem, pair, schedules, w0)
    attrs = {
        **_attributes(problem, pair, schedules, batch, plan),
        **(kw["attrs"] or {}),
    }
    coords = _schedule_coordinates(schedules)
    coords.update({k: np.asarray(v) for k, v in (labels or {}).items()})
    if store is None:
        parts = _solve_chunks(
            plan, inputs, batch, (coords, truth), None, kw["progress"]
        )
        return _in_memory(parts, attrs)
    store.check(_fingerprint(inputs, truth, labels, plan, options), kw["resume"])
    context = (coords, truth, attrs)
    parts = _solve_chunks(plan, inputs, batch, context, store, kw["progress"])
    # Process 0 wrote the store; the others hold what this run computed.
    return store.open() if store.writer else _in_memory(parts, attrs)


def _solve_chunks(plan, inputs, batch, context, store, progress) -> list:
    """The chunk loop: each chunk solved, stored and reported as soon as it is done;
    configurations that a resumed sweep already finished are not recomputed."""
    coords, truth = context[:2]
    exists = store is not None and store.exists
    pending = store.pending() if exists else np.ones(batch.size, bool)
    if jax.process_count() > 1:  # every process runs the chunks process 0 has pending
        from jax.experimental import multihost_utils

        pending = np.asarray(multihost_utils.broadcast_one_to_all(pending))
    report = _Progress(progress, batch.size, int(batch.size - pending.sum()))
    report.say(
        f"{batch.size} configurations ({report.done} already done), formulation "
        f"{plan.solver.formulation.name}, strategy {plan.solver.strategy}, backend "
        f"{plan.solver.backend}"
    )
    chunks = _Chunks(plan.unit, plan.adaptive, batch.size)
    mesh, parts, out_of_steps = devices_mesh(), [], 0
    for index, padded in chunks.ranges(pending):
        start = time.perf_counter()
        with CompileTimer() as compiling:
            part = run_chunk(plan.solver, inputs, batch, index, padded, mesh)
        dataset = _to_dataset(part, coords, truth, index)
        if store is None or not store.writer:
            parts.append(dataset)
        else:
            if not store.exists:
                store.create(dataset, batch.size, plan.unit, coords, context[2])
            for lo, hi, rows in _contiguous_runs(index):
                store.write(lo, hi, dataset.isel(config=rows))
        running = time.perf_counter() - start - compiling.seconds
        chunks.measured(running)
        report.chunk(len(index), running, compiling.seconds)
        out_of_steps += int(np.sum(part["status"] == Status.MAX_STEPS))
    if out_of_steps and not isinstance(
        plan.solver.options.solver, dfx.AbstractImplicitSolver
    ):
        report.say(
            f"{out_of_steps} configurations ran out of steps (status MAX_STEPS). Near "
            "its limit the flow is stiff for an explicit solver; for long horizons "
            "pass solver=diffrax.Kvaerno5() (or raise max_steps)."
        )
    return parts


def _contiguous_runs(index: np.ndarray):
    """`(lo, hi, rows)` for each run of consecutive configurations in `index`
    (a chunk is one run unless a resumed store had a unit half finished)."""
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    for rows in np.split(np.arange(len(index)), breaks):
        yield int(index[rows[0]]), int(index[rows[-1]]) + 1, rows


def _in_memory(parts, attrs):
    import xarray as xr

    result = xr.concat(parts, dim="config") if len(parts) > 1 else parts[0]
    result.attrs.update(attrs)
    return result


def _check_initialisations(solver, problem, pair, schedules, w0, batch) -> None:
    """Build every configuration's initial state once, so that a bad initialisation
    (a degenerate Legendre scale, say) is reported before any solve.

    First as one compiled program that only says whether every check holds (cached
    across processes, where the same checks op by op would compile dozens of small
    programs); where one fails, or the program cannot be built, again eagerly, for
    the check's own message."""
    try:
        if bool(
            _initialisations_hold(
                solver.formulation, problem, pair, schedules, w0, batch
            )
        ):
            return
    except Exception:  # noqa: BLE001 - the eager build below reports it
        pass
    init = _init_of_w0(solver.formulation, problem, pair, schedules, batch)
    if batch.w0:
        try:
            jax.vmap(init)(w0)
        except Exception as error:  # noqa: BLE001 - error_if under vmap: name `w0`
            message = _runtime_message(error)
            raise ValueError(
                f"`w0`: a configuration's initialisation fails: {message}"
            ) from None
    else:
        init(w0)


def _init_of_w0(formulation, problem, pair, schedules, batch):
    """The initial state as a function of one configuration's `w0` (with the first
    configuration's problem and schedule: the checks concern `w0`)."""
    one_problem = batch.take(problem, batch.problem, 0)
    schedule = batch.take(schedules, True, 0)
    return lambda w: formulation.init(one_problem, pair, schedule, w)


@eqx.filter_jit
def _initialisations_hold(formulation, problem, pair, schedules, w0, batch):
    """Whether every configuration's initial state passes its checks (`flagged`)."""
    init = flagged(_init_of_w0(formulation, problem, pair, schedules, batch))
    _, ok = jax.vmap(init)(w0) if batch.w0 else init(w0)
    return jnp.all(ok)


def _runtime_message(error: Exception) -> str:
    """The message of an `eqx.error_if` raised at run time, without Equinox's stack
    banner ("Above is the stack outside of JIT...") and debugging advice."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        prefix, found, message = line.partition("EquinoxRuntimeError: ")
        if found and prefix in ("", "equinox."):
            return message
    return next((line for line in lines if not line.startswith("Above is")), "")
