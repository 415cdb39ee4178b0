"""Timing helpers shared by the benchmark scripts (diffrax's benchmark conventions)."""

import datetime
import os
import platform
import subprocess
import time
import timeit

import jax
import numpy as np


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return f"{cpu}, {os.cpu_count()} cores; JAX {jax.__version__} on {devices}"


def stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def min_time(fn, repeat: int = 5, number: int = 1) -> float:
    """Minimum wall time of `fn()` over `repeat` runs, blocking on JAX results."""
    return (
        min(
            timeit.repeat(
                lambda: jax.block_until_ready(fn()), repeat=repeat, number=number
            )
        )
        / number
    )


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def spread(total, count):
    """`count` indices spread evenly over `range(total)`, first and last included: a
    sample of a grid that sees all of it (the first rows of a grid share one alpha)."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))


def scipy_loop(Z, y, alphas, t_offs, count, t1, rtol, atol):
    """The Hadamard switch-off flow from m = 1, w = 0 with scipy's RK45, one
    configuration at a time (what a user would write), on `count` configurations
    spread over the grid (`spread`): seconds per configuration, the final x of each,
    and their indices."""
    import scipy.integrate

    n = Z.shape[1]
    y0 = np.concatenate([np.ones(n), np.zeros(n)])
    index = spread(len(alphas), count)
    finals, start = [], time.perf_counter()
    for alpha, t_off in zip(np.asarray(alphas)[index], np.asarray(t_offs)[index]):

        def rhs(t, mw, alpha=alpha, t_off=t_off):
            m, w = mw[:n], mw[n:]
            grad = Z.T @ (Z @ (m * w) - y)
            a = alpha if t < t_off else 0.0
            return np.concatenate([-w * grad - a * m, -m * grad - a * w])

        sol = scipy.integrate.solve_ivp(
            rhs, (0.0, t1), y0, method="RK45", rtol=rtol, atol=atol
        )
        finals.append(sol.y[:n, -1] * sol.y[n:, -1])
    return (time.perf_counter() - start) / len(index), np.array(finals), index
