"""A face denoiser the project trains itself, as the prior of plug-and-play attacks.

:class:`FaceDenoiser` is a small DnCNN-style residual CNN (it predicts the noise and subtracts
it) conditioned on the noise level the way FFDNet is: a constant map of ``sigma`` is
concatenated to the image as an extra input channel, so one network serves every level PnP
asks for. It is trained on face crops with additive white Gaussian noise of standard
deviations drawn uniformly from a range (default 0.01 to 0.2, in units of full scale).

References:

- K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang, "Beyond a Gaussian denoiser: residual learning
  of deep CNN for image denoising" (DnCNN), IEEE TIP 2017.
- K. Zhang, W. Zuo, L. Zhang, "FFDNet: toward a fast and flexible solution for CNN-based image
  denoising", IEEE TIP 2018 (the noise-level map as an input).
- S. V. Venkatakrishnan, C. A. Bouman, B. Wohlberg, "Plug-and-play priors for model based
  reconstruction", GlobalSIP 2013.

PnP calls a denoiser as ``denoiser(x (B, C, H, W), sigma: float) -> (B, C, H, W)``;
:class:`PnPDenoiser` wraps a trained network in that signature (no gradient, any device,
output clamped to [0, 1]).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from optics.kit.checkpoint import save_checkpoint
from optics.kit.config import from_dict, to_dict
from optics.kit.precision import bf16_autocast
from optics.kit.progress import progress_bar
from optics.kit.schedule import global_batch, sample_generator

__all__ = [
    "DenoiserConfig",
    "FaceDenoiser",
    "PnPDenoiser",
    "train_face_denoiser",
    "load_face_denoiser",
    "gaussian_blur_denoiser",
]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "privlens-face-denoiser"


def sigma_map(sigma, like: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` map of the noise level(s) ``sigma`` (a float, or one per image) in
    **units of full scale**, shaped like ``like (B, C, H, W)``."""
    b, _, h, w = like.shape
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if s.ndim == 0:
        s = s.expand(b)
    s = s.reshape(-1)
    if s.numel() != b:
        raise ValueError(f"sigma must be a number or one per image ({b}), got {s.numel()}")
    return s[:, None, None, None].expand(b, 1, h, w)


class FaceDenoiser(nn.Module):
    """DnCNN-style residual denoiser conditioned on the noise level (FFDNet's sigma map).

    ``depth`` 3x3 convolutions of ``width`` channels (ReLU between, no batch norm);
    ``forward(x (B, C, H, W), sigma) -> x - noise_estimate`` (not clamped, differentiable),
    ``sigma`` the noise standard deviation in units of full scale (float or ``(B,)``).
    """

    def __init__(self, channels: int = 3, width: int = 32, depth: int = 6):
        super().__init__()
        if depth < 2 or width < 1:
            raise ValueError(f"need depth >= 2 and width >= 1, got {depth}, {width}")
        self.channels, self.width, self.depth = channels, width, depth
        layers: list[nn.Module] = [nn.Conv2d(channels + 1, width, 3, padding=1),
                                   nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(layers[-1].weight)  # start as the identity
        nn.init.zeros_(layers[-1].bias)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must be (B, {self.channels}, H, W), got {tuple(x.shape)}")
        # channels_last: oneDNN's NHWC convolutions, about 1.6x faster here on a CPU
        z = torch.cat([x, sigma_map(sigma, x)], dim=1).contiguous(
            memory_format=torch.channels_last)
        return x - self.body(z).contiguous()


class PnPDenoiser:
    """``denoiser(x (B, C, H, W), sigma: float) -> (B, C, H, W)`` for plug-and-play: runs
    ``model`` without gradient on its own device and returns ``x``'s device and dtype,
    clamped to [0, 1] (``clamp=False`` to keep the raw output). ``sigma`` outside the
    training range is clamped into it (``sigma_range``) and logged once. ``bf16``: run the
    network under bfloat16 autocast (:mod:`optics.kit.precision`; about 2x faster where bf16
    is native)."""

    def __init__(self, model: FaceDenoiser, clamp: bool = True,
                 sigma_range: tuple[float, float] | None = None, bf16: bool = False):
        self.model = model.eval()
        self.clamp = clamp
        self.sigma_range = sigma_range
        self.bf16 = bf16
        self._warned = False

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = torch.as_tensor(sigma, dtype=torch.float32)
        if self.sigma_range is not None:
            lo, hi = self.sigma_range
            if (s < lo).any() or (s > hi).any():
                if not self._warned:
                    log.info("denoiser asked for sigma %s outside its training range %s; "
                             "clamped", s.tolist(), self.sigma_range)
                    self._warned = True
                s = s.clamp(lo, hi)
        p = next(self.model.parameters())
        with torch.no_grad(), bf16_autocast(p.device, self.bf16):
            out = self.model(x.to(p.device, p.dtype), s.to(p.device, p.dtype)).to(p.dtype)
        if self.clamp:
            out = out.clamp(0.0, 1.0)
        return out.to(x.device, x.dtype)


def gaussian_blur_denoiser(x: torch.Tensor, sigma=None, blur_px: float = 1.0) -> torch.Tensor:
    """Baseline with the PnP signature: a separable Gaussian blur of std ``blur_px`` pixels
    (replicate borders), whatever the noise level ``sigma``."""
    r = max(1, int(3 * blur_px + 0.5))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / blur_px) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    z = F.pad(x, (r, r, r, r), mode="replicate")
    z = F.conv2d(z, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(z, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@dataclass(frozen=True)
class DenoiserConfig:
    """Training of :class:`FaceDenoiser`. Noise levels are drawn uniformly from
    ``[sigma_min, sigma_max]`` (units of full scale) per image; ``patch_size`` crops random
    squares of that side (0: whole images); ``bf16``: forward under bfloat16 autocast."""

    steps: int = 500
    batch_size: int = 16
    lr: float = 1e-3
    width: int = 32
    depth: int = 6
    sigma_min: float = 0.01
    sigma_max: float = 0.2
    patch_size: int = 0
    flip: bool = True
    seed: int = 0
    bf16: bool = False

    def __post_init__(self):
        if not 0 <= self.sigma_min <= self.sigma_max:
            raise ValueError(f"need 0 <= sigma_min <= sigma_max, got {self.sigma_min}, "
                             f"{self.sigma_max}")
        if self.steps < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("need steps >= 0, batch_size >= 1 and lr > 0")


def _noisy_batch(images: torch.Tensor, step: int, config: DenoiserConfig):
    idx = global_batch(step, len(images), config.batch_size, config.seed)
    h, w = images.shape[-2:]
    p = config.patch_size or min(h, w)
    if p > min(h, w):
        raise ValueError(f"patch_size {p} is larger than the images ({h}x{w})")
    xs, noisy, sigmas = [], [], []
    for k, i in enumerate(idx.tolist()):
        g = sample_generator(config.seed, step, k)
        u = torch.rand(4, generator=g)
        top = int(u[0] * (h - p + 1))
        left = int(u[1] * (w - p + 1))
        x = images[i, :, top:top + p, left:left + p]
        if config.flip and u[2] < 0.5:
            x = x.flip(-1)
        s = config.sigma_min + float(u[3]) * (config.sigma_max - config.sigma_min)
        n = torch.randn(x.shape, generator=g).to(x)  # drawn on the CPU: same on any device
        xs.append(x)
        noisy.append(x + s * n)
        sigmas.append(s)
    sig = torch.tensor(sigmas, dtype=images.dtype, device=images.device)
    return torch.stack(xs), torch.stack(noisy), sig


def train_face_denoiser(train_images: torch.Tensor, sigmas: tuple[float, float] = (0.01, 0.2),
                        steps: int = 500, *, batch_size: int = 16, lr: float = 1e-3,
                        width: int = 32, depth: int = 6, patch_size: int = 0, seed: int = 0,
                        out_dir=None, progress: bool = True, bf16: bool = False) -> PnPDenoiser:
    """Train a :class:`FaceDenoiser` on ``train_images (N, C, H, W)`` in [0, 1] with Gaussian
    noise of std uniform in ``sigmas`` (units of full scale): MSE loss (PnP wants an MMSE
    denoiser), Adam with a cosine schedule; batches, crops, flips and noise are seeded per
    ``(seed, step, sample)``. Returns the :class:`PnPDenoiser` (its ``.model`` is the network). With
    ``out_dir``, writes ``denoiser.pt`` atomically (weights and config). ``bf16``: train and
    denoise under bfloat16 autocast (:mod:`optics.kit.precision`)."""
    config = DenoiserConfig(steps=steps, batch_size=batch_size, lr=lr, width=width, depth=depth,
                            sigma_min=float(sigmas[0]), sigma_max=float(sigmas[1]),
                            patch_size=patch_size, seed=seed, bf16=bf16)
    if train_images.ndim != 4:
        raise ValueError(f"train_images must be (N, C, H, W), got {tuple(train_images.shape)}")
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
        torch.manual_seed(seed)
        model = FaceDenoiser(train_images.shape[1], width, depth).to(train_images.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps), eta_min=lr * 0.05)
    it = range(steps)
    if progress:
        it = progress_bar(it, desc="face denoiser")
    model.train()
    t0 = time.perf_counter()
    loss = torch.zeros(())
    for step in it:
        x, noisy, sig = _noisy_batch(train_images, step, config)
        with bf16_autocast(train_images.device, bf16):
            den = model(noisy, sig)
        loss = F.mse_loss(den.float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    log.info("face denoiser: %d steps in %.1f s, last loss %.5f", steps,
             time.perf_counter() - t0, float(loss.detach()))
    model.eval()
    if out_dir is not None:
        save_checkpoint({"kind": CHECKPOINT_KIND, "step": steps, "config": to_dict(config),
                         "model": model.state_dict()}, Path(out_dir) / "denoiser.pt")
    return PnPDenoiser(model, sigma_range=(config.sigma_min, config.sigma_max), bf16=bf16)


def load_face_denoiser(path, map_location="cpu") -> PnPDenoiser:
    """The denoiser of a checkpoint (file, or a folder holding ``denoiser.pt``), loaded with
    ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.is_dir():
        path = path / "denoiser.pt"
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is not a face-denoiser checkpoint")
    config = from_dict(DenoiserConfig, state["config"])
    channels = state["model"]["body.0.weight"].shape[1] - 1
    model = FaceDenoiser(channels, config.width, config.depth)
    model.load_state_dict(state["model"])
    return PnPDenoiser(model.to(map_location).eval(),
                       sigma_range=(config.sigma_min, config.sigma_max), bf16=config.bf16)
