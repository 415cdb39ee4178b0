"""Compile once, reuse everywhere: the persistent compilation cache across processes,
and shape bucketing within one."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jaxmirror as jm
from jaxmirror import _cache
from jaxmirror._sweep import _strategies


SWEEP = """
import collections, json, sys
import jax
from jax import monitoring
events = collections.Counter()
monitoring.register_event_listener(lambda name, **kw: events.update([name]))
jax.config.update("jax_enable_x64", True)
import numpy as np, jax.numpy as jnp, jaxmirror as jm
jm.enable_compilation_cache()  # an entry point's call: importing changes nothing
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
problem, _ = jm.datasets.sparse_regression(n=12, d=5, sparsity=2, seed=1)
pair = jm.Hadamard()
schedules = jm.SwitchOff(np.linspace(0.0, 0.1, 6), np.linspace(1.0, 5.0, 6))
ds = jm.sweep(problem, pair, schedules, pair.init(jnp.zeros(12), 1.0), 20.0,
              progress=False)
sol = jm.solve(problem, pair, jm.SwitchOff(0.05, 3.0), pair.init(jnp.zeros(12), 1.0),
               20.0)
print(json.dumps({"hits": events["/jax/compilation_cache/cache_hits"],
                  "misses": events["/jax/compilation_cache/cache_misses"],
                  "x": np.asarray(ds.x_final).tolist(),
                  "solve": [int(sol.num_steps), int(sol.status)]}))
"""


def _run_sweep_process(cache_dir):
    env = {**os.environ, "JAXMIRROR_CACHE_DIR": str(cache_dir)}
    done = subprocess.run(
        [sys.executable, "-c", SWEEP],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not _cache.cache_is_safe(), reason="jaxmirror leaves the cache off on this jaxlib"
)
def test_a_second_process_compiles_nothing(tmp_path):
    """Every program of a sweep is stored in the cache by the first process and loaded
    by the second, whose results are identical."""
    first = _run_sweep_process(tmp_path / "xla")
    assert first["misses"] > 0 and any((tmp_path / "xla").iterdir())
    second = _run_sweep_process(tmp_path / "xla")
    assert second["misses"] == 0 and second["hits"] > 0
    # The second process may prepare fewer programs than the first: it runs the
    # stored programs (`_programs.py`) and the results decided by tracing, which the
    # first one traced (and, for a few small eager steps, compiled).
    np.testing.assert_array_equal(second["x"], first["x"])
    # A solve loaded from the cache takes the steps it took when compiled (jaxlib
    # 0.5.3 and 0.6.0 loaded it wrongly: 0 steps).
    assert second["solve"] == first["solve"] and first["solve"][1] == 0


def test_importing_jaxmirror_changes_no_jax_setting(tmp_path):
    """The compilation cache is an entry point's choice: `import jaxmirror` leaves
    JAX's configuration as it was, and `jm.enable_compilation_cache()` turns the
    cache on in jaxmirror's directory."""
    script = (
        "import jax, json; before = jax.config.jax_compilation_cache_dir\n"
        "import jaxmirror as jm; after = jax.config.jax_compilation_cache_dir\n"
        "chosen = str(jm.enable_compilation_cache())\n"
        "print(json.dumps([before, after, chosen, jax.config.jax_compilation_cache_dir]))"
    )
    env = {**os.environ, "JAXMIRROR_CACHE_DIR": str(tmp_path / "xla")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, after, chosen, configured = json.loads(done.stdout.splitlines()[-1])
    assert before is None and after is None
    assert chosen == configured == str(tmp_path / "xla")


def test_cache_directory_can_be_chosen_or_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMIRROR_CACHE_DIR", str(tmp_path / "mine"))
    assert _cache.default_cache_dir() == tmp_path / "mine"
    for off in ("off", "0", "none", ""):
        monkeypatch.setenv("JAXMIRROR_CACHE_DIR", off)
        assert _cache.default_cache_dir() is None
    monkeypatch.delenv("JAXMIRROR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.default_cache_dir() == tmp_path / "xdg" / "jaxmirror" / "xla"


def test_cache_stays_off_where_jaxlib_loads_programs_wrongly(tmp_path, monkeypatch):
    assert not _cache.cache_is_safe("0.5.3") and not _cache.cache_is_safe("0.6.0")
    assert _cache.cache_is_safe("0.6.1") and _cache.cache_is_safe("0.10.2")
    monkeypatch.setattr(_cache, "cache_is_safe", lambda version=None: False)
    monkeypatch.setattr(_cache, "configured_cache_dir", lambda: None)
    monkeypatch.setenv("JAXMIRROR_CACHE_DIR", str(tmp_path / "wanted"))
    with pytest.warns(UserWarning, match="jaxlib < 0.6.1"):
        assert _cache.enable_compilation_cache() is None
    assert not (tmp_path / "wanted").exists()


def test_small_sweeps_of_any_size_share_one_compiled_program():
    """Shape bucketing: K = 5, 7 and 8 are padded to one unit of 8 configurations, so
    the three sweeps run one compiled chunk program."""
    compiled = getattr(_strategies._solve_vmap, "_cached", None)
    if compiled is None or not hasattr(compiled, "_cache_size"):
        pytest.skip("this JAX has no jit cache-size introspection")
    problem, _ = jm.datasets.sparse_regression(n=13, d=3, sparsity=2, seed=2)
    pair = jm.Hadamard()
    w0 = pair.init(jnp.zeros(13), 1.0)
    sizes = []
    for K in (5, 7, 8):
        schedules = jm.SwitchOff(np.linspace(0.0, 0.1, K), np.linspace(1.0, 3.0, K))
        ds = jm.sweep(
            problem, pair, schedules, w0, 5.0, strategy="vmap", progress=False
        )
        assert ds.sizes["config"] == K
        sizes.append(compiled._cache_size())
    assert sizes[1] == sizes[0] and sizes[2] == sizes[0]


def test_compile_timer_counts_compiling_inside_its_block_only():
    """Nested timers both see a compilation inside them; a call that compiles nothing
    adds nothing; a timer that has exited stops counting."""
    import jax

    from jaxmirror._sweep._compile_time import CompileTimer

    f = jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)
    with CompileTimer() as outer:
        with CompileTimer() as inner:
            f(jnp.ones(7)).block_until_ready()
        assert inner.seconds > 0
    assert outer.seconds >= inner.seconds > 0
    before = inner.seconds
    with CompileTimer() as again:
        f(jnp.ones(7)).block_until_ready()  # cached in this process
    assert again.seconds == 0
    jax.jit(lambda x: x - 2.0)(jnp.ones(3)).block_until_ready()
    assert inner.seconds == before
