"""The ``interpkit`` command line. Bad input ends with exit code 2 and one line, never a traceback."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from . import __version__
from .errors import InterpkitError

EXIT_BAD_INPUT = 2


def _plugins(_args: argparse.Namespace) -> None:
    from .plugins import registry

    reg = registry()
    print("plugins loaded:")
    for source in reg.plugins:
        print(f"  {source}")
    for kind, table in reg.entries.items():
        print(f"{kind}:")
        for name in sorted(table):
            print(f"  {name:<28s} {reg.sources[kind][name]}")
    if reg.failures:
        print("plugins that failed to load:")
        for source, reason in reg.failures:
            print(f"  {source}: {reason}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interpkit", description="Interpretability for PyTorch models.")
    parser.add_argument("--version", action="version", version=f"interpkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plugins = commands.add_parser("plugins", help="list discovered plugins, their explainers, and failures")
    plugins.set_defaults(run=_plugins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        run(args)
    except InterpkitError as error:
        print(f"interpkit: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (OSError, ValueError) as error:
        print(f"interpkit: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interpkit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
