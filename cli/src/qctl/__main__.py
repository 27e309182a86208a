"""The `qctl` entry point: accept the specification's `group:command` spellings, run click."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def rewrite_colon_commands(args: Sequence[str], groups: Sequence[str]) -> list[str]:
    """Split the command word `worker:list` into `worker list`, leaving everything else alone.

    Words before the command are global options and their values (a URL has colons too),
    so a word is split only when the part before its colon names a command, and the scan
    stops at the first plain command name.
    """
    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--" or arg in groups:
            break
        group, sep, command = arg.partition(":")
        if sep and command and group in groups and not arg.startswith("-"):
            return [*args[:i], group, command, *args[i + 1:]]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run qctl with `argv` (default: the process arguments) and exit with its code."""
    from qctl.app import COMMANDS, cli

    args = list(sys.argv[1:] if argv is None else argv)
    args = rewrite_colon_commands(args, list(COMMANDS))
    cli.main(args=args, prog_name="qctl")


if __name__ == "__main__":
    main()
