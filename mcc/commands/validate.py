"""`mcc validate FILE...`: check Ignition spec 3.x configs exactly like upstream `ignition-validate`.

Each file's report lines go to stdout; when a file is rejected without a fatal report, stderr gets
`couldn't parse config: <reason>`. With several files each is checked in turn with no extra headers;
the exit status is 1 if any file has an error or cannot be parsed, else 0. `-` reads stdin.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from machineconfig.ignition.parse import IgnitionParseError, parse
from machineconfig.ignition.report import Report


def _read(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    with open(name, "rb") as f:
        return f.read()


def validate_one(raw: bytes) -> int:
    """Print one config's report the way ignition-validate does; return its exit status."""
    report: Report
    reason: str | None = None
    try:
        report = parse(raw).report
    except IgnitionParseError as e:
        report, reason = e.report, e.reason
    for line in report.lines():
        print(line)
    if report.is_fatal:
        return 1
    if reason is not None:
        print(f"couldn't parse config: {reason}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    status = 0
    for name in args.files:
        try:
            raw = _read(name)
        except OSError as e:
            print(f"couldn't read {name}: {e.strerror or e}", file=sys.stderr)
            status = 1
            continue
        status |= validate_one(raw)
    return status


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate", help="validate Ignition spec 3.x configs like ignition-validate",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="Ignition config files; '-' reads standard input")
    parser.set_defaults(func=run)
