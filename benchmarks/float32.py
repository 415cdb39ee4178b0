"""float32 against float64: the default sweep in each precision, its speed and accuracy.

Sparse recovery (Hadamard, SwitchOff grid of K configurations, T = 200), one
`jm.sweep` per precision with default options (tolerances by precision: 1e-6 / 1e-9 in
float64, 100 / 1 float32 epsilons in float32; formulation and strategy "auto";
predictions off, so that the rows time the solves). Each sweep is called twice; the
table shows the second call, and the first call's tracing and compiling apart
(`--once`: one call, its compile time subtracted). Accuracy of float32 against the
float64 sweep: max |x_f32 - x_f64|, that relative to max |x_f64|, and the mean
recovery error |x - x*| of each. A last row (`--near-roundoff` sizes) runs float32
at float64's tolerances (rtol 1e-6, near float32's roundoff), where `auto` picks the
parameter flow (at (200, 1000) its convergence check alone takes minutes).

    python benchmarks/float32.py                                  # (40, 100), (200, 1000)
    python benchmarks/float32.py --sizes 40x100 --configs 64      # a smoke test
"""

import argparse
import os
import sys
import time

import jax


jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxmirror as jm  # noqa: E402
from jaxmirror._sweep._compile_time import CompileTimer  # noqa: E402


jm.enable_compilation_cache()  # a script is an entry point (jaxmirror/_cache.py)


def _sweep(problem, x_star, K, dtype, once, **options):
    """The default sweep in `dtype`: (dataset, run seconds, compile seconds)."""
    Z, y = np.asarray(problem.Z), np.asarray(problem.y)
    n = Z.shape[1]
    side = int(np.ceil(np.sqrt(K)))
    axes = jm.grid(alpha=np.linspace(0, 0.1, side), t_off=np.linspace(10, 100, side))
    pair = jm.Hadamard()
    args = (
        jm.LeastSquares(jnp.asarray(Z, dtype), jnp.asarray(y, dtype)),
        pair,
        jm.SwitchOff(
            jnp.asarray(axes["alpha"][:K], dtype), jnp.asarray(axes["t_off"][:K], dtype)
        ),
        pair.init(jnp.zeros(n, dtype), scale=jnp.asarray(1.0, dtype)),
        200.0,
    )
    kw = dict(progress=False, predict=False, truth=x_star, **options)
    with CompileTimer() as compiling:
        start = time.perf_counter()
        ds = jm.sweep(*args, **kw)
        first = time.perf_counter() - start
    if once:
        return ds, first - compiling.seconds, compiling.seconds
    start = time.perf_counter()
    ds = jm.sweep(*args, **kw)
    return ds, time.perf_counter() - start, compiling.seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="40x100,200x1000", help="d x n, comma-separated"
    )
    parser.add_argument("--configs", type=int, default=1024)
    parser.add_argument(
        "--once", default="200x1000", help="sizes timed by one call (comma-separated)"
    )
    parser.add_argument(
        "--near-roundoff",
        default="40x100",
        help="sizes that also run float32 at rtol 1e-6 (comma-separated)",
    )
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    from _common import git_revision, machine, markdown_table, stamp

    K = args.configs
    print(f"# float32 against float64, {stamp()}, commit {git_revision()}")
    print(f"Machine: {machine()}; {len(jax.devices())} device(s)")
    print(f"K = {K}, T = 200, default options, predictions off\n")
    rows = []
    for size in args.sizes.split(","):
        d, n = (int(v) for v in size.split("x"))
        once = size in args.once.split(",")
        problem, x_star = jm.datasets.sparse_regression(n=n, d=d, sparsity=5, seed=0)
        runs = [
            ("float64", jnp.float64, {}),
            ("float32", jnp.float32, {}),
            ("float32, rtol 1e-6 / atol 1e-9", jnp.float32, dict(rtol=1e-6, atol=1e-9)),
        ]
        if size not in args.near_roundoff.split(","):
            runs = runs[:2]
        reference = None
        for label, dtype, options in runs:
            ds, seconds, compiling = _sweep(problem, x_star, K, dtype, once, **options)
            x = ds.x_final.values.astype(np.float64)
            if reference is None:
                reference, ref_seconds = x, seconds
            gap = np.abs(x - reference).max()
            steps = ds.num_steps.values
            rows.append(
                [
                    f"({d}, {n})",
                    label,
                    f"{ds.attrs['formulation']} ({ds.attrs['strategy']})",
                    f"{ds.attrs['rtol']:.2g} / {ds.attrs['atol']:.2g}",
                    f"{seconds:.2f}",
                    f"{compiling:.1f}",
                    f"{ref_seconds / seconds:.2f}x",
                    f"{steps.mean():.0f} / {steps.max()}",
                    f"{gap:.1e} ({gap / np.abs(reference).max():.1e})",
                    f"{float(ds.recovery_error.mean()):.6f}",
                    f"{int((ds.status.values == jm.Status.SUCCESS).sum())}/{K}",
                ]
            )
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(
        markdown_table(
            [
                "(d, n)",
                "precision",
                "formulation (strategy)",
                "rtol / atol",
                "time (s)",
                "first call's tracing + compiling (s)",
                "speed vs float64",
                "mean / max steps",
                "max \\|x - x_float64\\| (relative)",
                "mean recovery error",
                "succeeded",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
