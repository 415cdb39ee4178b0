"""Stored programs (`jaxmirror/_programs.py`): a later process calls a sweep's programs
without tracing them, gets the same results, and never uses a program stored for
anything that could trace differently."""

import json
import os
import subprocess
import sys

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import jaxmirror as jm
from jaxmirror import _programs
from jaxmirror._checking import validated


SWEEP = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import jaxmirror as jm
import jaxmirror._programs as programs
jm.enable_compilation_cache()
if sys.argv[1] == "load":  # every program must come from the store
    def refuse(*args):
        raise AssertionError("a program was exported again")
    programs._export = refuse
problem, _ = jm.datasets.sparse_regression(n=12, d=5, sparsity=2, seed=3)
pair = jm.Hadamard()
schedules = jm.SwitchOff(**jm.grid(alpha=[0.0, 0.05, 0.1], t_off=[5.0, 20.0]))
ds = jm.sweep(problem, pair, schedules, pair.init(np.zeros(12)), 50.0, progress=False)
folder = programs._directory()
stored = sorted(p.suffix for p in folder.iterdir()) if folder else []
print(json.dumps({"x": ds.x_final.values.tolist(), "status": ds.status.values.tolist(),
                  "predicted": ds.x_predicted.values.tolist(), "stored": stored}))
"""


def _run(mode, cache, stored="on"):
    env = {
        **os.environ,
        "JAXMIRROR_CACHE_DIR": str(cache),
        "JAXMIRROR_STORED_PROGRAMS": stored,
    }
    done = subprocess.run(
        [sys.executable, "-c", SWEEP, mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_later_process_runs_the_stored_programs_and_agrees(tmp_path):
    """Process 1 exports the sweep's programs; process 2 runs them from the store
    (exporting is refused there) and gets what a sweep traced afresh gets, with
    stored programs off."""
    first = _run("export", tmp_path / "cache")
    second = _run("load", tmp_path / "cache")
    traced = _run("export", tmp_path / "other", stored="off")
    assert ".jaxprogram" in first["stored"] and ".result" in first["stored"]
    assert second["stored"] == first["stored"]  # nothing new was written
    for key in ("x", "predicted"):
        np.testing.assert_allclose(second[key], traced[key], rtol=0, atol=1e-12)
        np.testing.assert_allclose(first[key], traced[key], rtol=0, atol=1e-12)
    assert second["status"] == traced["status"]


def test_a_damaged_program_is_exported_again(tmp_path, monkeypatch):
    """A partly written or foreign file under a key is not trusted: the program is
    exported again, and the call's answer is right."""
    monkeypatch.setattr(
        _programs, "_directory", lambda: tmp_path / "jaxmirror-programs"
    )
    monkeypatch.setattr(_programs, "_ready", {})

    def double(x, scale):
        return scale * x

    program = _programs.stored_program(double)
    x = jnp.arange(3.0)
    key = _programs._key(double, (x, 2.0))
    path = tmp_path / "jaxmirror-programs" / f"{key}.jaxprogram"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a program")
    np.testing.assert_allclose(program(x, 2.0), 2.0 * x)
    assert path.read_bytes() != b"not a program"  # replaced by a valid export
    monkeypatch.setattr(_programs, "_ready", {})
    np.testing.assert_allclose(program(x, 2.0), 2.0 * x)  # loaded from disk


class UsersPair(jm.Hadamard):
    """A pair defined outside jaxmirror: its code is not in any key."""


def test_code_outside_jaxmirror_and_closures_are_never_keyed():
    x = jnp.ones(3)
    with pytest.raises(_programs._Untrusted):
        _programs._key(_programs._describe, (UsersPair(), x))
    scale = 2.0
    with pytest.raises(_programs._Untrusted):
        _programs._key(_programs._describe, (lambda y: scale * y, x))
    with pytest.raises(_programs._Untrusted):
        _programs._key(_programs._describe, (object(),))
    # jaxmirror's own, and the libraries' in the key, are.
    _programs._key(_programs._describe, (jm.Hadamard(), jm.SwitchOff(0.1, 1.0), x))


def _configuration(draw):
    pair = draw(st.sampled_from(["hadamard", "diff_squares", "power3", "power3m"]))
    return dict(
        pair=pair,
        n=draw(st.sampled_from([4, 5])),
        schedule=draw(st.sampled_from(["switch_off", "constant"])),
        batch=draw(st.sampled_from([1, 2])),
        rtol=draw(st.sampled_from([1e-6, 1e-8])),
        dtype=draw(st.sampled_from(["float64", "float32"])),
        formulation=draw(st.sampled_from(["mirror", "parameter"])),
    )


def _arguments(config):
    pairs = {
        "hadamard": jm.Hadamard(),
        "diff_squares": jm.DiffSquares(),
        "power3": jm.PowerDifference(3),
        "power3m": jm.PowerDifference(3, "matched"),
    }
    pair, n, k = pairs[config["pair"]], config["n"], config["batch"]
    dtype = jnp.dtype(config["dtype"])
    alpha = jnp.full((k,), 0.1, dtype)
    schedule = (
        jm.SwitchOff(alpha, jnp.full((k,), 5.0, dtype))
        if config["schedule"] == "switch_off"
        else jm.Constant(alpha)
    )
    w0 = jax.tree_util.tree_map(
        lambda leaf: leaf.astype(dtype), pair.init(jnp.zeros(n))
    )
    return (pair, schedule, w0, config["rtol"], config["formulation"])


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_keys_tell_apart_exactly_what_traces_differently(data):
    """Over the input space: two calls share a key exactly when their pairs,
    schedule kinds, shapes, dtypes and options are the same (array values never
    matter: they are the program's inputs)."""
    draw = data.draw
    first = _configuration(draw)
    second = first if draw(st.booleans()) else _configuration(draw)
    args_1, args_2 = _arguments(first), _arguments(second)
    same = _programs._key(jm.solve, args_1) == _programs._key(jm.solve, args_2)
    assert same == (first == second)
    # Values are inputs: new schedule values, the same key.
    moved = (args_1[0], jax.tree_util.tree_map(lambda a: a + 1, args_1[1]), *args_1[2:])
    assert _programs._key(jm.solve, moved) == _programs._key(jm.solve, args_1)


def test_keys_follow_the_source_and_the_settings(monkeypatch):
    args = (jm.Hadamard(), jnp.ones(3))
    key = _programs._key(jm.solve, args)
    monkeypatch.setattr(_programs, "_environment", lambda: ("another source",))
    assert _programs._key(jm.solve, args) != key
    monkeypatch.undo()
    with validated():  # a tracing switch: checks are left out of the program
        assert _programs._key(jm.solve, args) != key
    with jax.numpy_dtype_promotion("standard"):
        assert _programs._key(jm.solve, args) != key


def test_keys_are_the_same_in_another_process():
    code = (
        "import jax; jax.config.update('jax_enable_x64', True); "
        "jax.config.update('jax_numpy_dtype_promotion', 'strict'); "
        "jax.config.update('jax_numpy_rank_promotion', 'raise'); "
        "import jax.numpy as jnp, jaxmirror as jm; from jaxmirror import _programs; "
        "print(_programs._key(jm.solve, (jm.PowerDifference(3), "
        "jm.SwitchOff(0.1, 2.0), jnp.ones(3))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    here = _programs._key(
        jm.solve, (jm.PowerDifference(3), jm.SwitchOff(0.1, 2.0), jnp.ones(3))
    )
    assert done.stdout.strip() == here


def _with_a_weak_output(x):
    return 2.0 * x, jnp.asarray(1.0) + 1.0, jnp.sum(x > 0)


def test_stored_outputs_keep_their_types(tmp_path, monkeypatch):
    """Exported, and loaded in a fresh process (simulated: the in-process programs
    forgotten), a program returns what the traced one returns, weak types included
    (a serialized program forgets them; they change promotion downstream)."""
    monkeypatch.setattr(
        _programs, "_directory", lambda: tmp_path / "jaxmirror-programs"
    )
    program = _programs.stored_program(_with_a_weak_output)
    x = jnp.linspace(-1.0, 1.0, 5)
    expected = program.traced(x)
    for _ in ("exported", "loaded"):
        monkeypatch.setattr(_programs, "_ready", {})
        got = program(x)
        for a, b in zip(got, expected):
            assert (a.dtype, a.weak_type, a.shape) == (b.dtype, b.weak_type, b.shape)
            np.testing.assert_allclose(a, b, rtol=0, atol=0)
    assert list((tmp_path / "jaxmirror-programs").glob("*.jaxprogram"))


def test_arrays_in_static_fields_are_keyed_by_value():
    """An array held in a static field is a constant of the program, not an input:
    two values, two keys (an input array is keyed by shape and dtype only)."""
    a, b = np.arange(3.0), np.arange(3.0) + 1
    assert _programs._describe(a) == _programs._describe(b)
    assert _programs._describe(a, static=True) != _programs._describe(b, static=True)
    assert _programs._describe(jnp.asarray(a), static=True) == _programs._describe(
        a, static=True
    )
    assert _programs._describe((a, {"k": a}), static=True) != _programs._describe(
        (a, {"k": b}), static=True
    )


def test_results_for_user_code_are_kept_in_this_process_only(tmp_path, monkeypatch):
    """A decision about a user's class is kept by the objects themselves (shapes for
    arrays) in this process, and never written beside the stored programs."""
    monkeypatch.setattr(_programs, "_directory", lambda: tmp_path)
    calls = []

    def decide(pair, x):
        calls.append(pair)
        return int(x.shape[0])

    kept = _programs.stored_result(decide)
    assert kept(UsersPair(), jnp.ones(3)) == 3
    assert kept(UsersPair(), jnp.zeros(3)) == 3  # the same shapes: kept
    assert kept(UsersPair(), jnp.ones(4)) == 4
    assert len(calls) == 2 and not list(tmp_path.iterdir())
    assert kept(jm.Hadamard(), jnp.ones(3)) == 3  # jaxmirror's own: written
    assert [p.suffix for p in tmp_path.iterdir()] == [".result"]
