"""Learned inversion: an attacker who owns a copy of the camera trains a network to undo it.

The attacker renders privacy images ``y = camera(x)`` (with sensor noise) of faces ``x`` they
own and fits a small U-Net ``x_hat = U(y)`` to them with an L1 loss (plus an optional SSIM
term). Once trained, the network *embodies* the camera: the attack needs no PSF at test time,
which is also why it works on cameras whose PSF is unknown or not shift-invariant.

References:

- O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional networks for biomedical image
  segmentation", MICCAI 2015 (the encoder-decoder with skip connections).
- K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang, "Beyond a Gaussian denoiser: residual learning
  of deep CNN for image denoising" (DnCNN), IEEE TIP 2017 (predicting a residual on top of
  the input).
- Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error
  visibility to structural similarity", IEEE TIP 2004 (SSIM).

A low-resolution ``y`` (``lr16`` gives 16x16 for a 128x128 scene) is first brought to the
output size ``out_size`` bilinearly; the network learns a residual on top of that, and its
output is clamped to [0, 1].

Training randomness is a pure function of ``(seed, step, sample)``
(:mod:`optics.kit.schedule`), so a resumed run sees the batches, flips and noise an
uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from optics.camera import Camera
from optics.kit.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from optics.kit.config import from_dict, to_dict
from optics.kit.precision import bf16_autocast
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to
from optics.kit.schedule import global_batch, sample_generator

__all__ = [
    "InversionConfig",
    "InversionUNet",
    "train_inversion",
    "inversion_attack",
    "load_inversion",
    "ssim_loss",
    "psnr_db",
]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "privlens-inversion"


# --------------------------------------------------------------------------------------------
# small pure helpers


def clamp_unit(x: torch.Tensor) -> torch.Tensor:
    """Values clamped to [0, 1]; the gradient passes straight through (so a pixel pushed past
    the range can still be pulled back by the loss)."""
    return x + (x.clamp(0.0, 1.0) - x).detach()


def psnr_db(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in **dB** of images in [0, 1]: ``(B, C, H, W) -> (B,)``."""
    mse = (x - ref).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor):
    t = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size)


def ssim_loss(x: torch.Tensor, ref: torch.Tensor, window: int = 7, sigma: float = 1.5):
    """``1 - mean SSIM`` (Wang et al. 2004; Gaussian window, per channel, valid region) of
    images in [0, 1]. Differentiable; the window shrinks for tiny images."""
    c = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    w = _gaussian_window(window, sigma, c, x)
    c1, c2 = 0.01**2, 0.03**2

    def blur(t):
        return F.conv2d(t, w, groups=c)

    mx, mr = blur(x), blur(ref)
    vx = blur(x * x) - mx * mx
    vr = blur(ref * ref) - mr * mr
    cov = blur(x * ref) - mx * mr
    s = ((2 * mx * mr + c1) * (2 * cov + c2)) / ((mx * mx + mr * mr + c1) * (vx + vr + c2))
    return 1.0 - s.mean()


# --------------------------------------------------------------------------------------------
# the network


class _Block(nn.Module):
    """Two 3x3 convolutions with ReLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.body(x)


class InversionUNet(nn.Module):
    """A small U-Net ``y -> x_hat``: ``depth`` downsamplings (2x2 average pooling), channel
    widths ``width * 2**level``, bilinear upsampling and skip connections, a residual on top
    of the (upsampled) input and a [0, 1] clamp.

    ``forward(y (B, C, h, w), out_size=None) -> (B, C, S, S)`` with ``S = out_size`` (default
    ``self.out_size``, the training image size; ``y`` is bilinearly brought to ``S`` first).
    Any ``S`` works: the input is reflect-padded to a multiple of ``2**depth`` and cropped back.
    """

    def __init__(self, channels: int = 3, width: int = 16, depth: int = 2, out_size: int = 64):
        super().__init__()
        if width < 1 or depth < 0:
            raise ValueError(f"need width >= 1 and depth >= 0, got {width}, {depth}")
        self.channels, self.width, self.depth, self.out_size = channels, width, depth, out_size
        widths = [width * 2**i for i in range(depth + 1)]
        self.inc = _Block(channels, widths[0])
        self.down = nn.ModuleList(_Block(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(_Block(widths[i + 1] + widths[i], widths[i])
                                for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], channels, 1)
        nn.init.zeros_(self.head.weight)  # start as the identity (upsampled y)
        nn.init.zeros_(self.head.bias)

    def forward(self, y: torch.Tensor, out_size: int | tuple[int, int] | None = None):
        size = out_size if out_size is not None else self.out_size
        base = resize_to(y, size)
        h, w = base.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        z = F.pad(base, (0, pw, 0, ph), mode="replicate") if ph or pw else base
        # channels_last: oneDNN's NHWC convolutions (a training step about 1.2x faster on a CPU)
        skips = [self.inc(z.contiguous(memory_format=torch.channels_last))]
        for block in self.down:
            skips.append(block(F.avg_pool2d(skips[-1], 2)))
        z = skips.pop()
        for block in self.up:
            skip = skips.pop()
            z = F.interpolate(z, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            z = block(torch.cat([z, skip], dim=1))
        residual = self.head(z)[..., :h, :w]
        return clamp_unit(base + residual).contiguous()


# --------------------------------------------------------------------------------------------
# training


@dataclass(frozen=True)
class InversionConfig:
    """Training of :class:`InversionUNet` against one camera.

    ``image_size``: side of the training faces (and of ``x_hat``) in pixels; the camera must
    be configured for it (``CameraConfig.at_image_size``). ``noise``: render ``y`` with the
    sensor's noise. ``ssim_weight``: weight of ``1 - SSIM`` beside the L1 loss.
    ``ckpt_every``: steps between checkpoints (0: only at the end) when ``out_dir`` is given.
    ``bf16``: forward and loss under bfloat16 autocast (weights, gradients' accumulation and
    Adam stay float32; :mod:`optics.kit.precision`); about 2x faster where bf16 is native.
    """

    steps: int = 400
    batch_size: int = 8
    lr: float = 2e-3
    width: int = 16
    depth: int = 2
    image_size: int = 64
    seed: int = 0
    noise: bool = True
    flip: bool = True
    ssim_weight: float = 0.0
    ckpt_every: int = 0
    bf16: bool = False

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("need steps >= 0, batch_size >= 1 and lr > 0")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}")


def _model_of(config: InversionConfig, channels: int = 3) -> InversionUNet:
    return InversionUNet(channels, config.width, config.depth, config.image_size)


def _batch(images: torch.Tensor, step: int, config: InversionConfig, device):
    idx = global_batch(step, len(images), config.batch_size, config.seed)
    x = images[idx].to(device)
    if config.flip:
        flips = [bool(torch.rand(1, generator=sample_generator(config.seed, step, i)) < 0.5)
                 for i in range(len(idx))]
        mask = torch.tensor(flips, device=device)[:, None, None, None]
        x = torch.where(mask, x.flip(-1), x)
    # one noise generator per step (the camera draws the whole batch at once)
    return x, sample_generator(config.seed, step, -1, device=device)


def _checkpoint(model, opt, sched, step, config, camera) -> dict:
    return {
        "kind": CHECKPOINT_KIND,
        "step": step,
        "config": to_dict(config),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "camera_config": to_dict(camera.config),
        "camera_coefficients_um": {int(k): float(v)
                                   for k, v in camera.coefficients_dict().items()},
    }


def train_inversion(camera: Camera, train_images: torch.Tensor,
                    config: InversionConfig | None = None, out_dir=None,
                    progress: bool = True) -> InversionUNet:
    """Fit an :class:`InversionUNet` to invert ``camera`` on ``train_images (N, 3, S, S)`` in
    [0, 1] (``S = config.image_size``); returns it in eval mode on the images' device.

    Each step draws a seeded batch, mirrors faces left-right at random (``config.flip``),
    renders ``y = camera(x, noise=config.noise)`` with the camera frozen (its PSF is computed
    once, without gradient; the camera is neither moved nor changed) and takes an Adam step
    on ``L1(x_hat, x) + ssim_weight * (1 - SSIM)``. With ``out_dir``, checkpoints
    ``ckpt_<step>.pt`` are written atomically (weights, optimiser, schedule, config, camera)
    and a run finding one there resumes from it.
    """
    config = config or InversionConfig()
    if train_images.ndim != 4 or train_images.shape[-1] != config.image_size \
            or train_images.shape[-2] != config.image_size:
        raise ValueError(f"train_images must be (N, C, {config.image_size}, "
                         f"{config.image_size}), got {tuple(train_images.shape)}")
    if camera.config.image_size_px != config.image_size:
        raise ValueError(f"the camera renders {camera.config.image_size_px} px scenes but "
                         f"config.image_size is {config.image_size} (use at_image_size)")
    device = train_images.device
    with torch.no_grad():  # the camera is frozen: one PSF, no gradient into it
        psf = camera.psf().detach().to(device)

    with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
        torch.manual_seed(config.seed)
        model = _model_of(config, train_images.shape[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, config.steps),
                                                       eta_min=config.lr * 0.05)
    start, found = 0, None
    if out_dir is not None:
        out_dir = Path(out_dir)
        found = latest_checkpoint(out_dir)
        if found is not None:
            state = load_checkpoint(found, map_location=device)
            if state.get("config") != to_dict(config):
                raise ValueError(f"{found} was trained with another config; use a new out_dir")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start = int(state["step"])
            log.info("resuming inversion training from %s (step %d)", found, start)

    steps = range(start, config.steps)
    if progress:
        steps = progress_bar(steps, desc="inversion", initial=start, total=config.steps)
    model.train()
    t0 = time.perf_counter()
    loss = torch.zeros(())
    for step in steps:
        x, g = _batch(train_images, step, config, device)
        with torch.no_grad():
            y = camera(x, noise=config.noise, generator=g, psf=psf)
        with bf16_autocast(device, config.bf16):
            x_hat = model(y, config.image_size)
        loss = F.l1_loss(x_hat.float(), x)
        if config.ssim_weight:
            loss = loss + config.ssim_weight * ssim_loss(x_hat.float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        done = step + 1
        if out_dir is not None and config.ckpt_every and done % config.ckpt_every == 0 \
                and done < config.steps:
            save_checkpoint(_checkpoint(model, opt, sched, done, config, camera),
                            out_dir / f"ckpt_{done}.pt")
        if progress and hasattr(steps, "set_postfix"):
            steps.set_postfix(loss=f"{loss.item():.4f}")
    if out_dir is not None and (start < config.steps or found is None):
        save_checkpoint(_checkpoint(model, opt, sched, config.steps, config, camera),
                        out_dir / f"ckpt_{config.steps}.pt")
    log.info("inversion: %d steps in %.1f s, last loss %.4f", config.steps - start,
             time.perf_counter() - t0, float(loss.detach()))
    return model.eval()


def load_inversion(path, map_location="cpu") -> InversionUNet:
    """The U-Net of a checkpoint file (or the latest ``ckpt_<step>.pt`` of a folder), loaded
    with ``torch.load(weights_only=True)``, in eval mode."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(2, "no inversion checkpoint in folder", str(path))
        path = found
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is not an inversion checkpoint")
    config = from_dict(InversionConfig, state["config"])
    channels = state["model"]["head.weight"].shape[0]
    model = _model_of(config, channels)
    model.load_state_dict(state["model"])
    return model.to(map_location).eval()


# --------------------------------------------------------------------------------------------
# the attack


def inversion_attack(y: torch.Tensor, psf: torch.Tensor | None = None, *,
                     model: InversionUNet | None = None,
                     out_size: int | None = None) -> torch.Tensor:
    """Reconstruct ``x_hat (B, C, S, S)`` in [0, 1] from ``y (B, C, h, w)`` with a trained
    :class:`InversionUNet` (the shared interface ``method(y, psf, **params)``).

    ``psf`` is accepted for the interface and ignored: the model embodies the camera it was
    trained on (and is only valid for that camera). ``out_size``: side of ``x_hat`` (default:
    the training image size); a low-resolution ``y`` (e.g. ``lr16``) is upsampled to it.
    Runs on the model's device without gradient; returns ``y``'s device and dtype.
    """
    if isinstance(psf, nn.Module) or model is None:
        raise TypeError("inversion_attack(y, psf, *, model=...): pass the network as model=")
    if y.ndim != 4:
        raise ValueError(f"y must be (B, C, H, W), got {tuple(y.shape)}")
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x_hat = model(y.to(p.device, p.dtype), out_size)
    finally:
        model.train(was_training)
    return x_hat.to(y.device, y.dtype)

