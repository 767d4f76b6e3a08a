"""``rig calibrate``: measure the bench (dark, flat, registration, PSF, pokes, verify)."""

from __future__ import annotations

from pathlib import Path

from calibration.pipeline import STEPS, CalibrationConfig, calibrate
from calibration.report import write_report
from hardware.cli.common import add_rig_args, open_rig
from optics.coefficients import load_coefficients
from optics.kit.cli import add_overrides
from optics.kit.config import apply_overrides, load_config, save_config

__all__ = ["register"]


def cmd_calibrate(args) -> int:
    ccfg = load_config(CalibrationConfig, args.calibration_config) \
        if args.calibration_config else CalibrationConfig()
    ccfg = apply_overrides(ccfg, args.calibration_set)
    steps = args.steps.split(",") if args.steps else list(STEPS)
    redo = args.redo.split(",") if args.redo else []
    target = None
    if args.target:
        target = load_coefficients(args.target)
    out = Path(args.out)
    with open_rig(args) as rig:
        save_config(rig.config, out / "rig.yaml")
        save_config(ccfg, out / "calibration-config.yaml")
        path = calibrate(rig, out, ccfg, redo=redo, steps=steps, target_um=target)
        summary = write_report(path, out, rig.config, simulated=rig.simulated)
    print(f"calibration: {path}")
    print(f"report:      {out / 'report.md'}")
    st = summary["steps"]
    if "registration" in st:
        print(f"registration rms {st['registration']['rms_error_px']:.3f} px")
    if "modes" in summary:
        print("mode  scale um/unit  sign  rotation deg")
        for k, v in summary["modes"].items():
            print(f"{k:5s} {v['scale_um']:13.4f} {v['sign']:+5d} {v['rotation_deg']:13.2f}")
    if "verify" in st:
        h = st["verify"]["history"][-1]
        print(f"verify: rms error {h['rms_error_um']:.4f} um, correlation "
              f"{h['correlation']:.4f} after {h['iteration']} correction(s)")
    if "simulation_truth_errors" in summary:
        t = summary["simulation_truth_errors"]
        print("vs hidden truth: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float)
                                               else f"{k} {v}" for k, v in t.items()
                                               if not isinstance(v, dict)))
    return 0


def register(sub) -> None:
    p = add_rig_args(sub.add_parser(
        "calibrate", help="measure the bench: dark, flat, registration, PSF, pokes, verify",
        description="Runs the calibration steps (each resumable: rerun with the same --out "
                    "to continue) and writes DIR/calibration.h5 plus a report with figures."))
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--steps", metavar="LIST",
                   help="comma-separated subset of dark,flat,registration,psf,pokes,verify")
    p.add_argument("--redo", metavar="LIST", help="steps to run again even if done")
    p.add_argument("--target", metavar="FILE",
                   help="Noll coefficients (um) for the verification step (default: 0.8 x "
                        "the paper's prototype amplitudes)")
    p.add_argument("--calibration-config", metavar="FILE", help="CalibrationConfig YAML")
    add_overrides(p, "poke_amplitude=0.25 (CalibrationConfig)", flag="--calibration-set",
                  dest="calibration_set")
    p.set_defaults(func=cmd_calibrate)
