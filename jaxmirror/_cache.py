"""The persistent compilation cache: compile each program once, reuse it in every process.

A sweep's chunk, a solve or a prediction compiles in seconds, often longer than it runs.
JAX can keep compiled programs on disk and load them in later processes.
`jm.enable_compilation_cache()` turns that on, in a cache directory of jaxmirror's own:

- `$JAXMIRROR_CACHE_DIR` if set, else `$XDG_CACHE_HOME/jaxmirror/xla` (by default
  `~/.cache/jaxmirror/xla`);
- `JAXMIRROR_CACHE_DIR=off` leaves the cache off;
- if you configured JAX's own cache (`jax_compilation_cache_dir`), jaxmirror keeps yours.

`import jaxmirror` changes no JAX setting: a library that switched on a process-wide
cache would decide for every other library in the process. The entry points call it
(the `jaxmirror` command, `python -m jaxmirror.demo`, the benchmarks, the test suite,
the notebooks' first cell); in your own scripts and notebooks, call it once after
import. It changes no result: a cached program is the program that would be
compiled. Every program is stored, the small eager ones too (together they take
seconds to compile, milliseconds to load). With the cache on, the programs of
`jm.sweep`, `jm.solve` and `jm.implicit_bias` are also kept traced, so that a new
process need not trace them again (`_programs.py`).

**Not before jaxlib 0.6.1.** jaxlib 0.5.3 and 0.6.0 load some cached CPU programs
wrongly: a `jm.solve` loaded from the cache returned after 0 steps with `MAX_STEPS`
(the same solve compiled afresh: 3,657 steps, success). 0.6.1, 0.6.2, 0.7.2, 0.9.2
and 0.10.2 load it right (checked by hand, 2026-11-30). On older jaxlib jaxmirror
leaves the cache off, and warns if one is configured.
"""

import os
import pathlib
import re
import warnings

import jax


# Every program, however small: a process makes dozens of small eager programs (input
# checks, coordinates) that compile in 0.01-0.06 s each, seconds in all, and load from
# disk in about a millisecond.
MIN_COMPILE_SECONDS = 0.0
FIRST_SAFE_JAXLIB = (0, 6, 1)  # see the module docstring


def cache_is_safe(version: str | None = None) -> bool:
    """Whether this jaxlib (or `version`) loads cached programs correctly."""
    if version is None:
        import jaxlib

        version = jaxlib.__version__
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    return numbers >= FIRST_SAFE_JAXLIB


_UNSAFE = (
    "jaxlib < 0.6.1 loads some cached programs wrongly (a solve took 0 steps); "
    "upgrade JAX for the persistent compilation cache."
)


def default_cache_dir() -> pathlib.Path | None:
    """The directory jaxmirror caches compiled programs in, or None when turned off."""
    chosen = os.environ.get("JAXMIRROR_CACHE_DIR")
    if chosen is not None:
        return (
            None
            if chosen.strip().lower() in ("", "0", "off", "none")
            else pathlib.Path(chosen)
        )
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxmirror" / "xla"


def configured_cache_dir() -> str | None:
    """JAX's own `jax_compilation_cache_dir`, if one is configured."""
    return jax.config.jax_compilation_cache_dir


def enable_compilation_cache(path=None) -> pathlib.Path | None:
    """Keep compiled programs in `path` (default: `default_cache_dir()`) across processes.

    Does nothing when a JAX compilation cache is already configured, or when the
    directory is turned off. **Returns:** the cache directory in use, or None.
    """
    current = configured_cache_dir()
    safe = cache_is_safe()
    if current:
        if not safe:
            warnings.warn(_UNSAFE + " Consider turning JAX's compilation cache off.")
        return pathlib.Path(current)
    path = default_cache_dir() if path is None else pathlib.Path(path)
    if path is None:
        return None
    if not safe:
        if os.environ.get("JAXMIRROR_CACHE_DIR"):
            warnings.warn(_UNSAFE + " jaxmirror leaves the cache off.")
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path
