"""The judge: how much of the held-out faces an attack recovers.

Metrics of a reconstruction ``x_hat`` of held-out faces ``x`` (:class:`Judge`):

- PSNR, SSIM and LPIPS (AlexNet, v0.1) against ``x``;
- the dlib-ResNet (face_recognition) embedding distance between ``x_hat`` and ``x``
  (0.6 is dlib's same-person threshold);
- re-identification top-1 on the identity split ``johns`` (chance 1 / identities): each image goes
  through the camera and the attack, and is matched against the clean johns gallery
  (leave-one-out). The ``matched`` attack reconstructs nothing: it matches ``y`` against the
  gallery passed through the same camera.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from deid.attacks.attacker import Attacker
from deid.attacks.cameras import AttackCamera
from deid.evaluation.reid import reid_top1
from deid.faces.corpus import FaceSets
from deid.judges.dlib import DlibFaceEmbedder, distance
from deid.judges.lpips import lpips_distance
from deid.judges.quality import psnr, ssim
from optics.kit.resize import resize_to

__all__ = ["Judge", "run_attack"]


# --------------------------------------------------------------------------- metrics
class Judge:
    """Scores reconstructions of ``faces.test`` and re-identification on ``faces.johns``."""

    def __init__(self, faces: FaceSets, lpips: bool = True):
        self.faces = faces
        self.embedder = DlibFaceEmbedder()
        self.e_test = self.embedder.embed(faces.test)
        self.e_johns = self.embedder.embed(faces.johns)
        self.ids = np.asarray(faces.johns_ids)
        self.use_lpips = lpips

    def _lpips(self, a, b) -> float:
        if not self.use_lpips:
            return float("nan")
        with torch.no_grad():
            return float(lpips_distance(a, b).mean())

    def score(self, x_hat_test, x_hat_johns) -> dict:
        x = self.faces.test
        e_hat = self.embedder.embed(x_hat_test)
        e_johns_hat = self.embedder.embed(x_hat_johns)
        return {
            "psnr_db": float(psnr(x, x_hat_test).mean()),
            "ssim": float(ssim(x, x_hat_test).mean()),
            "lpips": self._lpips(x, x_hat_test),
            "fr_distance": float(distance(e_hat, self.e_test).mean()),
            "reid_top1": reid_top1(e_johns_hat, self.ids, self.e_johns, self.ids,
                                   leave_one_out=True),
        }

    def score_matched(self, camera: AttackCamera, y_johns) -> dict:
        e = self.embedder.embed(resize_to(y_johns, self.faces.test.shape[-1]))
        return {"psnr_db": float("nan"), "ssim": float("nan"), "lpips": float("nan"),
                "fr_distance": float("nan"),
                "reid_top1": reid_top1(e, self.ids, e, self.ids, leave_one_out=True)}


def run_attack(attacker: Attacker, judge: Judge, y_test=None, seed: int = 0) -> dict:
    """Attack the held-out faces (simulated through the camera unless ``y_test`` is given,
    e.g. captured frames) and the johns set; returns the metrics, the test reconstructions
    ``x_hat``, the privacy images ``y`` and the johns reconstructions ``x_hat_johns`` (None
    for ``matched``), so other judges can score the same reconstructions."""
    faces = judge.faces
    cam = attacker.camera
    if y_test is None:
        y_test = cam(faces.test, seed=seed)
    y_johns = cam(faces.johns, seed=seed + 1)
    t0 = time.perf_counter()
    with torch.no_grad():
        if attacker.method == "matched":
            metrics = judge.score_matched(cam, y_johns)
            x_hat = x_hat_johns = None
        else:
            x_hat = attacker.reconstruct(y_test)
            x_hat_johns = attacker.reconstruct(y_johns)
            metrics = judge.score(x_hat, x_hat_johns)
    metrics["seconds_attack"] = time.perf_counter() - t0
    metrics["seconds_prepare"] = attacker.seconds_prepare
    metrics["params"] = dict(attacker.params)
    return {"metrics": metrics, "x_hat": x_hat, "y": y_test, "x_hat_johns": x_hat_johns}
