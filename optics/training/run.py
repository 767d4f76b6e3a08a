"""Entry points behind ``optics pretrain-fan`` and ``optics train-stage1``.

They assemble a config (file, then ``--field`` options, then ``--set key=value``), load the
data, and run the trainers; the CLI only parses and prints.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from ..configio import apply_overrides, from_dict, load_config, save_config, to_dict
from .data import default_corpus, load_split

__all__ = ["assemble_config", "run_pretrain_fan", "run_stage1"]

log = logging.getLogger(__name__)


def assemble_config(cls, config_file=None, fields: dict | None = None, sets=()):
    """Defaults < YAML file < ``--field`` options < ``--set key=value``."""
    cfg = load_config(cls, config_file) if config_file else cls()
    if fields:
        cfg = from_dict(cls, {**to_dict(cfg), **{k: (list(v) if isinstance(v, tuple) else v)
                                                 for k, v in fields.items()}})
    return apply_overrides(cfg, sets)


def _threads():
    n = int(os.environ.get("PRIVLENS_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)


def run_pretrain_fan(cfg, out_dir, data_root=None, progress=True) -> dict:
    """Train the teacher and report NME; writes ``fan.pt``, ``config.yaml``, ``nme.json``."""
    from .distributed import pick_device
    from .pretrain_fan import evaluate_nme, train_teacher

    _threads()
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
    from deid.heatmaps import nme

    e = nme(pred, gt)
    e = e[torch.isfinite(e)]
    return {"n": int(len(e)), "mean": float(e.mean()) if len(e) else float("nan"),
            "median": float(e.median()) if len(e) else float("nan")}


def run_stage1(cfg, out_dir, resume: bool = False, progress=True, evaluate: bool = True):
    """Train stage 1 (DDP-aware) and, on the main process, write the report."""
    from .distributed import distributed_session

    _threads()
    root = cfg.data or default_corpus()
    with distributed_session(cfg.device) as dist:
        trainer, last = _train_stage1(cfg, out_dir, dist, root, resume, progress)
    # the group is gone: the other ranks have exited, the main one reports alone
    report = None
    if dist.is_main and evaluate:
        from .report import stage1_report

        report = stage1_report(trainer, root)
        (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return last, report


def _train_stage1(cfg, out_dir, dist, root, resume, progress):
    """Train; returns the trainer without its DDP wrapper (which holds the process group)."""
    from .pretrain_fan import load_teacher
    from .stage1 import Stage1Trainer

    train_x, _, _ = load_split(root, "train", cfg.image_size, landmark_key=None)
    val_x, _, _ = load_split(root, "val", cfg.image_size, landmark_key=None)
    if not cfg.teacher:
        raise ValueError("no teacher: pass --teacher PATH/fan.pt (made by optics pretrain-fan)")
    teacher = load_teacher(cfg.teacher)
    if teacher.config.input_size != cfg.image_size:
        raise ValueError(f"the teacher was trained at {teacher.config.input_size} px but "
                         f"stage 1 runs at {cfg.image_size} px")
    identity = None
    if max(cfg.identity_weight, cfg.identity_spread_weight, cfg.attack_identity_weight) > 0:
        from deid.identity_net import IdentityNet

        identity = IdentityNet.load()
    trainer = Stage1Trainer(cfg, out_dir, dist, train_x, teacher, val_images=val_x,
                            identity_net=identity)
    if resume and not trainer.resume_from(out_dir):
        raise ValueError(f"nothing to resume in {out_dir} (no ckpt_*.pt)")
    last = trainer.run(progress=progress)
    trainer.release_ddp()
    return trainer, last


def stage1_config_for_resume(folder, config_cls):
    path = Path(folder) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(2, "no config.yaml in the run folder", str(path))
    return load_config(config_cls, path)


