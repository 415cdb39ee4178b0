r"""Memory bounds, checked before anything is allocated.

A size that cannot fit (a chunk of a billion configurations, a configuration file's
`n: 1e9`, a grid of 10^12 points) is refused with one line naming the option and the
estimate, instead of growing until the operating system kills the process or NumPy
raises a `MemoryError` deep inside.

The estimates are deliberately rough (a small multiple of the arrays a computation
holds at once) and the budget is half of the memory available now: they are there to
stop sizes that are wrong by orders of magnitude, not to pack memory tightly.
"""

import os


BUDGET = 0.5  # the share of the available memory one computation may plan to use
_FALLBACK = 8 * 2**30  # where the available memory cannot be read


def available_bytes() -> int:
    """The memory available to this process now (Linux's `MemAvailable`)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return _FALLBACK


def human(nbytes: int | float) -> str:
    """`nbytes` as `1.5 GB` (powers of 1,000)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(nbytes) < 1000 or unit == "PB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    return f"{nbytes:.3g} PB"


def budget_bytes() -> int:
    return int(BUDGET * available_bytes())


def fits(nbytes: int | float) -> bool:
    return nbytes <= budget_bytes()


def check_fits(name: str, nbytes: int | float, what: str, fix: str) -> None:
    """Raise a `ValueError` naming `name` unless `nbytes` fits the budget."""
    if not fits(nbytes):
        raise ValueError(
            f"`{name}`: {what} would take about {human(nbytes)}, more than half of "
            f"the {human(available_bytes())} this machine has available; {fix}."
        )


def sweep_bytes_per_configuration(state: int, n: int, d: int, itemsize: int) -> int:
    r"""What one configuration of a chunk holds at once, about: the solver's stages
    and buffers (32 states), its inputs and results (8 points), and the predictions'
    Newton system ($2d^2$)."""
    return itemsize * (32 * state + 8 * n + 2 * d * d + 64)


def sweep_fixed_bytes(state: int, n: int, itemsize: int, batch: int = 256) -> int:
    r"""What a chunk holds whatever its size: the convergence check's Jacobians,
    `batch` configurations at a time ($n \times$ state each, twice)."""
    return itemsize * 2 * batch * n * state
