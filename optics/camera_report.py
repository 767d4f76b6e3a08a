"""One camera rendered for a person to look at (``optics psf``, ``make demo``): phase map,
PSF, MTF, an example face through the camera, and ``summary.json`` (Strehl ratio and
encircled energy per channel, :func:`optics.metrics.psf_summary`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from optics import figures
from optics.camera import Camera
from optics.coefficients import save_coefficients
from optics.kit.config import save_config
from optics.kit.imageio import example_face, load_image, save_image
from optics.metrics import psf_summary

__all__ = ["render_camera_report"]


def _image_batch(path, cam: Camera) -> torch.Tensor:
    size = cam.config.image_size_px
    x = example_face(size) if path is None else load_image(path, size)
    return x.unsqueeze(0)


def render_camera_report(cam: Camera, out: Path, image=None, seed: int = 0) -> dict:
    """Figures, ``camera.yaml``, ``coefficients.json`` and ``summary.json`` for one camera into
    ``out``; ``image``: the example scene (default a face from scikit-image); returns the
    summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = cam.config
    labels = [f"{w * 1e9:.0f} nm" for w in cfg.wavelengths_m]
    with torch.no_grad():
        psf = cam.psf()
        x = _image_batch(image, cam)
        y = cam(x, generator=torch.Generator().manual_seed(seed))
    figures.plot_phase_map(cam.opd_m().detach(), cam.aperture, 550e-9, out / "phase_map.png",
                           title=f"{cfg.name}: phase plate")
    figures.plot_psf(psf, cfg.pixel_pitch_m, out / "psf.png", labels=labels)
    figures.plot_mtf(psf, cfg.pixel_pitch_m, out / "mtf.png", labels=labels)
    figures.plot_image_pair(x[0], y[0], out / "example.png",
                            titles=("scene x", f"{cfg.name} camera y"))
    save_image(y[0], out / "example_y.png")
    save_config(cfg, out / "camera.yaml")
    save_coefficients(cam.coefficients_dict(), out / "coefficients.json", camera=cfg.name)
    summary = psf_summary(cam)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
