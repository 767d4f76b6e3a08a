"""Shared command-line style for the ``optics``, ``deid`` and ``rig`` tools.

Every tool is ``tool COMMAND [options]``; every command takes ``-v/--verbose`` and
``--debug``. Errors caused by the user's input (bad files, bad values, undersampled optics)
end in one line on stderr, ``tool: error: ...``, and exit status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["UserError", "build_parser", "add_common", "run_cli"]


class UserError(Exception):
    """An error in the user's input, reported in one line."""


#: Exception types whose message is shown to the user as a one-line error.
USER_ERRORS = (UserError, ValueError, KeyError, OSError)


def build_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, object]:
    """Top-level parser and its sub-command collection."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser, sub


def add_common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def _message(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, OSError) and e.filename:
        msg = f"{e.strerror or e}: {e.filename}"
    return " ".join(str(msg).split()) or type(e).__name__


def run_cli(parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse ``argv``, run the chosen command's ``func(args)``, map user errors to exit 2."""
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if getattr(args, "debug", False):
            raise
        print(f"{parser.prog}: error: {_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
