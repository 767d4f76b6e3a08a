"""``optics presets | psf | simulate | export-dm``: cameras and phase plates."""

from __future__ import annotations

from pathlib import Path

import torch

from calibration.device_map import (
    load_calibration,
    noll_to_device,
    nominal_calibration,
    save_device_file,
)
from optics.camera_report import render_camera_report
from optics.cli.common import add_camera_args, camera_from_args, print_summary
from optics.coefficients import load_coefficients
from optics.kit.cli import UserError, add_common
from optics.kit.imageio import load_image, save_image
from optics.presets import PRESETS, preset_names

__all__ = ["register"]


def cmd_presets(args) -> int:
    for name in preset_names():
        c = PRESETS[name]
        print(f"{name:14s} {c.description}")
        print(f"{'':14s} aperture radius {c.aperture_radius_m * 1e3:g} mm, "
              f"f {c.focal_length_m * 1e3:.2f} mm, sensor at {c.sensor_distance_m * 1e3:g} mm, "
              f"object at {c.object_distance_m:g} m, pixel {c.pixel_pitch_m * 1e6:.3f} um, "
              f"{c.n_modes} modes, {c.image_size_px}->{c.output_size_px} px")
    return 0


def cmd_psf(args) -> int:
    cam = camera_from_args(args)
    out = Path(args.out)
    summary = render_camera_report(cam, out, image=args.image, seed=args.seed)
    print(f"{cam.config.name}: figures and summary.json written to {out}/")
    print_summary(summary)
    return 0


def cmd_simulate(args) -> int:
    cam = camera_from_args(args)
    x = load_image(args.image, cam.config.image_size_px).unsqueeze(0)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        y = cam(x, noise=not args.no_noise, generator=gen)
    path = save_image(y[0], args.out)
    print(f"wrote {path} ({y.shape[-1]}x{y.shape[-2]} px, camera {cam.config.name})")
    return 0


def cmd_export_dm(args) -> int:
    """Noll coefficients (a stage-1 run or a coefficients file) -> deformable-mirror file."""
    src = Path(args.source)
    if src.is_dir():
        src = src / "coefficients.json"
        if not src.exists():
            raise UserError(f"{args.source} has no coefficients.json (is it a stage-1 run?)")
    coeffs = load_coefficients(src)
    if args.calibration:
        cal = load_calibration(args.calibration)
    elif args.nominal_scale_um:
        cal = nominal_calibration(args.nominal_scale_um)
    else:
        raise UserError("give --calibration FILE (from rig calibrate), or --nominal-scale-um "
                        "for an uncalibrated dry run")
    sol = noll_to_device(coeffs, cal, clip=args.clip)
    path = save_device_file(sol, args.out, source=str(src), calibration=cal.source)
    print(f"wrote {path}")
    print("  " + "  ".join(f"{k}={v:+.3f}" for k, v in sol.as_dict().items()))
    print(f"  residual the mirror cannot make: {sol.residual_rms_um:.4f} um RMS OPD"
          f"{' (after clipping)' if sol.clipped else ''}")
    return 0


def register(sub) -> None:
    p = add_common(sub.add_parser("presets", help="list the camera presets"))
    p.set_defaults(func=cmd_presets)

    p = add_common(sub.add_parser(
        "psf", help="PSF, phase map, MTF and an example image for a camera",
        description="Writes phase_map.png (waves at 550 nm), psf.png (log scale, per channel), "
                    "mtf.png, example.png, camera.yaml, coefficients.json and summary.json "
                    "(Strehl ratio and encircled energy at 1/2/4 px per channel).",
        epilog="example: optics psf --preset lopez2024 --coefficients "
               "configs/example-mask.yaml --out runs/mask"))
    add_camera_args(p)
    p.add_argument("--image", help="scene for the example (default: a face from scikit-image)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.set_defaults(func=cmd_psf)

    p = add_common(sub.add_parser("simulate", help="pass one image through a camera",
                                  epilog="example: optics simulate face.jpg --preset lr16 "
                                         "--out y.png"))
    p.add_argument("image", help="input image (any format Pillow reads)")
    add_camera_args(p)
    p.add_argument("--out", required=True, help="output image path (.png)")
    p.add_argument("--no-noise", action="store_true", help="noise-free rendering")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.set_defaults(func=cmd_simulate)

    p = add_common(sub.add_parser(
        "export-dm", help="convert Noll coefficients to deformable-mirror device amplitudes",
        description="Maps Noll coefficients (um OPD) onto the 12 Thorlabs Zernike modes Z4..Z15 "
                    "by least squares through a calibrated device matrix, reports the residual "
                    "the mirror cannot make, and refuses out-of-range amplitudes unless --clip.",
        epilog="example: optics export-dm runs/demo/stage1 --calibration "
               "runs/bench/calibration.h5 --out mask.dm.json"))
    p.add_argument("source", metavar="RUN_OR_COEFFS",
                   help="a stage-1 run folder or a coefficients JSON/YAML")
    p.add_argument("--calibration", metavar="FILE",
                   help="rig calibrate's calibration.h5 (or a device-map JSON)")
    p.add_argument("--nominal-scale-um", type=float, metavar="UM",
                   help="no calibration: assume UM um OPD per device unit on each nominal mode")
    p.add_argument("--clip", action="store_true",
                   help="clip out-of-range amplitudes (warning) instead of refusing")
    p.add_argument("--out", required=True, metavar="FILE", help="device file (.json)")
    p.set_defaults(func=cmd_export_dm)
