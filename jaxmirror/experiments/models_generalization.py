r"""Attention and LoRA, measured as the paper claims it: held-out loss on fresh data of
the same task, settings chosen on tuning seeds only, paired differences with 95%
intervals on other seeds, and tasks whose low-rank truth can be recovered.

Each task has at least as many equations as its rank-2 truth has degrees of freedom
($2(n_1 + n_2) - 4$), and fewer than the matrix has entries, so that the data do not
decide the answer alone and the implicit bias does:

- attention: scores $E X E^\top$ of a $6\times 6$ matrix (36 entries, truth of rank 2:
  20 degrees of freedom), `sequences` sequences of `length` tokens (each token gives
  6 nonlinear equations);
- LoRA: an adapter $\Delta \in \mathbb{R}^{6\times 8}$ on a frozen layer (48 entries,
  rank-2 truth: 24 degrees of freedom), `samples` input-output pairs (6 equations
  each).

Gradient descent (`jm.train`, SGD with coupled weight decay, one `jax.vmap` over the
candidates of a seed) from factors at scale 1:

- never: no weight decay;
- always: constant $\alpha$ from `ALWAYS_ALPHAS`;
- switch-off: $\alpha = 0.05$ until a fraction of the run from `OFF_FRACTIONS`.

Reported: held-out loss, relative error $\|X - X^*\|/\|X^*\|$, rank (singular values
above 1% of the largest), recovery (relative error below 5%, Wilson intervals), and the
per-seed differences switch-off minus never and minus always (paired Student-t).
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxmirror as jm
from jaxmirror.models import attention_task, lora_task

from ._common import figure, log, save_figure, table
from ._held_out import choose, summary_row
from ._statistics import paired_interval, verdict


ALWAYS_ALPHAS = (0.003, 0.01, 0.03, 0.1)
OFF_FRACTIONS = (0.1, 0.25, 0.5, 0.75)
SWITCH_OFF_ALPHA = 0.05
INIT_SCALE = 1.0
LEARNING_RATES = {"attention": 0.05, "lora": 0.02}
REPORTED_SEED = 1000

SIZES = {
    "tiny": dict(
        steps={"attention": 600, "lora": 600},
        tuning_seeds=2,
        seeds=3,
        sequences=2,
        length=2,
        samples=6,
    ),
    "small": dict(
        steps={"attention": 20000, "lora": 30000},
        tuning_seeds=8,
        seeds=32,
        sequences=2,
        length=2,
        samples=6,
    ),
    "full": dict(
        steps={"attention": 80000, "lora": 120000},
        tuning_seeds=16,
        seeds=64,
        sequences=2,
        length=2,
        samples=6,
    ),
}


def _task(name, cfg, seed):
    """Training problem, pair, initialisation, truth (flattened) and held-out problem."""
    if name == "attention":
        problem, pair, w0, truth, held = attention_task(
            embedding=6,
            rank=6,
            seed=seed,
            init_scale=INIT_SCALE,
            sequences=cfg["sequences"],
            length=cfg["length"],
        )
    else:
        problem, pair, w0, _, truth, held = lora_task(
            inputs=8,
            outputs=6,
            rank=6,
            seed=seed,
            init_scale=INIT_SCALE,
            samples=cfg["samples"],
        )
    return problem, pair, w0, np.asarray(truth).reshape(-1), held


def _candidates(horizon):
    yield "never", "-", 0.0, 1.0
    for alpha in ALWAYS_ALPHAS:
        yield "always", f"alpha={alpha:g}", alpha, 1e30
    for fraction in OFF_FRACTIONS:
        yield (
            "switch-off",
            f"t_off={fraction:g} T",
            SWITCH_OFF_ALPHA,
            fraction * horizon,
        )


def _measures(name, cfg, seeds):
    """Held-out loss, relative error and rank per candidate (rows) and seed (columns)."""
    lr, steps = LEARNING_RATES[name], cfg["steps"][name]
    candidates = list(_candidates(steps * lr))
    schedules = jm.SwitchOff(
        np.array([c[2] for c in candidates]), np.array([c[3] for c in candidates])
    )
    shape = (len(candidates), len(seeds))
    held, relative, rank = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for j, seed in enumerate(seeds):
        problem, pair, w0, truth, held_problem = _task(name, cfg, seed)

        def final(schedule, problem=problem, pair=pair, w0=w0):
            return jm.train(
                problem,
                pair,
                schedule,
                w0,
                lr=lr,
                steps=steps,
                save_every=steps,
            ).x_final

        xs = np.asarray(jax.vmap(final)(schedules))
        if not np.all(np.isfinite(xs)):
            raise RuntimeError(f"models generalization: {name}, seed {seed} diverged")
        held[:, j] = [float(held_problem.loss(jnp.asarray(x))) for x in xs]
        relative[:, j] = np.linalg.norm(xs - truth, axis=1) / np.linalg.norm(truth)
        values = np.linalg.svd(xs.reshape((len(xs),) + pair.shape), compute_uv=False)
        rank[:, j] = np.sum(values > 1e-2 * values[:, :1], axis=1)
    return candidates, held, relative, rank


def run(scale: str = "small", names=("attention", "lora")):
    cfg = SIZES[scale]
    tuning = list(range(cfg["tuning_seeds"]))
    reported = list(range(REPORTED_SEED, REPORTED_SEED + cfg["seeds"]))
    results = {"scale": scale, "cfg": cfg, "tuning": tuning, "reported": reported}
    for name in names:
        candidates, tune_held, _, _ = _measures(name, cfg, tuning)
        _, held, relative, rank = _measures(name, cfg, reported)
        chosen = choose(candidates, tune_held)
        results[name] = {
            kind: dict(
                setting=setting,
                held_out=held[i],
                relative_error=relative[i],
                rank=rank[i],
            )
            for kind, (i, setting) in chosen.items()
        }
        log(f"models generalization: {name} done")
    return results


def _task_line(name, cfg):
    if name == "attention":
        equations = cfg["sequences"] * cfg["length"] * 6
        return f"attention, 6 x 6 scores, {equations} equations, 20 degrees of freedom, 36 entries"
    return f"LoRA, 6 x 8 adapter, {cfg['samples'] * 6} equations, 24 degrees of freedom, 48 entries"


def report(results, out):
    cfg, seeds = results["cfg"], len(results["reported"])
    text = (
        "## Attention and LoRA: held-out loss after switching weight decay off\n\n"
        f"Gradient descent (attention: {cfg['steps']['attention']} steps at learning "
        f"rate {LEARNING_RATES['attention']:g}; LoRA: {cfg['steps']['lora']} at "
        f"{LEARNING_RATES['lora']:g}) from factors at scale "
        f"{INIT_SCALE:g}; settings chosen on tuning seeds "
        f"{results['tuning'][0]}..{results['tuning'][-1]}, reported on {seeds} other "
        f"seeds ({results['reported'][0]}..{results['reported'][-1]}). Intervals: 95% "
        "(paired Student-t for differences, Wilson for recovery).\n\n"
    )
    verdicts = {}
    for name in ("attention", "lora"):
        if name not in results:
            continue
        text += f"### {_task_line(name, cfg)}\n\n"
        rows = [summary_row(k, r, seeds) for k, r in results[name].items()]
        text += table(
            [
                "schedule",
                "setting",
                "held-out loss",
                "relative error",
                "rank",
                "recovered",
            ],
            rows,
        )
        text += "\n\n"
        r = results[name]
        never = paired_interval(r["switch-off"]["held_out"], r["never"]["held_out"])
        always = paired_interval(r["switch-off"]["held_out"], r["always"]["held_out"])
        verdicts[name] = (never, always, verdict(never, always))
    text += "### Switch-off minus the others (held-out loss, per seed)\n\n"
    text += table(
        ["task", "switch-off − never", "switch-off − always", "verdict"],
        [[name, str(a), str(b), v] for name, (a, b, v) in verdicts.items()],
    )
    results["verdicts"] = {name: v for name, (_, _, v) in verdicts.items()}
    return text, [_plot(verdicts, out)]


def _plot(verdicts, out):
    plt = figure()
    fig, ax = plt.subplots(figsize=(6, 3.2), constrained_layout=True)
    labels, estimate, spread = [], [], [[], []]
    for name, (never, always, _) in verdicts.items():
        for label, interval in (("− never", never), ("− always", always)):
            labels.append(f"{name}\n{label}")
            estimate.append(interval.estimate)
            spread[0].append(interval.estimate - interval.low)
            spread[1].append(interval.high - interval.estimate)
    ax.errorbar(range(len(labels)), estimate, yerr=np.array(spread), fmt="o", capsize=4)
    ax.axhline(0.0, color="k", lw=0.8, ls=":")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("held-out loss difference (95%)")
    ax.set_title("switch-off minus the others", fontsize=10)
    return save_figure(fig, out / "models_generalization_intervals.png")
