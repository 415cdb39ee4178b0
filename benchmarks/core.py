"""Core benchmark: one solve of the demo problem per formulation, and `implicit_bias`.

Compile time and run time are reported separately (run time: minimum of 5 runs). The
alternative a user would write without jaxmirror, `scipy.integrate.solve_ivp` (RK45,
same tolerances) on the same parameter-space ODE, is timed in the same run.

    python benchmarks/core.py [--t1 3000] [--rtol 1e-8] [--atol 1e-10]
"""

import argparse
import time

import jax


jax.config.update("jax_enable_x64", True)

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import scipy.integrate
from _common import git_revision, machine, markdown_table, min_time, stamp

import jaxmirror as jm


jm.enable_compilation_cache()  # a script is an entry point (jaxmirror/_cache.py)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--t1", type=float, default=3000.0)
    parser.add_argument("--rtol", type=float, default=1e-8)
    parser.add_argument("--atol", type=float, default=1e-10)
    args = parser.parse_args()

    problem, _ = jm.datasets.sparse_regression()
    pair = jm.Hadamard()
    w0 = pair.init(jnp.zeros(100), scale=1.0)
    schedule = jm.SwitchOff(0.1, 50.0)
    options = dict(t1=args.t1, rtol=args.rtol, atol=args.atol, max_steps=10**6)

    rows = []
    reference = None
    for formulation in ("parameter", "mirror", "dual", "rowspace"):

        @eqx.filter_jit
        def run(problem, schedule, w0, formulation=formulation):
            return jm.solve(
                problem, pair, schedule, w0, formulation=formulation, **options
            )

        start = time.perf_counter()
        sol = jax.block_until_ready(run(problem, schedule, w0))
        first = time.perf_counter() - start
        seconds = min_time(lambda: run(problem, schedule, w0))
        reference = sol.x_final if reference is None else reference
        rows.append(
            [
                f"solve ({formulation})",
                f"{first - seconds:.2f}",
                f"{seconds * 1e3:.1f}",
                int(sol.num_steps),
                jm.Status(int(sol.status)).name,
            ]
        )

    @eqx.filter_jit
    def predict(problem, schedule, w0):
        return jm.implicit_bias(problem, pair, schedule, w0)

    start = time.perf_counter()
    x_inf = jax.block_until_ready(predict(problem, schedule, w0))
    first = time.perf_counter() - start
    seconds = min_time(lambda: predict(problem, schedule, w0))
    rows.append(
        [
            "implicit_bias",
            f"{first - seconds:.2f}",
            f"{seconds * 1e3:.2f}",
            "-",
            f"max abs diff to x(T): {float(jnp.max(jnp.abs(x_inf - reference))):.1e}",
        ]
    )

    # The alternative: scipy's RK45 on the same parameter-space ODE, in NumPy.
    Z, y = np.asarray(problem.Z), np.asarray(problem.y)

    def rhs(t, mw):
        m, w = np.split(mw, 2)
        grad = Z.T @ (Z @ (m * w) - y)
        alpha = 0.1 if t < 50.0 else 0.0
        return np.concatenate([-w * grad - alpha * m, -m * grad - alpha * w])

    y0 = np.concatenate([np.asarray(w) for w in w0])
    start = time.perf_counter()
    ref = scipy.integrate.solve_ivp(
        rhs, (0.0, args.t1), y0, method="RK45", rtol=args.rtol, atol=args.atol
    )
    scipy_seconds = time.perf_counter() - start
    m, w = np.split(ref.y[:, -1], 2)
    rows.append(
        [
            "scipy solve_ivp RK45 (parameter)",
            "-",
            f"{scipy_seconds * 1e3:.1f}",
            int(ref.nfev // 6),
            f"max abs diff to ours: {np.max(np.abs(m * w - np.asarray(reference))):.1e}",
        ]
    )
    solve_ms = {row[0]: float(row[2]) for row in rows if row[0].startswith("solve")}

    print(f"# Core benchmark, {stamp()}, commit {git_revision()}")
    print(f"Machine: {machine()}")
    print(
        f"Problem: demo (n=100, d=40), SwitchOff(0.1, 50), T={args.t1}, "
        f"rtol={args.rtol}, atol={args.atol}, float64, Tsit5"
    )
    print()
    print(markdown_table(["what", "compile (s)", "run (ms)", "steps", "note"], rows))
    print()
    ratios = ", ".join(
        f"{name[len('solve (') : -1]} {scipy_seconds * 1e3 / ms:.0f}x"
        for name, ms in solve_ms.items()
    )
    print(f"scipy / jaxmirror run-time ratio: {ratios}")


if __name__ == "__main__":
    main()
