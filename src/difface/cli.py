"""The `difface` command line: `difface <command> --help` explains each command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from difface import __version__

# Each entry is a module of difface.commands with a `register(subparsers)` function.
COMMANDS: tuple[str, ...] = (
    "restore", "inpaint", "weights", "degrade", "detect", "data", "evaluate", "train", "benchmark", "app",
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="difface",
        description="DifFace blind face restoration: restore faces, manage weights, train, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"difface {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"difface.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("difface")
    saved = (log.handlers, log.propagate, log.level)
    # For the duration of the command, messages go to the current stderr, once; restored afterwards
    # so that embedding applications (and test runners) keep their own logging set-up.
    log.handlers, log.propagate = [handler], False
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        log.handlers, log.propagate = saved[0], saved[1]
        log.setLevel(saved[2])
