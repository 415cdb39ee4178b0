"""No user file lost: a sweep writes only into new, empty or its own folders; the lock
belongs to the folder, whatever path names it; a damaged store is never taken for a
new one, and is refused, checked and repaired by name."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import jaxmirror as jm
from jaxmirror import cli

from .test_store import _run


TINY = """\
problem: {kind: sparse_regression, n: 10, d: 4, sparsity: 2, seed: 3}
pair: hadamard
schedule:
  kind: switch_off
  grid: {alpha: [0.0, 0.2, 2], t_off: [1.0, 4.0, 2]}
t1: 5.0
sweep: {chunk_size: 2}
"""


def _config(tmp_path, text=TINY):
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def _cli(capsys, *argv):
    """`jaxmirror ARGV`: the exit status, stdout and stderr."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _files(path: pathlib.Path) -> dict:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("name", ["config", "status", "x_final", "notes"])
def test_a_folder_of_other_files_is_refused_untouched(tmp_path, capsys, name):
    """`--out` at a project folder (here with `config/settings.ini`, a name a result
    variable also has) is refused in one line, and every file stays as it was; no
    lock file is left beside it."""
    project = tmp_path / "proj"
    (project / name).mkdir(parents=True)
    (project / name / "settings.ini").write_text("keep")
    (project / "README").write_text("mine")
    before = _files(project)
    status, _, err = _cli(capsys, "sweep", _config(tmp_path), "--out", project)
    assert status == 2 and err.count("\n") == 1, err
    assert "neither empty nor a jaxmirror sweep store" in err
    assert _files(project) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj", "tiny.yaml"]
    with pytest.raises(ValueError, match="`out`: .* neither empty nor a jaxmirror"):
        _run(project)
    assert _files(project) == before


def test_out_dot_in_a_project_folder_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text("x = 1")
    config = _config(tmp_path)
    before = _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    status, _, err = _cli(capsys, "sweep", config, "--out", ".")
    assert status == 2 and "neither empty nor a jaxmirror" in err
    assert _files(tmp_path) == before


def test_a_foreign_zarr_store_is_refused(tmp_path):
    import zarr

    out = tmp_path / "theirs"
    group = zarr.open_group(out, mode="w", zarr_format=3)
    group.create_array("status", shape=(4,), dtype="i4", fill_value=0)[...] = 7
    before = _files(out)
    with pytest.raises(ValueError, match="a Zarr store that jaxmirror did not create"):
        _run(out)
    assert _files(out) == before


def test_new_empty_and_own_folders_are_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new" / "deeper", tmp_path / "empty"):
        assert np.all(_run(out).status.values == jm.Status.SUCCESS)
    assert np.all(_run(tmp_path / "empty", resume=True).status.values == 0)


def test_resume_needs_out():
    with pytest.raises(ValueError, match="`resume` continues a sweep stored in `out`"):
        from .test_store import _inputs

        inputs = _inputs()
        args = [inputs.pop(k) for k in ("problem", "pair", "schedules", "w0", "t1")]
        jm.sweep(*args, resume=True, **inputs)


def _start_cli(config, out):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jaxmirror.cli",
            "sweep",
            str(config),
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_lock_belongs_to_the_folder_whatever_path_names_it(tmp_path):
    """Three sweeps into one folder started at the same moment, through a symlink, a
    relative and an absolute path: one runs, the others are refused as in use (each in
    one line, rc 2), and the store holds the one run's results."""
    real = tmp_path / "real"
    (tmp_path / "link").symlink_to(real, target_is_directory=False)
    config = _config(tmp_path, TINY.replace("t1: 5.0", "t1: 400.0"))
    spellings = [tmp_path / "link", pathlib.Path(os.path.relpath(real)), real]
    processes = [_start_cli(config, out) for out in spellings]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in processes]
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 2, 2], results
    for _, err, code in results:
        if code == 2:
            assert "in use by another running sweep" in err and err.count("\n") == 1
    ds = xr.open_zarr(real)
    assert np.all(ds.status.values == jm.Status.SUCCESS)
    assert not (tmp_path / ".link.jaxmirror.lock").exists()


@pytest.fixture
def stored(tmp_path, capsys):
    config = _config(tmp_path)
    out = tmp_path / "sweep"
    assert _cli(capsys, "sweep", config, "--out", out)[0] == 0
    return config, out


def test_a_store_without_its_root_metadata_is_never_new(stored, capsys):
    """A partial copy (no top-level zarr.json) is refused by a new sweep, a resume,
    plot and export, each in one line naming the missing file; nothing changes."""
    config, out = stored
    (out / "zarr.json").unlink()
    before = _files(out)
    for argv in (
        ("sweep", config, "--out", out),
        ("sweep", config, "--out", out, "--resume"),
        ("plot", out),
        ("export", out, out.parent / "x.nc"),
    ):
        status, _, err = _cli(capsys, *argv)
        assert status == 2 and err.count("\n") == 1, (argv, err)
        assert "damaged jaxmirror store" in err and "zarr.json is missing" in err
    assert _files(out) == before
    assert not (out.parent / "x.nc").exists()


def test_a_truncated_root_metadata_is_named_before_any_work(stored, capsys):
    config, out = stored
    text = (out / "zarr.json").read_text()
    (out / "zarr.json").write_text(text[: len(text) // 2])
    before = _files(out)
    for argv in (
        ("sweep", config, "--out", out, "--resume"),
        ("plot", out),
        ("export", out, out.parent / "x.nc"),
        ("check", out),
    ):
        status, stdout, err = _cli(capsys, *argv)
        line = err or stdout
        assert status in (1, 2) and line.count("\n") == 1, (argv, line)
        assert f"{out / 'zarr.json'} is unreadable (JSONDecodeError" in line
    assert _files(out) == before


def _chunk(out, name, block=0):
    path = out / name / "c" / str(block)
    return path / "0" if path.is_dir() else path


@pytest.mark.parametrize("damage", ["corrupted", "missing"])
@pytest.mark.parametrize("variable", ["x_final", "converged", "status"])
def test_check_finds_damage_resume_refuses_it_and_repair_recomputes_it(
    stored, capsys, damage, variable
):
    config, out = stored
    reference = xr.open_zarr(out).load()
    status, stdout, _ = _cli(capsys, "check", out)
    assert status == 0 and "4 done, 0 pending, 0 damaged" in stdout
    chunk = _chunk(out, variable, block=1)
    if damage == "corrupted":
        chunk.write_bytes(b"not a chunk")
    else:
        chunk.unlink()
    if variable == "status" and damage == "missing":
        # A missing status chunk reads as pending: a resume recomputes the block.
        assert _cli(capsys, "check", out)[0] == 0
        assert _cli(capsys, "sweep", config, "--out", out, "--resume")[0] == 0
    else:
        status, stdout, _ = _cli(capsys, "check", out)
        assert status == 1 and "2 damaged" in stdout and str(chunk) in stdout
        status, _, err = _cli(capsys, "sweep", config, "--out", out, "--resume")
        assert status == 2 and "is damaged" in err and "--repair" in err
        status, _, err = _cli(
            capsys, "sweep", config, "--out", out, "--resume", "--repair"
        )
        assert status == 0, err
    assert _cli(capsys, "check", out)[0] == 0
    repaired = xr.open_zarr(out).load()
    for name in ("x_final", "status", "converged", "num_steps"):
        np.testing.assert_allclose(repaired[name].values, reference[name].values)


def test_export_never_replaces_a_file(stored, capsys):
    _, out = stored
    target = out.parent / "mine.nc"
    target.write_text("keep")
    status, _, err = _cli(capsys, "export", out, target)
    assert status == 2 and "exists" in err and target.read_text() == "keep"
    assert _cli(capsys, "export", out, target, "--overwrite")[0] == 0
    assert xr.load_dataset(target).sizes["config"] == 4


def test_resume_refusals_name_the_configurations_keys(stored, capsys):
    config, out = stored
    changed = config.read_text().replace("alpha: [0.0, 0.2, 2]", "alpha: [0.0, 0.3, 2]")
    changed = changed.replace("seed: 3", "seed: 4")
    config.write_text(changed)
    status, _, err = _cli(capsys, "sweep", config, "--out", out, "--resume")
    assert status == 2 and err.count("\n") == 1
    assert "changed: problem, schedule.grid.alpha." in err, err
    assert "schedules.alpha" not in err


def test_an_unfinished_creation_of_ours_is_laid_out_afresh(tmp_path):
    """A store killed while it was being laid out (its marker written, not yet its
    fingerprint) is ours: a new sweep lays it out again."""
    import zarr

    out = tmp_path / "s"
    zarr.open_group(out, mode="a", zarr_format=3).attrs.update({"jaxmirror_store": 1})
    assert np.all(_run(out).status.values == jm.Status.SUCCESS)
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    assert "jaxmirror_fingerprint" in attrs and attrs["jaxmirror_store"] == 1
    with pytest.raises(ValueError, match="already holds a sweep"):
        _run(out)
