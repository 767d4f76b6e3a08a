"""``optics attack``: one method against one camera, on simulated or captured privacy images,
written as recovered images, ``grid.png`` and ``attack.json``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from deid.attacks.attacker import AttackConfig, Attacker
from deid.attacks.cameras import build_camera, load_psf
from deid.evaluation.figures import attack_grid
from deid.evaluation.judge import Judge, run_attack
from deid.faces.corpus import load_face_sets
from deid.faces.corpus_builder import ensure_demo_corpus
from deid.faces.dataset import FaceFolder
from optics.kit.config import save_config
from optics.kit.imageio import save_image
from optics.kit.resize import resize_to

__all__ = ["folder_images", "attack_job"]


def folder_images(folder, size: int) -> tuple[torch.Tensor, list[str]]:
    """Every image in ``folder`` as ``(N, 3, size, size)`` in [0, 1] (sorted by file name)
    and their file stems; one-line error if there are none."""
    ds = FaceFolder(folder, size=size, landmarks=None)
    if len(ds) == 0:
        raise ValueError(f"no images in {folder}")
    return torch.stack([ds[i]["image"] for i in range(len(ds))]), [Path(p).stem
                                                                   for p in ds.paths]


def attack_job(method: str, camera: str, out_dir, config: AttackConfig | None = None,
               images=None, captured=None, psf=None, calibration=None,
               lpips: bool = True) -> dict:
    """Attack the faces in ``images`` (default: the demo corpus's test split) seen through
    ``camera`` (a preset, a baseline or a stage-1 run). ``captured``: a folder of real privacy
    frames paired with ``images`` by sorted file name, used instead of simulating them;
    ``psf``: the PSF the attacker knows (a measured one, ``FILE[:DATASET]``) instead of the
    simulated one. Returns what ``attack.json`` holds."""
    cfg = config or AttackConfig()
    out = Path(out_dir)
    faces = load_face_sets(cfg.size, ensure_demo_corpus())
    names = [f"{i:04d}" for i in range(len(faces.test))]
    if images:
        faces.test, names = folder_images(images, cfg.size)
    cam = build_camera(camera, cfg.size, calibration=calibration)
    if psf:
        cam.psf = load_psf(psf)
    y = None
    if captured:
        y, _ = folder_images(captured, cam.output_size or cfg.size)
        if len(y) != len(faces.test):
            raise ValueError(f"{len(y)} captured images but {len(faces.test)} originals "
                             f"(they are paired by sorted file name)")
    attacker = Attacker(method, cam, cfg).prepare(faces.train)
    judge = Judge(faces, lpips=lpips)
    r = run_attack(attacker, judge, y_test=y, seed=cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "attack-config.yaml")
    if r["x_hat"] is not None:
        for name, img in zip(names, r["x_hat"], strict=False):
            save_image(img, out / "recovered" / f"{name}.png")
        rows = {f"{cam.name}#{i}": {"y": resize_to(r["y"][i:i + 1], cfg.size)[0],
                                    method: r["x_hat"][i]} for i in range(min(4, len(names)))}
        attack_grid(rows, faces.test, method, out / "grid.png")
    result = {"method": method, "camera": cam.name, "camera_description": cam.description,
              "images": str(images or "demo corpus test split"),
              "captured": str(captured) if captured else None,
              "n_images": int(len(faces.test)), "johns_images": int(len(faces.johns)),
              "reid_chance": 1.0 / len(set(faces.johns_ids)), "metrics": r["metrics"]}
    (out / "attack.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
