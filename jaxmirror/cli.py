"""The `jaxmirror` command.

    jaxmirror demo                                  the sparse-recovery demo
    jaxmirror sweep CONFIG.yaml --out DIR [--resume [--repair]]
    jaxmirror check DIR                             read every result; list damage
    jaxmirror plot DIR [--x t_off --y alpha --variable recovery_error]
    jaxmirror export DIR FILE.nc                    the results as one netCDF file
    jaxmirror reproduce NAME|all [--scale tiny|small|full] [--out DIR]

A user error (a bad configuration, a missing file, a locked, foreign, damaged or
mismatched `--out`) prints one line, `jaxmirror COMMAND: WHERE: message`, and exits
with status 2. `jaxmirror check` exits with status 1 when it finds damage.
"""

import argparse
import pathlib
import sys


class _UserError(Exception):
    """A mistake in the command line or its files: one line, exit status 2."""


def _enable_float64():
    import jax

    jax.config.update("jax_enable_x64", True)  # an entry point may set it


def _summary(ds) -> str:
    """Counts of how the sweep's flows ended."""
    import numpy as np

    from ._status import Status
    from ._sweep._store import PENDING

    status = np.asarray(ds.status.values)
    converged = np.asarray(ds.converged.values)
    success = status == Status.SUCCESS
    counts = {
        "success": int((success & converged).sum()),
        "not converged": int((success & ~converged).sum()),
        "max steps": int((status == Status.MAX_STEPS).sum()),
        "non-finite": int((status == Status.NONFINITE).sum()),
        "solver failure": int((status == Status.SOLVER_FAILURE).sum()),
        "precision lost": int((status == Status.PRECISION_LOST).sum()),
        "pending": int((status == PENDING).sum()),
    }
    return ", ".join(
        f"{count} {name}"
        for name, count in counts.items()
        if count or name == "success"
    )


def _sweep(args):
    _enable_float64()
    from . import _config

    config = pathlib.Path(args.config)
    try:
        spec = _config.build(_config.load(config), base=config.parent)
    except _config.ConfigError as error:
        raise _UserError(f"{config}: {error}") from None
    import yaml

    import jaxmirror as jm

    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise _UserError(f"{out}: --out must be a directory, got a file.")
    try:
        ds = jm.sweep(
            *(spec.problem, spec.pair, spec.schedules, spec.w0, spec.t1),
            truth=spec.truth,
            attrs={"config_yaml": yaml.safe_dump(spec.raw, sort_keys=False)},
            out=out,
            resume=args.resume or args.repair,
            repair=args.repair,
            **spec.options,
        )
    except KeyboardInterrupt:
        print(
            f"jaxmirror sweep: interrupted; every finished chunk is saved in {out}. "
            f"Continue with: jaxmirror sweep {config} --out {out} --resume",
            file=sys.stderr,
        )
        return 130
    except ValueError as error:
        raise _UserError(f"{config}: {_in_yaml_words(error, spec)}") from None
    print(f"flows: {_summary(ds)}")
    print(f"results: {out} (xarray.open_zarr)")
    return 0


def _in_yaml_words(error: ValueError, spec) -> str:
    """A resume refusal with the configuration's keys instead of the API's fields."""
    from . import _config
    from ._sweep._store import ResumeMismatch

    if not isinstance(error, ResumeMismatch):
        return str(error)
    keys = sorted({_config.yaml_key(field, spec.raw) for field in error.changed})
    return (
        f"`--resume`: the sweep in {error.spelled} was run with another configuration; "
        f"changed: {', '.join(keys)}. Nothing on disk was changed; run into another "
        "directory to keep both."
    )


def _open_results(directory: pathlib.Path):
    from ._sweep._store import open_results, StoreError

    try:
        return open_results(directory)
    except StoreError as error:
        raise _UserError(str(error)) from None


def _check(args):
    from ._sweep._integrity import DamagedStoreError, inspect, scan, StoreError

    directory = pathlib.Path(args.directory)
    try:
        contents = inspect(directory.expanduser().resolve(), directory)
        if not contents.finished_creating:
            raise StoreError(f"{directory}: no sweep results here.")
        report = scan(directory.expanduser().resolve(), full=True)
    except DamagedStoreError as error:
        print(f"jaxmirror check: {error}")
        return 1
    except StoreError as error:
        raise _UserError(str(error)) from None
    done = report.configurations - report.pending
    print(
        f"{directory}: {report.configurations} configurations, {done} done, "
        f"{report.pending} pending, {len(report.damaged)} damaged"
    )
    for line in report.problems:
        print(f"  {line}")
    if report.healthy:
        return 0
    print(
        f"Recompute the damaged configurations with: jaxmirror sweep CONFIG --out "
        f"{directory} --resume --repair"
    )
    return 1


def _plot(args):
    from ._phase import phase_diagram

    directory = pathlib.Path(args.directory)
    dataset = _open_results(directory)
    path = directory / f"phase_{args.variable}.png"
    try:
        phase_diagram(dataset, x=args.x, y=args.y, variable=args.variable, path=path)
    except ValueError as error:
        raise _UserError(f"{directory}: {error}") from None
    print(f"figure: {path}")
    return 0


def _export(args):
    directory, target = pathlib.Path(args.directory), pathlib.Path(args.file)
    if target.exists() and not args.overwrite:
        raise _UserError(
            f"{target} exists; export writes a new file (pass --overwrite to replace it)."
        )
    dataset = _open_results(directory)
    try:
        dataset.to_netcdf(target)
    except Exception as error:  # noqa: BLE001 - a chunk that does not decode, say
        target.unlink(missing_ok=True)
        first = (str(error).splitlines() or [""])[0][:200]
        raise _UserError(
            f"{directory}: reading the results failed ({type(error).__name__}: "
            f"{first}); run `jaxmirror check {directory}`."
        ) from None
    print(f"netCDF: {target}")
    return 0


def _reproduce(args):
    _enable_float64()
    from .experiments.reproduce import reproduce

    try:
        reproduce(args.name, scale=args.scale, out=args.out)
    except ValueError as error:
        raise _UserError(str(error)) from None
    return 0


def _parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="jaxmirror", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--version", action="version", version=f"jaxmirror {__version__}"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "demo",
        help="the sparse-recovery demo (options: --out, --alpha, --t-off)",
        add_help=False,
    )
    sweep = sub.add_parser("sweep", help="run a sweep from a YAML configuration")
    sweep.add_argument(
        "config", help="the YAML configuration (keys: docs/configuration.md)"
    )
    sweep.add_argument(
        "--out", required=True, help="the results directory (a Zarr store)"
    )
    sweep.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep in --out"
    )
    sweep.add_argument(
        "--repair",
        action="store_true",
        help="with --resume: recompute configurations whose stored results are "
        "damaged (see jaxmirror check)",
    )
    check = sub.add_parser(
        "check", help="read every stored result of a sweep and list what is damaged"
    )
    check.add_argument("directory", help="a sweep's --out directory")
    plot = sub.add_parser("plot", help="phase diagram (or curve) of a sweep's results")
    plot.add_argument("directory", help="a sweep's --out directory")
    plot.add_argument("--x", default="t_off", help="the parameter on the x axis")
    plot.add_argument("--y", default="alpha", help="the parameter on the y axis")
    plot.add_argument(
        "--variable", default="recovery_error", help="the variable to colour by"
    )
    export = sub.add_parser("export", help="write a sweep's results as one netCDF file")
    export.add_argument("directory", help="a sweep's --out directory")
    export.add_argument("file", help="the netCDF file to write")
    export.add_argument(
        "--overwrite", action="store_true", help="replace FILE if it exists"
    )
    reproduce = sub.add_parser("reproduce", help="reproduce the paper's experiments")
    reproduce.add_argument("name", help="an experiment's name, or all")
    reproduce.add_argument(
        "--scale",
        choices=["tiny", "small", "full"],
        default="small",
        help="tiny (tests), small (a CPU), full (an accelerator)",
    )
    reproduce.add_argument(
        "--out", default="reproduce", help="where to write figures and tables"
    )
    return parser


def main(argv=None) -> int:
    from ._cache import enable_compilation_cache

    enable_compilation_cache()  # an entry point's choice (jaxmirror/_cache.py)
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from . import demo

        demo.main(rest)
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    commands = {
        "sweep": _sweep,
        "check": _check,
        "plot": _plot,
        "export": _export,
        "reproduce": _reproduce,
    }
    try:
        return commands[args.command](args)
    except _UserError as error:
        print(f"jaxmirror {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
