"""What a fresh process's first calls cost once the compilation cache is warm: the
tracing, lowering and cache loading that no persistent cache saves.

Each round runs one fresh Python process per source tree (this one, and with
`--against PATH` another checkout, alternating, so that the machine's drift reaches
both). A process imports jaxmirror and xarray (so that the result's library is not
counted), then times, each twice: `jm.sweep` with default options at (d, n) = (40, 100),
K = 512 (Hadamard, SwitchOff grid, T = 200); a second sweep of a new shape ((30, 80),
K = 256: what every new shape of a notebook pays, once the process's own first-use
costs, such as JAX's LAPACK set-up, are paid); and one `jm.solve` of another shape
((20, 60), T = 200). It counts the programs JAX prepares during each first call (each
is traced, lowered and loaded from the cache or compiled), and reports each first call
over the same call repeated, per process (the median of the ratios). Round 0 fills
the cache and is not reported.

    python benchmarks/first_call.py                         # this tree, 5 rounds
    python benchmarks/first_call.py --against /tmp/old-tree # side by side with another
    python benchmarks/first_call.py --rounds 1 --configs 16 # a smoke test
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np


RUN = r"""
import json, logging, sys, time
programs = [0]
class Count(logging.Handler):
    def emit(self, record):
        programs[0] += record.getMessage().startswith("Compiling jit(")
log = logging.getLogger("jax")
log.addHandler(Count()); log.setLevel(logging.WARNING); log.propagate = False
import jax
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_log_compiles", True)
import numpy as np
import jaxmirror as jm
jm.enable_compilation_cache()  # what a script does (older trees: already on)
import xarray  # noqa: F401 - its import is the same for every tree
problem, _ = jm.datasets.sparse_regression(n=100, d=40, sparsity=5, seed=0)
side = int(np.ceil(np.sqrt(K)))
grid = jm.grid(alpha=np.linspace(0, 0.1, side), t_off=np.linspace(10, 100, side))
schedules = jm.SwitchOff(grid["alpha"][:K], grid["t_off"][:K])
pair = jm.Hadamard()
w0 = pair.init(np.zeros(100))
other, _ = jm.datasets.sparse_regression(n=60, d=20, sparsity=3, seed=1)
w_other = pair.init(np.zeros(60))
second, _ = jm.datasets.sparse_regression(n=80, d=30, sparsity=4, seed=2)
w_second = pair.init(np.zeros(80))
half = jm.SwitchOff(grid["alpha"][: K // 2], grid["t_off"][: K // 2])
calls = {
    "sweep": lambda: jm.sweep(problem, pair, schedules, w0, 200.0, progress=False),
    "sweep_new_shape": lambda: jm.sweep(second, pair, half, w_second, 200.0,
                                        progress=False),
    "solve": lambda: jax.block_until_ready(
        jm.solve(other, pair, jm.SwitchOff(0.05, 50.0), w_other, t1=200.0).x_final),
}
out = {}
for name, call in calls.items():
    programs[0] = 0
    begin = time.perf_counter()
    call()
    out[name + "_first"] = time.perf_counter() - begin
    out[name + "_programs"] = programs[0]
    begin = time.perf_counter()
    call()
    out[name + "_again"] = time.perf_counter() - begin
print(json.dumps(out))
"""


def _run(tree, configs, cache):
    env = {**os.environ, "JAXMIRROR_CACHE_DIR": cache, "PYTHONPATH": tree}
    code = f"K = {configs}\n" + RUN
    done = subprocess.run(  # in `tree`: `python -c` looks in its directory first
        [sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--configs", type=int, default=512)
    parser.add_argument("--against", help="another source tree, run alternately")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    from _common import git_revision, machine, markdown_table, stamp

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"this tree": here}
    if args.against:
        trees = {os.path.abspath(args.against): args.against, **trees}
    cache = tempfile.mkdtemp(prefix="jaxmirror-cache-")
    runs = {name: [] for name in trees}
    for round_ in range(args.rounds + 1):
        for name, tree in trees.items():
            result = _run(tree, args.configs, cache)
            if round_:  # round 0 fills the cache
                runs[name].append(result)
    print(f"# First calls with a warm cache, {stamp()}, commit {git_revision()}")
    print(f"Machine: {machine()}")
    print(
        f"Fresh processes, {args.rounds} rounds (medians, range in brackets); "
        f"jm.sweep at (40, 100), K = {args.configs}, default options, then a sweep "
        f"of a new shape, (30, 80), K = {args.configs // 2}; jm.solve at (20, 60); "
        "float64\n"
    )

    def cell(values, digits=2):
        values = np.asarray(values, float)
        return (
            f"{np.median(values):.{digits}f} "
            f"[{values.min():.{digits}f}-{values.max():.{digits}f}]"
        )

    labels = {
        "sweep": "jm.sweep, the process's first",
        "sweep_new_shape": "jm.sweep, a second new shape",
        "solve": "jm.solve",
    }
    rows = []
    for name, results in runs.items():
        for call, label in labels.items():
            first = np.array([r[f"{call}_first"] for r in results])
            again = np.array([r[f"{call}_again"] for r in results])
            rows.append(
                [
                    name,
                    label,
                    cell(first),
                    cell(again, 3),
                    cell(first / again) + "x",
                    f"{int(np.median([r[f'{call}_programs'] for r in results]))}",
                ]
            )
    print(
        markdown_table(
            [
                "source",
                "call",
                "first call (s)",
                "the same call again (s)",
                "first / again, per process",
                "programs prepared in the first call",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
