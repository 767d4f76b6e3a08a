"""Running stage 2: config, stage-1 run and data in, a trained :class:`Stage2Solver` out
(one process, or one of several under ``torchrun``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from deid.methods.stage2.config import Stage2Config
from deid.methods.stage2.data import load_stage2_data
from deid.methods.stage2.frozen import FrozenParts, stage1_fingerprint
from deid.methods.stage2.solver import Stage2Solver
from optics.kit.config import save_config
from optics.kit.distributed import apply_thread_limit, distributed_session

__all__ = ["train_stage2", "build_solver"]

log = logging.getLogger(__name__)


def build_solver(cfg: Stage2Config, out_dir, dist_info=None) -> Stage2Solver:
    """The solver of ``cfg`` with its data and frozen parts loaded (on ``dist_info``'s
    device)."""
    if not cfg.stage1:
        raise ValueError("no stage-1 run: pass --stage1 RUN (made by optics train-stage1)")
    device = dist_info.device if dist_info is not None else "cpu"
    dial = cfg.privacy_weight > 0
    expression = cfg.expression != "off" and cfg.lambda_exp > 0
    frozen = FrozenParts.from_run(cfg.stage1, cfg.img_size, teacher=cfg.teacher,
                                  with_twin=dial, with_lpips=cfg.lambda_lpips > 0,
                                  with_teacher=expression, device=device)
    data = load_stage2_data(cfg.data or None, frozen.stage1_size, split="train",
                            seed=cfg.seed, reference_fraction=cfg.reference_fraction)
    log.info("stage 2 data: %s", json.dumps(data.summary()))
    return Stage2Solver(cfg, data, frozen, out_dir, dist_info,
                        fingerprint=stage1_fingerprint(cfg.stage1))


def train_stage2(cfg: Stage2Config, out_dir, resume: bool = False, init: str = "",
                 progress: bool = True) -> dict:
    """Train stage 2 in ``out_dir`` (DDP-aware). ``resume``: continue the run there exactly;
    ``init``: start from another stage-2 run's weights (fine-tuning, e.g. on captured
    pairs). Returns the last log row."""
    apply_thread_limit()
    out = Path(out_dir)
    with distributed_session(cfg.device) as dist_info:
        solver = build_solver(cfg, out, dist_info)
        if resume:
            if not solver.resume_from(out):
                raise ValueError(f"nothing to resume in {out} (no ckpt_*.pt)")
        elif init:
            solver.init_from(init)
        if dist_info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.yaml")
            (out / "data.json").write_text(json.dumps(solver.data.summary(), indent=1) + "\n")
        return solver.run(progress=progress)
