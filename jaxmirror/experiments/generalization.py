r"""Does switching weight decay off generalize better? Sparse regression, measured as
the paper claims it: held-out error on a fresh sample of the task, settings chosen on
tuning seeds only, paired differences with 95% intervals on other seeds.

For each pair (`Hadamard`, `DiffSquares`) and each seed, a sparse truth $x^*$, a
training design Z (d rows) and a held-out design (`test_rows` fresh rows of the same
distribution, same truth). Three schedules, each judged at two horizons, its limit
(`jm.implicit_bias`, which equals the flow's endpoint to 1e-6 in the tests) and the
flow at a finite time T (`jm.sweep`), since a small constant alpha reaches its limit
only after a time of order 1/alpha:

- never: no weight decay;
- always: constant $\alpha$, chosen from `ALWAYS_ALPHAS`;
- switch-off: $\alpha = 0.1$ until $t_{\text{off}} = -a_\infty/0.1$, $a_\infty$ chosen
  from `SWITCH_OFF_A`.

$\alpha$ and $a_\infty$ are chosen by the mean held-out error over the tuning seeds
(`0 .. tuning_seeds - 1`); the reported seeds start at `REPORTED_SEED` and are
disjoint from them. Reported: held-out mean squared error, recovery (relative error
below 5%, with Wilson intervals), and the per-seed differences switch-off minus never
and minus always, with Student-t intervals (`_statistics`).
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxmirror as jm

from ._common import figure, log, save_figure, table
from ._held_out import choose, summary_row
from ._statistics import paired_interval, verdict


ALWAYS_ALPHAS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
SWITCH_OFF_A = (-1.0, -2.0, -4.0, -6.0, -8.0, -10.0)
SWITCH_OFF_ALPHA = 0.1
REPORTED_SEED = 1000
PAIRS = {"Hadamard": jm.Hadamard, "DiffSquares": jm.DiffSquares}

SIZES = {
    "tiny": dict(
        n=40, d=16, sparsity=3, test_rows=100, tuning_seeds=2, seeds=4, horizon=50.0
    ),
    "small": dict(
        n=100, d=30, sparsity=5, test_rows=200, tuning_seeds=8, seeds=32, horizon=200.0
    ),
    "full": dict(
        n=200, d=60, sparsity=8, test_rows=400, tuning_seeds=16, seeds=64, horizon=400.0
    ),
}


def _schedules():
    """Every candidate: (schedule name, setting, alpha, t_off). "always" is a switch-off
    at t_off = inf, "never" one at alpha = 0, so that every candidate of a seed runs in
    one sweep."""
    yield "never", "-", 0.0, 1.0
    for alpha in ALWAYS_ALPHAS:
        yield "always", f"alpha={alpha:g}", alpha, np.inf
    for a in SWITCH_OFF_A:
        yield "switch-off", f"a_inf={a:g}", SWITCH_OFF_ALPHA, -a / SWITCH_OFF_ALPHA


def _task(cfg, seed):
    """Training problem, truth and held-out design of one seed."""
    problem, truth = jm.datasets.sparse_regression(
        n=cfg["n"], d=cfg["d"], sparsity=cfg["sparsity"], seed=seed
    )
    rng = np.random.default_rng([seed, 1])  # a stream of its own: the fresh sample
    held_out = rng.standard_normal((cfg["test_rows"], cfg["n"])) / np.sqrt(cfg["d"])
    return problem, truth, held_out


def _errors(cfg, pair, seeds):
    """Held-out MSE and relative error per horizon ("limit", "T = ..."), candidate
    (rows) and seed (columns)."""
    candidates = list(_schedules())
    alphas = np.array([c[2] for c in candidates])
    t_offs = np.array([c[3] for c in candidates])
    horizon = f"T = {cfg['horizon']:g}"
    held = {h: np.zeros((len(candidates), len(seeds))) for h in ("limit", horizon)}
    relative = {h: np.zeros_like(v) for h, v in held.items()}
    w0 = pair.init(jnp.zeros(cfg["n"]), 1.0)
    batch_w0 = jax.tree_util.tree_map(
        lambda leaf: jnp.broadcast_to(leaf, (len(candidates),) + leaf.shape), w0
    )
    for j, seed in enumerate(seeds):
        problem, truth, test = _task(cfg, seed)
        flows = jm.sweep(
            problem,
            pair,
            jm.SwitchOff(alphas, np.minimum(t_offs, 1e30)),
            batch_w0,
            cfg["horizon"],
            predict=False,
            progress=False,
        )
        if not np.all(flows.status.values == jm.Status.SUCCESS):
            raise RuntimeError(f"generalization: a flow of seed {seed} did not finish")
        ends = {horizon: np.asarray(flows.x_final.values)}
        ends["limit"] = np.stack(
            [
                np.asarray(jm.implicit_bias(problem, pair, jm.SwitchOff(a, t), w0))
                if np.isfinite(t)
                else np.asarray(jm.implicit_bias(problem, pair, jm.Constant(a), w0))
                for a, t in zip(alphas, t_offs)
            ]
        )
        for h, xs in ends.items():
            errors = xs - truth[None, :]
            held[h][:, j] = np.mean((errors @ test.T) ** 2, axis=1)
            relative[h][:, j] = np.linalg.norm(errors, axis=1) / np.linalg.norm(truth)
    return candidates, held, relative


def run(scale: str = "small"):
    cfg = SIZES[scale]
    tuning = list(range(cfg["tuning_seeds"]))
    reported = list(range(REPORTED_SEED, REPORTED_SEED + cfg["seeds"]))
    results = {"scale": scale, "cfg": cfg, "tuning": tuning, "reported": reported}
    for name, make in PAIRS.items():
        pair = make()
        candidates, tune_held, _ = _errors(cfg, pair, tuning)
        _, held, relative = _errors(cfg, pair, reported)
        results[name] = {}
        for horizon in held:  # settings chosen per horizon, on the tuning seeds
            chosen = choose(candidates, tune_held[horizon])
            results[name][horizon] = {
                kind: dict(
                    setting=setting,
                    held_out=held[horizon][i],
                    relative_error=relative[horizon][i],
                )
                for kind, (i, setting) in chosen.items()
            }
        log(f"generalization: {name} done")
    return results


def report(results, out):
    seeds, cfg = len(results["reported"]), results["cfg"]
    text = (
        "## Generalization: held-out error after switching weight decay off\n\n"
        f"Sparse regression, n = {cfg['n']}, d = {cfg['d']}, {cfg['sparsity']}-sparse "
        f"truth, noiseless, held-out error on {cfg['test_rows']} fresh rows of the same "
        "distribution. Each schedule is judged at two horizons: its limit "
        "(`implicit_bias`, t -> inf) and the flow at "
        f"T = {cfg['horizon']:g} (`jm.sweep`), settings chosen per horizon on tuning "
        f"seeds {results['tuning'][0]}..{results['tuning'][-1]} and reported on "
        f"{seeds} other seeds ({results['reported'][0]}..{results['reported'][-1]}). "
        "Intervals: 95% (paired Student-t for differences, Wilson for recovery).\n\n"
    )
    verdicts = {}
    for name in PAIRS:
        for horizon, r in results[name].items():
            text += f"### {name}, {horizon}\n\n"
            rows = [summary_row(k, v, seeds) for k, v in r.items()]
            text += table(
                ["schedule", "setting", "held-out MSE", "relative error", "recovered"],
                rows,
            )
            text += "\n\n"
            never = paired_interval(r["switch-off"]["held_out"], r["never"]["held_out"])
            always = paired_interval(
                r["switch-off"]["held_out"], r["always"]["held_out"]
            )
            verdicts[name, horizon] = (never, always, verdict(never, always))
    text += "### Switch-off minus the others (held-out MSE, per seed)\n\n"
    text += table(
        ["pair", "horizon", "switch-off − never", "switch-off − always", "verdict"],
        [[n, h, str(a), str(b), v] for (n, h), (a, b, v) in verdicts.items()],
    )
    results["verdicts"] = {key: v for key, (_, _, v) in verdicts.items()}
    return text, [_plot(verdicts, out)]


def _plot(verdicts, out):
    """The paired differences with their intervals: below 0, switch-off is better."""
    plt = figure()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), constrained_layout=True)
    labels = [f"{name}\n{horizon}" for name, horizon in verdicts]
    for ax, k, title in zip(
        axes, (0, 1), ("switch-off − never", "switch-off − always")
    ):
        intervals = [v[k] for v in verdicts.values()]
        estimate = np.array([i.estimate for i in intervals])
        spread = np.array(
            [
                [i.estimate - i.low for i in intervals],
                [i.high - i.estimate for i in intervals],
            ]
        )
        ax.errorbar(range(len(labels)), estimate, yerr=spread, fmt="o", capsize=4)
        ax.axhline(0.0, color="k", lw=0.8, ls=":")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel("held-out MSE difference (95%)")
        ax.set_title(title, fontsize=10)
    return save_figure(fig, out / "generalization_intervals.png")
