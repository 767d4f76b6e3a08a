"""Options shared by the ``rig`` command families: the rig config, opening the rig, and the
mirror setting a command puts on the deformable mirror."""

from __future__ import annotations

import argparse
import logging

import numpy as np

from calibration.device_map import (
    load_calibration,
    load_device_file,
    noll_to_device,
    prototype_amplitudes,
)
from hardware.config import load_rig_config
from hardware.rig import Rig
from optics.coefficients import load_coefficients
from optics.kit.cli import add_common, add_overrides

__all__ = ["add_rig_args", "rig_config", "open_rig", "mirror_amplitudes", "add_mirror_source"]

log = logging.getLogger(__name__)


def add_rig_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_common(p)
    p.add_argument("--config", metavar="FILE", help="rig config YAML (default: all simulated)")
    add_overrides(p, "sim.image_size_px=128")
    p.add_argument("--sim", action="store_true",
                   help="simulate every device (fake mirror library, virtual cameras, fake "
                        "APT stage on a pseudo-terminal)")
    p.add_argument("--yes", action="store_true",
                   help="real bench: do not wait for the operator between scenes")
    return p


def rig_config(args):
    return load_rig_config(args.config, args.overrides, sim=args.sim)


def open_rig(args):
    cfg = rig_config(args)

    def prompt(msg):
        if args.yes:
            log.warning("operator: %s (--yes: continuing)", msg)
        else:
            input(f"{msg}; press Enter ")

    return Rig(cfg, prompt=prompt)


def mirror_amplitudes(args):
    """(12,) amplitudes and a description from --device-file / --coefficients + --calibration."""
    if args.device_file:
        return load_device_file(args.device_file), None, str(args.device_file)
    if args.coefficients:
        if not args.calibration:
            raise ValueError("--coefficients needs --calibration (a rig calibrate output)")
        cal = load_calibration(args.calibration)
        sol = noll_to_device(load_coefficients(args.coefficients), cal, clip=args.clip)
        log.info("residual the mirror cannot make: %.4f um RMS", sol.residual_rms_um)
        return sol.amplitudes, cal, str(args.coefficients)
    if args.prototype:
        return prototype_amplitudes(), None, "paper prototype preset"
    return np.zeros(12), None, "flat"


def add_mirror_source(p):
    g = p.add_argument_group("mirror setting (default: flat)")
    g.add_argument("--device-file", metavar="FILE", help="device amplitudes (optics export-dm)")
    g.add_argument("--coefficients", metavar="FILE",
                   help="Noll coefficients (um OPD) to convert with --calibration")
    g.add_argument("--calibration", metavar="FILE", help="calibration.h5 or device-map JSON")
    g.add_argument("--prototype", action="store_true",
                   help="the paper's prototype amplitudes (Z4 -0.83, Z6 -0.31, ...)")
    g.add_argument("--clip", action="store_true",
                   help="clip out-of-range amplitudes (with a warning) instead of refusing")
