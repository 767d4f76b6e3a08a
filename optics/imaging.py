"""Camera image formation ``y = Q(R(N(bin(H * x))))`` as differentiable torch functions.

The scene ``x`` is blurred by the point-spread function (PSF) ``H`` of the optics, binned on
the sensor, corrupted by Poisson-Gaussian noise, passed through a response curve and quantised
by the ADC. Every function works on any device and dtype (floating point) of its inputs.

References
----------
- J. W. Goodman, *Introduction to Fourier Optics*, 3rd ed., ch. 6 (incoherent imaging is a
  convolution of the geometric image irradiance with the intensity PSF).
- A. Foi, M. Trimeche, V. Katkovnik, K. Egiazarian, "Practical Poissonian-Gaussian noise
  modeling and fitting for single-image raw-data", IEEE TIP 17(10), 2008.
- Y. Bengio, N. Leonard, A. Courville, "Estimating or propagating gradients through stochastic
  neurons for conditional computation", arXiv:1308.3432, 2013 (straight-through estimator).

Units and shapes
----------------
- Images are ``(B, C, H, W)`` or ``(C, H, W)`` tensors of relative irradiance: 1.0 is the
  full-well (saturation) level of one pixel, so values are nominally in ``[0, 1]``.
- PSFs are ``(C, K, K)`` (shared by the batch) or ``(B, C, K, K)`` (one per image),
  non-negative and sampled on the sensor pixel pitch; the optical axis is at pixel
  ``(K // 2, K // 2)`` (``K`` may be odd or even, and rectangular ``(Kh, Kw)`` kernels are
  accepted with centre ``(Kh // 2, Kw // 2)``). A PSF summing to 1 conserves energy.
- Noise levels are in units of full scale (read noise) or photons per pixel at signal 1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len

__all__ = [
    "IMAGE_BOUNDARIES",
    "RESPONSES",
    "convolve",
    "apply_response",
    "add_noise",
    "quantize",
    "bin_sensor",
    "SensorModel",
    "form_image",
]

#: How image formation treats the scene outside its borders (``form_image(boundary=...)``).
IMAGE_BOUNDARIES = ("linear", "circular", "replicate")
RESPONSES = ("linear", "gamma")

_GAMMA_EPS = 1e-8  # below this the gamma curve is continued linearly (finite slope at 0)
_SHOT_EPS = 1e-12  # floor of the signal inside sqrt() of the reparameterised shot noise


# --------------------------------------------------------------------------------------------
# Optics: convolution with the PSF
# --------------------------------------------------------------------------------------------


def _wrap_kernel(psf: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """Alias ``psf (..., Kh, Kw)`` onto an ``nh x nw`` periodic grid, centre moved to (0, 0).

    Entry ``psf[u, v]`` is added at ``((u - Kh//2) mod nh, (v - Kw//2) mod nw)``; works for
    kernels larger than the grid (entries that land on the same cell are summed).
    """
    kh, kw = psf.shape[-2:]
    ph, pw = -(-kh // nh) * nh, -(-kw // nw) * nw
    k = F.pad(psf, (0, pw - kw, 0, ph - kh))
    k = k.reshape(*psf.shape[:-2], ph // nh, nh, pw // nw, nw).sum(dim=(-4, -2))
    return torch.roll(k, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))


def convolve(x: torch.Tensor, psf: torch.Tensor, boundary: str = "linear") -> torch.Tensor:
    """Per-channel FFT convolution of images with PSFs: ``y = psf * x``.

    ``y[..., i, j] = sum_{u,v} psf[..., u, v] * x[..., i - (u - Kh//2), j - (v - Kw//2)]``,
    with ``x`` outside the ``H x W`` grid taken as 0 (``boundary="linear"``, the "same" crop of
    the full linear convolution; equal to ``scipy.signal.fftconvolve(x, psf, mode="same")`` for
    odd K), periodic (``boundary="circular"``), or continued by its edge values
    (``boundary="replicate"``: a crop of a larger scene whose surroundings resemble its
    border, so light from just outside the field of view is not replaced by black).

    Args:
        x: ``(B, C, H, W)`` or ``(C, H, W)`` images.
        psf: ``(C, Kh, Kw)`` or ``(B, C, Kh, Kw)`` kernels (batch 1 broadcasts), same device.
        boundary: ``"linear"`` (zero padding), ``"circular"`` (periodic) or
            ``"replicate"`` (edge padding).

    Returns:
        Tensor with the shape of ``x`` and the promoted floating dtype of ``x`` and ``psf``.
    """
    if boundary not in IMAGE_BOUNDARIES:
        raise ValueError(f"boundary must be one of {IMAGE_BOUNDARIES}, got {boundary!r}")
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if psf.ndim not in (3, 4):
        raise ValueError(f"psf must be (C, K, K) or (B, C, K, K), got shape {tuple(psf.shape)}")
    if x.device != psf.device:
        raise ValueError(f"x is on {x.device} but psf is on {psf.device}")
    squeeze = x.ndim == 3
    xb = x.unsqueeze(0) if squeeze else x
    b, c, h, w = xb.shape
    if psf.shape[-3] != c:
        raise ValueError(f"psf has {psf.shape[-3]} channels but x has {c}")
    if psf.ndim == 4 and psf.shape[0] not in (1, b):
        raise ValueError(f"psf batch {psf.shape[0]} does not match x batch {b} (or 1)")
    kh, kw = psf.shape[-2:]
    if min(h, w, kh, kw) < 1:
        raise ValueError(f"empty image or psf: x {tuple(x.shape)}, psf {tuple(psf.shape)}")
    if boundary == "replicate":  # pad by the kernel's reach, convolve linearly, crop back
        ph, pw = kh // 2, kw // 2
        padded = torch.nn.functional.pad(xb, (pw, kw - 1 - pw, ph, kh - 1 - ph),
                                         mode="replicate")
        y = convolve(padded, psf, "linear")[..., ph:ph + h, pw:pw + w]
        return y.squeeze(0) if squeeze else y

    out_dtype = torch.promote_types(x.dtype, psf.dtype)
    if not out_dtype.is_floating_point:
        raise ValueError(f"x and psf must be real floating point, got {x.dtype}, {psf.dtype}")
    # torch.fft has no half-precision CPU kernels and poor accuracy there: compute in float32.
    work = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
    xb, psf = xb.to(work), psf.to(work)

    if boundary == "circular":
        nh, nw = h, w
    else:  # smallest FFT grid on which the "same" crop is free of wrap-around
        ch, cw = kh // 2, kw // 2
        nh = next_fast_len(max(h + ch, h + kh - 1 - ch), real=True)
        nw = next_fast_len(max(w + cw, w + kw - 1 - cw), real=True)
    kern = _wrap_kernel(psf, nh, nw)
    spec = torch.fft.rfft2(xb, s=(nh, nw)) * torch.fft.rfft2(kern)
    y = torch.fft.irfft2(spec, s=(nh, nw))[..., :h, :w]
    y = y.to(out_dtype)
    return y.squeeze(0) if squeeze else y


# --------------------------------------------------------------------------------------------
# Sensor: response curve, noise, ADC, binning
# --------------------------------------------------------------------------------------------


def apply_response(x: torch.Tensor, response: str = "linear", gamma: float = 2.2) -> torch.Tensor:
    """Sensor/ISP tone curve, element-wise, any shape.

    ``"linear"`` returns ``x`` unchanged; ``"gamma"`` returns ``clamp(x, 0) ** (1 / gamma)``,
    continued linearly below ``1e-8`` so the value at 0 is exactly 0 and the gradient is finite.
    """
    if response == "linear":
        return x
    if response != "gamma":
        raise ValueError(f"response must be one of {RESPONSES}, got {response!r}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    p = 1.0 / gamma
    curve = x.clamp(min=_GAMMA_EPS) ** p
    toe = x.clamp(min=0.0) * _GAMMA_EPS ** (p - 1.0)
    return torch.where(x > _GAMMA_EPS, curve, toe)


def add_noise(
    x: torch.Tensor,
    read_noise_std: float = 0.0,
    photons: float | None = None,
    generator: torch.Generator | None = None,
    exact_poisson: bool = False,
) -> torch.Tensor:
    """Poisson-Gaussian sensor noise (Foi et al. 2008) on relative irradiance ``x``, any shape.

    Shot noise (if ``photons``, the photon count at signal 1.0, is given) is
    ``Poisson(x * photons) / photons``: by default the differentiable Gaussian approximation
    ``x + sqrt(clamp(x, 0) / photons) * eps``; with ``exact_poisson=True`` an exact sample with a
    straight-through (identity) gradient. Then Gaussian read noise of std ``read_noise_std``
    (full-scale units) is added. Random numbers come from ``generator`` (which must live on
    ``x.device``) or the global RNG; the shot-noise draw precedes the read-noise draw.
    """
    if not read_noise_std >= 0:
        raise ValueError(f"read_noise_std must be >= 0, got {read_noise_std}")
    if photons is not None and not photons > 0:
        raise ValueError(f"photons must be > 0 or None, got {photons}")
    if photons is not None:
        if exact_poisson:
            rate = x.detach().clamp(min=0.0) * photons
            sample = torch.poisson(rate, generator=generator) / photons
            x = x + (sample - x).detach()
        else:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + torch.sqrt(x.clamp(min=_SHOT_EPS) / photons) * eps
    if read_noise_std > 0:
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + read_noise_std * eps
    return x


def quantize(x: torch.Tensor, bits: int | None) -> torch.Tensor:
    """ADC: clamp to ``[0, 1]`` and round to ``2**bits - 1`` steps (``2**bits`` codes).

    Straight-through gradient: that of ``clamp(x, 0, 1)`` (1 inside, 0 outside). Output values
    are ``k / (2**bits - 1)``; ``bits=None`` returns ``x`` unchanged.
    """
    if bits is None:
        return x
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ValueError(f"bits must be an int or None, got {bits!r}")
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    levels = float(2**bits - 1)
    xc = x.clamp(0.0, 1.0)
    return xc + (torch.round(xc * levels) / levels - xc).detach()


def bin_sensor(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel binning: mean over ``factor x factor`` blocks of ``(B, C, H, W)`` / ``(C, H, W)``.

    Charge summing followed by normalisation back to relative irradiance, so a uniform image
    keeps its value. ``H`` and ``W`` must be divisible by ``factor``; ``factor=1`` is identity.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"binning factor must be an int >= 1, got {factor!r}")
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not divisible by binning factor {factor}")
    return F.avg_pool2d(x, kernel_size=factor, stride=factor)


# --------------------------------------------------------------------------------------------
# Full pipeline
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensorModel:
    """Sensor parameters for :func:`form_image`.

    Attributes:
        boundary: PSF convolution boundary, ``"linear"`` or ``"circular"``.
        response: tone curve, ``"linear"`` or ``"gamma"``; ``gamma`` is its exponent (> 0).
        read_noise_std: Gaussian read noise std per output pixel, in units of full scale.
        photons: photons collected by one native (unbinned) pixel at signal 1.0, or None for
            no shot noise. Binning by ``f`` collects ``f**2`` times as many photons.
        exact_poisson: exact Poisson samples (straight-through grad) instead of the Gaussian
            approximation.
        bit_depth: ADC bits, or None for no quantisation.
        binning: pixel binning factor (>= 1).
    """

    boundary: str = "linear"
    response: str = "linear"
    gamma: float = 2.2
    read_noise_std: float = 0.0
    photons: float | None = None
    exact_poisson: bool = False
    bit_depth: int | None = None
    binning: int = 1

    def __post_init__(self) -> None:
        if self.boundary not in IMAGE_BOUNDARIES:
            raise ValueError(f"boundary must be one of {IMAGE_BOUNDARIES}, got {self.boundary!r}")
        if self.response not in RESPONSES:
            raise ValueError(f"response must be one of {RESPONSES}, got {self.response!r}")
        if not (self.gamma > 0 and math.isfinite(self.gamma)):
            raise ValueError(f"gamma must be finite and > 0, got {self.gamma}")
        if not (self.read_noise_std >= 0 and math.isfinite(self.read_noise_std)):
            raise ValueError(f"read_noise_std must be finite and >= 0, got {self.read_noise_std}")
        if self.photons is not None and not (self.photons > 0 and math.isfinite(self.photons)):
            raise ValueError(f"photons must be finite and > 0 or None, got {self.photons}")
        if self.bit_depth is not None and (
            isinstance(self.bit_depth, bool)
            or not isinstance(self.bit_depth, int)
            or self.bit_depth < 1
        ):
            raise ValueError(f"bit_depth must be an int >= 1 or None, got {self.bit_depth!r}")
        if isinstance(self.binning, bool) or not isinstance(self.binning, int) or self.binning < 1:
            raise ValueError(f"binning must be an int >= 1, got {self.binning!r}")


def form_image(
    x: torch.Tensor,
    psf: torch.Tensor,
    sensor: SensorModel,
    *,
    noise: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Simulate a capture: convolve -> bin_sensor -> add_noise -> apply_response -> quantize.

    The order follows the physics: the optics blur the irradiance (linear in ``x``), pixels
    are binned by summing charge before read-out, so shot and read noise act on the binned
    signal (read noise once per binned pixel; shot noise with ``photons * binning**2``), and
    the tone curve and ADC act last on the noisy voltage.

    Args:
        x: ``(B, C, H, W)`` or ``(C, H, W)`` scene irradiance in ``[0, 1]`` on the sensor grid.
        psf: ``(C, K, K)`` or ``(B, C, K, K)`` PSFs (see :func:`convolve`).
        sensor: sensor parameters.
        noise: add noise (set False for the deterministic noiseless image).
        generator: torch.Generator on ``x.device`` for reproducible noise.

    Returns:
        ``(B, C, H // binning, W // binning)`` (or unbatched) image.
    """
    y = convolve(x, psf, boundary=sensor.boundary)
    y = bin_sensor(y, sensor.binning)
    if noise:
        photons = None if sensor.photons is None else sensor.photons * sensor.binning**2
        y = add_noise(
            y,
            read_noise_std=sensor.read_noise_std,
            photons=photons,
            generator=generator,
            exact_poisson=sensor.exact_poisson,
        )
    y = apply_response(y, sensor.response, sensor.gamma)
    return quantize(y, sensor.bit_depth)
