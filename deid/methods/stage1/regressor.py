"""The heatmap regressor fine-tuned behind a *fixed* camera, as stage 1 fine-tunes it: the
student U starts as the teacher U*, sees ``camera(x)`` of augmented training faces, and
learns to give the teacher's heatmaps of the clean ``x`` (stage 1's ``alpha2`` term with the
optics frozen). A classic camera (blur, defocus, mosaic, low resolution) thus gets the best
regressor the stage-1 recipe can give it, so it is compared with a learned lens fairly.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch

from deid.faces.jitter import draw_params, jitter
from deid.methods.stage1.losses import heatmap_loss
from deid.methods.stage1.trainer import Stage1Config, regressor_lr
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to
from optics.kit.schedule import global_batch, sample_generator

__all__ = ["finetune_regressor"]

log = logging.getLogger(__name__)

#: ``(x (1, 3, S, S), generator) -> y``: one image through the camera, noise drawn from the
#: generator.
CameraFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def finetune_regressor(camera: CameraFn, teacher: torch.nn.Module, train_images: torch.Tensor,
                       cfg: Stage1Config, steps: int | None = None, progress: bool = False,
                       desc: str = "regressor") -> torch.nn.Module:
    """A copy of ``teacher`` trained for ``steps`` on ``|U(camera(x)) - U*(x)|``, with the
    stage-1 config's batch size, seed, augmentation and U learning-rate schedule
    (:func:`regressor_lr`: ``lr_fan``, then a cosine from ``lr_regressor`` over the last
    ``regressor_steps``); returns it in eval mode. Deterministic for a seed (CPU).
    ``steps`` defaults to what U of a stage-1 run with ``cfg`` gets behind its final camera:
    ``regressor_steps`` if ``regressor_init`` is ``teacher``, else ``steps +
    regressor_steps``."""
    device = next(teacher.parameters()).device
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr_fan)
    size = student.config.input_size
    if steps is None:
        steps = cfg.regressor_steps + (0 if cfg.regressor_init == "teacher" else cfg.steps)
    aug = cfg.augmentation()
    bar = progress_bar(range(steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        idx = global_batch(step, len(train_images), cfg.batch_size, cfg.seed)
        gens = [sample_generator(cfg.seed, step, int(i)) for i in range(len(idx))]
        x = train_images[idx].to(device)
        if cfg.augment:
            x, _ = jitter(x, None, draw_params(gens, aug))
        with torch.no_grad():
            y = torch.cat([camera(x[i:i + 1], g) for i, g in enumerate(gens)])
            target = teacher(resize_to(x, size))
        loss = heatmap_loss(student(resize_to(y, size)), target)
        for group in opt.param_groups:
            group["lr"] = regressor_lr(cfg, step, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(hmap=f"{loss.item():.4f}")
    return student.eval().requires_grad_(False)
