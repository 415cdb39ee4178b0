"""Flow versus discrete training on the demo problem (issue: discrete counterpart).

- trajectories of gradient descent against the flow for no, constant and switch-off
  weight decay (figure);
- first-order convergence of the GD endpoint to the flow's as lr -> 0;
- the finite-step prediction (exact discrete mirror descent) against the flow's;
- AdamW (decoupled decay) with and without switch-off: an empirical comparison, with no
  claim that the theory covers it.

    python -m jaxmirror.experiments.discrete [--out docs/figures]
"""

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxmirror as jm


ALPHA, T_OFF = 0.1, 50.0


def _schedules():
    return {
        "none": jm.Constant(0.0),
        f"constant {ALPHA}": jm.Constant(ALPHA),
        f"switch-off {ALPHA} @ t={T_OFF:g}": jm.SwitchOff(ALPHA, T_OFF),
    }


def _support(x, x_star, threshold=1e-2):
    found = np.abs(np.asarray(x)) > threshold
    return int(found.sum()), int((found & (x_star != 0)).sum())


def _demo():
    problem, x_star = jm.datasets.sparse_regression()
    pair = jm.Hadamard()
    return problem, pair, pair.init(jnp.zeros(100), scale=1.0), x_star


def _flow(problem, pair, schedule, w0, horizon, saveat=None, tol=1e-12):
    return jm.solve(
        *(problem, pair, schedule, w0),
        t1=horizon,
        saveat=saveat,
        formulation=jm.ParameterFormulation(),
        rtol=tol,
        atol=1e-12,
        max_steps=10**6,
    )


def _trajectories_and_table(horizon, lr):
    """GD against the flow per schedule; SGD and AdamW endpoints per schedule."""
    problem, pair, w0, x_star = _demo()
    steps = int(horizon / lr)
    trajectories, rows = {}, []
    for name, schedule in _schedules().items():
        gd = jm.train(problem, pair, schedule, w0, lr=lr, steps=steps, save_every=20)
        flow = _flow(problem, pair, schedule, w0, horizon, saveat=gd.ts, tol=1e-10)
        trajectories[name] = (np.asarray(gd.ts), np.asarray(gd.xs), np.asarray(flow.xs))
        for optimizer, opt_lr in (("sgd", lr), ("adamw", 0.01)):
            result = jm.train(
                problem,
                pair,
                schedule,
                w0,
                optimizer,
                lr=opt_lr,
                steps=int(horizon / opt_lr),
            )
            found, true_found = _support(result.x_final, x_star)
            rows.append(
                dict(
                    optimizer=optimizer,
                    lr=opt_lr,
                    schedule=name,
                    error=float(jnp.linalg.norm(result.x_final - x_star)),
                    support=found,
                    true_support=true_found,
                    loss=float(result.loss),
                )
            )
    return trajectories, rows


def _first_order(horizon):
    """|GD(T) - flow(T)| against lr with the switch-off schedule, and its log-log slope."""
    problem, pair, w0, _ = _demo()
    schedule = jm.SwitchOff(ALPHA, T_OFF)
    flow_end = _flow(problem, pair, schedule, w0, horizon).x_final
    lrs = np.array([0.1, 0.05, 0.025, 0.0125])
    gaps = []
    for step in lrs:
        n = int(round(horizon / step))
        x = jm.train(
            problem, pair, schedule, w0, lr=step, steps=n, save_every=n
        ).x_final
        gaps.append(float(jnp.linalg.norm(x - flow_end)))
    return lrs, gaps, float(np.polyfit(np.log(lrs), np.log(gaps), 1)[0])


def _finite_step_predictions(lr, long_steps):
    """The flow's and the exact discrete predictions against a long run at `lr`."""
    problem, pair, w0, _ = _demo()
    schedule = jm.SwitchOff(ALPHA, T_OFF)
    gd_end = jm.train(
        problem, pair, schedule, w0, lr=lr, steps=long_steps, save_every=long_steps
    ).x_final
    flow_limit = jm.implicit_bias(problem, pair, schedule, w0)
    predictions = {"flow (implicit_bias)": float(jnp.linalg.norm(gd_end - flow_limit))}
    for gain_steps in (0, long_steps // 1000, long_steps // 100):
        x = jm.discrete_implicit_bias(
            problem, pair, schedule, w0, lr=lr, steps=long_steps, gain_steps=gain_steps
        )
        predictions[f"discrete, gains of first {gain_steps} steps"] = float(
            jnp.linalg.norm(gd_end - x)
        )
    return predictions


def run(horizon: float = 300.0, lr: float = 0.05):
    trajectories, rows = _trajectories_and_table(horizon, lr)
    lrs, gaps, slope = _first_order(horizon)
    long_steps = int(30_000 / lr)
    return dict(
        trajectories=trajectories,
        rows=rows,
        lrs=lrs,
        gaps=gaps,
        slope=slope,
        predictions=_finite_step_predictions(lr, long_steps),
        x_star=_demo()[3],
        lr=lr,
        long_steps=long_steps,
    )


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    support = np.flatnonzero(results["x_star"])
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2), constrained_layout=True)
    for ax, (name, (ts, gd, flow)) in zip(axes, results["trajectories"].items()):
        for i, j in enumerate(support):
            ax.plot(ts, flow[:, j], color=f"C{i}", lw=2.5, alpha=0.4)
            ax.plot(ts, gd[:, j], color=f"C{i}", lw=1, ls="--")
        ax.plot([], [], color="k", lw=2.5, alpha=0.4, label="flow (solve)")
        ax.plot([], [], color="k", lw=1, ls="--", label=f"GD, lr={results['lr']}")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(0, ts[-1])
        ax.set_xlabel("time t = step x lr")
        ax.set_ylabel("x_i(t), support coordinates")
        ax.set_title(f"weight decay: {name}", fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[3]
    ax.loglog(
        results["lrs"], results["gaps"], "o-", label=f"slope {results['slope']:.2f}"
    )
    ax.set_xlabel("learning rate")
    ax.set_ylabel("|x_GD(T) - x_flow(T)|")
    ax.set_title("first-order convergence (switch-off)", fontsize=10)
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    jax.config.update("jax_enable_x64", True)  # an entry point: reference checks
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/figures")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run()
    print(
        "Endpoints at T = 300 on the demo problem (n=100, d=40, 5-sparse; support = "
        "#|x_i| > 1e-2, true = how many of those are in the truth's support)"
    )
    print("| optimizer | lr | schedule | error | support | true | loss |")
    print("|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        print(
            f"| {r['optimizer']} | {r['lr']} | {r['schedule']} | {r['error']:.4f} | "
            f"{r['support']} | {r['true_support']} | {r['loss']:.1e} |"
        )
    print()
    print(
        "GD(T) vs flow(T), switch-off: lr "
        + ", ".join(f"{v:g}" for v in results["lrs"])
        + " -> "
        + ", ".join(f"{g:.2e}" for g in results["gaps"])
        + f"; log-log slope {results['slope']:.3f}"
    )
    print()
    print(
        f"Distance of the GD endpoint (lr={results['lr']}, {results['long_steps']} steps) "
        "to each prediction:"
    )
    for name, value in results["predictions"].items():
        print(f"- {name}: {value:.2e}")
    plot(results, out / "flow_vs_gd.png")
    print(f"\nfigure: {out / 'flow_vs_gd.png'}")


if __name__ == "__main__":
    main()
