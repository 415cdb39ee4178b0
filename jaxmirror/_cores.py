"""Every CPU core for sweeps: one JAX device per core.

On a CPU, JAX runs a program on one device; `jm.sweep` shards its chunks over all
devices, so splitting the CPU into one device per core lets a sweep run one shard per
core. JAX fixes its devices when it first computes anything, so this must happen right
after import, in the first cell of a notebook:

    import jaxmirror as jm
    jm.use_all_cores()

Measured on a 2-core machine (`benchmarks/RESULTS.md`), it does not pay there: XLA
already spreads one device's work over both cores, a K = 512 sweep takes the same time
(4.9 s against 5.0 s), and sweeps of small chunks are 5x slower (the devices
synchronise at every step of the shared while loop). So nothing calls it by default;
try it on a machine with many cores and large chunks, and measure.
"""

import os

import jax


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def use_all_cores(count: int | None = None) -> int:
    """Make JAX's CPU platform `count` devices (default: every core this process may
    use), so that `jm.sweep` shards over all of them.

    Does nothing if `XLA_FLAGS` already sets `--xla_force_host_platform_device_count`
    (yours wins). **Raises** a `RuntimeError` if JAX has already computed something:
    the devices are fixed then (restart and call this first).

    **Returns:** the number of CPU devices requested.
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return len(jax.devices("cpu"))
    count = _available_cores() if count is None else int(count)
    if count < 1:
        raise ValueError(f"`count` must be an int >= 1, got {count!r}.")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as error:
        raise RuntimeError(
            "`jm.use_all_cores()` must run before any JAX computation (JAX fixes its "
            "devices then): call it right after `import jaxmirror`, in a fresh process "
            "or kernel."
        ) from error
    return count
