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
from pathlib import Path

from optics.kit.config import assemble_config, load_config
from optics.kit.malloc import keep_freed_memory

__all__ = ["UserError", "build_parser", "add_common", "add_overrides", "run_cli",
           "add_dataclass_args", "dataclass_overrides", "run_folder_config", "float_list"]


class UserError(Exception):
    """An error in the user's input, reported in one line."""


#: Exception types whose message is shown to the user as a one-line error.
USER_ERRORS = (UserError, ValueError, KeyError, OSError)


class ExamplesFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual but keeps an ``examples:`` epilog line by line."""

    def _fill_text(self, text, width, indent):
        if text.lstrip().startswith(("example:", "examples:")):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _CommandParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", ExamplesFormatter)
        super().__init__(*args, **kwargs)


def build_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, object]:
    """Top-level parser and its sub-command collection (each command's ``examples:`` epilog
    keeps its lines)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    return parser, sub


def add_common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def add_overrides(p, example: str, flag: str = "--set", dest: str = "overrides") -> None:
    """The repeatable ``--set KEY=VALUE`` option every config-driven command takes (applied
    with :func:`optics.kit.config.apply_overrides`); ``example`` shows one."""
    p.add_argument(flag, dest=dest, action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config field, e.g. {example} (repeatable)")


def _message(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, OSError) and e.filename:
        msg = f"{e.strerror or e}: {e.filename}"
    return " ".join(str(msg).split()) or type(e).__name__


def float_list(text: str | None, what: str) -> list[float] | None:
    """Numbers separated by commas (``None`` stays ``None``); a one-line :class:`UserError`
    naming the option ``what`` otherwise."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} takes numbers separated by commas, got {text!r}") from None


def run_cli(parser: argparse.ArgumentParser, argv=None) -> int:
    """Parse ``argv``, run the chosen command's ``func(args)``, map user errors to exit 2.
    Freed memory stays in the process (:func:`optics.kit.malloc.keep_freed_memory`)."""
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    keep_freed_memory()
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


def _field_parser(tp):
    """argparse ``type`` for a dataclass field annotation (scalars and tuples of ints)."""
    import typing

    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is not None and args and typing.get_origin(tp) is not tuple:
        tp = args[0]
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]

        def parse_tuple(s):
            try:
                return tuple(inner(v) for v in s.split(",") if v.strip())
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected comma-separated {inner.__name__} values, got {s!r}") from None
        return parse_tuple
    if tp is bool:
        def parse_bool(s):
            if s.lower() in ("1", "true", "yes", "on"):
                return True
            if s.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")
        return parse_bool
    return tp


def field_help(cls) -> dict[str, str]:
    """``{field: text}`` from a ``Fields:`` section of the dataclass docstring (lines
    ``name: text``, continuation lines indented deeper)."""
    import inspect

    doc = inspect.getdoc(cls) or ""
    out, current, indent = {}, None, None
    lines = doc.splitlines()
    if "Fields:" not in lines:
        return out
    for line in lines[lines.index("Fields:") + 1:]:
        if not line.strip():
            break
        depth = len(line) - len(line.lstrip())
        name, sep, text = line.strip().partition(":")
        if indent is None:
            indent = depth
        if depth == indent and sep and name.isidentifier():
            current = name
            out[name] = text.strip()
        elif current is not None and depth > indent:
            out[current] += " " + line.strip()
    return out


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return repr(value)


def add_dataclass_args(p: argparse.ArgumentParser, cls, skip=(), title=None) -> None:
    """One ``--field-name VALUE`` option per field of dataclass ``cls`` (default: unset, so
    the config file or the dataclass default wins). Tuples are comma-separated."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    g = p.add_argument_group(title or f"{cls.__name__} fields (override the config file)")
    for f in dataclasses.fields(cls):
        if f.name in skip or dataclasses.is_dataclass(hints[f.name]):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}", default=None,
                       type=_field_parser(hints[f.name]), metavar=f.name.upper(),
                       help=f"{helps.get(f.name, '')} (default {_show(default)})".lstrip())


def dataclass_overrides(args, cls) -> dict:
    """The ``--field`` options given on the command line, as ``{field: value}``."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f"cfg_{f.name}", None)
        if v is not None:
            out[f.name] = v
    return out


def run_folder_config(args, cls):
    """``(out, cfg)`` of a training command with ``--out``/``--resume``/``--config``,
    ``--field`` options and ``--set`` overrides: a resumed run starts from its own
    ``config.yaml`` (one-line error if it is missing) unless ``--config`` is given."""
    out = args.resume or args.out
    if not out:
        raise UserError("give --out DIR for a new run or --resume DIR to continue one")
    base = args.config
    if args.resume and not base:
        base = Path(args.resume) / "config.yaml"
        load_config(cls, base)
    return out, assemble_config(cls, base, dataclass_overrides(args, cls), args.overrides)
