"""The attacker: one reconstruction method against one camera, its parameters tuned on the
attacker's own faces through that camera (never the test or johns faces).

Methods (``METHODS``): ``identity`` (look at ``y``), ``wiener`` and ``rl`` (:mod:`optics.deconv`),
``tv`` (:mod:`.tv`), ``pnp`` (:mod:`.pnp`), ``ddrm`` (:mod:`.ddrm`), ``matched`` (no
reconstruction: re-identification against a gallery through the same camera) and
``inversion`` (:mod:`.inversion`). A new method is one branch in :meth:`Attacker.reconstruct`
(plus :meth:`Attacker.prepare` if it learns something) and one name in ``METHODS``.

Caching (:meth:`Attacker.prepare`): ``cache`` (a dict, in memory) shares the face denoiser,
the DDRM priors and each camera's rendering of the tuning faces between attackers; ``store``
(a folder) keeps the trained networks and the tuned parameters on disk, keyed by everything
they depend on: the method's config, the attacker's faces, the camera (its PSF, and its
rendering and reading of the tuning faces) and the attack code itself (a hash of its source
files). A later attacker with the same key loads them instead of training or tuning again;
it gets the same networks and parameters, so the results do not change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import torch

from deid.attacks.cameras import AttackCamera
from deid.attacks.ddpm_unet import load_ddpm_unet
from deid.attacks.ddrm import GaussianPrior, ddrm
from deid.attacks.denoisers import load_face_denoiser, train_face_denoiser
from deid.attacks.inversion import InversionConfig, inversion_attack, train_inversion
from deid.attacks.pnp import pnp
from deid.attacks.tv import tv_deconvolution
from deid.judges.quality import psnr
from optics.deconv import estimate_noise_sigma, richardson_lucy, wiener
from optics.kit.files import locked, write_text_atomic
from optics.kit.precision import BF16_SETTINGS, resolve_bf16
from optics.kit.resize import resize_to

__all__ = ["METHODS", "TUNING", "AttackConfig", "Attacker", "digest", "tensor_digest",
           "source_digest"]

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
    # bfloat16 autocast for the attackers' networks (inversion, the PnP face denoiser):
    # "auto" (where the hardware has it natively, optics.kit.precision), "on" or "off"
    bf16: str = "auto"

    def __post_init__(self):
        if self.bf16 not in BF16_SETTINGS:
            raise ValueError(f"bf16 must be one of {', '.join(BF16_SETTINGS)}, got {self.bf16!r}")


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
        self.loaded: list[str] = []  # what prepare() took from the store instead of making

    def prepare(self, train: torch.Tensor, cache: dict | None = None,
                store=None) -> Attacker:
        """Train or fit what the method needs on ``train`` and tune its parameter.
        ``cache``: a dict shared by attackers in one process; ``store``: a folder that keeps
        trained networks and tuned parameters across runs (see the module docstring)."""
        t0 = time.perf_counter()
        cache = {} if cache is None else cache
        self.loaded = []
        store = Path(store) if store else None
        cfg = self.cfg
        if self.method == "inversion":
            icfg = InversionConfig(steps=cfg.inversion_steps, batch_size=cfg.inversion_batch,
                                   width=cfg.inversion_width, image_size=cfg.size,
                                   seed=cfg.seed, ckpt_every=100 if store else 0,
                                   bf16=self.bf16(train))
            out_dir = None
            if store:
                key = digest("inversion", _config_json(icfg), self.camera_key(train, cache),
                              tensor_digest(train), source_digest())
                out_dir = store / f"inversion-{_safe(self.camera.name)}-{key}"
                if (out_dir / f"ckpt_{icfg.steps}.pt").exists():
                    self.loaded.append("inversion")
            self.model = train_inversion(_CameraShim(self.camera, cfg.size), train, icfg,
                                         out_dir=out_dir, progress=False)
        elif self.method == "pnp" and cfg.pnp_denoiser == "face":
            if "face_denoiser" not in cache:
                cache["face_denoiser"] = self._face_denoiser(train, store)
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
            path = None
            if store:
                key = digest("tuned", self.method, _config_json(cfg),
                              self.camera_key(train, cache), tensor_digest(train),
                              source_digest(), _checkpoint_stamp(cfg))
                path = store / f"tuned-{self.method}-{_safe(self.camera.name)}-{key}.json"
            if path is not None and path.exists():
                self.params = json.loads(path.read_text())["params"]
                self.loaded.append("params")
            else:
                score = self._tune(train[: cfg.tune_faces], self._tune_y(train, cache))
                if path is not None:
                    write_text_atomic(path, json.dumps(
                        {"method": self.method, "camera": self.camera.name,
                         "params": self.params, "tuning_psnr_db": score}, indent=1) + "\n")
        self.seconds_prepare = time.perf_counter() - t0
        return self

    def _face_denoiser(self, train: torch.Tensor, store: Path | None):
        """The plug-and-play face denoiser, trained on ``train`` or loaded from ``store``
        (one process trains it while others wanting the same one wait for it)."""
        cfg = self.cfg
        bf16 = self.bf16(train)
        if not store:
            return train_face_denoiser(train, steps=cfg.denoiser_steps, seed=cfg.seed,
                                       progress=False, bf16=bf16)
        key = digest("face_denoiser", cfg.denoiser_steps, cfg.seed, tensor_digest(train),
                      source_digest(), bf16)
        folder = store / f"face-denoiser-{key}"
        with locked(store / f"face-denoiser-{key}.lock"):
            if (folder / "denoiser.pt").exists():
                self.loaded.append("face_denoiser")
                return load_face_denoiser(folder)
            return train_face_denoiser(train, steps=cfg.denoiser_steps, seed=cfg.seed,
                                       out_dir=folder, progress=False, bf16=bf16)

    def bf16(self, like: torch.Tensor) -> bool:
        """Whether this attacker's networks run under bfloat16 autocast on ``like``'s device
        (``config.bf16``, resolved by :func:`optics.kit.precision.resolve_bf16`)."""
        return resolve_bf16(self.cfg.bf16, like.device)

    def _tune_y(self, train: torch.Tensor, cache: dict) -> torch.Tensor:
        """The camera's rendering of the tuning faces (``train[:tune_faces]``, seed
        ``seed + 7``), rendered once per camera and shared through ``cache``."""
        n = self.cfg.tune_faces or min(2, len(train))
        key = ("tune_y", id(self.camera), id(train), n, self.cfg.seed)
        hit = cache.get(key)
        if hit is None or hit[0] is not self.camera or hit[1] is not train:
            hit = (self.camera, train, self.camera(train[:n], seed=self.cfg.seed + 7))
            cache[key] = hit  # holds the camera and faces, so their ids stay theirs
        return hit[2]

    def camera_key(self, train: torch.Tensor, cache: dict | None = None) -> str:
        """What the attacker knows and owns of the camera, as a digest: its name, PSF and
        output size, its rendering of the tuning faces, and its reading of that rendering."""
        y = self._tune_y(train, {} if cache is None else cache)
        seen = self.camera.observe(y) if self.camera.observe is not None else y
        return digest(self.camera.name, self.bf16(train), tensor_digest(self.camera.psf),
                      self.camera.output_size, tensor_digest(y), tensor_digest(seen))

    def _tune(self, faces: torch.Tensor, y: torch.Tensor) -> float:
        """Pick the method's parameter on the attacker's own faces (best mean PSNR)."""
        name, grid = TUNING[self.method]
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
        return best[0]

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
            samples = max(1, cfg.ddrm_samples)
            if cfg.ddrm_checkpoint:  # the UNet wants a side divisible by 32 after padding
                h = psf.shape[-1] // 2
                pad = (-(-(y.shape[-1] + 2 * h) // 32) * 32 - y.shape[-1]) // 2
                out = ddrm(y, psf, self.model, sigma_0, steps=cfg.ddrm_steps, seed=cfg.seed,
                           pad_px=pad, samples=samples)
            else:  # the Gaussian prior: the samples' mean in one run (see ddrm's samples)
                out = ddrm(y.double(), psf.double(), self.model, sigma_0, steps=cfg.ddrm_steps,
                           seed=cfg.seed, samples=samples).to(y.dtype)
        else:  # inversion
            out = inversion_attack(y, model=self.model, out_size=cfg.size)
        return resize_to(out.clamp(0, 1), cfg.size)


def _noise_sigma(y: torch.Tensor) -> float:
    return max(float(estimate_noise_sigma(y).mean()), 1.0 / 255)


# --------------------------------------------------------------------------- the store
#: Modules whose source decides what prepare() makes (their hash is part of every key).
ATTACK_MODULES = ("deid.attacks.attacker", "deid.attacks.tv", "deid.attacks.pnp",
                  "deid.attacks.ddrm", "deid.attacks.ddpm_unet", "deid.attacks.denoisers",
                  "deid.attacks.inversion", "deid.attacks.cameras", "deid.judges.quality",
                  "optics.deconv", "optics.imaging", "optics.kit.resize", "optics.kit.schedule")
_source_digests: dict = {}


def source_digest(modules=ATTACK_MODULES) -> str:
    """A digest of the torch version and the source files of ``modules`` (imported ones):
    a key that changes when the code that made a stored result changes."""
    modules = tuple(modules)
    if modules not in _source_digests:
        h = hashlib.sha256(torch.__version__.encode())
        for name in modules:
            h.update(Path(sys.modules[name].__file__).read_bytes())
        _source_digests[modules] = h.hexdigest()[:16]
    return _source_digests[modules]


def tensor_digest(t: torch.Tensor) -> str:
    """A digest of a tensor's shape and float32 values."""
    a = t.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(str(tuple(a.shape)).encode())
    h.update(a.numpy().tobytes())
    return h.hexdigest()[:16]


def digest(*parts) -> str:
    """A digest of ``parts`` (by their ``str``)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _config_json(cfg) -> str:
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True)


def _checkpoint_stamp(cfg: AttackConfig) -> str:
    if not cfg.ddrm_checkpoint:
        return ""
    st = Path(cfg.ddrm_checkpoint).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
