"""Full-reference image quality: PSNR and SSIM on batches of torch tensors.

- PSNR: ``10 log10(data_range^2 / MSE)``, the MSE taken over all channels and pixels of each
  image.
- SSIM: Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility
  to structural similarity", IEEE TIP 13(4), 2004, with the paper's settings: an 11x11
  Gaussian window of sigma 1.5 px, ``K1 = 0.01``, ``K2 = 0.03``, population (not sample)
  statistics. The SSIM map is computed per channel over the "valid" region (the window never
  leaves the image, i.e. a 5 px border is dropped), averaged over the map, then over the
  channels. This equals ``skimage.metrics.structural_similarity(x, y, channel_axis=-1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``
  (``tests/test_evaluation.py`` checks both metrics against scikit-image to 1e-4).

Both functions take ``(B, C, H, W)`` tensors with values in ``[0, data_range]`` and return a
``(B,)`` tensor; both are differentiable. If the two images differ in size (a 16x16
low-resolution camera output against a 128x128 scene), ``y`` is first resized to ``x``'s size
with **bicubic** interpolation (``torch.nn.functional.interpolate``, ``align_corners=False``,
antialiased when shrinking) and clipped to ``[0, data_range]``; see :func:`match_size`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "match_size", "gaussian_window"]

SSIM_WINDOW_PX = 11
SSIM_SIGMA_PX = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or y.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) tensors, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.shape[:2] != y.shape[:2]:
        raise ValueError(f"batch and channel sizes differ: {tuple(x.shape)} vs {tuple(y.shape)}")


def match_size(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0,
               mode: str = "bicubic") -> torch.Tensor:
    """``y`` resized to ``x``'s height and width (unchanged if they already agree).

    Bicubic by default (``mode`` may be any mode of ``F.interpolate`` for 4-D input, e.g.
    ``"bilinear"``), ``align_corners=False``, antialiased when shrinking; the result is
    clipped to ``[0, data_range]`` since bicubic overshoots at edges.
    """
    _check_pair(x, y)
    if x.shape[-2:] == y.shape[-2:]:
        return y
    shrink = y.shape[-2] > x.shape[-2] or y.shape[-1] > x.shape[-1]
    kw = {} if mode in ("nearest", "area", "nearest-exact") else {"align_corners": False}
    if shrink and mode in ("bilinear", "bicubic"):
        kw["antialias"] = True
    out = F.interpolate(y, size=tuple(x.shape[-2:]), mode=mode, **kw)
    return out.clamp(0.0, data_range)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in **dB** per image, ``(B,)``; ``inf`` where ``x == y``.

    ``x`` is the reference; ``y`` is resized to it if the sizes differ (:func:`match_size`).
    """
    y = match_size(x, y, data_range)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(size_px: int = SSIM_WINDOW_PX, sigma_px: float = SSIM_SIGMA_PX,
                    dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size_px`` taps (odd) and standard deviation ``sigma_px``."""
    if size_px % 2 != 1:
        raise ValueError(f"window size must be odd, got {size_px}")
    r = torch.arange(size_px, dtype=dtype, device=device) - size_px // 2
    g = torch.exp(-(r**2) / (2.0 * sigma_px**2))
    return g / g.sum()


def _filter_valid(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of ``(B*C, 1, H, W)`` with the 1-D window ``g``."""
    k = g.numel()
    t = F.conv2d(t, g.view(1, 1, k, 1))
    return F.conv2d(t, g.view(1, 1, 1, k))


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0,
         window_px: int = SSIM_WINDOW_PX, sigma_px: float = SSIM_SIGMA_PX) -> torch.Tensor:
    """Mean structural similarity per image, ``(B,)`` (Wang et al. 2004, Gaussian window).

    Per channel over the valid region, then averaged over the channels. ``y`` is resized to
    ``x``'s size if they differ (:func:`match_size`). Images must be at least ``window_px``
    pixels on each side.
    """
    y = match_size(x, y, data_range)
    b, c, h, w = x.shape
    if h < window_px or w < window_px:
        raise ValueError(f"SSIM needs images of at least {window_px}x{window_px} px, got {h}x{w}")
    g = gaussian_window(window_px, sigma_px, dtype=x.dtype, device=x.device)
    xs = x.reshape(b * c, 1, h, w)
    ys = y.reshape(b * c, 1, h, w).to(x.dtype)
    mu_x = _filter_valid(xs, g)
    mu_y = _filter_valid(ys, g)
    var_x = _filter_valid(xs * xs, g) - mu_x**2
    var_y = _filter_valid(ys * ys, g) - mu_y**2
    cov = _filter_valid(xs * ys, g) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    s = num / den
    return s.reshape(b, c, -1).mean(-1).mean(-1)
