"""FAN: a stacked-hourglass face-heatmap regressor with CoordConv (the network ``U``).

References
----------
- A. Newell, K. Yang, J. Deng, "Stacked Hourglass Networks for Human Pose Estimation",
  ECCV 2016 (hourglass, stacking, intermediate supervision).
- A. Bulat, G. Tzimiropoulos, "Binarized Convolutional Landmark Localizers for Human Pose
  Estimation and Face Alignment with Limited Resources", ICCV 2017 (the 3-branch block), and
  "How far are we from solving the 2D & 3D face alignment problem?", ICCV 2017 (FAN).
- R. Liu et al., "An intriguing failing of convolutional neural networks and the CoordConv
  solution", NeurIPS 2018.
- X. Wang, L. Bo, L. Fuxin, "Adaptive Wing Loss for Robust Face Alignment via Heatmap
  Regression", ICCV 2019 (CoordConv with boundary coordinates in the hourglass).
- Y. Choi et al., "StarGAN v2", CVPR 2020: its FAN (98 WFLW points plus a boundary channel,
  width 256, one depth-4 hourglass at 64 px) is ``fan_preset("stargan_v2")`` here, by
  architecture (no weights are shipped or loaded).

Shapes: images ``(B, C, S, S)`` with values in ``[0, 1]`` and ``S = config.input_size``;
heatmaps ``(B, K, S/4, S/4)`` with ``K = num_landmarks`` (+1 boundary channel, last, when
``with_boundary``), in the pixel-centre convention of :mod:`deid.faces.heatmaps`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from deid.faces.heatmaps import heatmaps_to_landmarks

__all__ = [
    "NORMS",
    "AddCoords",
    "CoordConv2d",
    "ConvBlock",
    "Hourglass",
    "FANConfig",
    "FAN",
    "FAN_PRESETS",
    "fan_preset",
    "count_parameters",
]

log = logging.getLogger(__name__)

NORMS = ("batch", "group")
#: Channels per group of GroupNorm (fewer when a layer has fewer channels).
GROUP_NORM_CHANNELS = 8


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        size = math.gcd(channels, GROUP_NORM_CHANNELS)
        return nn.GroupNorm(channels // size, channels)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def _halvings(n: int) -> int:
    """How many times ``n`` can be halved exactly (the 2-adic valuation)."""
    k = 0
    while n > 1 and n % 2 == 0:
        n //= 2
        k += 1
    return k


class AddCoords(nn.Module):
    """Append coordinate channels to a feature map (CoordConv, Liu et al. 2018).

    Channels appended, in order: ``x`` and ``y`` of each pixel centre normalised to ``(-1,
    1)`` (``(2 i + 1) / W - 1``, as ``grid_sample(align_corners=False)``; ``x`` along the
    width); with ``with_radius``, ``r = sqrt(x^2 + y^2) / sqrt(2)`` in ``[0, 1)``; with
    ``with_boundary``, ``x`` and ``y`` where a boundary heatmap exceeds
    ``boundary_threshold`` and 0 elsewhere (Wang et al. 2019). Built on the fly in the
    input's dtype and device, for any size.
    """

    def __init__(self, with_radius: bool = True, with_boundary: bool = False,
                 boundary_threshold: float = 0.05):
        super().__init__()
        self.with_radius = with_radius
        self.with_boundary = with_boundary
        self.boundary_threshold = boundary_threshold

    @property
    def num_extra(self) -> int:
        """Number of channels appended."""
        return 2 + int(self.with_radius) + 2 * int(self.with_boundary)

    def forward(self, x: torch.Tensor, boundary: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B, C, H, W)``; ``boundary``: ``(B, 1, H, W)`` heatmap, required exactly
        when ``with_boundary``. Returns ``(B, C + num_extra, H, W)``."""
        b, _, h, w = x.shape
        xs = (2 * torch.arange(w, dtype=x.dtype, device=x.device) + 1) / w - 1
        ys = (2 * torch.arange(h, dtype=x.dtype, device=x.device) + 1) / h - 1
        xx = xs.view(1, 1, 1, w).expand(b, 1, h, w)
        yy = ys.view(1, 1, h, 1).expand(b, 1, h, w)
        channels = [x, xx, yy]
        if self.with_radius:
            channels.append(torch.sqrt(xx**2 + yy**2) / math.sqrt(2))
        if self.with_boundary:
            if boundary is None or boundary.shape != (b, 1, h, w):
                raise ValueError(f"with_boundary needs a (B, 1, H, W) = {(b, 1, h, w)} boundary "
                                 f"heatmap, got {None if boundary is None else boundary.shape}")
            on = (boundary.detach() > self.boundary_threshold).to(x.dtype)
            channels += [xx * on, yy * on]
        elif boundary is not None:
            raise ValueError("a boundary heatmap was given to AddCoords(with_boundary=False)")
        return torch.cat(channels, dim=1)


class CoordConv2d(nn.Module):
    """:class:`AddCoords` followed by ``nn.Conv2d(in_channels + extra, out_channels, ...)``.

    ``padding`` defaults to ``kernel_size // 2`` ("same" for odd kernels at stride 1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, bias: bool = True, with_radius: bool = True,
                 with_boundary: bool = False):
        super().__init__()
        self.add_coords = AddCoords(with_radius=with_radius, with_boundary=with_boundary)
        self.conv = nn.Conv2d(in_channels + self.add_coords.num_extra, out_channels,
                              kernel_size, stride=stride,
                              padding=kernel_size // 2 if padding is None else padding,
                              bias=bias)

    def forward(self, x: torch.Tensor, boundary: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(self.add_coords(x, boundary))


class ConvBlock(nn.Module):
    """The 3-branch residual block of FAN (Bulat & Tzimiropoulos 2017).

    Three pre-activated (norm, ReLU, 3x3 conv) layers in a chain with ``out/2``, ``out/4``
    and ``out/4`` channels; their outputs are concatenated (``out`` channels, receptive
    fields 3, 5 and 7) and added to the input, through a pre-activated 1x1 projection when
    the channel counts differ. Spatial size is kept. ``norm``: ``"batch"`` or ``"group"``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "group"):
        super().__init__()
        if out_channels < 4:
            raise ValueError(f"ConvBlock needs out_channels >= 4, got {out_channels}")
        c1 = out_channels // 2
        c2 = out_channels // 4
        c3 = out_channels - c1 - c2
        self.norm1, self.conv1 = _norm(norm, in_channels), _conv3x3(in_channels, c1)
        self.norm2, self.conv2 = _norm(norm, c1), _conv3x3(c1, c2)
        self.norm3, self.conv3 = _norm(norm, c2), _conv3x3(c2, c3)
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Sequential(_norm(norm, in_channels), nn.ReLU(),
                                         nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(F.relu(self.norm1(x)))
        b = self.conv2(F.relu(self.norm2(a)))
        c = self.conv3(F.relu(self.norm3(b)))
        skip = x if self.project is None else self.project(x)
        return torch.cat([a, b, c], dim=1) + skip


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class _HourglassLevel(nn.Module):
    """One level: a full-resolution branch plus (pool, block, inner level, block, upsample)."""

    def __init__(self, depth: int, channels: int, norm: str):
        super().__init__()
        self.skip = ConvBlock(channels, channels, norm)
        self.down = ConvBlock(channels, channels, norm)
        self.inner = (_HourglassLevel(depth - 1, channels, norm) if depth > 1
                      else ConvBlock(channels, channels, norm))
        self.up = ConvBlock(channels, channels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.avg_pool2d(x, 2))))
        return self.skip(x) + F.interpolate(low, size=x.shape[-2:], mode="nearest")


class Hourglass(nn.Module):
    """Recursive hourglass (Newell et al. 2016) with a 1x1 CoordConv at its input.

    ``depth`` levels of 2x average pooling; the input side must be divisible by ``2**depth``
    (:class:`FAN` picks a safe depth). Channels and size are kept. With ``with_boundary`` the
    CoordConv also takes the boundary coordinates of a ``(B, 1, H, W)`` boundary heatmap.
    """

    def __init__(self, depth: int, channels: int, norm: str = "group",
                 with_boundary: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"hourglass depth must be >= 1, got {depth}")
        self.depth = depth
        self.coord = CoordConv2d(channels, channels, 1, with_boundary=with_boundary)
        self.body = _HourglassLevel(depth, channels, norm)

    def forward(self, x: torch.Tensor, boundary: torch.Tensor | None = None) -> torch.Tensor:
        side = 2**self.depth
        if x.shape[-1] % side or x.shape[-2] % side:
            raise ValueError(f"hourglass of depth {self.depth} needs sides divisible by "
                             f"{side}, got {tuple(x.shape[-2:])}")
        return self.body(self.coord(x, boundary))


@dataclasses.dataclass(frozen=True)
class FANConfig:
    """Architecture of a :class:`FAN`; plain fields, so it saves to YAML
    (``optics.kit.config.save_config``) and rebuilds with ``FAN.from_config``.

    Attributes
    ----------
    input_size : side of the square input image in **pixels** (a multiple of 4, >= 16; 64,
        128 and 256 are the tested sizes). Heatmaps are ``input_size // 4`` pixels.
    width : channels of the hourglasses (a multiple of 8); the stem runs at width/4 and
        width/2. Parameters grow about as ``width**2``.
    num_modules : stacked hourglasses; each one's heatmaps are an output (intermediate
        supervision).
    depth : requested hourglass depth (levels of 2x pooling). It is lowered automatically to
        what the heatmap side allows (:attr:`effective_depth`), so e.g. 64 px input -> 16 px
        heatmaps -> depth at most 4 (a 1 px bottom).
    num_landmarks : landmark heatmap channels (68 iBUG, 98 WFLW, 5, ...).
    with_boundary : predict one extra boundary heatmap (last channel); each hourglass after
        the first also reads the previous module's boundary as CoordConv channels.
    norm : ``"group"`` (GroupNorm in groups of 8 channels: per-sample, the same in train
        and eval, safe at batch 1) or ``"batch"`` (BatchNorm, as in the original FAN).
    in_channels : image channels (3 for RGB).
    """

    input_size: int = 128
    width: int = 64
    num_modules: int = 1
    depth: int = 4
    num_landmarks: int = 68
    with_boundary: bool = False
    norm: str = "group"
    in_channels: int = 3

    def __post_init__(self):
        if self.input_size < 16 or self.input_size % 4:
            raise ValueError(f"input_size must be a multiple of 4 and >= 16, "
                             f"got {self.input_size}")
        if self.width < 8 or self.width % 8:
            raise ValueError(f"width must be a positive multiple of 8, got {self.width}")
        for name in ("num_modules", "depth", "num_landmarks", "in_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")

    @property
    def heatmap_size(self) -> int:
        """Heatmap side in pixels: ``input_size // 4``."""
        return self.input_size // 4

    @property
    def num_outputs(self) -> int:
        """Heatmap channels: landmarks plus the boundary channel if any."""
        return self.num_landmarks + int(self.with_boundary)

    @property
    def effective_depth(self) -> int:
        """``depth`` capped so every pooling level halves the heatmap exactly."""
        return max(1, min(self.depth, _halvings(self.heatmap_size)))

    def replace(self, **changes) -> FANConfig:
        return dataclasses.replace(self, **changes)


class FAN(nn.Module):
    """Stacked-hourglass face alignment network with CoordConv.

    Layout: CoordConv 7x7 stride 2 (``in_channels`` -> width/4), norm, ReLU; ConvBlock to
    width/2; 2x average pool (now at the heatmap resolution, input/4); ConvBlocks width/2 ->
    width/2 -> width; then ``num_modules`` times: Hourglass, ConvBlock, 1x1 conv + norm +
    ReLU, 1x1 head to the heatmaps; between modules the features and the heatmaps are mapped
    back by 1x1 convs and added to the module's input.

    Input images are ``(B, in_channels, S, S)`` in ``[0, 1]``, ``S = input_size``; they are
    mapped to ``[-1, 1]`` (``2 x - 1``) inside ``forward``. Heatmaps are linear (no output
    activation), trained toward :func:`deid.faces.heatmaps.gaussian_heatmaps` targets.

    Build with keyword arguments (the fields of :class:`FANConfig`) or
    ``FAN.from_config(cfg)``; ``self.config`` holds the config.
    """

    def __init__(self, num_modules: int = 1, depth: int = 4, width: int = 64,
                 num_landmarks: int = 68, input_size: int = 128, with_boundary: bool = False,
                 norm: str = "group", in_channels: int = 3):
        super().__init__()
        cfg = FANConfig(input_size=input_size, width=width, num_modules=num_modules,
                        depth=depth, num_landmarks=num_landmarks, with_boundary=with_boundary,
                        norm=norm, in_channels=in_channels)
        self.config = cfg
        if cfg.effective_depth < cfg.depth:
            log.info("FAN: hourglass depth %d lowered to %d for %d px heatmaps",
                     cfg.depth, cfg.effective_depth, cfg.heatmap_size)
        w, k = cfg.width, cfg.num_outputs
        self.stem = CoordConv2d(cfg.in_channels, w // 4, 7, stride=2, padding=3, bias=False)
        self.stem_norm = _norm(norm, w // 4)
        self.stem_block = ConvBlock(w // 4, w // 2, norm)
        self.pre = nn.Sequential(ConvBlock(w // 2, w // 2, norm), ConvBlock(w // 2, w, norm))
        n = cfg.num_modules
        self.hourglasses = nn.ModuleList(
            Hourglass(cfg.effective_depth, w, norm, with_boundary=with_boundary and i > 0)
            for i in range(n))
        self.tops = nn.ModuleList(ConvBlock(w, w, norm) for _ in range(n))
        self.features = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w, w, 1, bias=False), _norm(norm, w), nn.ReLU())
            for _ in range(n))
        self.heads = nn.ModuleList(nn.Conv2d(w, k, 1) for _ in range(n))
        self.merge_features = nn.ModuleList(nn.Conv2d(w, w, 1) for _ in range(n - 1))
        self.merge_heatmaps = nn.ModuleList(nn.Conv2d(k, w, 1) for _ in range(n - 1))

    @classmethod
    def from_config(cls, config: FANConfig) -> FAN:
        return cls(**dataclasses.asdict(config))

    @property
    def heatmap_size(self) -> int:
        return self.config.heatmap_size

    def forward(self, x: torch.Tensor, return_all: bool = False):
        """Heatmaps of images ``x`` ``(B, in_channels, S, S)`` in ``[0, 1]``.

        Returns the last module's ``(B, K, S/4, S/4)`` heatmaps, or with ``return_all`` the
        list of every module's (for intermediate supervision), last one last.
        """
        cfg = self.config
        expected = (cfg.in_channels, cfg.input_size, cfg.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"FAN expects (B, {', '.join(map(str, expected))}) images, got "
                             f"{tuple(x.shape)}; resize with F.interpolate first")
        x = 2 * x - 1
        x = F.relu(self.stem_norm(self.stem(x)))
        x = F.avg_pool2d(self.stem_block(x), 2)
        x = self.pre(x)
        outputs = []
        boundary = None
        for i, hourglass in enumerate(self.hourglasses):
            y = hourglass(x, boundary if i > 0 and cfg.with_boundary else None)
            y = self.features[i](self.tops[i](y))
            heat = self.heads[i](y)
            outputs.append(heat)
            if i < len(self.merge_features):
                x = x + self.merge_features[i](y) + self.merge_heatmaps[i](heat)
            if cfg.with_boundary:
                boundary = heat[:, -1:]
        return outputs if return_all else outputs[-1]

    def landmarks(self, x: torch.Tensor, method: str = "taylor", **decode) -> torch.Tensor:
        """Landmarks ``(B, num_landmarks, 2)`` ``(x, y)`` in **input-image pixels**, decoded
        from the last heatmaps (boundary channel dropped) by
        :func:`deid.faces.heatmaps.heatmaps_to_landmarks` with ``method`` (default the local
        Taylor peak, robust to a network's background) and its other options."""
        heat = self(x)[:, : self.config.num_landmarks]
        return heatmaps_to_landmarks(heat, self.config.input_size, method=method, **decode)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


#: Named architectures. Tests build every entry.
FAN_PRESETS = MappingProxyType({
    # CPU-trainable at 128 px; the privlens default.
    "default": FANConfig(),
    # For tests and smoke runs.
    "tiny": FANConfig(input_size=64, width=16, depth=2),
    # StarGAN v2's wing FAN: 98 WFLW points plus a boundary channel, width 256, BatchNorm.
    "stargan_v2": FANConfig(input_size=256, width=256, num_modules=1, depth=4,
                            num_landmarks=98, with_boundary=True, norm="batch"),
})


def fan_preset(name: str) -> FANConfig:
    """The :class:`FANConfig` registered as ``name`` in :data:`FAN_PRESETS`."""
    try:
        return FAN_PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown FAN preset {name!r}; known: {sorted(FAN_PRESETS)}") from None
