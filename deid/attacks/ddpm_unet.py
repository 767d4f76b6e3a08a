"""The DDPM noise-prediction UNet (the ``simple`` model of DDIM / DDRM), for DDRM attacks.

Module layout and parameter names match the public CelebA-HQ 256 DDPM checkpoint that DDRM
uses (``celeba_hq.ckpt``, a plain state dict), so that file loads with ``strict=True``.

References
----------
- J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020, App. B
  (Wide-ResNet blocks with GroupNorm, self-attention at 16x16, sinusoidal time embedding).
- J. Song, C. Meng, S. Ermon, "Denoising Diffusion Implicit Models", ICLR 2021 (the PyTorch
  port of that network, ``models/diffusion.py``, reused by DDRM).
- B. Kawar, M. Elad, S. Ermon, J. Song, "Denoising Diffusion Restoration Models", NeurIPS 2022
  (``configs/celeba_hq.yml``: ch 128, ch_mult (1, 1, 2, 2, 4, 4), 2 res blocks, attention at
  16, dropout 0, resampling with convolutions).

Layout (``L = len(ch_mult)``): ``temb.dense.{0,1}``, ``conv_in``, ``down.{i}.block.{j}``
(``j < num_res_blocks``), ``down.{i}.attn.{j}`` at attention resolutions,
``down.{i}.downsample.conv`` (``i < L - 1``), ``mid.{block_1, attn_1, block_2}``,
``up.{i}.block.{j}`` (``j <= num_res_blocks``, every one with a 1x1 ``nin_shortcut``),
``up.{i}.attn.{j}``, ``up.{i}.upsample.conv`` (``i > 0``), ``norm_out``, ``conv_out``. A res
block holds ``norm1, conv1, temb_proj, norm2, conv2`` (+ ``nin_shortcut`` when its channel
count changes); an attention block ``norm, q, k, v, proj_out``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DDPMUNetConfig", "CELEBA_HQ_256", "DDPMUNet", "timestep_embedding",
           "load_ddpm_unet"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DDPMUNetConfig:
    """Hyper-parameters of the ``simple`` DDPM UNet.

    Attributes:
        resolution: input height = width in **pixels**.
        in_channels, out_channels: image channels in and predicted-noise channels out.
        ch: base channel count (a multiple of 32: GroupNorm uses 32 groups).
        ch_mult: channel multiplier per resolution level (one level per entry).
        num_res_blocks: res blocks per level on the way down (one more on the way up).
        attn_resolutions: feature-map sizes in **pixels** that get self-attention.
        dropout: dropout probability inside res blocks.
        resamp_with_conv: strided conv / conv after nearest upsampling (else pooling only).
    """

    resolution: int = 256
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.0
    resamp_with_conv: bool = True

    def __post_init__(self) -> None:
        if self.ch % 32:
            raise ValueError(f"ch must be a multiple of 32 (GroupNorm(32)), got {self.ch}")
        if self.resolution % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"resolution {self.resolution} must be divisible by "
                             f"2**{len(self.ch_mult) - 1}")


CELEBA_HQ_256 = DDPMUNetConfig()  # DDRM's configs/celeba_hq.yml


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``[sin(t w_i), cos(t w_i)]``, ``w_i = 10000^(-i / (dim/2 - 1))``
    (the tensor2tensor variant used by DDPM); ``t`` is ``(B,)``, the result ``(B, dim)``."""
    if t.ndim != 1:
        raise ValueError(f"t must be (B,), got {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) / (half - 1)
                      * torch.arange(half, dtype=torch.float32, device=t.device))
    arg = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


def _conv3(c_in: int, c_out: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=padding)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, temb_ch: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = _conv3(c_in, c_out)
        self.temb_proj = nn.Linear(temb_ch, c_out)
        self.norm2 = _norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3(c_out, c_out)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class _AttnBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q = self.q(hn).reshape(b, c, h * w).transpose(1, 2)  # (b, hw, c)
        k = self.k(hn).reshape(b, c, h * w)  # (b, c, hw)
        v = self.v(hn).reshape(b, c, h * w)
        att = torch.softmax(torch.bmm(q, k) / math.sqrt(c), dim=2)  # (b, hw_q, hw_k)
        out = torch.bmm(v, att.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class _Downsample(nn.Module):
    def __init__(self, c: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = _conv3(c, c, stride=2, padding=0) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, 2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, as in the original


class _Upsample(nn.Module):
    def __init__(self, c: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = _conv3(c, c) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


class DDPMUNet(nn.Module):
    """``eps = net(x_t, t)``: ``x_t (B, C, R, R)`` in [-1, 1] units, ``t (B,)`` step indices."""

    def __init__(self, config: DDPMUNetConfig = CELEBA_HQ_256) -> None:
        super().__init__()
        self.config = cfg = config
        ch, mult, nrb = cfg.ch, tuple(cfg.ch_mult), cfg.num_res_blocks
        temb_ch = 4 * ch
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, temb_ch), nn.Linear(temb_ch, temb_ch)])
        self.conv_in = _conv3(cfg.in_channels, ch)

        in_mult = (1, *mult)
        res = cfg.resolution
        self.down = nn.ModuleList()
        c = ch
        for i, m in enumerate(mult):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            c = ch * in_mult[i]
            for _ in range(nrb):
                level.block.append(_ResBlock(c, ch * m, temb_ch, cfg.dropout))
                c = ch * m
                if res in cfg.attn_resolutions:
                    level.attn.append(_AttnBlock(c))
            if i != len(mult) - 1:
                level.downsample = _Downsample(c, cfg.resamp_with_conv)
                res //= 2
            self.down.append(level)

        self.mid = nn.Module()
        self.mid.block_1 = _ResBlock(c, c, temb_ch, cfg.dropout)
        self.mid.attn_1 = _AttnBlock(c)
        self.mid.block_2 = _ResBlock(c, c, temb_ch, cfg.dropout)

        ups = []
        for i in reversed(range(len(mult))):
            level = nn.Module()
            level.block, level.attn = nn.ModuleList(), nn.ModuleList()
            for j in range(nrb + 1):
                skip = ch * (in_mult[i] if j == nrb else mult[i])
                level.block.append(_ResBlock(c + skip, ch * mult[i], temb_ch, cfg.dropout))
                c = ch * mult[i]
                if res in cfg.attn_resolutions:
                    level.attn.append(_AttnBlock(c))
            if i != 0:
                level.upsample = _Upsample(c, cfg.resamp_with_conv)
                res *= 2
            ups.append(level)
        self.up = nn.ModuleList(reversed(ups))  # index i is resolution level i

        self.norm_out = _norm(c)
        self.conv_out = _conv3(c, cfg.out_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r = self.config.resolution
        if x.shape[-2:] != (r, r):
            raise ValueError(f"the UNet takes {r}x{r} images, got {tuple(x.shape[-2:])}")
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        temb = timestep_embedding(t, self.config.ch)
        temb = self.temb.dense[1](F.silu(self.temb.dense[0](temb)))

        hs = [self.conv_in(x)]
        n_levels = len(self.down)
        for i, level in enumerate(self.down):
            for j, block in enumerate(level.block):
                h = block(hs[-1], temb)
                if len(level.attn):
                    h = level.attn[j](h)
                hs.append(h)
            if i != n_levels - 1:
                hs.append(level.downsample(hs[-1]))

        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], temb)), temb)

        for i in reversed(range(n_levels)):
            level = self.up[i]
            for j, block in enumerate(level.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if len(level.attn):
                    h = level.attn[j](h)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def load_ddpm_unet(path: str | Path, config: DDPMUNetConfig = CELEBA_HQ_256,
                   device=None) -> DDPMUNet:
    """Build the UNet and load a **local** checkpoint (never downloads), in eval mode.

    Accepts a plain state dict (DDRM's ``celeba_hq.ckpt``), DDIM's training list
    ``[state_dict, optimizer, epoch, step, (ema)]`` (its first entry), and ``module.``
    prefixes from ``DataParallel``. Loaded with ``torch.load(weights_only=True)`` and
    ``strict=True``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"DDPM checkpoint not found: {path}. Place the CelebA-HQ DDPM state dict "
            "(celeba_hq.ckpt, as used by DDRM) there; privlens never downloads weights.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, (list, tuple)):
        state = state[0]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = DDPMUNet(config)
    net.load_state_dict(state, strict=True)
    log.info("loaded DDPM UNet from %s (%d tensors)", path, len(state))
    return net.to(device).eval() if device is not None else net.eval()
