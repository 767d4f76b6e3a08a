"""The calibration report: numbers (``report.json``, ``report.md``) and figures from a
``calibration.h5``; in simulation, also the errors against the simulator's hidden truth."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from calibration.device_map import load_calibration
from calibration.homography import HOMOGRAPHY_DATASET, to_opencv_frame, to_pixel_frame, warp_points
from hardware.mirror_modes import DEVICE_MODES
from hardware.sim.bench import reference_homography
from hardware.sim.fake_tldfm import DEFAULT_HIDDEN, HiddenMirror

__all__ = ["calibration_summary", "truth_errors", "write_report"]


def calibration_summary(path) -> dict:
    """Key numbers of every finished step."""
    out = {"file": str(path), "steps": {}}
    with h5py.File(path, "r") as f:
        for step in f:
            g = f[step]
            out["steps"][step] = {k: (v.tolist() if isinstance(v, np.ndarray) else
                                      v.item() if isinstance(v, np.generic) else v)
                                  for k, v in g.attrs.items() if k != "history"}
            if "history" in g.attrs:
                out["steps"][step]["history"] = json.loads(g.attrs["history"])
        if "device_map/matrix_um" in f:
            cal = load_calibration(path)
            out["modes"] = {d.label: {"scale_um": float(s), "sign": int(g),
                                      "rotation_deg": float(r)}
                            for d, s, g, r in zip(DEVICE_MODES, cal.scales_um(), cal.signs(),
                                                  cal.rotations_deg(), strict=True)}
        if "registration/homography" in f:
            out["homography"] = f["registration/homography"][()].tolist()
    return out


def truth_errors(path, rig_config) -> dict:
    """Calibration errors against the simulator's hidden parameters: per-mode scale (relative),
    sign, rotation (degrees) and the homography (max corner displacement, px)."""
    s = rig_config.sim
    hidden = (HiddenMirror(s.mirror_scales_um, s.mirror_signs or (1,) * 12,
                           s.mirror_rotation_deg) if s.mirror_scales_um else DEFAULT_HIDDEN)
    out = {}
    with h5py.File(path, "r") as f:
        has_map = "device_map/matrix_um" in f
        h = f["registration/homography"][()] if "registration/homography" in f else None
    if has_map:
        cal = load_calibration(path)
        rel = cal.scales_um() / np.asarray(hidden.scales_um) - 1
        rot = cal.rotations_deg()
        round_modes = np.array([d.m == 0 for d in DEVICE_MODES])
        out["scale_rel_error"] = {d.label: float(e) for d, e in zip(DEVICE_MODES, rel,
                                                                      strict=True)}
        out["max_abs_scale_rel_error"] = float(np.abs(rel).max())
        out["signs_correct"] = bool(np.all(cal.signs() == np.asarray(hidden.signs)))
        out["rotation_error_deg"] = float(np.abs(rot[~round_modes] - hidden.rotation_deg).max())
        out["matrix_rms_error_um"] = float(np.sqrt(np.mean((cal.matrix_um - hidden.matrix())
                                                           ** 2)))
    if h is not None:
        n = s.image_size_px

        # the simulator warps in OpenCV's frame; reference px -> privacy px, privlens frame
        true_h = to_pixel_frame(np.linalg.inv(reference_homography(s, n)))
        corners = np.array([[0, 0], [n - 1, 0], [0, n - 1], [n - 1, n - 1], [n / 2, n / 2]],
                           float)

        out["homography_max_error_px"] = float(np.linalg.norm(
            warp_points(h, corners) - warp_points(true_h, corners), axis=1).max())
    return out


def _figures(path: Path, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    with h5py.File(path, "r") as f:
        if "registration/privacy_frame" in f:
            import cv2

            priv = f["registration/privacy_frame"][()]
            ref = f["registration/reference_frame"][()]

            h = to_opencv_frame(f[HOMOGRAPHY_DATASET][()])
            warped = cv2.warpPerspective(ref, h, priv.shape[1::-1])
            fig, ax = plt.subplots(1, 3, figsize=(10, 3.6))
            ax[0].imshow(ref)
            ax[0].set_title("reference camera")
            ax[1].imshow(priv)
            ax[1].plot(*f["registration/privacy_corners"][()].T, "r+", ms=5)
            ax[1].set_title("privacy camera (mirror flat)")
            diff = np.abs(warped.astype(float) - priv.astype(float)).mean(-1)
            ax[2].imshow(diff, cmap="magma")
            ax[2].set_title(f"|warp(ref) - privacy|, rms "
                            f"{f['registration'].attrs['rms_error_px']:.3f} px")
            for a in ax:
                a.axis("off")
            fig.tight_layout()
            fig.savefig(out / "registration.png", dpi=90)
            plt.close(fig)
            made.append("registration.png")
        if "pokes" in f and "device_map/matrix_um" in f:
            keys = [f"{d.label}{t}" for d in DEVICE_MODES for t in "+-"]
            keys = [k for k in keys if k in f["pokes"]]
            fig, ax = plt.subplots(4, 6, figsize=(11, 7.5))
            for a, k in zip(ax.ravel(), keys, strict=False):
                st = f[f"pokes/{k}/stack"][()]
                c = st.shape[-1] // 2
                w = st.shape[-1] // 3
                a.imshow(np.sqrt(np.clip(st[0, c - w:c + w, c - w:c + w], 0, None)),
                         cmap="inferno")
                a.set_title(f"{k}  r={f['pokes'][k].attrs['correlation']:.3f}", fontsize=8)
                a.axis("off")
            fig.suptitle("measured PSFs of each poked mode (sqrt, in focus); r = fit correlation")
            fig.tight_layout()
            fig.savefig(out / "pokes.png", dpi=80)
            plt.close(fig)
            made.append("pokes.png")
            m = f["device_map/matrix_um"][()]
            fig, ax = plt.subplots(figsize=(7, 5))
            lim = np.abs(m).max()
            im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_xticks(range(12), [d.label for d in DEVICE_MODES])
            ax.set_yticks(range(15), [f"Noll {j}" for j in range(1, 16)])
            ax.set_title("device -> Noll matrix (um OPD per device unit)")
            fig.colorbar(im)
            fig.tight_layout()
            fig.savefig(out / "device_map.png", dpi=90)
            plt.close(fig)
            made.append("device_map.png")
        if "verify" in f:
            its = sorted(int(k.split("_")[1]) for k in f["verify"] if k.startswith("stack_"))
            fig, ax = plt.subplots(2, len(its), figsize=(3 * len(its), 6), squeeze=False)
            hist = json.loads(f["verify"].attrs["history"])
            for i, it in enumerate(its):
                st = f[f"verify/stack_{it}"][()][0]
                sim = f[f"verify/simulated_{it}"][()][0]
                ax[0, i].imshow(np.sqrt(np.clip(st, 0, None)), cmap="inferno")
                ax[0, i].set_title(f"measured, iter {it}\nrms err "
                                   f"{hist[i]['rms_error_um']:.4f} um", fontsize=9)
                ax[1, i].imshow(sim ** 0.5, cmap="inferno")
                ax[1, i].set_title(f"simulated target\ncorr {hist[i]['correlation']:.4f}",
                                   fontsize=9)
                for a in ax[:, i]:
                    a.axis("off")
            fig.tight_layout()
            fig.savefig(out / "verify.png", dpi=80)
            plt.close(fig)
            made.append("verify.png")
    return made


def write_report(path, out_dir, rig_config=None, simulated: bool = False) -> dict:
    """Write ``report.json``, ``report.md`` and figures next to the calibration file."""
    path = Path(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = calibration_summary(path)
    if simulated and rig_config is not None:
        summary["simulation_truth_errors"] = truth_errors(path, rig_config)
    summary["figures"] = _figures(path, out)
    (out / "report.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = ["# Calibration report", "", f"File: `{path}`", ""]
    st = summary["steps"]
    if "registration" in st:
        lines.append(f"- Registration: RMS {st['registration']['rms_error_px']:.3f} px, "
                     f"max {st['registration']['max_error_px']:.3f} px")
    if "psf" in st:
        lines.append(f"- Flat-mirror PSF fit: correlation {st['psf']['correlation']:.4f}")
    if "verify" in st:
        h = st["verify"]["history"]
        lines.append("- Verification: " + ", ".join(
            f"iter {r['iteration']}: rms {r['rms_error_um']:.4f} um, corr "
            f"{r['correlation']:.4f}" for r in h))
    if "modes" in summary:
        lines += ["", "| mode | scale (um/unit) | sign | rotation (deg) |",
                  "| --- | --- | --- | --- |"]
        for k, v in summary["modes"].items():
            lines.append(f"| {k} | {v['scale_um']:.4f} | {v['sign']:+d} | "
                         f"{v['rotation_deg']:.2f} |")
    if "simulation_truth_errors" in summary:
        t = summary["simulation_truth_errors"]
        lines += ["", "Against the simulator's hidden truth:"]
        for k in ("max_abs_scale_rel_error", "signs_correct", "rotation_error_deg",
                  "matrix_rms_error_um", "homography_max_error_px"):
            if k in t:
                lines.append(f"- {k}: {t[k]}")
    lines += [""] + [f"![{m}]({m})" for m in summary["figures"]]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return summary
