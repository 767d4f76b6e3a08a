"""Using a trained stage-1 run: its camera (learned coefficients frozen) and its fine-tuned
regressor U, and 68 landmarks of any face image through them (``optics landmarks``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deid.faces.fan import FAN
from deid.methods.stage1.trainer import REGRESSOR_FILE, Stage1Config
from deid.methods.stage1.trainer import build_camera as build_stage1_camera
from deid.methods.teacher import load_teacher
from optics.camera import Camera, CameraConfig
from optics.coefficients import load_coefficients
from optics.kit.checkpoint import latest_checkpoint, load_checkpoint
from optics.kit.config import load_config
from optics.kit.resize import resize_to

__all__ = ["load_run_camera", "load_run_regressor", "image_landmarks", "landmarks_job"]


def _check_run(run) -> Path:
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(2, "not a stage-1 run (no config.yaml)", str(run))
    return run


def load_run_camera(run, size: int | None = None) -> Camera:
    """The run's camera with its learned coefficients, frozen, for ``size``-pixel scenes
    (default: the run's image size). Uses ``camera.yaml`` (the run's exact optics, PSF
    window included) when the run has one, else rebuilds the optics from its config."""
    run = _check_run(run)
    cfg = load_config(Stage1Config, run / "config.yaml")
    size = size or cfg.image_size
    if (run / "camera.yaml").exists():
        base = load_config(CameraConfig, run / "camera.yaml").at_image_size(size)
    else:
        base = build_stage1_camera(cfg).config.at_image_size(size)
    coeffs = load_coefficients(run / "coefficients.json") \
        if (run / "coefficients.json").exists() else {}
    n = max([base.n_modes, cfg.n_modes, *coeffs])
    return Camera(base.replace(n_modes=n), coefficients_um=coeffs).requires_grad_(False)


def load_run_regressor(run, device="cpu") -> FAN:
    """The run's fine-tuned regressor U: ``regressor.pt``, or for runs made before it was
    written, the student of the newest checkpoint (with the teacher's architecture)."""
    run = _check_run(run)
    if (run / REGRESSOR_FILE).exists():
        return load_teacher(run / REGRESSOR_FILE, device)
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise FileNotFoundError(2, "the run has no regressor.pt and no checkpoint", str(run))
    cfg = load_config(Stage1Config, run / "config.yaml")
    if not cfg.teacher:
        raise ValueError(f"{run} has no regressor.pt and its config names no teacher")
    state = load_checkpoint(ckpt, map_location=device)["model"]
    model = FAN.from_config(load_teacher(cfg.teacher).config)
    model.load_state_dict({k[len("student."):]: v for k, v in state.items()
                           if k.startswith("student.")})
    return model.to(device).eval()


def _load_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        a = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32))
    return (a / 255.0).permute(2, 0, 1)


@torch.no_grad()
def image_landmarks(run, paths, captured: bool = False, seed: int = 0) -> dict:
    """``{file name: (68, 2) points}`` in each input image's own pixel coordinates (pixel
    ``i`` covers ``[i, i + 1)``). Clean images go through the run's camera (seeded noise),
    then U; ``captured`` privacy frames go to U alone. Every image is resized to the run's
    image size (a non-square image is stretched, and the points are stretched back)."""
    run = _check_run(run)
    cfg = load_config(Stage1Config, run / "config.yaml")
    size = cfg.image_size
    regressor = load_run_regressor(run)
    camera = None if captured else load_run_camera(run, size)
    out = {}
    for k, path in enumerate(paths):
        path = Path(path)
        img = _load_rgb(path)
        h, w = img.shape[-2:]
        x = resize_to(img[None], size)
        y = x if captured else camera(x, generator=torch.Generator().manual_seed(seed + k))
        pts = regressor.landmarks(resize_to(y, regressor.config.input_size))[0].float()
        scale = torch.tensor([w / regressor.config.input_size, h / regressor.config.input_size])
        out[path.name] = pts * scale
    return out


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")


def landmarks_job(run, images_dir, out_file, captured: bool = False, seed: int = 0) -> dict:
    """``optics landmarks``: every image of ``images_dir`` (sorted by name) through the run,
    written to ``out_file`` as ``{"landmarks": {name: [[x, y], ...68]}, "run", "camera",
    ...}``; returns that dict."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise FileNotFoundError(2, "no such image folder", str(folder))
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    run = _check_run(run)
    cfg = load_config(Stage1Config, run / "config.yaml")
    pts = image_landmarks(run, paths, captured=captured, seed=seed)
    result = {
        "landmarks": {k: [[round(x, 3), round(y, 3)] if math.isfinite(x + y) else None
                          for x, y in v.tolist()] for k, v in pts.items()},
        "run": str(run), "camera": cfg.camera,
        "input": "captured privacy frames" if captured else "clean images through the camera",
        "convention": "68 iBUG points, (x, y) in pixels of each input image; pixel i covers "
                      "[i, i + 1); null where the regressor found no heatmap peak",
        "image_size_px": cfg.image_size,
    }
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    return result
