r"""Every choice a sweep makes before its first chunk, in one place: one `Plan`.

In this order, each from the ones before:

1. **tolerances and solver** (`rtol`, `atol` by precision; the default controller);
2. **formulation**: the user's, or `"auto"`'s (the measured fastest that can run;
   with `backend="pallas"`, the flow kernel's row-space formulation);
3. **backend** (`_kernels.choose_backend`, shared with `jm.train`): the flow kernel
   where it can run and was asked for (or, under `"auto"`, on a GPU where it
   compiled), else XLA;
4. **host threads**: whether the solves may run in parts from several threads
   (`_threads.splits_over_cores`);
5. **strategy**: the kernel's with the Pallas backend; else the user's, or under
   `"auto"` the batched strategy where it was measured faster (`_prefers_shared_step`)
   and vmap elsewhere;
6. **chunks**: the unit (the store's block) and whether chunks grow adaptively;
7. **predictions**: whether `jm.implicit_bias` applies, and if not, why.

The plan also returns the options resolved (`Plan.options`): what will run, from which
the results' attributes and the resume fingerprint are derived.
"""

import dataclasses

import jax
import numpy as np

from .._arguments import check_count
from .._batch import Batch, ceil_power_of_two, one_configuration, shapes_of
from .._formulations import (
    AbstractFormulation,
    as_formulation,
    ParameterFormulation,
    RowSpaceFormulation,
)
from .._formulations._legendre_args import check_legendre
from .._implicit_bias import prediction_regime
from .._kernels import (
    AbstractBackend,
    backend_class,
    choose_backend,
    FlowKernel,
    PallasBackend,
)
from .._memory import (
    check_fits,
    fits,
    sweep_bytes_per_configuration,
    sweep_fixed_bytes,
)
from .._pairs import AbstractClosedFormPair, AbstractMatrixPair
from .._problems import AbstractLinearProblem
from .._programs import stored_program, stored_result
from .._solve import solver_options, SolverOptions, state_dtype
from .._tolerances import precision_tolerances
from ._chunks import MAX_CHUNK
from ._options import SweepOptions
from ._predictions import commuting_reductions
from ._strategies import (
    AbstractStrategy,
    BatchedStrategy,
    KernelStrategy,
    strategy_class,
    VmapStrategy,
)
from ._threads import host_threads, splits_over_cores


SWEEP_TOLERANCES = (1e-6, 1e-9)  # the default rtol and atol in float64 (_tolerances.py)
UNIT = 256  # default configurations per unit and device
MIN_UNIT = 8  # the smallest default unit (shape bucketing)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a sweep decided before its first chunk."""

    formulation: AbstractFormulation
    strategy: AbstractStrategy
    backend: AbstractBackend
    solver_options: SolverOptions
    t1: object
    threaded: bool  # the vmap strategy's solves may run in host threads
    unit: int  # configurations per unit: the store's block, a chunk's granularity
    adaptive: bool  # chunks grow towards `_chunks.TARGET_SECONDS`
    max_chunk: int  # configurations per chunk at the most (memory)
    predict: bool
    regime: bool | None  # see `prediction_regime`
    prediction_note: str  # "computed", "not requested" or why not available
    options: SweepOptions  # resolved: what runs


def make_plan(problem, pair, schedules, w0, t1, batch: Batch, options: SweepOptions):
    """The `Plan` of a sweep whose inputs `check_batch` checked (module docstring)."""
    one_problem = batch.take(problem, batch.problem, 0)
    # One configuration's schedule and w0 as shapes only: no eager slicing (each
    # would compile small programs in a fresh process).
    one_schedule = one_configuration(schedules, True)
    one_w0 = one_configuration(w0, batch.w0)
    dtype = state_dtype(w0)
    rtol, atol = precision_tolerances(
        dtype, options.rtol, options.atol, SWEEP_TOLERANCES
    )
    solving = solver_options(
        options.solver, rtol, atol, options.max_steps, None, options.stepsize_controller
    )
    requested_strategy = strategy_class(options.strategy)
    formulation = _formulation(
        options, one_problem, pair, dtype, rtol, _precision(pair, schedules, w0, t1)
    )
    kernel = FlowKernel(
        *(formulation, one_problem, batch.problem, pair, schedules, w0, batch.w0),
        *(solving, requested_strategy is BatchedStrategy),
    )
    backend = choose_backend(options.backend, kernel, "jm.sweep")
    threaded = splits_over_cores(
        formulation, one_problem, pair, one_schedule, one_w0, solving
    )
    strategy = _strategy(
        requested_strategy, backend, formulation, pair, solving, threaded
    )
    if not isinstance(formulation, ParameterFormulation):
        check_legendre(pair, w0)
    sizes = _sizes(formulation, one_problem, pair, one_schedule, one_w0)
    unit, max_chunk = _chunking(options.chunk_size, batch.size, sizes)
    regime, predict, note = _prediction(problem, pair, schedules, w0, batch, options)
    resolved = dataclasses.replace(
        options,
        **dict(formulation=formulation, strategy=strategy, backend=backend),
        **dict(solver=solving.solver, rtol=rtol, atol=atol, chunk_size=unit),
        **dict(max_steps=solving.max_steps, predict=predict),
    )
    return Plan(
        *(formulation, strategy, backend, solving, t1, threaded, unit),
        options.chunk_size is None and isinstance(strategy, VmapStrategy),
        *(max_chunk, predict, regime, note, resolved),
    )


def _formulation(options, problem, pair, dtype, rtol, precision) -> AbstractFormulation:
    """The user's formulation; `"auto"` the measured fastest, or with the Pallas
    backend asked for, the flow kernel's row-space formulation where it can run."""
    auto = isinstance(options.formulation, str) and options.formulation == "auto"
    kernel_wanted = backend_class(options.backend) is PallasBackend
    if auto and kernel_wanted:
        rowspace = RowSpaceFormulation()
        if rowspace.unsupported(problem, pair) is None:
            return rowspace
    return as_formulation(options.formulation, problem, pair, dtype, rtol, precision)


def _precision(pair, schedules, w0, t1):
    """`(w0, a)` for `"auto"`'s precision rule: the initialisation and the most
    negative Legendre time any configuration reaches by t1 (a closed-form pair only:
    the others have no dual coordinate to lose precision in)."""
    if not isinstance(pair, AbstractClosedFormPair):
        return None
    return w0, float(np.min(np.asarray(_legendre_times(schedules, t1))))


@stored_program
def _legendre_times(schedules, t1):
    """`schedules.a(t1)` as one program (eagerly, each operation is one)."""
    return schedules.a(t1)


def _strategy(requested, backend, formulation, pair, solving, threaded):
    if isinstance(backend, PallasBackend):
        return KernelStrategy()
    if requested is not None:
        return requested()
    on_cpu = jax.default_backend() == "cpu"
    threads = host_threads() if threaded else 1
    # An implicit solver's Newton steps would factor the Jacobian of the whole
    # batch's state: (K x state size)^2 entries, so it never shares a step.
    shared = (
        on_cpu and solving.explicit and _prefers_shared_step(formulation, threads, pair)
    )
    return BatchedStrategy() if shared else VmapStrategy()


def _prefers_shared_step(formulation, threads: int, pair) -> bool:
    """Whether, on a CPU whose sweep solves run in `threads` host threads, one
    shared-step batch beats independent solves (measured; numbers in
    benchmarks/RESULTS.md): only for the parameter formulation, and there

    - in one thread, whose elementwise field is cheap enough that its batch keeps up
      (13.1-14.0 s against 13.2-13.6 s at (40, 100), K = 1,024, float64); in two
      threads the independent solves take 8.2 s against 12.5 s;
    - for a matrix pair (`AbstractMatrixPair`) in any number of threads: its vmapped
      independent solves are slower than one shared step sequence even in two
      threads (2 cores: 20 x 20 Gaussian sensing, K = 4, 12.2 s against 8.4 s;
      50 x 50 commuting sensing, one instance per configuration, K = 4, 93 s
      against 63 s, where solving them one by one took 88 s).

    The Legendre formulations take fewer steps each under `vmap` than one shared
    step sequence, which every configuration's switch-off time cuts."""
    if not isinstance(formulation, ParameterFormulation):
        return False
    return threads == 1 or isinstance(pair, AbstractMatrixPair)


@stored_result
def _sizes(formulation, problem, pair, schedule, w0) -> tuple[int, int, int, int]:
    """`(state, n, d, itemsize)` of one configuration's flow, from shapes alone."""
    state, _ = shapes_of(formulation.init, problem, pair, schedule, w0)
    leaves = jax.tree_util.tree_leaves(state)
    n = problem.dim() or sum(leaf.size for leaf in leaves)
    d = problem.design().shape[-2] if isinstance(problem, AbstractLinearProblem) else n
    return sum(leaf.size for leaf in leaves), n, d, leaves[0].dtype.itemsize


def _chunking(chunk_size, size: int, sizes) -> tuple[int, int]:
    """`(unit, max_chunk)`: configurations per unit, a multiple of the device count,
    never more than the sweep has (rounded up to that multiple); and per chunk at the
    most, within the memory budget (`_memory.py`). By default a small sweep is padded
    to the next power of two (at least `MIN_UNIT`), so that sweeps of any size reuse
    a few compiled programs (shape bucketing), and a large one takes `UNIT` per
    device, halved until a chunk fits in memory."""
    devices = len(jax.devices())
    per_configuration = sweep_bytes_per_configuration(*sizes)
    fixed = sweep_fixed_bytes(sizes[0], sizes[1], sizes[3])

    def rounded(unit):
        return -(-unit // devices) * devices

    if chunk_size is None:
        unit = min(ceil_power_of_two(max(size, MIN_UNIT)), UNIT * devices)
        while unit > devices and not fits(rounded(unit) * per_configuration + fixed):
            unit //= 2
    else:
        unit = min(check_count("chunk_size", chunk_size), size)
    unit = rounded(unit)
    if chunk_size is None:
        check_fits(
            "problem",
            unit * per_configuration + fixed,
            f"one configuration's flow (state {sizes[0]}, n = {sizes[1]})",
            "solve a smaller problem, or with another formulation",
        )
    check_fits(
        "chunk_size",
        unit * per_configuration + fixed,
        f"a chunk of {unit} configurations (state {sizes[0]}, n = {sizes[1]})",
        "pass a smaller chunk_size",
    )
    most = unit
    while 2 * most <= MAX_CHUNK and fits(2 * most * per_configuration + fixed):
        most *= 2
    return unit, most


def _prediction(problem, pair, schedules, w0, batch, options):
    """`(regime, predict, note)`: whether and how limits are predicted."""
    if not options.predict:
        return None, False, "not requested"
    try:
        regime = prediction_regime(
            batch.take(problem, batch.problem, 0), pair, schedules
        )
        if regime and isinstance(pair, AbstractMatrixPair):
            commuting_reductions(problem, pair, w0, batch)  # or say why none exists
    except ValueError as reason:
        return None, False, f"not available: {reason}"
    return regime, True, "computed"
