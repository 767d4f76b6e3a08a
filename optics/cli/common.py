"""Options and printing shared by the ``optics`` command families."""

from __future__ import annotations

import argparse

from optics.camera import Camera, CameraConfig
from optics.coefficients import load_coefficients
from optics.kit.cli import add_dataclass_args, add_overrides
from optics.kit.config import apply_overrides, load_config
from optics.presets import get_preset, preset_names

__all__ = ["add_camera_args", "add_training_config_args", "camera_from_args", "print_summary",
           "print_stage1_report"]


def add_camera_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("camera")
    g.add_argument("--preset", default="lopez2024",
                   help=f"camera preset, one of {preset_names()} (default: lopez2024)")
    g.add_argument("--camera-config", metavar="FILE",
                   help="camera YAML (as written to camera.yaml by any run); overrides --preset")
    g.add_argument("--coefficients", metavar="FILE",
                   help="phase-mask coefficients, JSON or YAML: "
                        '{"convention": "noll", "units": "um_opd", "coefficients": {"4": -0.8}}')
    add_overrides(g, "object_distance_m=1.5 or sensor.read_noise_std=0.01")


def add_training_config_args(p: argparse.ArgumentParser, cls, skip=()) -> None:
    """``--config FILE``, ``--set KEY=VALUE``, ``--quiet`` and one ``--field`` per field of the
    training config dataclass ``cls`` (precedence: defaults < file < --field < --set)."""
    p.add_argument("--config", metavar="FILE", help=f"YAML config ({cls.__name__} fields)")
    add_overrides(p, "lr=1e-3")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, cls, skip=skip)


def camera_from_args(args) -> Camera:
    """Build and validate the camera named by the common camera options."""
    if args.camera_config:
        cfg = load_config(CameraConfig, args.camera_config)
    else:
        cfg = get_preset(args.preset)
    cfg = apply_overrides(cfg, args.overrides)
    coeffs = load_coefficients(args.coefficients) if args.coefficients else {}
    too_high = [j for j in coeffs if j > cfg.n_modes]
    if too_high:
        cfg = cfg.replace(n_modes=max(too_high))
    cam = Camera(cfg, coeffs)
    cam.validate()
    return cam


def print_summary(summary: dict) -> None:
    """Strehl ratio and encircled energies per channel of a camera summary."""
    for key, entry in summary.get("channels", {}).items():
        if "strehl" in entry:
            ee = "  ".join(f"{k}={v:.3f}" for k, v in entry.items() if k.startswith("ee_"))
            print(f"  {key:>7s}: Strehl {entry['strehl']:.4f}  {ee}")


def print_stage1_report(report: dict) -> None:
    """The stage-1 report's table and goals."""
    print(f"  {'camera':8s} {'PSNR':>6s} {'SSIM':>5s} {'FR dist':>7s} {'reid clean':>10s} "
          f"{'reid matched':>12s} {'reid Wiener':>11s} {'NME teacher':>11s} {'NME human':>9s}")
    for name, r in report["cameras"].items():
        wiener = r.get("reid_top1_wiener", float("nan"))
        print(f"  {name:8s} {r['psnr_db']:6.2f} {r['ssim']:5.3f} {r['fr_distance']:7.3f} "
              f"{r['reid_top1_clean_gallery']:10.2f} {r['reid_top1_matched_gallery']:12.2f} "
              f"{wiener:11.2f} {r['nme_vs_teacher']:11.4f} {r['nme_vs_human']:9.4f}")
    goals = report.get("goals", {})
    if goals:
        print("  goals: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in goals.items()))
