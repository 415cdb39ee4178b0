"""The `jaxmirror` command: one line and status 2 for every user error, YAML 1.2
numbers, your own data, a status summary, plots of one- and two-dimensional sweeps,
export, help for every option, and Ctrl-C that says how to resume."""

import argparse
import signal

import numpy as np
import pytest
import xarray as xr

from jaxmirror import _config, cli

from .helpers import start_cli_sweep


GOOD = """\
problem: {kind: sparse_regression, n: 20, d: 8, sparsity: 2, seed: 1}
pair: hadamard
init: {scale: 1.0}
schedule:
  kind: switch_off
  grid: {alpha: [0.0, 1e-1, 3], t_off: {values: [2.0, 5.0]}}
t1: 2e3
solver: {rtol: 1e-8, atol: 1.0e-10}
sweep: {chunk_size: 4}
"""

# (edit of GOOD, or a whole file) -> the key path and message the error must give
INVALID = [
    (("t1: 2e3", "t1: 2e3\nepochs: 3"), r"config: unknown key\(s\) \['epochs'\]"),
    ("- 1\n- 2\n", "config: must be a mapping, got list"),
    ("problem: [1, 2\n", r"config: not valid YAML"),
    (("t1: 2e3", ""), "t1: is required"),
    (
        ("problem: {kind: sparse_regression, n: 20, d: 8, sparsity: 2, seed: 1}", ""),
        "problem: is required",
    ),
    (
        (
            "problem: {kind: sparse_regression, n: 20, d: 8, sparsity: 2, seed: 1}",
            "problem: 3",
        ),
        "problem: must be a mapping",
    ),
    (("kind: sparse_regression", "kind: images"), "problem.kind: must be one of"),
    (("n: 20", "n: 2.5"), "problem.n: must be an integer > 0, got 2.5"),
    (("n: 20", "n: -3"), "problem.n: must be an integer > 0"),
    (("sparsity: 2", "sparsity: 30"), r"problem: `sparsity` must be in \[1, n\]"),
    (("seed: 1}", "seed: 1, size: 3}"), r"problem: unknown key\(s\) \['size'\]"),
    (
        ("{kind: sparse_regression, n: 20, d: 8, sparsity: 2, seed: 1}", "{kind: npz}"),
        "problem.path: must be the path of an .npz file",
    ),
    (
        (
            "{kind: sparse_regression, n: 20, d: 8, sparsity: 2, seed: 1}",
            "{kind: npz, path: nowhere.npz}",
        ),
        "problem.path: cannot read",
    ),
    (("pair: hadamard", "pair: tanh"), "pair: must be one of"),
    (("init: {scale: 1.0}", "init: 1.0"), "init: must be a mapping"),
    (("init: {scale: 1.0}", "init: {scale: 0}"), "init.scale: must be a number > 0"),
    (
        ("init: {scale: 1.0}", "init: {scale: 1e-300}"),
        r"init.scale: `scale` must be in \[",
    ),
    (
        ("init: {scale: 1.0}", "init: {scale: 1.0, seed: 2}"),
        r"init: unknown key\(s\) \['seed'\]",
    ),
    (("pair: hadamard", "pair: square"), "init.scale: `scale` must be None for Square"),
    (
        ("pair: hadamard\ninit: {scale: 1.0}", "pair: square\ninit: {x0: 0.0}"),
        "init.x0: `x0` must be > 0",
    ),
    (("kind: switch_off", "kind: warmup"), "schedule.kind: must be one of"),
    (
        ("t_off: {values: [2.0, 5.0]}", "rate: [0, 1, 2]"),
        r"schedule.grid: unknown key\(s\) \['rate'\]",
    ),
    (
        (
            "grid: {alpha: [0.0, 1e-1, 3], t_off: {values: [2.0, 5.0]}}",
            "grid: {alpha: [0.0, 1e-1, 3]}",
        ),
        r"schedule.grid: misses \['t_off'\]",
    ),
    (
        ("alpha: [0.0, 1e-1, 3]", "alpha: [0.0, 0.1]"),
        r"schedule.grid.alpha: must be \[start, stop, num\]",
    ),
    (
        ("alpha: [0.0, 1e-1, 3]", "alpha: [-1.0, 0.1, 3]"),
        "schedule.grid.alpha: `alpha` must be finite and >= 0",
    ),
    (
        ("alpha: [0.0, 1e-1, 3]", "alpha: [0.0, 0.1, 0]"),
        "schedule.grid.alpha: must be an integer > 0",
    ),
    (
        ("alpha: [0.0, 1e-1, 3]", "alpha: {values: []}"),
        r"schedule.grid.alpha: must be \[start, stop, num\]",
    ),
    (
        ("alpha: [0.0, 1e-1, 3]", "alpha: {values: [0.1, .nan]}"),
        "schedule.grid.alpha.values: must be a number",
    ),
    (("t1: 2e3", "t1: -1"), "t1: must be a number > 0"),
    (("t1: 2e3", "t1: soon"), "t1: must be a number > 0, got 'soon'"),
    (("rtol: 1e-8", "rtol: -1.0"), "solver.rtol: must be a number > 0"),
    (
        ("rtol: 1e-8", "rtol: 1e-8, formulation: primal"),
        "solver.formulation: must be one of",
    ),
    (
        ("rtol: 1e-8", "rtol: 1e-8, max_steps: 1.5"),
        "solver.max_steps: must be an integer > 0",
    ),
    (("rtol: 1e-8", "rtol: 1e-8, order: 5"), r"solver: unknown key\(s\) \['order'\]"),
    (
        ("chunk_size: 4", "chunk_size: 4, strategy: fast"),
        "sweep.strategy: must be one of",
    ),
    (("chunk_size: 4", "chunk_size: 0"), "sweep.chunk_size: must be an integer > 0"),
    (
        ("chunk_size: 4", "chunk_size: 4, backend: cuda"),
        "sweep.backend: must be one of",
    ),
    (("t1: 2e3", "t1: 2e3\nprecision: float16"), "precision: must be one of"),
]


def _write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "edit, match",
    INVALID,
    ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(INVALID)],
)
def test_every_invalid_config_is_one_line_naming_the_key(tmp_path, capsys, edit, match):
    text = edit if isinstance(edit, str) else GOOD.replace(*edit)
    config = _write(tmp_path, text)
    assert cli.main(["sweep", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"jaxmirror sweep: {config}: ")
    assert __import__("re").search(match, err), err
    assert not (tmp_path / "out" / "zarr.json").exists()


def test_yaml_is_loaded_safely_and_reads_yaml_1_2_floats(tmp_path):
    evil = _write(
        tmp_path, "!!python/object/apply:os.system ['echo unsafe']\n", "evil.yaml"
    )
    with pytest.raises(_config.ConfigError, match="config: not valid YAML"):
        _config.load(evil)
    raw = _config.load(_write(tmp_path, GOOD))
    assert raw["t1"] == 2000.0 and raw["solver"]["rtol"] == 1e-8
    assert raw["schedule"]["grid"]["alpha"] == [0.0, 0.1, 3]


def test_missing_files_and_bad_out_are_one_line(tmp_path, capsys):
    assert (
        cli.main(["sweep", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "config: no such file" in capsys.readouterr().err
    config = _write(tmp_path, GOOD)
    a_file = _write(tmp_path, "x", "a_file")
    assert cli.main(["sweep", str(config), "--out", str(a_file)]) == 2
    assert "--out must be a directory, got a file" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path / "nothing")]) == 2
    assert "no sweep results here" in capsys.readouterr().err


def test_sweep_summary_plot_export_and_resume(tmp_path, capsys):
    config = _write(tmp_path, GOOD)
    out = tmp_path / "run"
    assert cli.main(["sweep", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "flows: 6 success" in printed
    ds = xr.open_zarr(out)
    assert ds.x_final.shape == (6, 20) and "config_yaml" in ds.attrs
    assert cli.main(["plot", str(out)]) == 0
    assert (out / "phase_recovery_error.png").stat().st_size > 10_000
    assert cli.main(["export", str(out), str(tmp_path / "run.nc")]) == 0
    np.testing.assert_array_equal(
        xr.load_dataset(tmp_path / "run.nc").x_final, ds.x_final
    )
    assert cli.main(["sweep", str(config), "--out", str(out), "--resume"]) == 0
    assert "(6 already done)" in capsys.readouterr().err
    changed = _write(tmp_path, GOOD.replace("t1: 2e3", "t1: 3e3"), "changed.yaml")
    assert cli.main(["sweep", str(changed), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "changed: t1" in err


@pytest.mark.parametrize(
    "grid, points",
    [
        ("{alpha: {values: [0.1]}, t_off: [1.0, 5.0, 4]}", 4),
        ("{alpha: {values: [0.1]}, t_off: {values: [3.0]}}", 1),
    ],
    ids=["one-dimensional", "one-configuration"],
)
def test_plot_draws_lines_for_one_dimensional_sweeps(tmp_path, grid, points):
    text = GOOD.replace("{alpha: [0.0, 1e-1, 3], t_off: {values: [2.0, 5.0]}}", grid)
    out = tmp_path / "run"
    assert cli.main(["sweep", str(_write(tmp_path, text)), "--out", str(out)]) == 0
    assert xr.open_zarr(out).sizes["config"] == points
    assert cli.main(["plot", str(out)]) == 0
    assert (out / "phase_recovery_error.png").stat().st_size > 5_000


def test_npz_problem_sweeps_your_own_data(tmp_path):
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((6, 15))
    truth = np.zeros(15)
    truth[[2, 7]] = [1.5, -1.0]
    np.savez(tmp_path / "data.npz", Z=Z, y=Z @ truth, truth=truth)
    text = GOOD.replace(
        "{kind: sparse_regression, n: 20, d: 8, sparsity: 2, seed: 1}",
        "{kind: npz, path: data.npz}",
    )
    out = tmp_path / "run"
    assert cli.main(["sweep", str(_write(tmp_path, text)), "--out", str(out)]) == 0
    ds = xr.open_zarr(out)
    np.testing.assert_allclose(
        ds.recovery_error.values, np.linalg.norm(ds.x_final.values - truth, axis=1)
    )


def test_config_picks_the_kernel_backend(tmp_path, capsys):
    """`sweep: {backend: pallas}` runs the flow kernel (recorded in the results); a
    sweep it cannot run is one line naming the reason."""
    text = GOOD.replace("chunk_size: 4", "chunk_size: 4, backend: pallas")
    out = tmp_path / "kernel"
    assert cli.main(["sweep", str(_write(tmp_path, text)), "--out", str(out)]) == 0
    ds = xr.open_zarr(out)
    assert ds.attrs["backend"] == "pallas" and ds.attrs["formulation"] == "rowspace"
    assert np.all(ds.status.values == 0)
    capsys.readouterr()
    bad = text.replace("rtol: 1e-8", "rtol: 1e-8, formulation: dual")
    config = _write(tmp_path, bad, "bad.yaml")
    assert cli.main(["sweep", str(config), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "backend='pallas'" in err, err


def test_version_and_help_for_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("jaxmirror ")
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert sub._choices_actions[list(sub.choices).index(name)].help, name
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}"


def test_ctrl_c_says_how_to_resume(tmp_path):
    config = _write(
        tmp_path,
        GOOD.replace("[0.0, 1e-1, 3]", "[0.0, 1e-1, 12]").replace(
            "chunk_size: 4", "chunk_size: 2"
        ),
    )
    out = tmp_path / "run"
    process = start_cli_sweep(config, out)
    line = ""
    while "configurations," not in line:  # the first chunk is done
        line = process.stderr.readline()
        assert line, "the sweep ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert f"--out {out} --resume" in err and "Traceback" not in err
    assert cli.main(["sweep", str(config), "--out", str(out), "--resume"]) == 0
