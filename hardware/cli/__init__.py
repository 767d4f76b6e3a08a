"""The ``rig`` command: one module per command family (see :mod:`hardware.cli.rig`)."""

from hardware.cli.rig import build_cli, main

__all__ = ["main", "build_cli"]
