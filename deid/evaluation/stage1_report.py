"""Privacy and utility of a stage-1 camera beside three references.

Cameras: ``clean`` (no optics), ``defocus`` (the target PSF ``H_f`` alone), ``learned`` (this
run) and ``lr16`` (16x16 sensor). Per camera, on held-out faces:

- PSNR and SSIM of ``y`` against ``x`` (a low-resolution ``y`` is upsampled first);
- the dlib-ResNet (face_recognition) embedding distance between ``y`` and ``x``;
- re-identification top-1 on the 5-identity johns set, against a clean gallery and against a
  gallery passed through the same camera (leave-one-out; chance 20%);
- heatmap NME of the regressor on ``y`` against the teacher's landmarks on ``x`` and against
  the human iBUG annotations. The learned camera uses its fine-tuned regressor U; the others
  use the teacher U* as is (a ``--camera lr16`` run gives lr16 its own fine-tuned U);
- the cheapest strong attack, a Wiener filter with the camera's PSF, its balance tuned on the
  attacker's own (training) faces: PSNR of the restored faces, and re-identification of the
  restored johns images against the clean gallery. ``optics privacy-report --run RUN`` runs
  every attack.
"""

from __future__ import annotations

import logging
import math

import torch

from deid.attacks.attacker import AttackConfig, Attacker
from deid.attacks.cameras import AttackCamera, build_camera, optical_camera
from deid.evaluation.judge import Judge, run_attack
from deid.evaluation.reid import reid_report
from deid.faces.corpus import FaceSets, load_split
from deid.faces.heatmaps import heatmaps_to_landmarks, nme
from deid.judges.dlib import DlibFaceEmbedder, distance
from deid.judges.quality import psnr, ssim
from optics.camera import Camera
from optics.imaging import form_image
from optics.kit.resize import resize_to
from optics.metrics import psf_summary
from optics.presets import get_preset

__all__ = ["stage1_report", "camera_functions"]

log = logging.getLogger(__name__)


def _seeded(fn, seed: int):
    def run(x):
        return fn(x, torch.Generator(device=x.device).manual_seed(seed))
    return run


def camera_functions(trainer) -> dict:
    """``{name: (x -> y, regressor)}`` for the four cameras of the report."""
    cfg = trainer.cfg
    learned = trainer.camera
    sensor = learned.config.sensor
    target = trainer.target_psf
    lr16 = Camera(get_preset("lr16").at_image_size(cfg.image_size)).to(trainer.device)
    teacher, student = trainer.teacher, trainer.model.student

    def clean(x, g):
        return x

    def defocus(x, g):
        return form_image(x, target.to(x.dtype), sensor, generator=g)

    def learned_fn(x, g):
        return learned(x, generator=g)

    def lr16_fn(x, g):
        return lr16(x, generator=g)

    return {
        "clean": (_seeded(clean, cfg.seed), teacher),
        "defocus": (_seeded(defocus, cfg.seed), teacher),
        "learned": (_seeded(learned_fn, cfg.seed), student),
        "lr16": (_seeded(lr16_fn, cfg.seed), student if cfg.camera == "lr16" else teacher),
    }


def attack_cameras(trainer) -> dict:
    """``{name: AttackCamera}`` for defocus, learned and lr16: what a Wiener attacker faces,
    with the PSF it knows."""
    sensor = trainer.camera.config.sensor
    target = trainer.target_psf.detach().cpu().float()

    def defocus(x, g):
        return form_image(x, target.to(x.device, x.dtype), sensor, generator=g)

    return {"defocus": AttackCamera("defocus", defocus, target, "H_f"),
            "learned": optical_camera("learned", copy_camera(trainer.camera)),
            "lr16": build_camera("lr16", trainer.cfg.image_size)}


def copy_camera(camera: Camera) -> Camera:
    """A frozen CPU copy of ``camera`` (the attacker's model of it)."""
    import copy

    return copy.deepcopy(camera).cpu().requires_grad_(False)


def _wiener_attack(camera, faces, judge) -> dict:
    attacker = Attacker("wiener", camera, AttackConfig(size=faces.test.shape[-1]))
    metrics = run_attack(attacker.prepare(faces.train), judge)["metrics"]
    return {"wiener_psnr_db": metrics["psnr_db"], "reid_top1_wiener": metrics["reid_top1"],
            "wiener_balance": metrics["params"].get("reg")}


@torch.no_grad()
def _landmarks(model, images, batch=32):
    out = []
    size = model.config.input_size
    for i in range(0, len(images), batch):
        x = resize_to(images[i:i + batch], size)
        heat = model(x)[:, :model.config.num_landmarks]
        out.append(heatmaps_to_landmarks(heat, size, method="taylor").cpu())
    return torch.cat(out)


def _nme_stats(pred, gt) -> float:
    e = nme(pred, gt)
    e = e[torch.isfinite(e)]
    return float(e.mean()) if len(e) else float("nan")


@torch.no_grad()
def stage1_report(trainer, root) -> dict:
    """Everything in ``report.json`` (see the module docstring)."""
    cfg = trainer.cfg
    dev = trainer.device
    size = cfg.image_size
    test_x, _, _ = load_split(root, "test", size, landmark_key=None)
    _, human, _ = load_split(root, "test", size, landmark_key="human68")
    johns_x, _, johns_ids = load_split(root, "johns", size, landmark_key=None)
    test_x, johns_x = test_x.to(dev), johns_x.to(dev)
    teacher_lmk = _landmarks(trainer.teacher, test_x)
    embed = DlibFaceEmbedder()
    e_clean = embed.embed(test_x.cpu())
    faces = FaceSets(train=trainer.train_images.cpu(), test=test_x.cpu(), johns=johns_x.cpu(),
                     johns_ids=list(johns_ids))
    judge = Judge(faces, lpips=False)
    attack_cams = attack_cameras(trainer)
    cams = {}
    for name, (fn, regressor) in camera_functions(trainer).items():
        y = fn(test_x)
        y_up = resize_to(y, size)
        lmk = _landmarks(regressor, y_up)
        reid = reid_report(lambda im: embed.embed(im.cpu()), johns_x, johns_ids, fn)
        cams[name] = {
            "psnr_db": float(psnr(test_x, y_up).mean()),
            "ssim": float(ssim(test_x, y_up).mean()),
            "fr_distance": float(distance(embed.embed(y_up.cpu()), e_clean).mean()),
            "reid_top1_clean_gallery": reid["top1_clean_gallery"],
            "reid_top1_matched_gallery": reid["top1_matched_gallery"],
            "reid_chance": reid["chance"],
            "nme_vs_teacher": _nme_stats(lmk, teacher_lmk),
            "nme_vs_human": _nme_stats(lmk, human),
            "regressor": "U (fine-tuned)" if regressor is trainer.model.student else "U* (teacher)",
        }
        if name != "clean":
            cams[name].update(_wiener_attack(attack_cams[name], faces, judge))
        log.info("%s: %s", name, cams[name])
    clean_nme = cams["clean"]["nme_vs_human"]
    learned = cams["learned"]
    goals = {
        "reid_at_chance_both_galleries": max(learned["reid_top1_clean_gallery"],
                                             learned["reid_top1_matched_gallery"]) <= 0.30,
        "fr_distance_above_0.6": learned["fr_distance"] > 0.6,
        "nme_within_1.5x_clean": (math.isfinite(clean_nme)
                                  and learned["nme_vs_human"] <= 1.5 * clean_nme),
    }
    return {
        "config": {k: v for k, v in vars(cfg).items()},
        "steps": trainer.step,
        "final_losses": trainer.history[-1] if trainer.history else {},
        "test_faces": int(len(test_x)),
        "johns_images": int(len(johns_x)),
        "cameras": cams,
        "goals": goals,
        "psf": psf_summary(trainer.camera),
        "coefficients_um": {str(k): v for k, v in trainer.camera.coefficients_dict().items()},
    }
