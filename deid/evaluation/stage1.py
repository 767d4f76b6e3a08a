"""``optics train-stage1``: train stage 1 (DDP-aware), then, on the main process alone and
after the process group is left, write its report (:mod:`.stage1_report`)."""

from __future__ import annotations

import json
from pathlib import Path

from deid.evaluation.stage1_report import report_markdown, stage1_report
from deid.faces.corpus import default_corpus
from deid.methods.stage1.run import train_stage1
from optics.kit.distributed import apply_thread_limit, distributed_session

__all__ = ["run_stage1"]


def run_stage1(cfg, out_dir, resume: bool = False, progress=True, evaluate: bool = True):
    """Train stage 1 (DDP-aware) and, on the main process, write the report."""
    apply_thread_limit()
    root = cfg.data or default_corpus()
    with distributed_session(cfg.device) as dist:
        trainer, last = train_stage1(cfg, out_dir, dist, root, resume, progress)
    # the group is gone: the other ranks have exited, the main one reports alone
    report = None
    if dist.is_main and evaluate:
        report = stage1_report(trainer, root)
        (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (Path(out_dir) / "report.md").write_text(report_markdown(report))
    return last, report


