"""``optics``: design, inspect and simulate privacy-camera optics, train stage 1 and attack
the result. Each command family is a module of its own; a command parses, calls one library
function and prints."""

from __future__ import annotations

import argparse

from optics.cli import attacks, demo, physics, stage1
from optics.kit.cli import build_parser, run_cli

__all__ = ["main", "build_cli"]

EPILOG = """\
examples:
  optics presets
  optics psf --preset lopez2024 --out runs/psf
  optics psf --preset lopez2024 --coefficients configs/example-mask.yaml --out runs/mask
  optics simulate face.jpg --preset lr16 --out y.png
  optics psf --preset lopez2024 --set object_distance_m=2.0 --set sensor.read_noise_std=0.02
  optics train-stage1 --config configs/stage1-demo.yaml --out runs/s1
  optics attack --method wiener --camera runs/s1 --out runs/attack
"""


def build_cli() -> argparse.ArgumentParser:
    parser, sub = build_parser(
        "optics", "Design, inspect and simulate privacy-preserving camera optics.\n"
        "Coefficients are Noll-indexed Zernike terms in micrometres of OPD; lengths in metres."
    )
    parser.epilog = EPILOG
    for family in (physics, attacks, stage1, demo):
        family.register(sub)
    return parser


def main(argv=None) -> int:
    return run_cli(build_cli(), argv)
