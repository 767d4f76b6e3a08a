"""The judge: how much of the held-out faces an attack recovers.

Metrics of a reconstruction ``x_hat`` of held-out faces ``x`` (:class:`Judge`):

- PSNR, SSIM and LPIPS (AlexNet, v0.1) against ``x``;
- per identity judge (``judges``: dlib's ResNet alone by default; the privacy report uses
  :func:`deid.evaluation.judges.default_judges`, dlib, MobileFaceNet and FaceRes), under
  ``judges[name]``:

  - ``distance_to_clean``: the judge's distance between ``e(x_hat)`` and ``e(x)`` on the
    held-out faces (:func:`~deid.evaluation.judges.judge_distance`; dlib's 0.6 is its
    same-person threshold), mean with a 95% bootstrap interval over the faces;
  - ``reid_top1``: re-identification top-1 on the identity split ``johns`` (chance
    1 / identities): each image goes through the camera and the attack and is matched against
    the clean johns gallery (leave-one-out), with a 95% two-level bootstrap interval
    (identities, then images) and the numbers of images (``n``) and identities
    (``n_groups``). The ``matched`` attack reconstructs nothing: it matches ``y`` against the
    gallery passed through the same camera (``gallery: "camera"``);

- ``worst_over_judges``: the judge with the highest re-identification;
- ``fr_distance`` and ``reid_top1``: dlib's two figures as plain numbers (as ``optics attack``
  has always printed them), when dlib is one of the judges.

Every distinct image is embedded once per judge (:class:`EmbeddingCache`): the clean faces
once per judge, and a reconstruction that equals an image seen before (the clean faces
behind ``none``, the same low-resolution image behind ``identity`` and ``matched``) is not
embedded again.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import torch

from deid.attacks.attacker import Attacker
from deid.attacks.cameras import AttackCamera
from deid.evaluation.judges import judge_distance
from deid.evaluation.reid_table import reid_interval, worst_over_judges
from deid.evaluation.stats import mean_with_interval
from deid.faces.corpus import FaceSets
from deid.judges.dlib import DlibFaceEmbedder
from deid.judges.lpips import lpips_distance
from deid.judges.quality import psnr, ssim
from optics.kit.resize import resize_to

__all__ = ["Judge", "EmbeddingCache", "run_attack"]


# --------------------------------------------------------------------------- embeddings
def _rows(e) -> np.ndarray:
    return e.detach().cpu().numpy() if isinstance(e, torch.Tensor) else np.asarray(e)


class EmbeddingCache:
    """``images -> {judge: (N, D) embeddings}`` with every judge, each distinct image (by the
    bytes of its float32 pixels) embedded once per judge; the images a judge has not seen go
    to it in one batch. ``pin()`` marks what is seen so far as kept by ``trim()``."""

    def __init__(self, judges: dict):
        self.judges = dict(judges)
        self.memo: dict = {j: {} for j in self.judges}
        self.pinned: set = set()
        self.seconds = {j: 0.0 for j in self.judges}
        self.embedded = {j: 0 for j in self.judges}  # images each judge actually ran on
        self.requested = 0

    @staticmethod
    def keys(images: torch.Tensor) -> list[bytes]:
        a = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return [hashlib.blake2b(im.tobytes(), digest_size=16).digest() for im in a]

    def __call__(self, images: torch.Tensor) -> dict:
        keys = self.keys(images)
        self.requested += len(keys)
        out = {}
        for j, embed in self.judges.items():
            memo = self.memo[j]
            first: dict = {}
            for i, k in enumerate(keys):
                if k not in memo and k not in first:
                    first[k] = i
            if first:
                t0 = time.perf_counter()
                e = _rows(embed(images[list(first.values())]))
                self.seconds[j] += time.perf_counter() - t0
                self.embedded[j] += len(first)
                for k, row in zip(first, e, strict=True):
                    memo[k] = row
            out[j] = np.stack([memo[k] for k in keys]) if keys else np.zeros((0, 0))
        return out

    def remember(self, images: torch.Tensor, embeddings: dict) -> None:
        """Take ``{judge: (N, D)}`` as the embeddings of ``images``."""
        keys = self.keys(images)
        for j in self.judges:
            self.memo[j].update(zip(keys, np.asarray(embeddings[j]), strict=True))

    def pin(self) -> None:
        for memo in self.memo.values():
            self.pinned.update(memo)

    def trim(self) -> None:
        """Forget every embedding not pinned (e.g. after each camera)."""
        for j, memo in self.memo.items():
            self.memo[j] = {k: v for k, v in memo.items() if k in self.pinned}


# --------------------------------------------------------------------------- metrics
class Judge:
    """Scores reconstructions of ``faces.test`` and re-identification on ``faces.johns`` with
    every identity judge in ``judges`` (``{name: images -> (N, D)}``; default: dlib's ResNet
    alone). Intervals are seeded with ``seed``."""

    def __init__(self, faces: FaceSets, lpips: bool = True, judges: dict | None = None,
                 seed: int = 0, clean: dict | None = None):
        self.faces = faces
        self.judges = dict(judges) if judges is not None else {"dlib": DlibFaceEmbedder().embed}
        self.embeddings = EmbeddingCache(self.judges)
        self.ids = np.asarray(faces.johns_ids)
        self.use_lpips = lpips
        self.seed = seed
        images = torch.cat([faces.test, faces.johns])
        n = len(faces.test)
        if clean is None:
            clean = self.embeddings(images)
        else:  # given (e.g. stored by an earlier report): remembered as if embedded here
            self.embeddings.remember(images, clean)
        #: the clean faces' embeddings per judge: ``{judge: (N_test + N_johns, D)}``
        self.clean = {j: np.asarray(clean[j]) for j in self.judges}
        self.e_test = {j: e[:n] for j, e in self.clean.items()}
        self.e_johns = {j: e[n:] for j, e in self.clean.items()}
        self.embeddings.pin()

    def _lpips(self, a, b) -> float:
        if not self.use_lpips:
            return float("nan")
        with torch.no_grad():
            return float(lpips_distance(a, b).mean())

    def _finish(self, metrics: dict, per_judge: dict) -> dict:
        metrics["judges"] = per_judge
        metrics["worst_over_judges"] = {"reid_top1": worst_over_judges(per_judge, "reid_top1")}
        if "dlib" in per_judge:
            d = per_judge["dlib"].get("distance_to_clean")
            metrics["fr_distance"] = d["value"] if d else float("nan")
            metrics["reid_top1"] = per_judge["dlib"]["reid_top1"]["value"]
        return metrics

    def score(self, x_hat_test, x_hat_johns) -> dict:
        x = self.faces.test
        n = len(x)
        e = self.embeddings(torch.cat([x_hat_test, x_hat_johns]))
        per_judge = {}
        for j in self.judges:
            d = judge_distance(j, e[j][:n], self.e_test[j])
            per_judge[j] = {
                "distance_to_clean": mean_with_interval(d, seed=self.seed),
                "reid_top1": {**reid_interval(e[j][n:], self.e_johns[j], self.ids, self.seed),
                              "gallery": "clean"},
            }
        return self._finish({"psnr_db": float(psnr(x, x_hat_test).mean()),
                             "ssim": float(ssim(x, x_hat_test).mean()),
                             "lpips": self._lpips(x, x_hat_test)}, per_judge)

    def score_matched(self, camera: AttackCamera, y_johns) -> dict:
        e = self.embeddings(resize_to(y_johns, self.faces.test.shape[-1]))
        per_judge = {j: {"reid_top1": {**reid_interval(e[j], e[j], self.ids, self.seed),
                                       "gallery": "camera"}} for j in self.judges}
        return self._finish({"psnr_db": float("nan"), "ssim": float("nan"),
                             "lpips": float("nan")}, per_judge)


def run_attack(attacker: Attacker, judge: Judge, y_test=None, seed: int = 0,
               y_johns=None) -> dict:
    """Attack the held-out faces (simulated through the camera unless ``y_test`` is given,
    e.g. captured frames) and the johns set (simulated with ``seed + 1`` unless ``y_johns``
    is given); returns the metrics, the test reconstructions ``x_hat``, the privacy images
    ``y`` and the johns reconstructions ``x_hat_johns`` (None for ``matched``), so other
    judges can score the same reconstructions. ``seconds_attack`` times the reconstructions,
    ``seconds_judge`` the scoring."""
    faces = judge.faces
    cam = attacker.camera
    if y_test is None:
        y_test = cam(faces.test, seed=seed)
    if y_johns is None:
        y_johns = cam(faces.johns, seed=seed + 1)
    t0 = time.perf_counter()
    with torch.no_grad():
        if attacker.method == "matched":
            x_hat = x_hat_johns = None
            t1 = time.perf_counter()
            metrics = judge.score_matched(cam, y_johns)
        else:
            x_hat = attacker.reconstruct(y_test)
            x_hat_johns = attacker.reconstruct(y_johns)
            t1 = time.perf_counter()
            metrics = judge.score(x_hat, x_hat_johns)
    metrics["seconds_attack"] = t1 - t0
    metrics["seconds_judge"] = time.perf_counter() - t1
    metrics["seconds_prepare"] = attacker.seconds_prepare
    metrics["params"] = dict(attacker.params)
    return {"metrics": metrics, "x_hat": x_hat, "y": y_test, "x_hat_johns": x_hat_johns}
