"""A sweep of a million configurations into a Zarr store: peak memory and chunk timings.

Hadamard pair on sparse regression (n = 100 unknowns, d = 40 measurements), SwitchOff
over a grid of alpha x t_off, a short horizon (t1 = 1: the flows are cheap, so that
the store's behaviour dominates), default options (adaptive chunks), written to a
temporary directory. Prints the peak resident memory of the process, against what
the results alone would take in memory, and for each chunk the time spent solving
and the time spent writing it.

    python benchmarks/store.py                        # 1,000,000 configurations
    python benchmarks/store.py --configs 4096         # a smoke test
"""

import argparse
import resource
import shutil
import tempfile
import time

import jax


jax.config.update("jax_enable_x64", True)

import numpy as np
from _common import git_revision, machine, markdown_table, stamp

import jaxmirror as jm
from jaxmirror._sweep import _chunks, _store


jm.enable_compilation_cache()  # a script is an entry point (jaxmirror/_cache.py)


def _timed(module, name, log):
    """Wrap module.name to record each call's wall time in `log`."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = original(*args, **kwargs)
        log.append(time.perf_counter() - start)
        return result

    setattr(module, name, wrapper)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=1_000_000)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--d", type=int, default=40)
    parser.add_argument("--t1", type=float, default=1.0)
    args = parser.parse_args()
    side = int(round(np.sqrt(args.configs)))
    grid = jm.grid(alpha=np.linspace(0, 0.1, side), t_off=np.linspace(0.1, 1.0, side))
    K = side * side
    problem, x_star = jm.datasets.sparse_regression(n=args.n, d=args.d, seed=0)
    pair = jm.Hadamard()
    w0 = pair.init(np.zeros(args.n), scale=1.0)
    solve_times, write_times = [], []
    _timed(_chunks, "run_chunk", solve_times)  # the chunk loop calls it by this name
    _timed(_store.SweepStore, "write", write_times)
    out = tempfile.mkdtemp(prefix="jaxmirror-store-")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    ds = jm.sweep(
        problem,
        pair,
        jm.SwitchOff(**grid),
        w0,
        args.t1,
        out=f"{out}/sweep",
        predict=False,
    )
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    held = sum(v.nbytes for v in ds.variables.values()) / 2**20
    statuses = np.bincount(ds.status.values + 1, minlength=5)
    shutil.rmtree(out)
    print(f"# Store benchmark, {stamp()}, commit {git_revision()}")
    print(f"Machine: {machine()}")
    print(
        f"K = {K:,} SwitchOff configurations, n = {args.n}, d = {args.d}, t1 = "
        f"{args.t1}, Hadamard, default options (adaptive chunks), predict=False\n"
    )
    rows = [
        ["configurations", f"{K:,}"],
        ["chunks", len(solve_times)],
        ["total time (s)", f"{total:.1f}"],
        [
            "peak resident memory (MiB)",
            f"{peak:.0f} (before the sweep: {rss_before:.0f})",
        ],
        ["the results, if held in memory (MiB)", f"{held:.0f}"],
        [
            "solve per chunk (s): first, median, last",
            f"{solve_times[0]:.2f}, {np.median(solve_times):.2f}, {solve_times[-1]:.2f}",
        ],
        [
            "write per chunk (s): first, median, last",
            f"{write_times[0]:.3f}, {np.median(write_times):.3f}, {write_times[-1]:.3f}",
        ],
        ["write / solve, all chunks", f"{sum(write_times) / sum(solve_times):.3f}"],
        [
            "statuses (pending, success, max steps, non-finite, failure)",
            ", ".join(map(str, statuses)),
        ],
    ]
    print(markdown_table(["what", "measured"], rows))


if __name__ == "__main__":
    main()
