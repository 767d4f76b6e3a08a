"""The ``deid`` command (see :mod:`deid.cli.main`)."""

from deid.cli.main import build_cli, main

__all__ = ["main", "build_cli"]
