"""The sparse-recovery demo (docs/theory.md, section 5): weight decay that switches off.

Hadamard pair x = m * w with m0 = 1, w0 = 0 on a 5-sparse regression instance
(n = 100 unknowns, d = 40 measurements). Three schedules: no weight decay, constant
weight decay, and the same weight decay switched off at `t_off`. For each it prints the
recovery error |x - x*| predicted by `jm.implicit_bias` and simulated by `jm.solve`, and
saves a figure: x(t) for the three schedules, and the predicted error against a_inf with
simulated switch-off runs on top.

Run with `python -m jaxmirror.demo` (or `jaxmirror demo`).
"""

import argparse
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import jaxmirror as jm


def run(alpha: float = 0.1, t_off: float = 50.0, t1: float = 30000.0, seed: int = 0):
    """Run the demo; return a dict of results (used by the tests and the figure)."""
    problem, x_star = jm.datasets.sparse_regression(n=100, d=40, sparsity=5, seed=seed)
    pair = jm.Hadamard()
    w0 = pair.init(jnp.zeros(100), scale=1.0)
    schedules = {
        "no weight decay": jm.Constant(0.0),
        f"constant alpha={alpha}": jm.Constant(alpha),
        f"switch-off alpha={alpha}, t_off={t_off}": jm.SwitchOff(alpha, t_off),
    }
    ts = jnp.concatenate([jnp.zeros(1), jnp.geomspace(1e-2, t1, 200).at[-1].set(t1)])
    rows, trajectories = [], {}
    for name, schedule in schedules.items():
        sol = jm.solve(
            problem,
            pair,
            schedule,
            w0,
            t1=t1,
            saveat=ts,
            formulation=jm.RowSpaceFormulation(),
            solver=diffrax.Kvaerno5(),
        )
        predicted = jm.implicit_bias(problem, pair, schedule, w0)
        trajectories[name] = np.asarray(sol.xs)
        rows.append(
            dict(
                schedule=name,
                a_inf=float(schedule.a_inf()),
                predicted=float(jnp.linalg.norm(predicted - x_star)),
                simulated=float(jnp.linalg.norm(sol.x_final - x_star)),
                gap=float(jnp.max(jnp.abs(predicted - sol.x_final))),
                status=jm.Status(int(sol.status)).name,
            )
        )
    # Error against a_inf: predictions on a fine grid, and a few flows as one sweep.
    # Concrete calls and `jm.sweep` compile programs that the persistent cache keeps
    # (a traced `jax.vmap` of the checked public functions carries runtime checks,
    # which no cache stores), so a second run compiles nothing.
    a_grid = np.linspace(0.0, -6.0, 61)
    limits = [
        jm.implicit_bias(problem, pair, jm.SwitchOff(-a / t_off, t_off), w0)
        for a in a_grid
    ]
    a_sim = np.array([0.0, -1.0, -2.0, -3.0, -4.0, -5.0])
    sims = jm.SwitchOff(alpha=-a_sim / t_off, t_off=np.full_like(a_sim, t_off))
    finals = jm.sweep(
        problem,
        pair,
        sims,
        w0,
        t1,
        solver=diffrax.Kvaerno5(),
        predict=False,
        progress=False,
    )
    finals = finals.x_final.values
    min_l2 = np.linalg.pinv(np.asarray(problem.Z)) @ np.asarray(problem.y)
    return dict(
        rows=rows,
        ts=np.asarray(ts),
        trajectories=trajectories,
        x_star=x_star,
        a_grid=np.asarray(a_grid),
        predicted_errors=np.linalg.norm(np.asarray(limits) - x_star, axis=1),
        a_simulated=np.asarray(a_sim),
        simulated_errors=np.linalg.norm(np.asarray(finals) - x_star, axis=1),
        min_l2_error=float(np.linalg.norm(min_l2 - x_star)),
    )


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["trajectories"])
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2), constrained_layout=True)
    support = np.flatnonzero(results["x_star"])
    for ax, name in zip(axes[:3], names):
        xs = results["trajectories"][name]
        off = np.setdiff1d(np.arange(xs.shape[1]), support)
        ax.plot(results["ts"], xs[:, off], color="0.75", lw=0.6)
        ax.plot(results["ts"], xs[:, support], lw=1.5)
        for value in results["x_star"][support]:
            ax.axhline(value, color="k", ls=":", lw=0.8)
        ax.set_xscale("symlog", linthresh=1e-1)
        ax.set_xlim(0.0, results["ts"][-1])
        ax.set_xlabel("time t")
        ax.set_ylabel("x_i(t)")
        ax.set_title(name, fontsize=10)
    ax = axes[3]
    ax.semilogy(
        results["a_grid"],
        results["predicted_errors"],
        label="predicted (implicit_bias)",
    )
    ax.semilogy(
        results["a_simulated"],
        results["simulated_errors"],
        "o",
        label="simulated (solve)",
    )
    ax.axhline(
        results["min_l2_error"], color="0.5", ls="--", label="minimum-L2 interpolant"
    )
    ax.set_xlabel(r"$a_\infty = -\int_0^\infty \alpha_t\,dt$")
    ax.set_ylabel(r"recovery error $|x_\infty - x^*|$")
    ax.set_title("switch-off: error against total weight decay", fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    """The demo's options."""
    parser = argparse.ArgumentParser(
        prog="jaxmirror demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="demo.png", help="where to save the figure")
    parser.add_argument(
        "--alpha", type=float, default=0.1, help="weight decay before the switch-off"
    )
    parser.add_argument("--t-off", type=float, default=50.0, help="the switch-off time")
    return parser


def main(argv=None):
    # An entry point: float64 for checks against closed forms, and compiled programs
    # kept across runs (jaxmirror/_cache.py).
    jax.config.update("jax_enable_x64", True)
    jm.enable_compilation_cache()
    args = parser().parse_args(argv)
    start = time.perf_counter()
    results = run(alpha=args.alpha, t_off=args.t_off)
    print("Sparse recovery, Hadamard pair (n=100, d=40, 5-sparse, m0=1, w0=0)")
    print(
        f"{'schedule':<36} {'a_inf':>7} {'predicted':>10} {'simulated':>10} "
        f"{'|pred-sim|':>11} status"
    )
    for row in results["rows"]:
        print(
            f"{row['schedule']:<36} {row['a_inf']:>7.2f} {row['predicted']:>10.4f} "
            f"{row['simulated']:>10.4f} {row['gap']:>11.2e} {row['status']}"
        )
    print(f"minimum-L2 interpolant: {results['min_l2_error']:.4f}")
    plot(results, args.out)
    print(f"figure saved to {args.out} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
