"""``optics pretrain-fan | train-stage1``: the heatmap teacher and stage 1."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from deid.evaluation.stage1 import run_stage1
from deid.methods.stage1.inference import landmarks_job
from deid.methods.stage1.trainer import Stage1Config
from deid.methods.teacher import FANTrainConfig, run_pretrain_fan
from optics.cli.common import add_training_config_args, print_stage1_report
from optics.cli.demo import DEMO_OUT, demo_teacher, demo_teacher_dir, print_nme
from optics.kit.cli import UserError, add_common, dataclass_overrides, run_folder_config
from optics.kit.config import assemble_config

__all__ = ["register"]


def cmd_pretrain_fan(args) -> int:
    cfg = assemble_config(FANTrainConfig, args.config,
                          dataclass_overrides(args, FANTrainConfig), args.overrides)
    report = run_pretrain_fan(cfg, args.out, data_root=args.data, progress=not args.quiet)
    print(f"teacher written to {Path(args.out) / 'fan.pt'}")
    print_nme(report)
    return 0


def _default_teacher(cfg: Stage1Config, quiet: bool) -> str:
    """No ``--teacher``: the demo teacher, trained first if it is missing (one process only:
    under ``torchrun`` it must exist already)."""
    folder = demo_teacher_dir(cfg.image_size)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (folder / "fan.pt").exists():
        raise UserError(f"no --teacher and no demo teacher in {folder}: under torchrun, train "
                        f"it first (optics pretrain-fan --out {folder}) or pass --teacher")
    path, _, reused = demo_teacher(cfg.image_size, progress=not quiet)
    print(f"no --teacher: {'using' if reused else 'trained'} the demo teacher {path}")
    return str(path)


def cmd_train_stage1(args) -> int:
    out, cfg = run_folder_config(args, Stage1Config)
    if not cfg.teacher:
        cfg = dataclasses.replace(cfg, teacher=_default_teacher(cfg, args.quiet))
    last, report = run_stage1(cfg, out, resume=bool(args.resume), progress=not args.quiet,
                              evaluate=not args.no_report)
    if last:
        print(f"stage 1: step {int(last['step'])}, loss {last['loss']:.4f}, "
              f"heatmap {last['hmap']:.4f}; run folder {out}/")
    if report:
        print_stage1_report(report)
    return 0


def cmd_landmarks(args) -> int:
    result = landmarks_job(args.run, args.images, args.out, captured=args.captured,
                           seed=args.seed)
    print(f"{len(result['landmarks'])} image(s): 68 landmarks each written to {args.out} "
          f"({result['input']}, run {args.run})")
    return 0


def register(sub) -> None:
    p = add_common(sub.add_parser(
        "pretrain-fan", help="train the heatmap teacher U* on clean faces",
        description="Trains the FAN teacher on the demo corpus with Gaussian heatmap targets of "
                    "the cached dlib landmarks (adaptive wing loss), then reports NME against "
                    "dlib (held-out) and against the human iBUG annotations, beside dlib's own.",
        epilog="example: optics pretrain-fan --config configs/teacher-demo.yaml "
               "--out runs/teacher"))
    p.add_argument("--out", required=True, help="output folder (fan.pt, nme.json)")
    p.add_argument("--data", help="face corpus (default $PRIVLENS_HOME/demo-faces)")
    add_training_config_args(p, FANTrainConfig, skip=("device",))
    p.set_defaults(func=cmd_pretrain_fan)

    p = add_common(sub.add_parser(
        "train-stage1", help="learn the phase plate jointly with the heatmap regressor",
        description="Stage 1: L = 1 - mse(x, y) + alpha1 |H - H_f|/|H_f| + alpha2 |U(y) - U*(x)|. "
                    "Writes config.yaml, log.csv, checkpoints, figures/, coefficients.json and "
                    "report.json into the run folder. Works under torchrun (DDP). Without "
                    f"--teacher it uses the demo teacher ({DEMO_OUT}/teacher/fan.pt), training "
                    "it first if it is missing, as make demo does.",
        epilog="examples:\n  optics train-stage1 --config configs/stage1-demo.yaml --teacher "
               "runs/demo/teacher/fan.pt --out runs/demo/stage1\n"
               "  optics train-stage1 --resume runs/demo/stage1 --steps 800"))
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly")
    p.add_argument("--no-report", action="store_true", help="skip the final evaluation")
    add_training_config_args(p, Stage1Config)
    p.set_defaults(func=cmd_train_stage1)

    p = add_common(sub.add_parser(
        "landmarks", help="68 landmarks of face images through a stage-1 run",
        description="Runs every image of --images through the run's camera (learned "
                    "coefficients) and its fine-tuned regressor U, or only through U with "
                    "--captured (privacy frames from the bench), and writes 68 points per "
                    "image in that image's pixel coordinates as JSON: {\"landmarks\": "
                    "{\"<file name>\": [[x, y], ... 68]}, \"run\": ..., \"camera\": ...}.",
        epilog="examples:\n  optics landmarks --run runs/demo/stage1 --images faces/ --out "
               "lmk.json\n  optics landmarks --run runs/demo/stage1 --images captured/ "
               "--captured --out lmk.json"))
    p.add_argument("--run", required=True, metavar="DIR", help="a stage-1 run folder")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of face images")
    p.add_argument("--out", required=True, metavar="FILE.json", help="output JSON")
    p.add_argument("--captured", action="store_true",
                   help="the images are captured privacy frames: regressor only")
    p.add_argument("--seed", type=int, default=0, help="sensor-noise seed of the simulation")
    p.set_defaults(func=cmd_landmarks)
