"""The sweep store: resume refuses changed inputs by name, one run per directory, a
killed run loses nothing and leaves nothing half-written, and the results are a
self-describing Zarr store."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import warnings

import diffrax as dfx
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import jaxmirror as jm
from jaxmirror._sweep import _store

from .helpers import start_cli_sweep


def _inputs(**changes):
    problem, truth = jm.datasets.sparse_regression(n=10, d=4, sparsity=2, seed=3)
    pair = jm.Hadamard()
    inputs = dict(
        problem=problem,
        pair=pair,
        schedules=jm.SwitchOff(
            alpha=np.array([0.0, 0.1, 0.2, 0.3]), t_off=np.arange(1.0, 5.0)
        ),
        w0=pair.init(jnp.zeros(10), scale=1.0),
        t1=5.0,
        truth=truth,
        labels={"seed": np.arange(4)},
        chunk_size=2,
        progress=False,
    )
    inputs.update(changes)
    return inputs


def _run(out, resume=False, **changes):
    inputs = _inputs(**changes)
    args = [inputs.pop(k) for k in ("problem", "pair", "schedules", "w0", "t1")]
    return jm.sweep(*args, out=out, resume=resume, **inputs)


def _snapshot(path: pathlib.Path) -> dict:
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "sweep"
    _run(out)
    return out


_BASE = _inputs()
CHANGES = {
    "problem.Z": dict(
        problem=jm.LeastSquares(_BASE["problem"].Z + 1e-12, _BASE["problem"].y)
    ),
    "problem.y": dict(
        problem=jm.LeastSquares(_BASE["problem"].Z, _BASE["problem"].y * 1.001)
    ),
    "problem": dict(
        problem=jm.Logistic(_BASE["problem"].Z, jnp.sign(_BASE["problem"].y))
    ),
    "pair": dict(pair=jm.DiffSquares(), w0=jm.DiffSquares().init(jnp.zeros(10))),
    "schedules.alpha": dict(
        schedules=jm.SwitchOff(np.array([0.0, 0.1, 0.2, 0.31]), np.arange(1.0, 5.0))
    ),
    "schedules.t_off": dict(
        schedules=jm.SwitchOff(np.array([0.0, 0.1, 0.2, 0.3]), np.arange(2.0, 6.0))
    ),
    "schedules": dict(
        schedules=jm.LinearDecay(np.array([0.0, 0.1, 0.2, 0.3]), np.arange(1.0, 5.0))
    ),
    "w0": dict(w0=jm.Hadamard().init(jnp.zeros(10), scale=0.9)),
    "truth": dict(truth=_BASE["truth"] + 1.0),
    "labels.seed": dict(labels={"seed": np.arange(1, 5)}),
    "formulation": dict(formulation="dual"),
    "strategy": dict(strategy="batched"),
    "solver": dict(solver=dfx.Dopri5()),
    "rtol": dict(rtol=1e-7),
    "atol": dict(atol=1e-10),
    "max_steps": dict(max_steps=50_000),
    "stepsize_controller": dict(
        stepsize_controller=dfx.PIDController(rtol=1e-6, atol=1e-9)
    ),
    "t1": dict(t1=6.0),
    "chunk_size": dict(chunk_size=4),
    "predict": dict(predict=False),
    "jaxmirror_version": {},
    "jax_version": {},
}


@pytest.mark.parametrize("field", list(CHANGES))
def test_resume_refuses_each_changed_input_by_name(stored, field, monkeypatch):
    """Each fingerprinted field, changed alone, is named in the refusal, and nothing on
    disk changes."""
    if field.endswith("_version"):
        changed = {**_store.versions(), field: "0.0.0-changed"}
        monkeypatch.setattr(_store, "versions", lambda: changed)
    before = _snapshot(stored)
    with pytest.raises(
        ValueError, match=rf"`resume`: .* changed: (.*, )?{re.escape(field)}(,|\.)"
    ):
        _run(stored, resume=True, **CHANGES[field])
    assert _snapshot(stored) == before


def test_resume_of_a_finished_sweep_recomputes_nothing(stored):
    before = _snapshot(stored)
    again = _run(stored, resume=True)
    assert _snapshot(stored) == before
    assert np.all(again.status.values == jm.Status.SUCCESS)
    with pytest.raises(ValueError, match="`out`: .* already holds a sweep"):
        _run(stored)


def test_resume_finishes_scattered_pending_configurations(tmp_path, capsys):
    """Configurations marked pending out of order (a unit half finished, say) are
    solved and written back in their own places, and only they are recomputed."""
    out = tmp_path / "sweep"
    reference = _run(out).load()
    import zarr

    status = zarr.open_group(str(out), mode="r+")["status"]
    marked = np.array([0, 2, 3])
    values = status[:]
    values[marked] = _store.PENDING
    status[:] = values
    capsys.readouterr()
    again = _run(out, resume=True, progress=True).load()
    assert "(1 already done)" in capsys.readouterr().err
    xr.testing.assert_allclose(again, reference, rtol=1e-12)


def test_results_describe_themselves(stored):
    """Opened with plain xarray: CF attributes and status meanings, integers as
    integers, parameters as coordinates, the grid one line away, netCDF export."""
    ds = xr.open_zarr(stored)
    assert ds.status.dtype == np.int32 and ds.num_steps.dtype == np.int32
    assert ds.converged.dtype == bool and ds.attrs["max_steps"] == 100_000
    assert isinstance(ds.attrs["max_steps"], int)
    meanings = dict(
        zip(ds.status.attrs["flag_values"], ds.status.attrs["flag_meanings"].split())
    )
    assert meanings == {
        -1: "pending",
        0: "success",
        1: "max_steps",
        2: "nonfinite",
        3: "solver_failure",
        4: "precision_lost",
    }
    assert ds.bias_status.attrs["flag_meanings"].split()[0] == "converged"
    for name in ds.data_vars:
        assert ds[name].attrs["long_name"], name
    assert {"alpha", "t_off", "seed"} <= set(ds.coords)
    gridded = ds.set_index(config=["alpha", "t_off"]).unstack("config")
    np.testing.assert_array_equal(
        np.diag(gridded.recovery_error.values), ds.recovery_error.values
    )
    path = stored.parent / "one_file.nc"
    ds.to_netcdf(path)
    back = xr.load_dataset(path)
    np.testing.assert_array_equal(back.x_final.values, ds.x_final.values)
    assert back.converged.dtype == bool


def test_a_locked_directory_is_refused_at_once(tmp_path):
    import filelock

    out = tmp_path / "busy"
    lock = filelock.FileLock(_store.lock_path(out))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import filelock, time; l = filelock.FileLock({str(_store.lock_path(out))!r}); l.acquire(); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        with pytest.raises(
            ValueError, match="`out`: .* in use by another running sweep"
        ):
            _run(out)
        assert time.perf_counter() - start < 1.0
    finally:
        holder.kill()
        holder.communicate()
    # The killed holder's lock is gone with its process: the directory is usable.
    with lock.acquire(timeout=0):
        pass
    assert np.all(_run(out).status.values == jm.Status.SUCCESS)


FAULTS = """\
problem: {kind: sparse_regression, n: 30, d: 12, sparsity: 3, seed: 4}
pair: hadamard
schedule:
  kind: switch_off
  grid: {alpha: [0.0, 0.2, 5], t_off: [1.0, 10.0, 12]}
t1: 3000.0
solver: {rtol: 1e-10, atol: 1e-12}
sweep: {chunk_size: 2}
"""


def _start(config, out, resume):
    return start_cli_sweep(config, out, resume)


def _read(out: pathlib.Path):
    """The store as a reader sees it now (None before it exists)."""
    if not (out / "zarr.json").exists():
        return None
    with warnings.catch_warnings():  # killed while laying out the store
        warnings.simplefilter("ignore")
        try:
            return xr.open_zarr(out).load()
        except Exception:  # noqa: BLE001 - not a store yet
            return None


def _committed_units(out: pathlib.Path, unit: int) -> dict:
    """Files of every unit whose configurations are all finished, with their mtimes."""
    ds = _read(out)
    if ds is None:
        return {}
    status = ds.status.values
    done = {}
    for i in range(0, len(status), unit):
        if np.all(status[i : i + unit] != _store.PENDING):
            # chunk key c/<unit> (a file) or c/<unit>/<...> (a folder): not c/<unit>*,
            # which would also match the units 10 to 19 when <unit> is 1
            for path in out.glob(f"*/c/{i // unit}"):
                for file in [path] if path.is_file() else path.rglob("*"):
                    if file.is_file():
                        done[str(file)] = file.stat().st_mtime_ns
    return done


def _visible_is_complete(out: pathlib.Path, reference) -> int:
    """Every configuration a reader sees as finished is complete and final; returns
    how many there are."""
    ds = _read(out)
    if ds is None:
        return 0
    finished = ds.status.values != _store.PENDING
    for name in reference.data_vars:
        np.testing.assert_array_equal(
            ds[name].values[finished], reference[name].values[finished], err_msg=name
        )
    return int(finished.sum())


def test_sigkill_at_twenty_random_moments_loses_and_recomputes_nothing(tmp_path):
    """A CLI sweep killed with SIGKILL at 20 random moments, each followed by --resume
    (every other one through a symlink to the store):
    the final store equals an uninterrupted run's exactly, no finished chunk is
    recomputed (its files are never rewritten), and at no moment does a reader see a
    partly written configuration. Three kills fall anywhere in start-up (the store
    being laid out included), the others at random moments of the chunk loop (after
    each run's first chunk, since every new process compiles before it)."""
    config = tmp_path / "faults.yaml"
    config.write_text(FAULTS)
    # The uninterrupted reference runs as the killed ones do: in a `jaxmirror`
    # process of its own, not in this test's process.
    uninterrupted = _start(config, tmp_path / "reference", resume=False)
    _, err = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, err[-2000:]
    reference = xr.open_zarr(tmp_path / "reference").load()
    out = tmp_path / "killed"
    rng = np.random.default_rng(0)
    committed, progress = {}, []
    link = tmp_path / "link"  # every other resume names the store through a symlink
    for attempt in range(20):
        if not link.is_symlink() and out.exists():
            link.symlink_to(out, target_is_directory=True)
        through_link = attempt % 2 and link.is_symlink()
        process = _start(config, link if through_link else out, resume=attempt > 0)
        if attempt < 3:
            time.sleep(rng.uniform(0.5, 6.0))
        else:  # from the moment the sweep reports its first chunk
            line = ""
            while "/60 configurations," not in line:
                line = process.stderr.readline()
                if not line:  # the run has ended
                    break
            # Each run then finishes about 15 configurations a second on 2 cores: half
            # a second at most spreads the 17 kills over the sweep instead of ending
            # it by the tenth (up to 1 s did, after the solves got 20% faster).
            time.sleep(rng.uniform(0.0, 0.5))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        progress.append(_visible_is_complete(out, reference))
        for file, mtime in committed.items():
            assert os.stat(file).st_mtime_ns == mtime, f"{file} was rewritten"
        committed.update(_committed_units(out, unit=2))
    # The kills interrupted the sweep at many different points.
    assert len(set(progress)) >= 8, progress
    final = _start(config, out, resume=True)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err[-2000:]
    done = _read(out)
    for file, mtime in committed.items():
        assert os.stat(file).st_mtime_ns == mtime, f"{file} was rewritten"
    for name in reference.data_vars:
        np.testing.assert_array_equal(
            done[name].values, reference[name].values, err_msg=name
        )
    assert np.all(done.status.values != _store.PENDING)
