"""Every CPU core for sweeps: threads over one device, or one JAX device per core.

By default a JAX process has one CPU device, and XLA runs most of one program's work
(the elementwise fusions and while loops of a solve) on one core. So when it has one
CPU device, `jm.sweep` splits each chunk into one part per core (`host_parts`) and
solves the parts from as many host threads (`map_parts`): XLA:CPU executes a program
in the thread that calls it, and the parts run side by side. Measured on a 2-core
machine (`benchmarks/RESULTS.md`): a default K = 512 sweep takes 1.80 s against
3.23 s in one thread.

Not every sweep may be split: XLA:CPU deadlocks when LAPACK runs in two programs at
once (measured: the second chunk of a sweep hung, and Kvaerno5 in two threads hung
at its first chunk, 0% CPU). So a sweep's solves run in threads only under an
explicit solver and where the flow itself (the formulation's `init`, `field` and
`point` for this problem, pair and schedule) calls no LAPACK routine and no host
callback: `splits_over_cores` reads that from the flow's traced program, for the
built-in pairs and problems and for a user's alike. The convergence check and the
predictions (LAPACK inside loops) never run in threads.

`use_all_cores` is the other way: one JAX device per core, over which `jm.sweep`
shards its chunks. JAX fixes its devices when it first computes anything, so it must
run right after import, in the first cell of a notebook:

    import jaxmirror as jm
    jm.use_all_cores()

On the 2-core machine both ways give the same speed: a repeated K = 512 sweep took
2.09 s on two devices (each solving its shard in a loop of its own, `shard_map`)
against 1.93 s in two threads of one device; before the sweep used `shard_map`, XLA
partitioned one loop over the devices, which agreed at every step, and two devices
were no faster than one (4.9 s against 5.0 s). Try it on a machine with many cores
and large chunks, and measure.

Inside a sweep's chunks, LAPACK runs in the calling thread (`lapack_in_one_thread`):
OpenBLAS's own threads would only compete with the solves for the cores.
"""

import concurrent.futures
import contextlib
import contextvars
import functools
import os

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

from .._checking import validated
from .._programs import stored_program, stored_result


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def use_all_cores(count: int | None = None) -> int:
    """Make JAX's CPU platform `count` devices (default: every core this process may
    use), so that `jm.sweep` shards over all of them.

    Does nothing if `XLA_FLAGS` already sets `--xla_force_host_platform_device_count`
    (yours wins). **Raises** a `RuntimeError` if JAX has already computed something:
    the devices are fixed then (restart and call this first).

    **Returns:** the number of CPU devices requested.
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return len(jax.devices("cpu"))
    count = available_cores() if count is None else int(count)
    if count < 1:
        raise ValueError(f"`count` must be an int >= 1, got {count!r}.")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as error:
        raise RuntimeError(
            "`jm.use_all_cores()` must run before any JAX computation (JAX fixes its "
            "devices then): call it right after `import jaxmirror`, in a fresh process "
            "or kernel."
        ) from error
    return count


MIN_PART = 4
"""The fewest configurations a part of a chunk holds (smaller chunks stay whole)."""


def host_threads() -> int:
    """How many host threads a sweep's solves may use: every core on a CPU with one
    JAX device; else 1 (several devices, or an accelerator, share the work out)."""
    if len(jax.devices()) != 1 or jax.default_backend() != "cpu":
        return 1
    return available_cores()


def host_parts(size: int) -> int:
    """Into how many parts `jm.sweep` splits a chunk of `size` configurations, each
    solved from its own host thread: on a CPU with one JAX device, the largest power
    of two that is at most the core count, divides `size` and leaves parts of at
    least `MIN_PART`; else 1 (several devices, or an accelerator, already share the
    work out)."""
    parts, cores = 1, host_threads()
    while (
        2 * parts <= cores
        and size % (2 * parts) == 0
        and size // (2 * parts) >= MIN_PART
    ):
        parts *= 2
    return parts


def map_parts(solve_part, size: int, parts: int):
    """`solve_part(lo, hi)` for `parts` equal slices `[lo, hi)` of `range(size)`, each
    in its own thread, with the leading axes of the results' arrays concatenated.

    Each part waits for its result in its thread, so that the programs run side by
    side (a program's first call is compiled once: JAX makes concurrent callers of an
    uncompiled program wait for the one compilation). Each thread runs in a copy of
    the caller's context variables (e.g. `_checking.validated`, without which the
    programs would carry runtime checks and miss the compilation cache).
    """
    if parts == 1:
        return solve_part(0, size)
    step = size // parts

    def run(i):
        return jax.block_until_ready(solve_part(i * step, (i + 1) * step))

    contexts = [contextvars.copy_context() for _ in range(parts)]
    with concurrent.futures.ThreadPoolExecutor(parts) as pool:
        futures = [pool.submit(contexts[i].run, run, i) for i in range(parts)]
        results = [future.result() for future in futures]
    return _concatenate(results)


@stored_program
def _concatenate(results):
    """The parts' results joined along their leading axes, in one program."""
    return jax.tree_util.tree_map(
        lambda *leaves: (
            jnp.concatenate(leaves) if eqx.is_array(leaves[0]) else leaves[0]
        ),
        *results,
    )


@functools.cache
def _openblas():
    """Every OpenBLAS loaded once scipy's LAPACK (jaxlib's, on a CPU) is: a
    threadpoolctl controller, found once per process (an OpenBLAS loaded later is
    not jaxlib's, and is left alone)."""
    import scipy.linalg.cython_lapack  # noqa: F401 - loaded, so that it is found
    import threadpoolctl

    return threadpoolctl.ThreadpoolController().select(internal_api="openblas")


@contextlib.contextmanager
def lapack_in_one_thread():
    """Within this context, LAPACK runs in the calling thread only (on a CPU).

    jaxlib's CPU kernels for linear algebra (`solve`, `svd`, ...) call the LAPACK that
    scipy bundles, OpenBLAS, whose own threads take part in every call by default and
    then spin for a while, waiting for more work, on cores that the sweep's solves
    need. The matrices jaxmirror factors are one configuration's each, too small to
    gain from them: measured on 2 cores, one thread was never slower, from SVDs of
    100 x 40 to 1000 x 2000 and LU solves of 40 x 40 to 1000 x 1000, and a default
    K = 512 sweep's predictions took 0.07 s instead of 0.10 s, its solves 0.83 s
    instead of 0.87 s (`benchmarks/RESULTS.md`). Only OpenBLAS is limited: other BLAS
    libraries (MKL, which a solver of cvxpy may load) and OpenMP runtimes are left
    untouched, since jaxlib does not call them. The previous limits are restored on
    exit.
    """
    if jax.default_backend() != "cpu":
        yield
        return
    with _openblas().limit(limits=1):
        yield


# Primitives that call LAPACK on a CPU, or leave XLA for the host.
_UNTHREADABLE = frozenset(
    {
        "cholesky",
        "eig",
        "eigh",
        "geqp3",
        "geqrf",
        "hessenberg",
        "householder_product",
        "lu",
        "lu_pivots_to_permutation",
        "qr",
        "schur",
        "svd",
        "triangular_solve",
        "tridiagonal",
        "tridiagonal_solve",
        "ffi_call",
        "pure_callback",
        "io_callback",
        "debug_callback",
    }
)


def _primitives(jaxpr, found: set) -> set:
    """Every primitive in `jaxpr` and the programs nested in it."""
    for equation in jaxpr.eqns:
        found.add(equation.primitive.name)
        for param in equation.params.values():
            for value in param if isinstance(param, list | tuple) else (param,):
                if isinstance(value, jax_core.ClosedJaxpr):
                    _primitives(value.jaxpr, found)
                elif isinstance(value, jax_core.Jaxpr):
                    _primitives(value, found)
    return found


@stored_result
def splits_over_cores(formulation, problem, pair, schedule, w0, options) -> bool:
    """Whether a sweep's independent solves may run in host threads (module
    docstring): an explicit Runge-Kutta solver, and no LAPACK call or host callback
    in one configuration's flow (`problem`, `schedule` and `w0` of one
    configuration, arrays or `jax.ShapeDtypeStruct`s). Decided once per sweep."""
    if not options.explicit:
        return False

    def flow(problem, schedule, w0):
        y0, args = formulation.init(problem, pair, schedule, w0)
        t = jnp.zeros((), jax.tree_util.tree_leaves(y0)[0].dtype)
        return formulation.field(t, y0, problem, args), formulation.point(
            t, y0, problem, args
        )

    is_leaf = lambda x: eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)
    dynamic, static = eqx.partition((problem, schedule, w0), is_leaf)
    shapes = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), dynamic, is_leaf=is_leaf
    )
    # Traced once per process and kept across processes (`stored_result`).
    with validated():  # as the solves run: no checks (host callbacks) inside
        traced = jax.make_jaxpr(lambda d: flow(*eqx.combine(d, static)))(shapes)
    return not (_primitives(traced.jaxpr, set()) & _UNTHREADABLE)
