"""CLI subcommands. Each module exposes `register(subparsers)` that adds one sub-parser whose
`func(args) -> int` default runs the command and returns the exit status."""
