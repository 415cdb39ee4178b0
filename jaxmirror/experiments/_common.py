"""Shared plumbing of the experiments: scales, output, tables, progress."""

import os
import pathlib
import sys
import time

import numpy as np


SCALES = ("tiny", "small", "full")


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"`scale` must be one of {SCALES}, got {scale!r}.")
    return scale


def default_scale() -> str:
    """`full` on an accelerator, else `small`; `JAXMIRROR_SCALE` overrides."""
    import jax

    env = os.environ.get("JAXMIRROR_SCALE")
    if env:
        return check_scale(env)
    return "full" if jax.default_backend() in ("gpu", "tpu") else "small"


def log(message: str) -> None:
    print(
        f"[jaxmirror] {time.strftime('%H:%M:%S')} {message}",
        file=sys.stderr,
        flush=True,
    )


def mean_spread(values) -> str:
    values = np.asarray(values, dtype=float)
    if values.size == 1:
        return f"{values[0]:.3g}"
    return f"{values.mean():.3g} ± {values.std(ddof=1):.2g}"


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def output_dir(out) -> pathlib.Path:
    path = pathlib.Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: pathlib.Path) -> pathlib.Path:
    """Write `fig` to `path` (PNG, 110 dpi), close it, and return the path."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
