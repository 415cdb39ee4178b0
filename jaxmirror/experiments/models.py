"""Attention and LoRA: rank of the factor product and held-out loss over training, for
no, constant and switch-off weight decay, several seeds."""

import numpy as np

import jaxmirror as jm
from jaxmirror.models import attention_task, lora_task, spectral_trace

from ._common import figure, log, mean_spread, table


SIZES = {
    "tiny": dict(steps=1500, seeds=2, embedding=6, lora=(8, 6)),
    "small": dict(steps=8000, seeds=3, embedding=8, lora=(12, 10)),
    "full": dict(steps=40000, seeds=10, embedding=16, lora=(32, 24)),
}
ALPHA, LR = 0.01, 0.05
OFF_FRACTION = 0.25  # weight decay is switched off after a quarter of training


def _task(name, cfg, seed):
    if name == "attention":
        e = cfg["embedding"]
        problem, pair, w0, _, held = attention_task(embedding=e, rank=e, seed=seed)
    else:
        inputs, outputs = cfg["lora"]
        problem, pair, w0, _, _, held = lora_task(
            inputs=inputs, outputs=outputs, rank=min(inputs, outputs), seed=seed
        )
    return problem, pair, w0, held


def run(scale: str = "small", names=("attention", "lora")):
    cfg = SIZES[scale]
    t_off = OFF_FRACTION * cfg["steps"] * LR
    schedules = {
        "none": jm.Constant(0.0),
        "constant": jm.Constant(ALPHA),
        "switch-off": jm.SwitchOff(ALPHA, t_off),
    }
    results = {"scale": scale, "t_off": t_off}
    for name in names:
        per = {}
        for key, schedule in schedules.items():
            held_losses, ranks, nuclear, curves = [], [], [], None
            for seed in range(cfg["seeds"]):
                problem, pair, w0, held = _task(name, cfg, seed)
                run = jm.train(
                    problem,
                    pair,
                    schedule,
                    w0,
                    lr=LR,
                    steps=cfg["steps"],
                    save_every=cfg["steps"] // 50,
                )
                trace = spectral_trace(run.xs, pair.shape, threshold=1e-2)
                held_losses.append(float(held.loss(run.x_final)))
                ranks.append(int(trace.rank[-1]))
                nuclear.append(float(trace.nuclear_norm[-1]))
                if seed == 0:
                    losses = [float(held.loss(x)) for x in run.xs]
                    curves = (
                        np.asarray(run.ts),
                        np.asarray(losses),
                        np.asarray(trace.rank),
                    )
            per[key] = dict(
                held=held_losses, rank=ranks, nuclear=nuclear, curves=curves
            )
            log(f"models: {name} {key} done")
        results[name] = per
    return results


def report(results, out):
    plt = figure()
    text, paths = "", []
    for name in ("attention", "lora"):
        if name not in results:
            continue
        per = results[name]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
        rows = []
        for key, r in per.items():
            ts, losses, ranks = r["curves"]
            ax1.semilogy(ts, losses, label=key)
            ax2.plot(ts, ranks, label=key)
            rows.append(
                [
                    key,
                    mean_spread(r["held"]),
                    mean_spread(r["rank"]),
                    mean_spread(r["nuclear"]),
                ]
            )
        for ax in (ax1, ax2):
            ax.axvline(results["t_off"], color="k", ls=":", lw=0.8)
            ax.set_xlabel("time t = step x lr")
            ax.legend()
        ax1.set_ylabel("held-out loss")
        ax2.set_ylabel("rank of the product (sv > 1% of max)")
        ax1.set_title(f"{name}: held-out loss", fontsize=10)
        ax2.set_title(f"{name}: rank", fontsize=10)
        path = out / f"{name}_training.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
        text += (
            f"## {name.capitalize()}\n\nSGD lr={LR}, alpha={ALPHA}, t_off={results['t_off']:g}, target "
            "rank 2; mean ± std over seeds.\n\n"
        )
        text += table(["schedule", "held-out loss", "final rank", "nuclear norm"], rows)
        text += "\n\n"
    return text.strip(), paths
