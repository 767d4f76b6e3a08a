"""Pre-training of the heatmap teacher U* on clean faces.

Targets are Gaussian heatmaps of the cached dlib 68-point landmarks (the teacher learns to
reproduce dlib); the loss is the adaptive wing loss (Wang et al., ICCV 2019) with its
foreground weighting. Augmentation: horizontal flips (with the landmark flip permutation) and
small random similarity transforms, drawn per sample from generators keyed by
(seed, step, sample), so runs are reproducible and resumable.

Evaluation reports NME (mean point error over the outer-eye-corner distance) of U* against
dlib on held-out images, and against the *human* iBUG annotations, beside dlib's own NME
against the same human annotations as the reference.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from deid.faces.corpus import default_corpus, load_split
from deid.faces.fan import FAN, FANConfig
from deid.faces.heatmaps import adaptive_wing_loss, gaussian_heatmaps, nme
from deid.faces.jitter import Jitter, draw_params, jitter
from optics.kit.checkpoint import load_checkpoint, save_checkpoint
from optics.kit.config import from_dict, save_config, to_dict
from optics.kit.distributed import apply_thread_limit, pick_device
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to
from optics.kit.schedule import global_batch, sample_generator

__all__ = ["FANTrainConfig", "train_teacher", "load_teacher", "evaluate_nme", "affine_augment",
           "run_pretrain_fan", "ensure_teacher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FANTrainConfig:
    """Teacher training settings (sizes in pixels).

    Fields:
        image_size: face side in pixels (64, 128 or 256).
        width: channels of the hourglass.
        num_modules: stacked hourglasses.
        depth: down-sampling levels per hourglass.
        steps: optimiser steps.
        batch_size: faces per step.
        lr: Adam learning rate.
        sigma_px: std of the Gaussian heatmap targets, pixels of the heatmap.
        max_rotation_deg: largest random rotation, degrees (random flips come with it).
        max_scale: largest random relative scale change.
        max_shift: largest random shift, fraction of the face size (the crop side / 1.6).
        seed: seed of batch order and augmentation.
        device: auto, cpu, cuda or cuda:N.
    """

    image_size: int = 128
    width: int = 64
    num_modules: int = 1
    depth: int = 4
    steps: int = 1500
    batch_size: int = 16
    lr: float = 1e-3
    sigma_px: float = 1.0
    max_rotation_deg: float = 20.0
    max_scale: float = 0.15
    max_shift: float = 0.10
    seed: int = 0
    device: str = "auto"

    def fan_config(self):
        return FANConfig(input_size=self.image_size, width=self.width,
                         num_modules=self.num_modules, depth=self.depth)


def augmentation(cfg: FANTrainConfig) -> Jitter:
    """The teacher's random geometric augmentation: the evaluation jitter's family
    (:mod:`deid.faces.jitter`) with the config's ranges."""
    return Jitter(max_rotation_deg=cfg.max_rotation_deg, max_scale=cfg.max_scale,
                  max_shift=cfg.max_shift)


def affine_augment(images: torch.Tensor, landmarks: torch.Tensor, generators, cfg):
    """Random flip + rotation/scale/shift per sample (one generator each). ``images (B, 3,
    S, S)``, ``landmarks (B, 68, 2)`` pixel (x, y); returns both transformed consistently."""
    return jitter(images, landmarks, draw_params(generators, augmentation(cfg)))


def train_teacher(cfg: FANTrainConfig, images: torch.Tensor, landmarks: torch.Tensor,
                  out_dir, device: torch.device, progress: bool = True):
    """Train U* on ``images (N, 3, S, S)`` with dlib ``landmarks (N, 68, 2)``; writes
    ``fan.pt`` (config + weights) into ``out_dir``; returns the model."""
    keep = torch.isfinite(landmarks).all(dim=-1).all(dim=-1)
    images, landmarks = images[keep], landmarks[keep]
    if len(images) == 0:
        raise ValueError("no training faces with landmarks")
    torch.manual_seed(cfg.seed)
    fan_cfg = cfg.fan_config()
    model = FAN.from_config(fan_cfg).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.steps))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(range(cfg.steps), desc="teacher", unit="step", disable=not progress,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    for step in bar:
        idx = global_batch(step, len(images), cfg.batch_size, cfg.seed)
        gens = [sample_generator(cfg.seed, step, i) for i in range(len(idx))]
        x, lmk = affine_augment(images[idx], landmarks[idx], gens, cfg)
        target = gaussian_heatmaps(lmk, cfg.image_size, fan_cfg.heatmap_size, cfg.sigma_px)
        preds = model(x.to(device), return_all=True)
        loss = sum(adaptive_wing_loss(p, target.to(device), weighted=True) for p in preds)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    log.info("teacher: %d steps in %.0f s", cfg.steps, time.perf_counter() - t0)
    model.eval()
    save_checkpoint({"fan_config": to_dict(fan_cfg), "train_config": to_dict(cfg),
                     "state_dict": model.state_dict()}, out / "fan.pt")
    return model


def load_teacher(path, device="cpu"):
    """Rebuild a FAN saved by :func:`train_teacher` (``weights_only`` load)."""
    state = load_checkpoint(path, map_location=device)
    if "fan_config" not in state or "state_dict" not in state:
        raise ValueError(f"{path} is not a FAN checkpoint written by optics pretrain-fan")
    model = FAN.from_config(from_dict(FANConfig, state["fan_config"]))
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval()


@torch.no_grad()
def evaluate_nme(model, images: torch.Tensor, reference: torch.Tensor, batch: int = 32,
                 transform=None) -> dict:
    """Mean/median NME of ``model`` on ``images`` against ``reference (N, 68, 2)`` (NaN rows
    skipped); ``transform`` (e.g. a camera) is applied to the images first."""
    device = next(model.parameters()).device
    errors = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device)
        if transform is not None:
            x = resize_to(transform(x), model.config.input_size)
        pred = model.landmarks(x).cpu()
        errors.append(nme(pred, reference[i:i + batch]))
    e = torch.cat(errors) if errors else torch.empty(0)
    e = e[torch.isfinite(e)]
    if len(e) == 0:
        return {"n": 0, "mean": float("nan"), "median": float("nan")}
    return {"n": int(len(e)), "mean": float(e.mean()), "median": float(e.median())}


def run_pretrain_fan(cfg, out_dir, data_root=None, progress=True) -> dict:
    """Train the teacher and report NME; writes ``fan.pt``, ``config.yaml``, ``nme.json``."""
    apply_thread_limit()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    device = pick_device(cfg.device)
    root = data_root or default_corpus()
    images, lmk, _ = load_split(root, "train", cfg.image_size)
    model = train_teacher(cfg, images, lmk, out, device, progress=progress)
    report = {"train_faces": len(images)}
    val_x, val_dlib, _ = load_split(root, "val", cfg.image_size)
    report["val_vs_dlib"] = evaluate_nme(model, val_x, val_dlib)
    test_x, test_dlib, _ = load_split(root, "test", cfg.image_size)
    _, test_human, _ = load_split(root, "test", cfg.image_size, landmark_key="human68")
    report["test_vs_dlib"] = evaluate_nme(model, test_x, test_dlib)
    report["test_vs_human"] = evaluate_nme(model, test_x, test_human)
    report["dlib_vs_human"] = _nme_of(test_dlib, test_human)
    (out / "nme.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _nme_of(pred, gt) -> dict:
    e = nme(pred, gt)
    e = e[torch.isfinite(e)]
    return {"n": int(len(e)), "mean": float(e.mean()) if len(e) else float("nan"),
            "median": float(e.median()) if len(e) else float("nan")}


def ensure_teacher(out_dir, cfg: FANTrainConfig, data_root=None,
                   progress: bool = True) -> tuple[dict, bool]:
    """The teacher in ``out_dir``: reused when ``fan.pt`` and ``nme.json`` are there, else
    trained with ``cfg`` (:func:`run_pretrain_fan`). Returns ``(NME report, reused)``."""
    out = Path(out_dir)
    if (out / "fan.pt").exists() and (out / "nme.json").exists():
        return json.loads((out / "nme.json").read_text()), True
    return run_pretrain_fan(cfg, out, data_root=data_root, progress=progress), False
