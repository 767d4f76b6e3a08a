"""``optics attack | privacy-report``: attacks on privacy cameras."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deid.attacks.attacker import METHODS, AttackConfig
from deid.attacks.cameras import BASELINES, DEFAULT_CAMERAS, check_camera_spec
from deid.evaluation.attack_job import attack_job
from deid.evaluation.frontier import (
    FrontierConfig,
    frontier,
    load_threats,
    merge_frontiers,
    plot_frontier,
)
from deid.evaluation.privacy_report import privacy_report
from deid.evaluation.tables import report_markdown
from deid.evaluation.threats import RECONSTRUCTIONS, threat_report
from deid.faces.corpus import load_face_sets
from deid.faces.corpus_builder import ensure_demo_corpus
from deid.methods.software.private_encoder import load_private_encoder
from optics.cli.demo import demo_teacher
from optics.kit.cli import add_common, add_overrides, float_list
from optics.kit.config import apply_overrides, load_config

__all__ = ["register"]


def _attack_config(args) -> AttackConfig:
    cfg = load_config(AttackConfig, args.config) if args.config else AttackConfig()
    cfg = apply_overrides(cfg, args.overrides)
    if args.size:
        cfg = apply_overrides(cfg, [f"size={args.size}"])
    return cfg


def cmd_attack(args) -> int:
    check_camera_spec(args.camera)
    result = attack_job(args.method, args.camera, args.out, _attack_config(args),
                        images=args.images, captured=args.captured, psf=args.psf,
                        calibration=args.calibration, lpips=not args.no_lpips)
    m = result["metrics"]
    print(f"{args.method} on {result['camera']}: PSNR {m['psnr_db']:.2f} dB, "
          f"SSIM {m['ssim']:.3f}, LPIPS {m['lpips']:.3f}, FR distance {m['fr_distance']:.3f}, "
          f"re-id top-1 {m['reid_top1']:.0%} (chance {result['reid_chance']:.0%})")
    print(f"wrote {Path(args.out) / 'attack.json'}")
    return 0


def cmd_privacy_report(args) -> int:
    cfg = _attack_config(args)
    cameras = list(DEFAULT_CAMERAS) + list(args.run or [])
    if not args.no_baselines:
        cameras += list(BASELINES)
    if args.cameras:  # an explicit list, plus any --run
        cameras = [c for c in args.cameras.split(",") if c] + list(args.run or [])
    for spec in cameras:
        check_camera_spec(spec)
    methods = args.methods.split(",") if args.methods else list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown attack {unknown[0]!r}; methods: {', '.join(METHODS)}")
    if args.encoder and not args.stage2:
        raise ValueError("--encoder goes with --stage2 (the threat-model table)")
    if args.stage2:  # checked before the long report, not after it
        if len(args.run or []) != 1:
            raise ValueError("--stage2 needs exactly one --run: the learned camera of its rows")
        if not (Path(args.stage2) / "config.yaml").is_file():
            raise ValueError(f"no stage-2 run in {args.stage2} (no config.yaml)")
        if args.encoder:
            load_private_encoder(args.encoder)
        args.margin_list = float_list(args.margins, "--margins")
        if not args.margin_list or any(not -1 <= m <= 1 for m in args.margin_list) or \
                min(args.falco_steps, args.invert_steps) < 0:
            raise ValueError("--margins are cosines in [-1, 1]; --falco-steps and "
                             "--invert-steps must be at least 0")
    faces = load_face_sets(cfg.size, ensure_demo_corpus(), max_test=args.max_faces or None)
    report = privacy_report(args.out, cameras, methods, cfg, faces=faces,
                            calibration=args.calibration, lpips=not args.no_lpips,
                            progress=not args.quiet,
                            redo=args.redo.split(",") if args.redo else (),
                            store=False if args.no_store else args.store,
                            workers=args.workers)
    print(report_markdown(report).split("## Every")[0].strip())
    run = report["run"]
    print(f"\n{run['pairs_run']} (camera, attack) pairs run ({run.get('pairs_from_store', 0)} "
          f"from the store), {run['pairs_skipped']} already in {args.out}; "
          f"{run['seconds'] / 60:.1f} min")
    print(f"wrote {Path(args.out) / 'privacy_report.md'} (+ .json, privacy_grid.png, "
          f"privacy_worst_case.png)")
    if args.stage2:
        out = Path(args.out) / "threats"
        threat_report(args.run[0], args.stage2, out, encoder=args.encoder,
                      **({} if args.encoder else {"epsilons": ()}),
                      max_sources=max(2, args.max_faces) if args.max_faces else None,
                      falco_margins=args.margin_list, falco_steps=args.falco_steps,
                      invert_steps=args.invert_steps,
                      attacks=[m for m in methods if m in RECONSTRUCTIONS],
                      progress=not args.quiet, store=False if args.no_store else args.store)
        print("\n" + (out / "threats.md").read_text().split("\n\n")[0])
        print(f"wrote the threat models to {out}/threats.md (+ .json, threats.png, "
              f"threats_grid.png)")
    return 0


def _with_threats(args, result) -> None:
    """Redraw frontier.png with the threat report's panels (``--threats``)."""
    if args.threats:
        plot_frontier(result, Path(args.out) / "frontier.png", threats=args.threats_report)
        print(f"frontier.png has the threat models of {args.threats} as panels")


def cmd_frontier(args) -> int:
    args.threats_report = load_threats(args.threats) if args.threats else None  # fail early
    if args.merge:
        result = merge_frontiers(args.out, args.merge)
        _with_threats(args, result)
        print(f"merged {len(result['points'])} points from {len(args.merge)} folders; wrote "
              f"{Path(args.out) / 'frontier.json'} and frontier.png")
        return 0
    cfg = load_config(FrontierConfig, args.config) if args.config else FrontierConfig()
    cfg = apply_overrides(cfg, args.overrides)
    if args.cameras is not None:  # "": no classic camera (only the --run points)
        cfg = dataclasses.replace(cfg, cameras=tuple(c for c in args.cameras.split(",") if c))
    if args.attacks:
        cfg = dataclasses.replace(cfg, attacks=tuple(a for a in args.attacks.split(",") if a))
    if args.finetune_steps is not None:
        cfg = dataclasses.replace(cfg, finetune_steps=args.finetune_steps)
    cfg = dataclasses.replace(cfg, runs=[str(r) for r in args.run or []])
    for spec in cfg.cameras:  # bad names fail in one line before any teacher is trained
        check_camera_spec(spec)
    unknown = [a for a in cfg.attacks if a not in METHODS]
    if unknown:
        raise ValueError(f"unknown attack {unknown[0]!r}; methods: {', '.join(METHODS)}")
    teacher = args.teacher
    if not teacher:
        teacher, _, reused = demo_teacher(cfg.size, progress=not args.quiet)
        print(f"no --teacher: {'using' if reused else 'trained'} the demo teacher {teacher}")
    result = frontier(args.out, teacher, ensure_demo_corpus(), cfg, progress=not args.quiet)
    print(f"{'camera':24s} {'NME/mean shape':>18s} {'worst re-ID':>20s}  by")
    for spec, p in sorted(result["points"].items(),
                          key=lambda sp: (sp[1]["family"], sp[1]["ratio_to_mean_shape"])):
        w = p["worst"]
        lo, hi = p["ratio_interval"]
        print(f"{Path(spec).name:24s} {p['ratio_to_mean_shape']:6.2f} [{lo:.2f},{hi:.2f}] "
              f"{w['value']:8.2f} [{w['lo']:.2f},{w['hi']:.2f}]  {w['attack']}, {w['judge']}")
    _with_threats(args, result)
    print(f"wrote {Path(args.out) / 'frontier.json'} and frontier.png")
    return 0


def _add_attack_args(p) -> None:
    p.add_argument("--size", type=int, help="face side in pixels (default 128)")
    p.add_argument("--config", help="AttackConfig YAML")
    add_overrides(p, "inversion_steps=200")
    p.add_argument("--calibration", help="device calibration for the prototype mirror "
                                         "(default: the simulated bench's mirror)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")


def register(sub) -> None:
    p = add_common(sub.add_parser(
        "attack", help="attack a privacy camera: recover faces, or re-identify them",
        description="Simulates the privacy images of --images (default: the demo corpus's "
                    "held-out faces) through --camera, or reads captured ones (--captured, "
                    "paired by sorted file name), runs the attack and writes the recovered "
                    "images, grid.png and attack.json (PSNR, SSIM, LPIPS, face-recognition "
                    "distance, re-identification top-1 against the clean johns gallery).",
        epilog="cameras: none, defocus, defocus-D, lr16, prototype, blur-S, mosaic-B, any "
               "preset (optics presets), or a stage-1 run folder.\nexamples:\n"
               "  optics attack --method wiener --camera runs/demo/stage1 --out runs/att\n"
               "  optics attack --method rl --camera lopez2024 --out runs/att-lopez"))
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--camera", required=True, metavar="PRESET_OR_RUN")
    p.add_argument("--images", metavar="DIR", help="original faces (default: demo test split)")
    p.add_argument("--captured", metavar="DIR", help="captured privacy images instead of "
                                                     "simulated ones")
    p.add_argument("--psf", metavar="FILE[:DATASET]",
                   help="the PSF the attacker knows, measured (e.g. "
                        "runs/bench/calibration.h5:psf/stack, or a .npy); default: simulated")
    p.add_argument("--out", required=True, metavar="DIR")
    _add_attack_args(p)
    p.set_defaults(func=cmd_attack)

    p = add_common(sub.add_parser(
        "privacy-report", help="every attack against every camera, with baselines",
        description="Attacks no optics, defocus only, lr16, the prototype mirror preset, any "
                    "stage-1 runs (--run) and software blur/mosaic baselines with every method "
                    "on the held-out demo faces; writes privacy_report.md/.json and "
                    "privacy_grid.png. Every reconstruction is judged by dlib, MobileFaceNet and "
                    "FaceRes, with 95% intervals; the headline is each camera's worst case "
                    "over attacks and judges, beside chance and the colour floors. Resumable: "
                    "a rerun into the same --out skips finished attacks. Trained attack "
                    "networks, tuned parameters and judged pairs are kept in a store, so a "
                    "later report with the same cameras takes them from there.",
        epilog="examples:\n  optics privacy-report --run runs/demo/stage1 --out runs/privacy\n"
               "  optics privacy-report --run runs/demo/stage1 --stage2 runs/demo/stage2 "
               "--encoder runs/demo/private-encoder --out runs/privacy"))
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--run", action="append", metavar="DIR", help="a stage-1 run (repeatable)")
    p.add_argument("--cameras", help="comma-separated camera list instead of the default "
                   "(--run adds to it)")
    p.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--no-baselines", action="store_true", help="skip blur/mosaic baselines")
    p.add_argument("--max-faces", type=int, default=0, help="use only N test faces (quick)")
    p.add_argument("--redo", metavar="METHODS",
                   help="rerun these methods (comma-separated) in an existing report folder; "
                        "a rerun otherwise skips what is done")
    p.add_argument("--workers", type=int, metavar="N",
                   help="attack processes, one torch thread each (default: 2 on a machine "
                        "with 2 CPUs or more; 0: everything in this process)")
    p.add_argument("--store", metavar="DIR",
                   help="where trained attacks, tuned parameters and judged pairs are kept "
                        "(default: $PRIVLENS_HOME/attack-store)")
    p.add_argument("--no-store", action="store_true",
                   help="keep nothing across reports (a rerun into --out still skips)")
    p.add_argument("--stage2", metavar="DIR",
                   help="a stage-2 run: also the threat models (OUT/threats, as `deid "
                        "threats`): rows learned camera (the one --run), defocus, lr16, "
                        "blur, mosaic, privlens two-stage, FALCO-style; columns output only "
                        "(these --methods' reconstructions), sniffing, utility")
    p.add_argument("--encoder", metavar="DIR",
                   help="with --stage2: a Private-Encoder-style run (deid "
                        "train-private-encoder) for its epsilon rows")
    p.add_argument("--margins", default="1.0,0.5,0.0",
                   help="with --stage2: the FALCO-style rows' margins (default 1.0,0.5,0.0)")
    p.add_argument("--falco-steps", type=int, default=50,
                   help="with --stage2: FALCO-style optimisation steps (default 50)")
    p.add_argument("--invert-steps", type=int, default=50,
                   help="with --stage2: FALCO-style inversion steps (default 50)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_attack_args(p)
    p.set_defaults(func=cmd_privacy_report)

    p = add_common(sub.add_parser(
        "frontier", help="the privacy-utility frontier of classic cameras and stage-1 runs",
        description="Sweeps Gaussian blur, defocus, mosaic and low resolution (and places any "
                    "--run): per camera, the jittered landmark NME of the teacher fine-tuned "
                    "behind it (x) against the worst-case re-identification over attacks and "
                    "judges (y), both with 95% intervals. Writes frontier.json (resumable: a "
                    "rerun skips done cameras) and frontier.png.",
        epilog="examples:\n  optics frontier --out runs/frontier --run runs/demo/stage1\n"
               "  optics frontier --out runs/quick --cameras blur-4,blur-16 "
               "--finetune-steps 20\n"
               "  optics frontier --out runs/fr --merge runs/fr-blur --merge runs/fr-mosaic\n"
               "  optics frontier --out runs/fr --merge runs/fr --threats runs/threats"))
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--run", action="append", metavar="DIR", help="a stage-1 run (repeatable)")
    p.add_argument("--teacher", metavar="FILE",
                   help="teacher fan.pt (default: the demo teacher, trained if missing)")
    p.add_argument("--cameras", help="comma-separated classic cameras (default: the sweep; "
                                     "'': none, only the --run points)")
    p.add_argument("--attacks", help=f"comma-separated subset of {','.join(METHODS)} "
                                     "(default identity,matched,wiener)")
    p.add_argument("--finetune-steps", type=int, metavar="N",
                   help="regressor fine-tuning steps per camera (default -1: as many as "
                        "the stage-1 recipe gives U behind its camera; 0: the teacher as is)")
    p.add_argument("--config", help="FrontierConfig YAML")
    p.add_argument("--merge", action="append", metavar="DIR",
                   help="instead of running, merge the frontiers of these folders (e.g. "
                        "camera subsets run in parallel) into --out (repeatable)")
    p.add_argument("--threats", metavar="FILE",
                   help="a `deid threats` report (threats.json or its folder): its methods "
                        "are added as points, one panel per threat model (output only, "
                        "sniffing)")
    add_overrides(p, "seed=1")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_frontier)
