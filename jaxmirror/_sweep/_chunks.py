r"""The chunk loop: chunks sized, solved, stored and reported one after another.

**Chunks.** The configurations are laid out in units (the store's blocks) of
`Plan.unit` configurations. With an explicit `chunk_size` every chunk is one unit.
By default, under the `"vmap"` strategy, the loop starts with one unit per chunk and
then sizes chunks from the measured rate to take 10-30 s each (in powers of two of
units, so that a few compiled programs serve every chunk): a kill loses at most one
chunk of work, and progress appears after the first. Batched chunks share a step
sequence, so their results depend on how the configurations are grouped: they keep
fixed units, reproducible run to run.

**One chunk** (`run_chunk`): its rows gathered and padded to a fixed size, sharded
over the devices, solved by the plan's strategy, then its convergence, predictions
and losses (`_predictions.py`) computed on one device, and the results brought back
as NumPy.
"""

import sys
import time

import jax
import numpy as np

from .._batch import (
    Batch,
    devices_mesh,
    first_device_mesh,
    floor_power_of_two,
    gather,
    on_one_device,
    rows,
    shard,
)
from .._checking import validated
from .._implicit_bias import default_tol
from .._pairs import AbstractMatrixPair
from .._status import Status
from ._compile_time import CompileTimer
from ._predictions import convergence, losses, predict, predict_commuting
from ._threads import lapack_in_one_thread


MAX_CHUNK = 65_536  # configurations per chunk at the most (memory)
TARGET_SECONDS = (10.0, 30.0)  # an adaptive chunk's aim


class Chunks:
    """Groups the pending units into chunks, growing them towards `TARGET_SECONDS`.

    A chunk is a power of two of units (a run of pending units left over at the end
    is split into descending powers of two), so that a few compiled programs serve a
    whole sweep, and any other sweep with the same unit.
    """

    def __init__(self, unit: int, adaptive: bool, size: int, max_chunk=MAX_CHUNK):
        self.unit, self.size, self.adaptive = unit, size, adaptive
        self.units_per_chunk = 1
        self.max_units = floor_power_of_two(max(1, min(max_chunk, MAX_CHUNK) // unit))

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
            count = min(self.units_per_chunk, floor_power_of_two(run - unit))
            yield np.concatenate(by_unit[unit : unit + count]), count * self.unit
            unit += count

    def measured(self, run_seconds: float) -> None:
        """Resize the next chunks from the time this one took to run (no compiling)."""
        low, high = TARGET_SECONDS
        if not self.adaptive or low <= run_seconds <= high:
            return
        wanted = self.units_per_chunk * 0.5 * (low + high) / max(run_seconds, 1e-3)
        wanted = floor_power_of_two(max(1, int(wanted)))
        self.units_per_chunk = min(wanted, self.max_units)


class Progress:
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


def solve_chunks(plan, inputs, batch: Batch, pending, progress: Progress, deliver):
    """Each pending chunk solved and handed to `deliver(part, index)` as soon as it is
    done (the caller stores it, or keeps it); configurations already finished are not
    recomputed."""
    progress.say(
        f"{batch.size} configurations ({progress.done} already done), formulation "
        f"{plan.formulation.name}, strategy {plan.strategy.name}, backend "
        f"{plan.backend.name}"
    )
    chunks = Chunks(plan.unit, plan.adaptive, batch.size, plan.max_chunk)
    mesh, out_of_steps = devices_mesh(), 0
    for index, padded in chunks.ranges(pending):
        start = time.perf_counter()
        with CompileTimer() as compiling:
            part = run_chunk(plan, inputs, batch, index, padded, mesh)
        deliver(part, index)
        running = time.perf_counter() - start - compiling.seconds
        chunks.measured(running)
        progress.chunk(len(index), running, compiling.seconds)
        out_of_steps += int(np.sum(part["status"] == Status.MAX_STEPS))
    if out_of_steps and plan.solver_options.explicit:
        progress.say(
            f"{out_of_steps} configurations ran out of steps (status MAX_STEPS). Near "
            "its limit the flow is stiff for an explicit solver; for long horizons "
            "pass solver=diffrax.Kvaerno5() (or raise max_steps)."
        )


def run_chunk(plan, inputs, batch: Batch, index, padded: int, mesh) -> dict:
    """Solve (and predict) the configurations `index`, padded to `padded` of them.

    **Returns:** a dict of NumPy arrays with one row per configuration of `index`.
    """
    problem, pair, schedules, w0 = inputs
    sub = batch.resized(padded)
    if mesh.size > 1 and not plan.solver_options.explicit and _on_cpu():
        # LAPACK inside a program partitioned over CPU devices deadlocks XLA:CPU
        # (measured: Kvaerno5 on 2 devices hung, 0% CPU): implicit steps on one.
        mesh = first_device_mesh()
    # The chunk's rows, the last one repeated up to `padded`: one compiled gather.
    chosen = np.concatenate([index, np.repeat(index[-1:], padded - len(index))])

    def take(tree, batched):
        return shard(rows(tree, chosen) if batched else tree, batched, mesh)

    chunk = (take(problem, batch.problem), take(schedules, True), take(w0, batch.w0))
    # `sweep` checked every input eagerly; LAPACK's own threads would compete with the
    # solves' threads for cores while gaining nothing on small matrices (`_threads.py`).
    with validated(), lapack_in_one_thread():
        solved = plan.strategy.solve(plan, chunk[0], pair, *chunk[1:], sub, mesh)
        return _outcomes(plan, chunk, pair, solved, sub, len(index))


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def _outcomes(plan, chunk, pair, solved, sub: Batch, n: int) -> dict:
    """The chunk's results: its solves, then convergence, predictions and losses,
    computed on one device."""
    problem_c, schedules_c, w0_c = chunk
    xs, status, steps, final = solved
    one_problem, one_final, one_status = on_one_device((problem_c, final, status))
    status, converged, distance = convergence(
        plan.formulation,
        *(one_problem, one_final, one_status),
        *(plan.t1, plan.solver_options, sub),
    )
    part = dict(
        x_final=xs,
        status=status,
        converged=converged,
        distance_to_limit=distance,
        num_steps=steps,
    )
    if plan.predict:
        one_schedules, one_w0, one_xs = on_one_device((schedules_c, w0_c, xs))
        given = (one_problem, pair, one_schedules, one_w0, default_tol())
        if isinstance(pair, AbstractMatrixPair) and plan.regime:
            # Through the commuting reduction, computed eagerly (NumPy): not in a jit.
            predicted = predict_commuting(*given, sub, one_xs)
        else:
            predicted = predict(*given, plan.regime, sub, one_xs)
        part["x_predicted"], part["bias_status"] = predicted
    part["loss"] = losses(problem_c, xs, sub)
    return {name: gather(value, n) for name, value in part.items()}
