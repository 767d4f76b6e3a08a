"""``deid train-stage2 | anonymize | evaluate | ablation``: the de-identification generator."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from deid.evaluation.stage2_report import ablation, evaluate_run
from deid.evaluation.threats import threat_report
from deid.faces.corpus import load_split
from deid.faces.dataset import list_images
from deid.methods.software.falco import Falco, FalcoConfig
from deid.methods.software.private_encoder import (
    PrivateEncoderAnonymizer,
    PrivateEncoderConfig,
    train_private_encoder,
)
from deid.methods.stage2.config import Stage2Config
from deid.methods.stage2.data import load_stage2_data
from deid.methods.stage2.inference import Anonymizer
from deid.methods.stage2.run import train_stage2
from optics.kit.cli import (
    UserError,
    add_common,
    add_dataclass_args,
    add_overrides,
    dataclass_overrides,
    float_list,
    run_folder_config,
)
from optics.kit.config import assemble_config, to_dict
from optics.kit.distributed import pick_device
from optics.kit.imageio import load_image, save_image
from optics.kit.paths import confined_path
from optics.kit.resize import resize_to

__all__ = ["register"]


def cmd_train_stage2(args) -> int:
    if args.resume and args.init:
        raise UserError("--resume continues a run, --init starts a new one: give one")
    out, cfg = run_folder_config(args, Stage2Config)
    last = train_stage2(cfg, out, resume=bool(args.resume), init=args.init or "",
                        progress=not args.quiet)
    if last:
        print(f"stage 2: step {int(last['step'])}, G {last['g_reference/total']:.4f}, "
              f"D {last['d_reference/total']:.4f}; run folder {out}/ "
              f"(samples in {out}/samples/)")
    return 0


def _images(folder, what: str) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(2, f"no such {what} folder", str(folder))
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"no images (png, jpg, bmp) in {folder}")
    return paths


def _load(paths, captured: bool) -> torch.Tensor:
    ims = [load_image(p) for p in paths]
    if captured:
        bad = [p.name for p, im in zip(paths, ims, strict=True) if im.shape[1] != im.shape[2]]
        if bad:
            raise ValueError(f"captured privacy frames must be square crops (rig dataset "
                             f"writes them so); {bad[0]} is not")
    side = min(min(im.shape[1:]) for im in ims)
    return torch.stack([_square(im, side) for im in ims])


def _square(im: torch.Tensor, side: int) -> torch.Tensor:
    """The centred square of ``im (3, H, W)``, resized to ``side`` with the kit's resize
    (the file is read once)."""
    h, w = im.shape[1:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return resize_to(im[None, :, top:top + s, left:left + s], side)[0]


def _grid(inputs: torch.Tensor, outputs: torch.Tensor, n: int = 8) -> torch.Tensor:
    k = min(n, len(outputs))
    s = outputs.shape[-1]
    top = torch.cat(list(resize_to(inputs[:k], s)), dim=-1)
    bottom = torch.cat(list(outputs[:k]), dim=-1)
    return torch.cat([top, bottom], dim=-2)


def _write_outputs(out: Path, paths, images, outputs, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for p, img in zip(paths, outputs, strict=True):
        save_image(img, confined_path(out, p.stem, ".png", what="output name"))
    save_image(_grid(images, outputs), out / "grid.png")
    (out / "anonymize.json").write_text(json.dumps(record, indent=1) + "\n")


def _anonymize_falco(args, paths, images) -> int:
    if not args.stage1:
        raise UserError("--method falco needs --stage1 RUN (its content input is y = camera(x))")
    cfg = FalcoConfig(margin=0.5 if args.margin is None else args.margin, steps=args.steps,
                      invert_steps=args.invert_steps, batch=args.batch)
    anon = Anonymizer(args.stage1, args.stage2, device=pick_device(args.device))
    if args.references is not None:
        ref_paths = _images(args.references, "references")
        refs = torch.stack([load_image(p, anon.size) for p in ref_paths])
        pool = f"{args.references} ({len(refs)})"
        names = [p.name for p in ref_paths]
    else:
        c = anon.model.config
        data = load_stage2_data(c.data or None, anon.size, seed=c.seed,
                                reference_fraction=c.reference_fraction)
        refs = data.references
        pool = f"the stage-2 run's references ({len(refs)})"
        names = [f"{ident} (reference {i})" for i, ident in
                 enumerate(data.reference_identities)]
    res = Falco(anon, cfg).anonymize(images, refs, progress=not args.quiet)
    _write_outputs(Path(args.out), paths, images, res.outputs, {
        "method": "falco", "stage1": str(args.stage1), "stage2": str(args.stage2),
        "images": len(paths), "reference_pool": pool, "config": to_dict(cfg),
        "optimised_blocks": list(res.blocks), "size_px": anon.size,
        "per_image": [{"name": p.name, "reference": int(i),
                       "reference_name": names[int(i)], "reference_cosine": float(c),
                       "twin_cosine_inverted": float(a), "twin_cosine": float(b)}
                      for p, i, c, a, b in zip(paths, res.reference_index,
                                               res.reference_cosine,
                                               res.identity_cosine_inverted,
                                               res.identity_cosine, strict=True)]})
    print(f"{len(paths)} FALCO-style faces (margin {cfg.margin}, {cfg.steps} steps; twin "
          f"cosine to the source {res.identity_cosine.mean():.3f} on average, "
          f"{res.identity_cosine_inverted.mean():.3f} after inversion) written to "
          f"{args.out}/ with grid.png")
    return 0


def _anonymize_private_encoder(args, paths, images) -> int:
    if not args.encoder:
        raise UserError("--method private-encoder needs --encoder RUN "
                        "(made by deid train-private-encoder)")
    anon = PrivateEncoderAnonymizer(args.encoder, args.stage2, device=pick_device(args.device),
                                    epsilon=args.epsilon, mechanism=args.mechanism,
                                    delta=args.delta)
    outputs = anon.anonymize(images, seed=args.noise_seed, batch=args.batch)
    _write_outputs(Path(args.out), paths, images, outputs, {
        "method": "private-encoder", "encoder": str(args.encoder),
        "stage2": str(args.stage2 or anon.cfg.stage2), "images": len(paths),
        "epsilon": args.epsilon, "mechanism": args.mechanism, "delta": args.delta,
        "clip": anon.model.clip, "code_length": anon.model.dim, "noise_scale": anon.scale,
        "noise_seed": args.noise_seed, "size_px": anon.size})
    what = "sigma" if args.mechanism == "gaussian" else "scale"
    print(f"{len(paths)} Private-Encoder-style faces (epsilon {args.epsilon}, {args.mechanism} "
          f"noise {what} {anon.scale:.4g} on a code of {anon.model.dim} entries clipped to "
          f"+-{anon.model.clip}) written to {args.out}/ with grid.png")
    return 0


def cmd_anonymize(args) -> int:
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    if not args.stage2 and args.method != "private-encoder":
        raise UserError(f"--method {args.method} needs --stage2 RUN")
    if args.method != "privlens":
        if args.captured:
            raise UserError(f"--method {args.method} is software-level: it needs the clean "
                            f"images, not captured privacy frames")
        if args.epsilon is not None and not args.epsilon > 0:
            raise UserError(f"--epsilon must be positive (inf: no noise), got {args.epsilon}")
        if args.steps < 0 or args.invert_steps < 0:
            raise UserError("--steps and --invert-steps must be at least 0")
        paths = _images(args.images, "images")
        images = _load(paths, False)
        if args.method == "falco":
            return _anonymize_falco(args, paths, images)
        return _anonymize_private_encoder(args, paths, images)
    if not args.stage1:
        raise UserError("give --stage1 RUN (the camera and U of privlens)")
    if (args.references is None) == (args.seed is None):
        raise UserError("give --references DIR (public faces) or --seed N (latent styles)")
    paths = _images(args.images, "images")
    images = _load(paths, args.captured)
    anon = Anonymizer(args.stage1, args.stage2, device=pick_device(args.device),
                      margin=args.margin)
    if args.references is not None:
        refs = torch.stack([load_image(p, anon.size) for p in _images(args.references,
                                                                     "references")])
        styles = anon.reference_styles(refs)
        source = f"references from {args.references} ({len(refs)})"
    else:
        styles = anon.latent_styles(len(images), args.seed)
        source = f"latent styles, seed {args.seed}"
    outputs = anon.anonymize(images, styles, captured=args.captured, batch=args.batch)
    out = Path(args.out)
    _write_outputs(out, paths, images, outputs, {
        "method": "privlens", "stage1": str(args.stage1), "stage2": str(args.stage2),
        "images": len(paths), "styles": source, "margin": anon.margin,
        "captured": bool(args.captured), "size_px": anon.size})
    print(f"{len(paths)} de-identified faces ({anon.size} px, {source}, margin "
          f"{anon.margin}) written to {out}/ with grid.png")
    return 0


def cmd_evaluate(args) -> int:
    if args.refs_per_source < 1 or (args.max_sources is not None and args.max_sources < 1):
        raise UserError("--refs-per-source and --max-sources must be at least 1")
    report = evaluate_run(args.stage1, args.stage2, args.out, args.refs_per_source,
                          margins=float_list(args.margins, "--margins"), split=args.split,
                          max_sources=args.max_sources, seed=args.seed, n_boot=args.n_boot,
                          progress=not args.quiet)
    print((Path(args.out) / "evaluation.md").read_text())
    print(f"{report['sources']} sources x {report['references']} references; written to "
          f"{args.out}/evaluation.json, evaluation.md and evaluation_grid.png")
    return 0


def cmd_ablation(args) -> int:
    if args.steps < 1 or args.refs_per_source < 1 or args.max_sources < 1:
        raise UserError("--steps, --refs-per-source and --max-sources must be at least 1")
    base = assemble_config(Stage2Config, args.config, dataclass_overrides(args, Stage2Config),
                           args.overrides)
    ablation(base, args.out, args.steps, refs_per_source=args.refs_per_source,
             max_sources=args.max_sources, progress=not args.quiet)
    print((Path(args.out) / "ablation.md").read_text())
    return 0


def cmd_train_private_encoder(args) -> int:
    out, cfg = run_folder_config(args, PrivateEncoderConfig)
    last = train_private_encoder(cfg, out, resume=bool(args.resume), progress=not args.quiet)
    print(f"private encoder: step {last.get('step')}, loss {last.get('total', float('nan')):.4f}"
          f"; run folder {out}/ (samples.png: sources above, noise-free outputs below)")
    return 0


def cmd_threats(args) -> int:
    margins = float_list(args.margins, "--margins")
    epsilons = float_list(args.epsilons, "--epsilons")
    if any(not -1 <= m <= 1 for m in margins) or any(not e > 0 for e in epsilons):
        raise UserError("--margins are cosines in [-1, 1] and --epsilons must be positive")
    if args.max_sources is not None and args.max_sources < 2:
        raise UserError("--max-sources must be at least 2")
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    threat_report(args.stage1, args.stage2, args.out, encoder=args.encoder, attacks=attacks,
                  device=pick_device(args.device),
                  falco_margins=margins, epsilons=epsilons if args.encoder else (),
                  max_sources=args.max_sources, falco_steps=args.falco_steps,
                  invert_steps=args.invert_steps, seed=args.seed, n_boot=args.n_boot,
                  progress=not args.quiet)
    print((Path(args.out) / "threats.md").read_text())
    print(f"written to {args.out}/threats.json, threats.md, threats.png and threats_grid.png")
    return 0


def _repo_configs() -> Path:
    return Path(__file__).resolve().parents[2] / "configs"


def cmd_demo(args) -> int:
    """Stage 2 of the embedded default job: train on the demo faces behind the demo's
    stage-1 run, de-identify the test faces, evaluate."""
    out = Path(args.out)
    s1 = out / "stage1"
    if not (s1 / "config.yaml").is_file():
        raise UserError(f"no stage-1 run in {s1}: run `optics demo --out {out}` first")
    configs = Path(args.configs) if args.configs else _repo_configs()
    if not (configs / "stage2-demo.yaml").is_file():
        raise UserError(f"demo config not found: {configs / 'stage2-demo.yaml'} "
                        f"(pass --configs DIR)")
    cfg = assemble_config(Stage2Config, configs / "stage2-demo.yaml", {"stage1": str(s1)})
    run = out / "stage2"
    print("[1/4] stage 2: the de-identification generator (StarGAN v2-based)")
    done = (run / "run.json").is_file() and \
        json.loads((run / "run.json").read_text()).get("steps") == cfg.steps
    if done:
        print(f"  reusing {run}/")
    else:
        train_stage2(cfg, run, resume=any(run.glob("ckpt_*.pt")), progress=not args.quiet)
    print("[2/4] de-identified test faces")
    x, _, _ = load_split(None, "test", 128, landmark_key=None)
    anon = Anonymizer(s1, run)
    refs = load_stage2_data(cfg.data or None, anon.frozen.stage1_size, seed=cfg.seed,
                            reference_fraction=cfg.reference_fraction).references
    outputs = anon.anonymize(x, anon.reference_styles(refs))
    folder = run / "anonymized"
    for i, img in enumerate(outputs):
        save_image(img, folder / f"test-{i:03d}.png")
    save_image(_grid(x, outputs), folder / "grid.png")
    print(f"  {len(outputs)} faces in {folder}/ (grid.png: sources above, outputs below)")
    print("[3/4] evaluation (28 johns faces x 5 references; deid evaluate gives the full one)")
    evaluate_run(s1, run, run / "evaluation", refs_per_source=5, max_sources=28,
                 n_boot=500, progress=not args.quiet)
    print((run / "evaluation" / "evaluation.md").read_text())
    print("[4/4] the Private-Encoder-style encoder (software-level peer) on top of stage 2")
    pe_run = out / "private-encoder"
    pe_cfg = assemble_config(PrivateEncoderConfig, configs / "private-encoder-demo.yaml",
                             {"stage2": str(run)})
    pe_done = (pe_run / "run.json").is_file() and \
        json.loads((pe_run / "run.json").read_text()).get("steps") == pe_cfg.steps
    if pe_done:
        print(f"  reusing {pe_run}/")
    else:
        train_private_encoder(pe_cfg, pe_run, resume=any(pe_run.glob("ckpt_*.pt")),
                              progress=not args.quiet)
    print(f"stage 2 written to {run}/ (samples/, anonymized/, evaluation/), the encoder to "
          f"{pe_run}/; the threat models: deid threats --stage1 {s1} --stage2 {run} "
          f"--encoder {pe_run} --out {out / 'threats'}")
    return 0


def register(sub) -> None:
    p = add_common(sub.add_parser(
        "train-stage2", help="train the de-identification generator behind a stage-1 run",
        description="Stage 2: a StarGAN v2-based generator turns the privacy image y = "
                    "camera(x) into a new face with the pose and expression of x and the "
                    "style of a public reference. The stage-1 camera and regressor stay "
                    "frozen. Writes config.yaml, log.csv, ckpt_<step>.pt (atomic), "
                    "samples/ and run.json. Works under torchrun (DDP).",
        epilog="examples:\n"
               "  deid train-stage2 --stage1 runs/demo/stage1 --config "
               "configs/stage2-demo.yaml --out runs/demo/stage2\n"
               "  deid train-stage2 --resume runs/demo/stage2 --steps 2000\n"
               "  deid train-stage2 --stage1 runs/demo/stage1 --data runs/pairs "
               "--init runs/demo/stage2 --out runs/stage2-bench\n"
               "  torchrun --nproc_per_node 4 -m deid train-stage2 --stage1 RUN --data "
               "celeba_hq --config configs/stage2-256.yaml --out runs/stage2-256"))
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly")
    p.add_argument("--init", metavar="RUN", help="start from a trained stage-2 run's weights "
                                                 "(fine-tuning, e.g. on captured pairs)")
    p.add_argument("--config", metavar="FILE", help="YAML config (Stage2Config fields)")
    add_overrides(p, "lambda_cyc=7")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, Stage2Config)
    p.set_defaults(func=cmd_train_stage2)

    p = add_common(sub.add_parser(
        "train-private-encoder",
        help="train the Private-Encoder-style encoder on top of a stage-2 run",
        description="An encoder maps the clean face to a code in [-C, C]^d that the frozen "
                    "stage-2 generator decodes alone (through a learned lift and a constant "
                    "canvas); trained noise-free, as the published code, on MSE + LPIPS + "
                    "|t - twin cosine|. deid anonymize --method private-encoder adds the "
                    "differential-privacy noise. Writes config.yaml, log.csv, ckpt_<step>.pt "
                    "(atomic), samples.png and run.json.",
        epilog="examples:\n"
               "  deid train-private-encoder --stage2 runs/demo/stage2 --out "
               "runs/demo/private-encoder\n"
               "  deid train-private-encoder --resume runs/demo/private-encoder --steps 800"))
    p.add_argument("--out", help="run folder")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR exactly")
    p.add_argument("--config", metavar="FILE", help="YAML config (PrivateEncoderConfig fields)")
    add_overrides(p, "id_target=0.0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, PrivateEncoderConfig)
    p.set_defaults(func=cmd_train_private_encoder)

    p = add_common(sub.add_parser(
        "anonymize", help="de-identify face images with a stage-1 and a stage-2 run",
        description="--method privlens (default): each image goes through the stage-1 camera "
                    "(or is taken as a captured privacy frame with --captured), U reads its "
                    "landmarks, and the stage-2 generator draws a new face with the style of a "
                    "public reference (image i takes reference i mod M) or of a seeded latent. "
                    "--method falco (software level, needs the clean image): the same content "
                    "input, with per-block styles inverted from x, paired with the nearest "
                    "public reference and optimised towards --margin (identity cosine of the "
                    "dlib twin). --method private-encoder (software level): the clean image's "
                    "code, clipped and noised for --epsilon differential privacy, decoded "
                    "alone. Writes one PNG per input (same name), grid.png and "
                    "anonymize.json.",
        epilog="examples:\n"
               "  deid anonymize --stage1 runs/demo/stage1 --stage2 runs/demo/stage2 "
               "--images faces/ --references public/ --out anon/\n"
               "  deid anonymize --stage1 runs/demo/stage1 --stage2 runs/demo/stage2 "
               "--images faces/ --seed 3 --margin 0.0 --out anon/\n"
               "  deid anonymize --stage1 RUN1 --stage2 RUN2 --images pairs/test/privacy "
               "--captured --seed 0 --out anon/\n"
               "  deid anonymize --method falco --margin 0.0 --stage1 runs/demo/stage1 "
               "--stage2 runs/demo/stage2 --images faces/ --out anon-falco/\n"
               "  deid anonymize --method private-encoder --encoder "
               "runs/demo/private-encoder --epsilon 10 --stage2 runs/demo/stage2 --images "
               "faces/ --out anon-pe/"))
    p.add_argument("--method", choices=("privlens", "falco", "private-encoder"),
                   default="privlens", help="privlens (default), falco or private-encoder")
    p.add_argument("--stage1", metavar="RUN", help="stage-1 run folder (privlens, falco)")
    p.add_argument("--stage2", metavar="RUN", help="stage-2 run folder (private-encoder: "
                                                   "default the encoder's own)")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of face images")
    p.add_argument("--references", metavar="DIR", help="folder of public reference faces")
    p.add_argument("--seed", type=int, help="draw latent styles with this seed instead")
    p.add_argument("--margin", type=float, help="privacy dial (privlens) or FALCO margin: "
                                                "target identity cosine to the source (1 "
                                                "keeps it, 0 removes it; default: the middle "
                                                "training margin, FALCO 0.5)")
    p.add_argument("--steps", type=int, default=50, help="falco: optimisation steps per image "
                                                         "(default 50, FALCO's)")
    p.add_argument("--invert-steps", type=int, default=100,
                   help="falco: inversion steps per image (default 100)")
    p.add_argument("--encoder", metavar="RUN", help="private-encoder: the encoder run")
    p.add_argument("--epsilon", type=float, default=float("inf"),
                   help="private-encoder: privacy budget (default inf: no noise, as the "
                        "published code)")
    p.add_argument("--mechanism", choices=("laplace", "gaussian"), default="laplace",
                   help="private-encoder: noise (default laplace, eps-DP)")
    p.add_argument("--delta", type=float, default=1e-5,
                   help="private-encoder: delta of the Gaussian mechanism (default 1e-5)")
    p.add_argument("--noise-seed", type=int, default=0,
                   help="private-encoder: seed of the privacy noise (default 0)")
    p.add_argument("--captured", action="store_true",
                   help="the images are captured privacy frames (skip the simulated camera)")
    p.add_argument("--batch", type=int, default=16, help="images per batch (default 16)")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda:0, ...")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_anonymize)

    p = add_common(sub.add_parser(
        "evaluate", help="measure a stage-2 run's outputs against their sources",
        description="Every source (the demo corpus' johns faces: known identities, never "
                    "trained on) is de-identified with R public references; DIS and re-ID "
                    "per judge (dlib, mobilefacenet, faceres), landmark and box L1 and "
                    "detection rate (dlib, MTCNN), FID and LPIPS diversity, each with its "
                    "bootstrap interval, beside the clean and privacy-image baselines. Writes "
                    "evaluation.json, evaluation.md and evaluation_grid.png.",
        epilog="examples:\n"
               "  deid evaluate --stage1 runs/demo/stage1 --stage2 runs/demo/stage2 --out "
               "runs/demo/stage2/evaluation\n"
               "  deid evaluate --stage1 RUN1 --stage2 RUN2 --margins 0.6,0.3,0.0 --out ev"))
    p.add_argument("--stage1", required=True, metavar="RUN", help="stage-1 run folder")
    p.add_argument("--stage2", required=True, metavar="RUN", help="stage-2 run folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--refs-per-source", type=int, default=10,
                   help="references per source (default 10, the paper's protocol)")
    p.add_argument("--margins", help="privacy-dial margins to evaluate, comma-separated "
                                     "(default: the run's middle training margin)")
    p.add_argument("--split", default="johns", help="corpus split of the sources "
                                                   "(default johns)")
    p.add_argument("--max-sources", type=int, help="at most this many sources (every "
                                                   "identity kept)")
    p.add_argument("--seed", type=int, default=0, help="sensor-noise and bootstrap seed")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = add_common(sub.add_parser(
        "threats", help="optical against software de-identification under three threat models",
        description="Rows: the learned camera, defocus, lr16, blur-4, mosaic-8, privlens "
                    "two-stage, FALCO-style at --margins and Private-Encoder-style at "
                    "--epsilons (with --encoder). Columns: output only (the attacker attacks "
                    "the published output: direct, matched gallery, Wiener and RL where the "
                    "output is a degraded image), sniffing (what the device holds before the "
                    "output: x for software methods, y for cameras) and utility (jittered "
                    "landmark NME, dlib detection, landmark L1, FID), plus Private-Encoder's "
                    "own protocol. Writes threats.json, threats.md, threats.png and "
                    "threats_grid.png.",
        epilog="examples:\n"
               "  deid threats --stage1 runs/demo/stage1 --stage2 runs/demo/stage2 --encoder "
               "runs/demo/private-encoder --out runs/demo/threats\n"
               "  deid threats --stage1 RUN1 --stage2 RUN2 --margins 0.5 --max-sources 14 "
               "--out threats"))
    p.add_argument("--stage1", required=True, metavar="RUN", help="stage-1 run folder")
    p.add_argument("--stage2", required=True, metavar="RUN", help="stage-2 run folder")
    p.add_argument("--encoder", metavar="RUN", help="Private-Encoder-style run (no rows "
                                                    "without it)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--margins", default="1.0,0.5,0.0", help="FALCO margins (default "
                                                            "1.0,0.5,0.0)")
    p.add_argument("--epsilons", default="0.1,1,10,100,inf",
                   help="Private-Encoder epsilons (default 0.1,1,10,100,inf)")
    p.add_argument("--max-sources", type=int, help="at most this many johns faces (every "
                                                   "identity kept)")
    p.add_argument("--attacks", default="wiener,rl",
                   help="reconstructions on the degraded-image rows, comma-separated "
                        "(default wiener,rl; also tv, pnp, ddrm, inversion)")
    p.add_argument("--falco-steps", type=int, default=50, help="FALCO steps (default 50)")
    p.add_argument("--invert-steps", type=int, default=50, help="FALCO inversion steps "
                                                                "(default 50)")
    p.add_argument("--seed", type=int, default=0, help="noise and bootstrap seed")
    p.add_argument("--n-boot", type=int, default=500, help="bootstrap replicates")
    p.add_argument("--device", default="auto", help="where the generators run: auto (GPU if "
                                                    "any), cpu, cuda:0, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_threats)

    p = add_common(sub.add_parser(
        "demo", help="stage 2 of the embedded default job (used by make demo)",
        description="After `optics demo --out DIR`: trains stage 2 with "
                    "configs/stage2-demo.yaml behind DIR/stage1 (resumed or reused when "
                    "already there), de-identifies the demo test faces, evaluates, and trains "
                    "the Private-Encoder-style encoder (configs/private-encoder-demo.yaml) in "
                    "DIR/private-encoder.",
        epilog="example:\n  deid demo --out runs/demo"))
    p.add_argument("--out", default="runs/demo", help="demo folder (default runs/demo)")
    p.add_argument("--configs", metavar="DIR", help="folder holding stage2-demo.yaml "
                                                    "(default: the repository's configs/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = add_common(sub.add_parser(
        "ablation", help="the paper's Table 1 grid (heatmap, LPIPS, expression) at small scale",
        description="Trains one stage-2 run per combination of the heatmap input, the LPIPS "
                    "loss and the expression loss (on/off; 8 runs) from the given config for "
                    "--steps each, evaluates each and prints the table. Finished runs are "
                    "reused and partial ones resumed.",
        epilog="example:\n  deid ablation --stage1 runs/demo/stage1 --config "
               "configs/stage2-demo.yaml --steps 150 --out runs/demo/ablation"))
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--steps", type=int, default=150, help="training steps per run "
                                                          "(default 150)")
    p.add_argument("--refs-per-source", type=int, default=5,
                   help="references per source (default 5)")
    p.add_argument("--max-sources", type=int, default=28, help="sources (default 28)")
    p.add_argument("--config", metavar="FILE", help="YAML config (Stage2Config fields)")
    add_overrides(p, "lambda_cyc=7")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, Stage2Config, skip=("steps",))
    p.set_defaults(func=cmd_ablation)
