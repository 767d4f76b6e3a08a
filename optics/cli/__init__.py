"""The ``optics`` command: one module per command family (see :mod:`optics.cli.main`)."""

from optics.cli.main import build_cli, main

__all__ = ["main", "build_cli"]
