"""``rig``: drive the privacy-camera bench, or its device-level simulator (``--sim``).

Commands::

    rig config --out rig.yaml                 write the default rig config to edit
    rig info [--config rig.yaml] [--sim]      open every device and report it
    rig calibrate --sim --out DIR             dark, flat, registration, PSF, pokes, verify
    rig capture --sim --session NAME --frames N --out DIR [--privacy-only]
    rig mirror --sim --device-file F          put a device file (optics export-dm) on the mirror
    rig sessions DIR | rig export ... | rig dataset ...   (recorded sessions, see --help)

Every command takes ``--config FILE`` (a rig config, see ``rig config``), ``--set key=value``
overrides (e.g. ``--set sim.image_size_px=128``) and ``--sim`` (every device simulated).
Device errors end in one line and exit status 1; bad input exits 2.
"""

from __future__ import annotations

import sys

from hardware.cli import calibrate, capture, devices
from hardware.devices import DeviceError
from optics.kit.cli import build_parser, run_cli


def build_cli():
    parser, sub = build_parser("rig", __doc__.split("\n\n")[0] + "\n\n" +
                               __doc__.split("\n\n", 1)[1])
    for family in (devices, calibrate, capture):
        family.register(sub)
    return parser


def main(argv=None) -> int:
    try:
        return run_cli(build_cli(), argv)
    except DeviceError as e:
        print(f"rig: device error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
