"""Running stage 1: data, teacher and identity twin in, a trained :class:`Stage1Trainer` out."""

from __future__ import annotations

from deid.faces.corpus import load_split
from deid.judges.identity_net import IdentityNet
from deid.methods.stage1.trainer import Stage1Trainer
from deid.methods.teacher import load_teacher

__all__ = ["train_stage1"]


def train_stage1(cfg, out_dir, dist, root, resume, progress):
    """Train stage 1 in ``out_dir`` on the corpus at ``root`` as process ``dist``; returns
    ``(trainer, last log row)``, the trainer without its DDP wrapper (which holds the process
    group), so the group can be left safely."""
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
        identity = IdentityNet.load()
    trainer = Stage1Trainer(cfg, out_dir, dist, train_x, teacher, val_images=val_x,
                            identity_net=identity)
    if resume and not trainer.resume_from(out_dir):
        raise ValueError(f"nothing to resume in {out_dir} (no ckpt_*.pt)")
    last = trainer.run(progress=progress)
    trainer.release_ddp()
    return trainer, last
