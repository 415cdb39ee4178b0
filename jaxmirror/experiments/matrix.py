"""Matrix sensing: commuting measurements (theory exact) and Gaussian measurements
(simulated), low-rank recovery under no, constant and switch-off weight decay."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxmirror as jm

from ._common import figure, log, mean_spread, table


SIZES = {
    "tiny": dict(commuting=(8, 5), gaussian=(6, 30), seeds=2, t1=300.0),
    "small": dict(commuting=(20, 12), gaussian=(20, 120), seeds=4, t1=1500.0),
    "full": dict(commuting=(50, 30), gaussian=(40, 400), seeds=10, t1=3000.0),
}
# Strong decay for a while (a_inf = -20), as found on a small tuning grid (alpha in
# {0.05, 0.1, 0.2} x t_off in {100, 300}) with seed 0; the same alpha for "constant".
# Seed 0 is never reported: the reported instances use seeds 100, 101, ...
ALPHA, T_OFF = 0.2, 100.0
REPORTED_SEEDS = 100


def _schedules():
    return {
        "none": jm.Constant(0.0),
        "constant": jm.Constant(ALPHA),
        "switch-off": jm.SwitchOff(ALPHA, T_OFF),
    }


def run(scale: str = "small"):
    cfg = SIZES[scale]
    results = {"scale": scale, "commuting": {}, "gaussian": {}, "traces": {}}
    n, d = cfg["commuting"]
    for key, schedule in _schedules().items():
        errors, gaps = [], []
        for seed in range(REPORTED_SEEDS, REPORTED_SEEDS + cfg["seeds"]):
            problem, X_star, P, _ = jm.datasets.commuting_sensing(
                n=n, d=d, rank=2, seed=seed
            )
            pair = jm.MatrixFactorization((n, n), n)
            w0 = pair.init_aligned(P, scale=1.0)
            predicted = jm.implicit_bias(problem, pair, schedule, w0)
            flow = jm.solve(
                problem,
                pair,
                schedule,
                w0,
                t1=cfg["t1"] * 3,
                formulation=jm.ParameterFormulation(),
                rtol=1e-10,
                atol=1e-12,
                max_steps=10**6,
            ).x_final
            errors.append(
                float(np.linalg.norm(np.asarray(flow).reshape(n, n) - X_star))
            )
            gaps.append(float(jnp.max(jnp.abs(flow - predicted))))
        results["commuting"][key] = (errors, gaps)
        log(f"matrix: commuting {key} done")
    size, measurements = cfg["gaussian"]
    for key, schedule in _schedules().items():
        errors, ranks = [], []
        for seed in range(REPORTED_SEEDS, REPORTED_SEEDS + cfg["seeds"]):
            problem, X_star = jm.datasets.gaussian_sensing(
                n1=size, n2=size, d=measurements, rank=2, seed=seed
            )
            pair = jm.MatrixFactorization((size, size), size)
            w0 = pair.init(scale=0.1, key=jax.random.PRNGKey(seed))
            ts = jnp.linspace(0.0, cfg["t1"], 51)
            sol = jm.solve(
                problem,
                pair,
                schedule,
                w0,
                t1=cfg["t1"],
                saveat=ts,
                formulation=jm.ParameterFormulation(),
                rtol=1e-7,
                atol=1e-9,
                max_steps=10**6,
            )
            X = np.asarray(sol.x_final).reshape(size, size)
            errors.append(float(np.linalg.norm(X - X_star) / np.linalg.norm(X_star)))
            trace = jm.models.spectral_trace(sol.xs, (size, size), threshold=1e-2)
            ranks.append(int(trace.rank[-1]))
            if seed == REPORTED_SEEDS:
                results["traces"][key] = (
                    np.asarray(ts),
                    np.asarray(trace.singular_values),
                )
        results["gaussian"][key] = (errors, ranks)
        log(f"matrix: gaussian {key} done")
    return results


def report(results, out):
    plt = figure()
    cfg = SIZES[results["scale"]]
    rows = []
    for key, (errors, gaps) in results["commuting"].items():
        rows.append(["commuting", key, mean_spread(errors), f"{max(gaps):.1e}", "-"])
    for key, (errors, ranks) in results["gaussian"].items():
        rows.append(
            [
                "gaussian",
                key,
                mean_spread(errors),
                "(no closed form)",
                f"{np.mean(ranks):.1f}",
            ]
        )
    fig, axes = plt.subplots(
        1, 3, figsize=(15, 4), constrained_layout=True, sharey=True
    )
    for ax, (key, (ts, sv)) in zip(axes, results["traces"].items()):
        ax.semilogy(ts, np.maximum(sv[:, :6], 1e-12))
        ax.axvline(T_OFF, color="k", ls=":", lw=0.8)
        ax.set_xlabel("time t")
        ax.set_ylabel("singular values of U V^T")
        ax.set_title(f"Gaussian sensing, weight decay: {key}", fontsize=10)
    path = out / "matrix_singular_values.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    n, d = cfg["commuting"]
    size, m = cfg["gaussian"]
    text = (
        f"## Matrix sensing\n\nCommuting: {n}x{n}, {d} measurements, rank-2 truth, "
        f"aligned init; Gaussian: {size}x{size}, {m} measurements, rank-2 truth, "
        f"random init (scale 0.1). alpha = {ALPHA}, t_off = {T_OFF}; "
        f"{cfg['seeds']} seeds (mean ± std).\n\n"
    )
    text += table(
        [
            "measurements",
            "schedule",
            "error ‖X − X*‖ (relative for gaussian)",
            "max gap flow vs implicit_bias",
            "rank (sv > 1% of max)",
        ],
        rows,
    )
    return text, [path]
