"""Stage-2 networks: a StarGAN v2-style generator, mapping network, style encoder and
multi-task discriminator, sized by a base width and a cap.

References:

- Y. Choi, Y. Uh, J. Yoo, J.-W. Ha, "StarGAN v2: Diverse Image Synthesis for Multiple
  Domains", CVPR 2020 (the four networks; residual blocks scaled by ``1/sqrt(2)``; AdaIN
  ``(1 + gamma) IN(x) + beta``; the mask-gated high-pass skips of its face models).
- X. Huang, S. Belongie, "Arbitrary style transfer in real-time with adaptive instance
  normalization", ICCV 2017 (AdaIN).

privlens' generator differs from upstream in its input: it sees the **privacy image** ``y``
and, unless ``use_heatmap`` is off, two soft face-part masks computed from the stage-1
regressor's heatmaps ``U(y)`` (:func:`deid.faces.heatmaps.face_masks`): the masks are
concatenated to ``y`` at the encoder's input and gate the high-pass skips (the coarse mask
at ``S/8``, the fine one at ``S/4`` and ``S/2``; only resolutions above the 8 px
bottleneck have one), so the source's pose and expression pass
and the rest comes from the style code.

Widths: ``base_width`` channels at full resolution, doubled per down block, capped at
``max_width``. Upstream's ``2**14 // img_size`` base with cap 512 gives about 42 M
generator parameters even at 64 px; base 32 and cap 256 at 64 px gives about 6.2 M.

Images enter and leave every network in ``[0, 1]`` (``(B, 3, S, S)``); inside they are
mapped to ``[-1, 1]``. The generator's output is not squashed (as upstream): clamp it for
display and metrics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResBlk", "AdaIN", "AdainResBlk", "HighPass", "Generator", "MappingNetwork",
           "StyleEncoder", "Discriminator", "count_parameters", "down_blocks"]

_SQRT2 = math.sqrt(2.0)


def _to_signed(x: torch.Tensor) -> torch.Tensor:
    return x * 2.0 - 1.0


def _check_size(img_size: int) -> int:
    n = int(round(math.log2(img_size))) if img_size > 0 else 0
    if img_size < 32 or 2 ** n != img_size:
        raise ValueError(f"img_size must be a power of two >= 32, got {img_size}")
    return n


def down_blocks(img_size: int, high_pass: bool) -> int:
    """Down-sampling blocks of the generator's encoder: to 16 px, one more (to 8 px) with
    the high-pass skips (as upstream)."""
    return _check_size(img_size) - 4 + (1 if high_pass else 0)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


class ResBlk(nn.Module):
    """Pre-activation residual block: ``[IN] LReLU conv3 [avgpool] [IN] LReLU conv3``; the
    shortcut is a bias-free 1x1 conv when widths differ, then avgpool; the sum is divided
    by ``sqrt(2)``."""

    def __init__(self, dim_in: int, dim_out: int, normalize: bool = False,
                 downsample: bool = False):
        super().__init__()
        self.normalize, self.downsample = normalize, downsample
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) \
            if dim_in != dim_out else None

    def _shortcut(self, x):
        if self.conv1x1 is not None:
            x = self.conv1x1(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def _residual(self, x):
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(F.leaky_relu(x, 0.2))
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(F.leaky_relu(x, 0.2))

    def forward(self, x):
        return (self._shortcut(x) + self._residual(x)) / _SQRT2


class AdaIN(nn.Module):
    """``(1 + gamma) * IN(x) + beta`` with ``(gamma, beta) = Linear(s)`` (``s``:
    ``(B, style_dim)``)."""

    def __init__(self, style_dim: int, channels: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.fc = nn.Linear(style_dim, 2 * channels)

    def forward(self, x, s):
        gamma, beta = self.fc(s)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """``AdaIN LReLU [up x2] conv3 AdaIN LReLU conv3``; with the high-pass skips on
    (``w_hpf > 0``) there is no shortcut (as upstream), else one is added (1x1 conv when
    widths differ) and the sum divided by ``sqrt(2)``."""

    def __init__(self, dim_in: int, dim_out: int, style_dim: int, w_hpf: float = 0.0,
                 upsample: bool = False):
        super().__init__()
        self.upsample, self.w_hpf = upsample, w_hpf
        self.norm1 = AdaIN(style_dim, dim_in)
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.norm2 = AdaIN(style_dim, dim_out)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) \
            if dim_in != dim_out and w_hpf == 0 else None

    def forward(self, x, s):
        h = F.leaky_relu(self.norm1(x, s), 0.2)
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.conv1(h)
        h = self.conv2(F.leaky_relu(self.norm2(h, s), 0.2))
        if self.w_hpf > 0:
            return h
        short = F.interpolate(x, scale_factor=2, mode="nearest") if self.upsample else x
        if self.conv1x1 is not None:
            short = self.conv1x1(short)
        return (h + short) / _SQRT2


class HighPass(nn.Module):
    """Depthwise 3x3 Laplacian-like high-pass ``[[-1,-1,-1],[-1,8,-1],[-1,-1,-1]] / w_hpf``
    (zero padding; a constant maps to zero away from the border)."""

    def __init__(self, w_hpf: float):
        super().__init__()
        k = -torch.ones(3, 3)
        k[1, 1] = 8.0
        self.register_buffer("kernel", (k / w_hpf)[None, None], persistent=False)

    def forward(self, x):
        c = x.shape[1]
        return F.conv2d(x, self.kernel.expand(c, 1, 3, 3).to(x.dtype), padding=1, groups=c)


def _widths(base: int, cap: int, n: int) -> list[int]:
    """Channel widths at each of ``n + 1`` resolutions: ``base`` doubled per block,
    capped."""
    if base < 1 or cap < base:
        raise ValueError(f"need 1 <= base_width <= max_width, got {base} and {cap}")
    return [min(base * 2 ** i, cap) for i in range(n + 1)]


class Generator(nn.Module):
    """``G(y, s, masks) -> x_hat``: encoder (``down_blocks`` residual blocks with IN, then two
    at the bottleneck), decoder (two AdaIN blocks at the bottleneck, then up-sampling AdaIN
    blocks), ``to_rgb`` = IN LReLU conv1x1.

    ``y``: ``(B, 3, S, S)`` in [0, 1]; ``s``: ``(B, style_dim)``, one style for every
    decoder block, or ``(B, n_style_blocks, style_dim)``, one per block (the per-layer codes
    FALCO-style editing optimises; block 0 is the first bottleneck block, the last one works
    at ``S``); ``masks``: ``(coarse, fine)``, each ``(B, 1, S, S)`` in [0, 1], or None when
    ``use_heatmap`` is off. Returns ``(B, 3, S, S)``, nominally in [0, 1] (not clamped)."""

    def __init__(self, img_size: int = 64, style_dim: int = 64, base_width: int = 32,
                 max_width: int = 256, w_hpf: float = 1.0, use_heatmap: bool = True):
        super().__init__()
        self.img_size, self.use_heatmap = img_size, use_heatmap
        self.w_hpf = w_hpf if use_heatmap else 0.0
        n = down_blocks(img_size, self.w_hpf > 0)
        widths = _widths(base_width, max_width, n)
        self.from_rgb = nn.Conv2d(3 + (2 if use_heatmap else 0), widths[0], 3, 1, 1)
        self.encode = nn.ModuleList(
            [ResBlk(widths[i], widths[i + 1], normalize=True, downsample=True)
             for i in range(n)] +
            [ResBlk(widths[-1], widths[-1], normalize=True) for _ in range(2)])
        self.decode = nn.ModuleList(
            [AdainResBlk(widths[-1], widths[-1], style_dim, self.w_hpf) for _ in range(2)] +
            [AdainResBlk(widths[i + 1], widths[i], style_dim, self.w_hpf, upsample=True)
             for i in reversed(range(n))])
        self.to_rgb = nn.Sequential(nn.InstanceNorm2d(widths[0], affine=True),
                                    nn.LeakyReLU(0.2), nn.Conv2d(widths[0], 3, 1, 1, 0))
        # the skips: encoder block inputs at S/2, S/4, S/8 above the bottleneck (coarse
        # mask at S/8)
        self.skip_sizes = tuple(r for r in (img_size // 2, img_size // 4, img_size // 8)
                                if self.w_hpf > 0 and r > img_size // 2 ** n)
        self.hpf = HighPass(self.w_hpf) if self.w_hpf > 0 else None

    @property
    def n_style_blocks(self) -> int:
        """Decoder blocks, each with its own style input."""
        return len(self.decode)

    def forward(self, y: torch.Tensor, s: torch.Tensor, masks=None) -> torch.Tensor:
        if y.shape[-1] != self.img_size or y.shape[-2] != self.img_size:
            raise ValueError(f"the generator takes {self.img_size} px images, "
                             f"got {tuple(y.shape)}")
        x = _to_signed(y)
        if self.use_heatmap:
            if masks is None:
                raise ValueError("this generator uses the heatmap masks; pass masks")
            coarse, fine = masks
            x = torch.cat([x, _to_signed(coarse), _to_signed(fine)], dim=1)
        x = self.from_rgb(x)
        cache = {}
        for block in self.encode:
            if x.shape[-1] in self.skip_sizes:
                cache[x.shape[-1]] = x
            x = block(x)
        if s.dim() == 3 and s.shape[1] != len(self.decode):
            raise ValueError(f"per-block styles need {len(self.decode)} blocks, got "
                             f"{tuple(s.shape)}")
        for k, block in enumerate(self.decode):
            x = block(x, s[:, k] if s.dim() == 3 else s)
            r = x.shape[-1]
            if r in cache:
                mask = coarse if r == self.img_size // 8 else fine
                mask = F.interpolate(mask, size=(r, r), mode="bilinear", align_corners=False)
                x = x + self.hpf(mask * cache[r])
        return (self.to_rgb(x) + 1.0) / 2.0


class MappingNetwork(nn.Module):
    """``F(z, domain) -> s``: a shared MLP (4 layers of ``hidden``), then one 4-layer head
    per domain. ``z``: ``(B, latent_dim)``; ``domain``: ``(B,)`` int64."""

    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 1,
                 hidden: int = 512):
        super().__init__()
        layers, d = [], latent_dim
        for _ in range(4):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.shared = nn.Sequential(*layers)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                          nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, style_dim))
            for _ in range(num_domains))

    def forward(self, z: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        h = self.shared(z)
        out = torch.stack([head(h) for head in self.heads], dim=1)  # (B, D, style)
        return out[torch.arange(len(domain), device=z.device), domain]


class _Trunk(nn.Module):
    """conv3, residual blocks down to 4 px, LReLU, conv4 (valid) to 1x1, LReLU:
    ``(B, 3, S, S)`` in [0, 1] -> ``(B, C)``."""

    def __init__(self, img_size: int, base_width: int, max_width: int):
        super().__init__()
        n = _check_size(img_size) - 2
        widths = _widths(base_width, max_width, n)
        self.from_rgb = nn.Conv2d(3, widths[0], 3, 1, 1)
        self.blocks = nn.Sequential(*[ResBlk(widths[i], widths[i + 1], downsample=True)
                                      for i in range(n)])
        self.out = nn.Conv2d(widths[-1], widths[-1], 4, 1, 0)
        self.img_size, self.width = img_size, widths[-1]

    def forward(self, x):
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            raise ValueError(f"this network takes {self.img_size} px images, "
                             f"got {tuple(x.shape)}")
        h = self.blocks(self.from_rgb(_to_signed(x)))
        return F.leaky_relu(self.out(F.leaky_relu(h, 0.2)), 0.2).flatten(1)


class StyleEncoder(nn.Module):
    """``E(r, domain) -> s``: the trunk, then one linear head per domain."""

    def __init__(self, img_size: int = 64, style_dim: int = 64, num_domains: int = 1,
                 base_width: int = 32, max_width: int = 256):
        super().__init__()
        self.trunk = _Trunk(img_size, base_width, max_width)
        self.heads = nn.ModuleList(nn.Linear(self.trunk.width, style_dim)
                                   for _ in range(num_domains))

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        out = torch.stack([head(h) for head in self.heads], dim=1)
        return out[torch.arange(len(domain), device=x.device), domain]


class Discriminator(nn.Module):
    """``D(x, domain) -> logit (B,)``: the trunk, then a 1x1 output per domain (multi-task:
    each domain's real/fake logit; the one of ``domain`` is returned)."""

    def __init__(self, img_size: int = 64, num_domains: int = 1, base_width: int = 32,
                 max_width: int = 256):
        super().__init__()
        self.trunk = _Trunk(img_size, base_width, max_width)
        self.head = nn.Linear(self.trunk.width, num_domains)

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        out = self.head(self.trunk(x))
        return out[torch.arange(len(domain), device=x.device), domain]
