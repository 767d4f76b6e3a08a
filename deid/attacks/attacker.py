"""The attacker: one reconstruction method against one camera, its parameters tuned on the
attacker's own faces through that camera (never the test or johns faces).

Methods (``METHODS``): ``identity`` (look at ``y``), ``wiener`` and ``rl`` (:mod:`optics.deconv`),
``tv`` (:mod:`.tv`), ``pnp`` (:mod:`.pnp`), ``ddrm`` (:mod:`.ddrm`), ``matched`` (no
reconstruction: re-identification against a gallery through the same camera) and
``inversion`` (:mod:`.inversion`). A new method is one branch in :meth:`Attacker.reconstruct`
(plus :meth:`Attacker.prepare` if it learns something) and one name in ``METHODS``.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import torch

from deid.attacks.cameras import AttackCamera
from deid.attacks.ddpm_unet import load_ddpm_unet
from deid.attacks.ddrm import GaussianPrior, ddrm
from deid.attacks.denoisers import train_face_denoiser
from deid.attacks.inversion import InversionConfig, inversion_attack, train_inversion
from deid.attacks.pnp import pnp
from deid.attacks.tv import tv_deconvolution
from deid.judges.quality import psnr
from optics.deconv import estimate_noise_sigma, richardson_lucy, wiener
from optics.kit.resize import resize_to

__all__ = ["METHODS", "TUNING", "AttackConfig", "Attacker"]

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
            icfg = InversionConfig(steps=cfg.inversion_steps, batch_size=cfg.inversion_batch,
                                   width=cfg.inversion_width, image_size=cfg.size,
                                   seed=cfg.seed)
            self.model = train_inversion(_CameraShim(self.camera, cfg.size), train, icfg,
                                         progress=False)
        elif self.method == "pnp" and cfg.pnp_denoiser == "face":
            if "face_denoiser" not in cache:
                cache["face_denoiser"] = train_face_denoiser(
                    train, steps=cfg.denoiser_steps, seed=cfg.seed, progress=False)
            self.model = cache["face_denoiser"]
        elif self.method == "ddrm" and cfg.ddrm_checkpoint:
            self.model = load_ddpm_unet(cfg.ddrm_checkpoint)
        elif self.method == "ddrm":
            p = self.camera.psf.shape[-1] // 2
            key = ("gaussian_prior", p, self.camera.output_size or cfg.size)
            if key not in cache:
                faces = resize_to(train, self.camera.output_size or cfg.size)
                padded = torch.nn.functional.pad(faces, (p, p, p, p), mode="replicate")
                cache[key] = GaussianPrior.fit(padded)
            self.model = cache[key]
        if self.method in TUNING and cfg.tune_faces:
            self._tune(train[: cfg.tune_faces])
        self.seconds_prepare = time.perf_counter() - t0
        return self

    def _tune(self, faces: torch.Tensor) -> None:
        """Pick the method's parameter on the attacker's own faces (best mean PSNR)."""
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
            out = wiener(y, psf, reg=p.get("reg", "sweep"))
        elif m == "rl":
            out = richardson_lucy(y, psf, iterations=p.get("iterations", cfg.rl_iterations))
        elif m == "tv":
            out = tv_deconvolution(y, psf, lam=p.get("lam"), iterations=cfg.tv_iterations)
        elif m == "pnp":
            den = self.model if cfg.pnp_denoiser == "face" else cfg.pnp_denoiser
            out = pnp(y, psf, denoiser=den, iterations=cfg.pnp_iterations,
                      lam=p.get("lam", 0.25))
        elif m == "ddrm":
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
            out = inversion_attack(y, model=self.model, out_size=cfg.size)
        return resize_to(out.clamp(0, 1), cfg.size)


def _noise_sigma(y: torch.Tensor) -> float:
    return max(float(estimate_noise_sigma(y).mean()), 1.0 / 255)
