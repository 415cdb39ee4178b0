"""What a user's default call costs: `jm.sweep` with default options, against a scipy
loop, in fresh processes (so that the second run shows the compilation cache).

Sparse recovery at (d, n) = (40, 100), Hadamard, SwitchOff grid of K configurations,
T = 200, float64. Each run is a fresh Python process that does what a user does:
`import jaxmirror as jm` (with `--all-cores`, also `jm.use_all_cores()`: one JAX
device per core), then one `jm.sweep` with default options (its default tolerances,
predictions on). The scipy RK45 loop runs at the same tolerances on configurations
spread over the grid and is extrapolated; it alternates with repeated sweep calls in
`--rounds` rounds in one process: that row gives the median of the rounds' ratios,
and the fresh-process rows are compared with the median scipy time.

    python benchmarks/default_path.py            # K = 512, two fresh processes
    python benchmarks/default_path.py --configs 16 --scipy-configs 2   # a smoke test
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


RUN = r"""
import json, sys, time
start = time.perf_counter()
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import jaxmirror as jm
jm.enable_compilation_cache()  # what a script does (importing changes nothing)
from jaxmirror._sweep._compile_time import CompileTimer
from jaxmirror._sweep._threads import host_parts
if ALL_CORES:
    jm.use_all_cores()
problem, _ = jm.datasets.sparse_regression(n=100, d=40, sparsity=5, seed=0)
side = int(np.ceil(np.sqrt(K)))
grid = jm.grid(alpha=np.linspace(0, 0.1, side), t_off=np.linspace(10, 100, side))
schedules = jm.SwitchOff(grid["alpha"][:K], grid["t_off"][:K])
pair = jm.Hadamard()
imported = time.perf_counter() - start
with CompileTimer() as compiling:
    begin = time.perf_counter()
    ds = jm.sweep(problem, pair, schedules, pair.init(np.zeros(100)), 200.0,
                  progress=False)
    seconds = time.perf_counter() - begin
np.save(OUT, ds.x_final.values)
begin = time.perf_counter()  # the same call again, in this process
jm.sweep(problem, pair, schedules, pair.init(np.zeros(100)), 200.0, progress=False)
again = time.perf_counter() - begin
print(json.dumps(dict(seconds=seconds, again=again, compiling=compiling.seconds,
                      backend=compiling.backend_seconds, imported=imported,
                      devices=len(jax.devices()), parts=host_parts(K),
                      converged=int(ds.converged.sum()),
                      formulation=ds.attrs["formulation"], strategy=ds.attrs["strategy"],
                      rtol=ds.attrs["rtol"], atol=ds.attrs["atol"])))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=512)
    parser.add_argument("--scipy-configs", type=int, default=16)
    parser.add_argument("--all-cores", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    from _common import git_revision, machine, markdown_table, scipy_loop, stamp

    cache = tempfile.mkdtemp(prefix="jaxmirror-cache-")
    env = {**os.environ, "JAXMIRROR_CACHE_DIR": cache}
    runs = []
    for attempt in range(2):
        out = os.path.join(cache, f"x{attempt}.npy")
        code = (
            f"K = {args.configs}\nALL_CORES = {args.all_cores}\nOUT = {out!r}\n" + RUN
        )
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True
        )
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["process"] = time.perf_counter() - start
        result["x"] = np.load(out)
        runs.append(result)

    os.environ["JAXMIRROR_CACHE_DIR"] = cache  # this process reuses their programs
    import jax

    jax.config.update("jax_enable_x64", True)
    import jaxmirror as jm

    jm.enable_compilation_cache()

    if args.all_cores:
        jm.use_all_cores()
    # The tolerances the default sweep resolved to (they depend on its precision).
    rtol, atol = runs[0]["rtol"], runs[0]["atol"]
    problem, _ = jm.datasets.sparse_regression(n=100, d=40, sparsity=5, seed=0)
    side = int(np.ceil(np.sqrt(args.configs)))
    grid = jm.grid(alpha=np.linspace(0, 0.1, side), t_off=np.linspace(10, 100, side))
    alphas, t_offs = grid["alpha"][: args.configs], grid["t_off"][: args.configs]
    pair = jm.Hadamard()

    def default_call():
        schedules = jm.SwitchOff(alphas, t_offs)
        w0 = pair.init(np.zeros(100))
        return jm.sweep(problem, pair, schedules, w0, 200.0, progress=False)

    # Rounds in this process that alternate the repeated default call with the scipy
    # loop, so that a drift in the machine's speed (30% within an hour on the 2-core
    # machine) reaches both sides of each ratio.
    default_call()  # traces; its programs come from the cache
    rounds = []
    for _ in range(args.rounds):
        begin = time.perf_counter()
        default_call()
        seconds = time.perf_counter() - begin
        per_config, finals, index = scipy_loop(
            np.asarray(problem.Z),
            np.asarray(problem.y),
            alphas,
            t_offs,
            args.scipy_configs,
            200.0,
            rtol,
            atol,
        )
        rounds.append((seconds, per_config * args.configs))
    sweep_rounds, scipy_rounds = np.array(rounds).T
    ratios = scipy_rounds / sweep_rounds
    scipy_seconds = float(np.median(scipy_rounds))
    per_config = scipy_seconds / args.configs
    diff = np.max(np.abs(runs[1]["x"][index] - finals))
    print(f"# Default path, {stamp()}, commit {git_revision()}")
    print(f"Machine: {machine()}")
    print(
        f"(d, n) = (40, 100), K = {args.configs}, T = 200, float64, default options "
        f"(rtol {rtol}, atol {atol}, predictions on); scipy at the same tolerances; "
        "each jaxmirror row is a fresh process\n"
    )
    rows = []
    for i, run in enumerate(runs):
        rows.append(
            [
                f"jm.sweep, process {i + 1}"
                + (" (cache warm)" if i else " (cache empty)"),
                f"{run['seconds']:.2f}",
                f"{run['compiling']:.2f} ({run['backend']:.2f})",
                f"{run['process']:.1f}",
                f"{scipy_seconds / run['seconds']:.1f}x",
                f"{run['devices']} device(s), {run['parts']} host thread(s), "
                f"{run['strategy']} + {run['formulation']}, "
                f"{run['converged']}/{args.configs} converged",
            ]
        )
    last = runs[-1]
    rows.append(
        [
            "jm.sweep, process 2, the same call again",
            f"{last['again']:.2f}",
            "0",
            "-",
            f"{scipy_seconds / last['again']:.1f}x",
            "nothing left to trace or compile",
        ]
    )
    rows.append(
        [
            f"jm.sweep, the same call in {args.rounds} rounds between scipy loops",
            f"{np.median(sweep_rounds):.2f}",
            "0",
            "-",
            f"{np.median(ratios):.1f}x",
            f"median of the rounds' ratios (range {ratios.min():.1f}x to "
            f"{ratios.max():.1f}x)",
        ]
    )
    rows.append(
        [
            "scipy solve_ivp RK45 loop",
            f"{scipy_seconds:.1f}",
            "-",
            "-",
            "1x",
            f"median of {args.rounds} rounds, each extrapolated from {len(index)} "
            f"configurations spread over the grid ({per_config * 1e3:.0f} ms each); "
            f"max |x diff| {diff:.1e}",
        ]
    )
    print(
        markdown_table(
            [
                "run",
                "sweep call (s)",
                "of which tracing + compiling (XLA compiling) (s)",
                "whole process (s)",
                "vs scipy",
                "note",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
