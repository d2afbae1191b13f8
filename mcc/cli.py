"""The `mcc` command line: one subcommand per module under mcc.commands."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from machineconfig.errors import MachineConfigError, one_line
from mcc.commands import get, plan, render, start, status, validate

# Each module exposes `register(subparsers)`, which adds its subparser and sets `func`
# (a callable taking the parsed args and returning the exit code).
COMMAND_MODULES = (validate, render, plan, status, start, get)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcc", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except MachineConfigError as e:
        print(f"mcc {args.command}: {one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"mcc {args.command}: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
