"""The `jaxmirror` command: `demo`, `sweep CONFIG.yaml --out DIR [--resume]`, `plot DIR`,
`reproduce NAME|all [--scale small|full] [--out DIR]`."""

import argparse
import pathlib
import sys


def _sweep(args):
    import jax

    jax.config.update("jax_enable_x64", True)  # float32 configs cast their own arrays
    from . import _config

    try:
        spec = _config.build(_config.load(args.config))
    except _config.ConfigError as error:
        print(f"jaxmirror sweep: {args.config}: {error}", file=sys.stderr)
        return 2
    import jaxmirror as jm

    out = pathlib.Path(args.out)
    jm.sweep(
        spec.problem,
        spec.pair,
        spec.schedules,
        spec.w0,
        spec.t1,
        truth=spec.truth,
        out=out,
        resume=args.resume,
        **spec.options,
    )
    import yaml

    (out / "config.yaml").write_text(yaml.safe_dump(spec.raw, sort_keys=False))
    print(f"results: {out / 'results.nc'}")
    return 0


def _plot(args):
    import xarray as xr

    from ._phase import phase_diagram

    directory = pathlib.Path(args.directory)
    results = directory / "results.nc"
    if not results.exists():
        print(
            f"jaxmirror plot: no results.nc in {directory} (finish the sweep first, "
            "with --resume if it was interrupted)",
            file=sys.stderr,
        )
        return 2
    dataset = xr.load_dataset(results, engine="scipy")
    path = directory / f"phase_{args.variable}.png"
    phase_diagram(dataset, x=args.x, y=args.y, variable=args.variable, path=path)
    print(f"figure: {path}")
    return 0


def _reproduce(args):
    import jax

    jax.config.update("jax_enable_x64", True)  # reference checks against closed forms
    from .experiments.reproduce import reproduce

    reproduce(args.name, scale=args.scale, out=args.out)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="jaxmirror", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the sparse-recovery demo", add_help=False)
    sweep = sub.add_parser("sweep", help="run a sweep from a YAML configuration")
    sweep.add_argument("config")
    sweep.add_argument("--out", required=True)
    sweep.add_argument("--resume", action="store_true")
    plot = sub.add_parser("plot", help="phase diagrams of a finished sweep")
    plot.add_argument("directory")
    plot.add_argument("--x", default="t_off")
    plot.add_argument("--y", default="alpha")
    plot.add_argument("--variable", default="recovery_error")
    reproduce = sub.add_parser("reproduce", help="reproduce the paper's experiments")
    reproduce.add_argument("name", help="sparse, matrix, attention, lora, vit or all")
    reproduce.add_argument(
        "--scale", choices=["tiny", "small", "full"], default="small"
    )
    reproduce.add_argument("--out", default="reproduce")
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from . import demo

        demo.main(rest)
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    commands = {"sweep": _sweep, "plot": _plot, "reproduce": _reproduce}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
