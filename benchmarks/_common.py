"""Timing helpers shared by the benchmark scripts (diffrax's benchmark conventions)."""

import datetime
import os
import platform
import subprocess
import timeit

import jax


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
