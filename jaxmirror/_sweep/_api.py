r"""`jm.sweep` and `jm.grid`: many flows at once, sharded over devices, saved chunk by
chunk.

A sweep is a schedule whose parameters carry a leading configuration axis of length K
(and, optionally, initialisations and problem instances batched the same way). The
data flow from the call to a chunk:

    sweep(problem, pair, schedules, w0, t1, **options)
      -> check_batch (_inputs.py)       which inputs carry the configuration axis
      -> make_plan (_plan.py)           formulation, backend, threads, strategy,
                                        chunk unit, predictions: one Plan
      -> initial states checked         (one compiled program)
      -> SweepStore (_store.py)         lock, fingerprint check, resume
      -> solve_chunks (_chunks.py)      per chunk: rows, shard, strategy.solve
                                        (_strategies.py: vmap | batched | kernel),
                                        convergence and predictions
      -> to_dataset (_results.py)       stored at once, or kept in memory
"""

import equinox as eqx
import jax
import numpy as np

from .._arguments import check_t1
from .._batch import Batch
from .._checking import call_checked
from .._memory import check_fits
from ._chunks import Progress, solve_chunks
from ._inputs import check_batch, check_labels_and_truth
from ._options import SweepOptions
from ._plan import make_plan
from ._results import (
    attributes,
    fingerprint_of,
    in_memory,
    schedule_coordinates,
    to_dataset,
)
from ._store import SweepStore


def grid(**axes) -> dict[str, np.ndarray]:
    """The outer product of 1-D axes, flattened: `grid(alpha=a, t_off=t)` gives arrays of
    length `len(a) * len(t)` (the last axis varies fastest), ready for a schedule.
    """
    names = list(axes)
    values = []
    for name in names:
        axis = np.asarray(axes[name])
        if axis.ndim != 1 or not axis.size:
            raise ValueError(
                f"`{name}`: a grid axis is a non-empty 1-D array, got shape "
                f"{axis.shape} (for a parameter with values per configuration, "
                "build the schedule from arrays directly)."
            )
        if np.iscomplexobj(axis) or not np.issubdtype(axis.dtype, np.number):
            raise ValueError(
                f"`{name}`: a grid axis holds real numbers, got {axis.dtype}."
            )
        values.append(axis.astype(float))
    mesh = np.meshgrid(*values, indexing="ij")
    return {k: m.ravel() for k, m in zip(names, mesh)}


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
    repair=False,
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
      solves run in parts, one host thread per core, where the flow calls no LAPACK
      routine (read from its traced program) and the solver is explicit.
    - `backend`: `"xla"` (the XLA path above), `"pallas"` (the fused flow kernel: one
      launch integrates a block of configurations, each with its own adaptive step;
      the row-space formulation of one shared least-squares problem, closed-form
      pairs, Tsit5 or Dopri5, the default controller; on a CPU in Pallas interpret
      mode) or `"auto"` (default: the kernel on a GPU where it can run and the design
      fits on chip, with the formulation `"auto"` chose; else XLA). With
      `"pallas"`, `formulation="auto"` means the row-space formulation, and a sweep
      the kernel cannot run is refused with the reason. The results' `backend`
      attribute records which ran.
    - `chunk_size`: configurations per chunk and per block of the store (rounded up to a
      multiple of the device count); default: adaptive (`_chunks.py`).
    - `out`: a directory that becomes a Zarr store, written chunk by chunk and locked
      while the sweep runs (see `_store.py`); `xarray.open_zarr(out)` opens it, and
      `.to_netcdf(path)` exports it as one file. It must be a new path, an empty
      directory or a jaxmirror store: any other folder is refused untouched.
    - `resume`: continue the sweep in `out`, computing only what is missing; any change
      of the inputs (named in the error) is refused, and so is a damaged store.
    - `repair`: with `resume`, recompute the configurations whose results in `out`
      are missing or do not decode (`jaxmirror check OUT` lists them).
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
    options = SweepOptions.checked(
        formulation=formulation,
        strategy=strategy,
        backend=backend,
        solver=solver,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        stepsize_controller=stepsize_controller,
        chunk_size=chunk_size,
        predict=predict,
        progress=progress,
        resume=resume,
        repair=repair,
    )
    if out is None and resume:
        raise ValueError("`resume` continues a sweep stored in `out`: pass out=DIR.")
    # Lock `out` first: a second run into it is refused before any other work.
    store = None if out is None else SweepStore(out)
    try:
        inputs = (problem, pair, schedules, w0, t1)
        return _sweep(store, inputs, (truth, labels, attrs), options)
    finally:
        if store is not None:
            store.close()


def _sweep(store, inputs, data, options: SweepOptions):
    problem, pair, schedules, w0, t1 = inputs
    truth, labels, extra_attrs = data
    problem, schedules, w0, batch = check_batch(problem, pair, schedules, w0)
    truth = check_labels_and_truth(labels, truth, batch.size, problem.dim())
    plan = make_plan(problem, pair, schedules, w0, check_t1(t1), batch, options)
    _check_initialisations(plan.formulation, problem, pair, schedules, w0, batch)
    inputs = (problem, pair, schedules, w0)
    attrs = {**attributes(problem, pair, schedules, batch, plan), **(extra_attrs or {})}
    coords = schedule_coordinates(schedules)
    coords.update({k: np.asarray(v) for k, v in (labels or {}).items()})
    if store is None:
        n = problem.dim() or 1
        check_fits(
            "out",
            3 * batch.size * (2 * n + 16) * 8,
            f"the results of {batch.size} configurations held in memory",
            "pass out=DIR to write them to disk chunk by chunk",
        )
    parts = []
    if store is not None:
        fields = fingerprint_of(inputs, truth, labels, plan)
        store.check(fields, options.resume, options.repair)
    pending = _pending(store, batch.size)
    progress = Progress(options.progress, batch.size, int(batch.size - pending.sum()))

    def deliver(part, index):
        dataset = to_dataset(part, coords, truth, index)
        if store is None or not store.writer:
            parts.append(dataset)
            return
        if not store.exists:
            store.create(dataset, batch.size, plan.unit, coords, attrs)
        store.write_chunk(index, dataset)

    solve_chunks(plan, inputs, batch, pending, progress, deliver)
    # Process 0 wrote the store; the others hold what this run computed.
    if store is not None and store.writer:
        return store.open()
    return in_memory(parts, attrs)


def _pending(store, size: int) -> np.ndarray:
    """Which configurations are still to be computed (all of a new sweep's)."""
    pending = store.pending() if store is not None and store.exists else None
    pending = np.ones(size, bool) if pending is None else pending
    if jax.process_count() > 1:  # every process runs the chunks process 0 has pending
        from jax.experimental import multihost_utils

        pending = np.asarray(multihost_utils.broadcast_one_to_all(pending))
    return pending


def _check_initialisations(formulation, problem, pair, schedules, w0, batch: Batch):
    """Build every configuration's initial state once (with the first configuration's
    problem and schedule: the checks concern `w0`), so that a bad initialisation (a
    degenerate Legendre scale, say) is reported before any solve."""
    one_problem = batch.take(problem, batch.problem, 0)
    call_checked(
        _init_with_first_schedule,
        *(formulation, one_problem, pair, schedules, w0),
        in_axes=(None, None, None, None, 0) if batch.w0 else None,
        mapped_failure="`w0`: a configuration's initialisation fails: ",
    )


def _init_with_first_schedule(formulation, problem, pair, schedules, w0):
    """The initial state with the first configuration's schedule (taken inside the
    compiled check: taken eagerly, it would compile small programs of its own)."""
    schedule = jax.tree_util.tree_map(
        lambda x: x[0] if eqx.is_array(x) else x, schedules
    )
    return formulation.init(problem, pair, schedule, w0)
