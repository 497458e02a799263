"""The `difface` command line: `difface <command> --help` explains each command."""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import shlex
import sys

from tqdm import tqdm

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


class UsageError(Exception):
    """A mistyped command, option or choice: said in one line ("difface restore: unknown option --start-stp; did
    you mean --start-step?"), exit status 2, without the usage that `--help` shows."""

    def __init__(self, prog: str, message: str):
        super().__init__(f"{prog}: {message}")


def _close_match(word: str, candidates) -> str | None:
    """The candidate closest to `word` (difflib; options compared without their dashes), or None."""
    names = {str(c).lstrip("-"): str(c) for c in candidates}
    match = difflib.get_close_matches(word.lstrip("-"), list(names), n=1)
    return names[match[0]] if match else None


class _Parser(argparse.ArgumentParser):
    """argparse's parser (and every sub-parser's, which take its class) with a mistyped command or choice said in
    one line, with the closest name (UsageError)."""

    def _check_value(self, action: argparse.Action, value) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError:
            if action.choices is None:
                raise
            match = _close_match(str(value), action.choices)
            hint = f"; did you mean {match}?" if match else ""
            if isinstance(action, argparse._SubParsersAction):
                raise UsageError(self.prog, f"unknown command {value}{hint} (`{self.prog} --help` lists them)") \
                    from None
            name = "/".join(action.option_strings) or action.metavar or action.dest
            choices = ", ".join(str(c) for c in action.choices)
            raise UsageError(self.prog, f"{name}: invalid choice {value}{hint} (choose from {choices})") from None


def unknown_option(parser: argparse.ArgumentParser, argv: list[str]) -> UsageError | None:
    """A UsageError for the first --option of `argv` that the parser it goes to (the top-level one, then the
    command's, then the action's: `difface weights list`) does not know nor abbreviate, naming its closest option;
    None when all are known."""
    current = parser
    for token in argv:
        if token == "--":
            break
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and token in subs[0].choices:
            current = subs[0].choices[token]
            continue
        name = token.split("=", 1)[0]
        known = [s for s in current._option_string_actions if s.startswith("--")]
        if not name.startswith("--") or len(name) < 3 or any(k.startswith(name) for k in known):
            continue
        match = _close_match(name, known)
        hint = f"did you mean {match}?" if match else f"`{current.prog} --help` lists the options"
        return UsageError(current.prog, f"unknown option {name}; {hint}")
    return None


def interrupted_message(argv: list[str], args: argparse.Namespace) -> str:
    """What Ctrl-C prints: for a command with --skip-existing (restore, inpaint), how to finish the batch."""
    if not hasattr(args, "skip_existing"):
        return "interrupted"
    again = argv if "--skip-existing" in argv else [*argv, "--skip-existing"]
    return ("interrupted; the outputs written so far are complete. To finish the batch, run the same command with "
            "--skip-existing (inputs whose output exists are left as they are):\n  "
            + shlex.join(["difface", *again]))


def _close_progress_bars() -> None:
    """End the progress bars an interrupt left open (each on a line of its own), so that what follows starts a
    new line."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command-line parser. With `argv`, only the command it names is imported and registered in full (the
    others are listed by name and help line: `difface --help` and `difface restore ...` import no other
    command's dependencies); without, every command is registered."""
    parser = _Parser(
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
    try:
        mistyped = unknown_option(parser, argv)
        if mistyped is not None:
            raise mistyped
        args, unknown = parser.parse_known_args(argv)
    except UsageError as e:
        print(e, file=sys.stderr)
        return 2
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
        _close_progress_bars()
        print(interrupted_message(argv, args), file=sys.stderr)
        return 130
    finally:
        log.handlers, log.propagate = saved[0], saved[1]
        log.setLevel(saved[2])
