"""The `jaxmirror` command."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="jaxmirror", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the sparse-recovery demo", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from . import demo

        demo.main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
