"""The `difface` command line: `difface <command> --help` explains each command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from difface import __version__, threads
from difface.commands import COMMANDS as COMMAND_HELP

# Each name is a module of difface.commands with a `register(subparsers)` function (the one list:
# difface.commands.COMMANDS, with the line `difface --help` shows for it).
COMMANDS: tuple[str, ...] = tuple(COMMAND_HELP)


class _LogHandler(logging.StreamHandler):
    """Log lines on lines of their own: around a tqdm progress bar (tqdm.write) rather than after it; options
    the library names by field ("`upscale`", config.say_options) written as their flags ("--upscale")."""

    def render(self, text: str) -> str:
        return text

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.render(self.format(record)), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command-line parser. With `argv`, only the command it names is imported and registered in full (the
    others are listed by name and help line: `difface --help` and `difface restore ...` import no other
    command's dependencies); without, every command is registered."""
    parser = argparse.ArgumentParser(
        prog="difface",
        description="DifFace blind face restoration: restore faces, manage weights, train, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"difface {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = COMMANDS if argv is None else [next((a for a in argv if a in COMMAND_HELP), None)]
    for name in COMMANDS:
        if name in chosen:
            importlib.import_module(f"difface.commands.{name}").register(sub)
        else:
            sub.add_parser(name, help=COMMAND_HELP[name], add_help=False)
    return parser


def _command_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub-)command parser that `argv` reaches, e.g. `restore`'s for `difface restore ...`, so that its
    usage, not the top-level one, goes with an error about its options."""
    current = parser
    for token in argv:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        if token in subs[0].choices:
            current = subs[0].choices[token]
    return current


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    threads.prepare_environment()  # before the command's module imports torch (and its OpenMP runtime)
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would report them with the top-level usage; say them with the command's own
        _command_parser(parser, argv).error(f"unrecognized arguments: {' '.join(unknown)}")
    handler = _LogHandler(sys.stderr)
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
        # the command has imported these already (only the command that runs is imported: see build_parser)
        from difface.commands.options import FLAGS
        from difface.config import say_options

        handler.render = lambda text: say_options(text, FLAGS)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        log.handlers, log.propagate = saved[0], saved[1]
        log.setLevel(saved[2])
