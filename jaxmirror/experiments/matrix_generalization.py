r"""Matrix sensing, measured as the paper claims it: Gaussian measurements, held-out
error on a fresh sample of the task, settings chosen on tuning seeds only, paired
differences with 95% intervals on other seeds.

For each seed, a rank-`rank` truth $X^* \in \mathbb{R}^{n\times n}$, `d` Gaussian
measurements for training (at least the truth's $2rn - r^2$ degrees of freedom, fewer
than its $n^2$ entries: the flow interpolates, and the truth can be recovered) and
`test_rows` fresh measurements of the same distribution for the held-out error. The
factorization $X = UV^\top$ (`jm.MatrixFactorization`, full width) starts from a random
initialisation at scale 0.1 and runs the parameter flow to `t1` (no closed form without
commuting measurements), one `jm.sweep` per seed over every candidate:

- never: no weight decay;
- always: constant $\alpha$ from `ALWAYS_ALPHAS`;
- switch-off: $\alpha = 0.2$ until $t_{\text{off}} = -a_\infty/0.2$, $a_\infty$ from
  `SWITCH_OFF_A`.

Settings are chosen by the mean held-out error over the tuning seeds; reported: held-out
MSE, relative error, rank (singular values above 1% of the largest), recovery (relative
error below 5%, Wilson intervals) and the per-seed differences switch-off minus never
and minus always (paired Student-t intervals).
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxmirror as jm

from ._common import figure, log, save_figure, table
from ._held_out import choose, summary_row
from ._statistics import paired_interval, verdict


ALWAYS_ALPHAS = (0.001, 0.003, 0.01, 0.03, 0.1)
SWITCH_OFF_A = (-5.0, -10.0, -20.0, -40.0, -80.0)
SWITCH_OFF_ALPHA = 0.2
INIT_SCALE = 0.1
REPORTED_SEED = 1000

SIZES = {
    "tiny": dict(n=5, d=20, rank=1, test_rows=50, tuning_seeds=2, seeds=3, t1=200.0),
    "small": dict(
        n=10, d=60, rank=2, test_rows=200, tuning_seeds=8, seeds=32, t1=1000.0
    ),
    "full": dict(
        n=20, d=120, rank=2, test_rows=400, tuning_seeds=16, seeds=64, t1=1500.0
    ),
}


def _candidates():
    """(kind, setting, alpha, t_off); "always" is a switch-off that never comes."""
    yield "never", "-", 0.0, 1.0
    for alpha in ALWAYS_ALPHAS:
        yield "always", f"alpha={alpha:g}", alpha, 1e30
    for a in SWITCH_OFF_A:
        yield "switch-off", f"a_inf={a:g}", SWITCH_OFF_ALPHA, -a / SWITCH_OFF_ALPHA


def _task(cfg, seed):
    """Training problem, truth and held-out measurement operators of one seed."""
    n = cfg["n"]
    problem, truth = jm.datasets.gaussian_sensing(
        n1=n, n2=n, d=cfg["d"], rank=cfg["rank"], seed=seed
    )
    rng = np.random.default_rng([seed, 1])  # a stream of its own: the fresh sample
    held_out = rng.standard_normal((cfg["test_rows"], n * n)) / np.sqrt(cfg["d"])
    return problem, np.asarray(truth).reshape(-1), held_out


def _measures(cfg, seeds):
    """Held-out MSE, relative error and rank per candidate (rows) and seed (columns)."""
    candidates = list(_candidates())
    alphas = np.array([c[2] for c in candidates])
    t_offs = np.array([c[3] for c in candidates])
    n = cfg["n"]
    pair = jm.MatrixFactorization((n, n), n)
    shape = (len(candidates), len(seeds))
    held, relative, rank = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for j, seed in enumerate(seeds):
        problem, truth, test = _task(cfg, seed)
        w0 = pair.init(scale=INIT_SCALE, key=jax.random.PRNGKey(seed))
        batch_w0 = jax.tree_util.tree_map(
            lambda leaf: jnp.broadcast_to(leaf, (len(candidates),) + leaf.shape), w0
        )
        flows = jm.sweep(
            problem,
            pair,
            jm.SwitchOff(alphas, t_offs),
            batch_w0,
            cfg["t1"],
            formulation="parameter",
            rtol=1e-7,
            atol=1e-9,
            max_steps=10**6,
            predict=False,
            progress=False,
        )
        if not np.all(flows.status.values == jm.Status.SUCCESS):
            raise RuntimeError(f"matrix generalization: a flow of seed {seed} failed")
        xs = np.asarray(flows.x_final.values)
        errors = xs - truth[None, :]
        held[:, j] = np.mean((errors @ test.T) ** 2, axis=1)
        relative[:, j] = np.linalg.norm(errors, axis=1) / np.linalg.norm(truth)
        values = np.linalg.svd(xs.reshape(-1, n, n), compute_uv=False)
        rank[:, j] = np.sum(values > 1e-2 * values[:, :1], axis=1)
    return candidates, held, relative, rank


def run(scale: str = "small"):
    cfg = SIZES[scale]
    tuning = list(range(cfg["tuning_seeds"]))
    reported = list(range(REPORTED_SEED, REPORTED_SEED + cfg["seeds"]))
    candidates, tune_held, _, _ = _measures(cfg, tuning)
    log("matrix generalization: tuning seeds done")
    _, held, relative, rank = _measures(cfg, reported)
    chosen = choose(candidates, tune_held)
    return {
        "scale": scale,
        "cfg": cfg,
        "tuning": tuning,
        "reported": reported,
        "schedules": {
            kind: dict(
                setting=setting,
                held_out=held[i],
                relative_error=relative[i],
                rank=rank[i],
            )
            for kind, (i, setting) in chosen.items()
        },
    }


def report(results, out):
    cfg, seeds = results["cfg"], len(results["reported"])
    n, rank = cfg["n"], cfg["rank"]
    text = (
        "## Matrix sensing: held-out error after switching weight decay off\n\n"
        f"Gaussian measurements, {n} x {n} truth of rank {rank} "
        f"({2 * rank * n - rank**2} degrees of freedom), d = {cfg['d']} training "
        f"measurements, held-out error on {cfg['test_rows']} fresh measurements of "
        f"the same distribution; X = U V^T of full width from scale {INIT_SCALE:g}, "
        f"the parameter flow to T = {cfg['t1']:g}. Settings chosen on tuning seeds "
        f"{results['tuning'][0]}..{results['tuning'][-1]}, reported on {seeds} other "
        f"seeds ({results['reported'][0]}..{results['reported'][-1]}). Intervals: 95% "
        "(paired Student-t for differences, Wilson for recovery).\n\n"
    )
    rows = [summary_row(k, r, seeds) for k, r in results["schedules"].items()]
    text += table(
        ["schedule", "setting", "held-out MSE", "relative error", "rank", "recovered"],
        rows,
    )
    s = results["schedules"]
    never = paired_interval(s["switch-off"]["held_out"], s["never"]["held_out"])
    always = paired_interval(s["switch-off"]["held_out"], s["always"]["held_out"])
    results["verdict"] = verdict(never, always)
    text += "\n\n### Switch-off minus the others (held-out MSE, per seed)\n\n"
    text += table(
        ["switch-off − never", "switch-off − always", "verdict"],
        [[str(never), str(always), results["verdict"]]],
    )
    return text, [_plot(never, always, out)]


def _plot(never, always, out):
    plt = figure()
    fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
    intervals = (never, always)
    estimate = np.array([i.estimate for i in intervals])
    spread = np.array(
        [
            [i.estimate - i.low for i in intervals],
            [i.high - i.estimate for i in intervals],
        ]
    )
    ax.errorbar(range(2), estimate, yerr=spread, fmt="o", capsize=4)
    ax.axhline(0.0, color="k", lw=0.8, ls=":")
    ax.set_xticks(range(2), ["switch-off − never", "switch-off − always"])
    ax.set_ylabel("held-out MSE difference (95%)")
    ax.set_title("matrix sensing (Gaussian)", fontsize=10)
    return save_figure(fig, out / "matrix_generalization_intervals.png")
