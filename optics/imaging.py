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
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len
from torch.autograd.function import once_differentiable

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


def _wrap_kernel(psf: torch.Tensor, nh: int, nw: int,
                 shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Alias ``psf (..., Kh, Kw)`` onto an ``nh x nw`` periodic grid, centre moved to (0, 0).

    Entry ``psf[u, v]`` is added at ``((u - Kh//2 - sh) mod nh, (v - Kw//2 - sw) mod nw)``
    with ``(sh, sw) = shift`` (default 0: the optical axis at the origin; a shift ``s`` moves
    the circular convolution's output by ``-s``, i.e. output pixel ``i`` is the old ``i + s``).
    Works for kernels larger than the grid (entries that land on the same cell are summed).
    """
    kh, kw = psf.shape[-2:]
    ph, pw = -(-kh // nh) * nh, -(-kw // nw) * nw
    k = F.pad(psf, (0, pw - kw, 0, ph - kh))
    k = k.reshape(*psf.shape[:-2], ph // nh, nh, pw // nw, nw).sum(dim=(-4, -2))
    return torch.roll(k, shifts=(-(kh // 2 + shift[0]), -(kw // 2 + shift[1])), dims=(-2, -1))


def _fft_grid(boundary: str, h: int, w: int, kh: int, kw: int):
    """FFT grid ``(nh, nw)`` and layout of the convolution of an ``h x w`` image with a
    ``kh x kw`` kernel: returns ``(nh, nw, shift, pad)``.

    The image goes on the grid at the origin (``pad is None``: zeros up to the grid size) or,
    for ``"replicate"``, edge-padded by ``pad = (left, right, top, bottom)`` pixels to fill the
    grid; ``shift`` (for :func:`_wrap_kernel`) puts the wanted ``h x w`` output at the origin.

    - ``"circular"``: the image's own period, ``nh x nw = h x w``.
    - ``"linear"``: the smallest fast grid on which the "same" crop is free of wrap-around,
      ``n >= h + max(K//2, K - 1 - K//2)`` (the zeros past the image absorb the kernel).
    - ``"replicate"``: the image edge-padded by ``K//2`` pixels before it; output pixel ``i``
      reads padded pixels ``i + 2 (K//2) - u`` for ``u < K``, all below ``h + 2 (K//2) <= n``,
      so nothing wraps around, and padding on up to the grid (instead of with zeros) changes
      no output pixel. For an even ``K`` that is ``K//2`` edge pixels past the bottom/right
      border too (before 2026-12-07 the last of them was taken as 0, a dark row and column
      that darkened a flat field's last row and column).
    """
    ch, cw = kh // 2, kw // 2
    if boundary == "circular":
        return h, w, (0, 0), None
    if boundary == "linear":
        nh = next_fast_len(max(h + ch, h + kh - 1 - ch), real=True)
        nw = next_fast_len(max(w + cw, w + kw - 1 - cw), real=True)
        return nh, nw, (0, 0), None
    nh = next_fast_len(h + 2 * ch, real=True)
    nw = next_fast_len(w + 2 * cw, real=True)
    return nh, nw, (ch, cw), (cw, nw - w - cw, ch, nh - h - ch)


#: Kernel spectra of PSFs that need no gradient, reused while the PSF's values are unchanged:
#: at most this many entries and bytes (spectra plus PSF copies; larger ones are not cached).
_SPECTRUM_CACHE_SIZE = 4
_SPECTRUM_CACHE_BYTES = 32 * 2**20
_spectrum_cache: list[tuple[tuple, torch.Tensor, torch.Tensor]] = []
_spectrum_lock = threading.Lock()


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _clear_spectrum_cache() -> None:
    """Forget every cached kernel spectrum (frees their memory)."""
    with _spectrum_lock:
        _spectrum_cache.clear()


def _kernel_spectrum(psf: torch.Tensor, nh: int, nw: int, shift: tuple[int, int],
                     work: torch.dtype) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(kern, rfft2(kern))`` of ``kern = _wrap_kernel(psf, nh, nw, shift)`` in ``work``.

    If the PSF takes part in autograd, ``kern`` carries its graph (the spectrum never does).
    Otherwise ``kern`` is None and the spectrum comes from a small cache keyed by the PSF's
    shape, dtype, device, grid and *values* (compared with ``torch.equal`` on every call, so
    any change of the PSF, in place or not, is seen); it is computed once per distinct PSF.
    """

    if torch.is_grad_enabled() and psf.requires_grad:
        kern = _wrap_kernel(psf.to(work), nh, nw, shift)
        with torch.no_grad():
            return kern, torch.fft.rfft2(kern)
    if torch.is_inference_mode_enabled() or psf.is_inference():
        with torch.no_grad():  # inference tensors must not be kept for later autograd use
            return None, torch.fft.rfft2(_wrap_kernel(psf.to(work), nh, nw, shift))
    key = (tuple(psf.shape), psf.dtype, psf.device, nh, nw, shift, work)
    with _spectrum_lock:
        for i, (k, stored, spec) in enumerate(_spectrum_cache):
            if k == key and torch.equal(stored, psf):
                _spectrum_cache.append(_spectrum_cache.pop(i))  # most recently used last
                return None, spec
    with torch.no_grad():
        stored = psf.detach().clone()
        spec = torch.fft.rfft2(_wrap_kernel(stored.to(work), nh, nw, shift))
    if _nbytes(stored, spec) > _SPECTRUM_CACHE_BYTES // 2:
        return None, spec
    with _spectrum_lock:
        _spectrum_cache.append((key, stored, spec))
        del _spectrum_cache[:-_SPECTRUM_CACHE_SIZE]
        while sum(_nbytes(*e[1:]) for e in _spectrum_cache) > _SPECTRUM_CACHE_BYTES:
            del _spectrum_cache[0]  # least recently used first
    return None, spec


#: On the CPU the batch is transformed in chunks whose spectrum takes at most this many bytes
#: per torch thread: the temporaries stay in cache and are reused from one chunk to the next,
#: instead of a few large blocks that glibc hands back to the OS and page-faults in again on
#: every call.
_CPU_CHUNK_BYTES = 4 * 2**20


def _irfft2_rows(spec: torch.Tensor, rows: int, nw: int) -> torch.Tensor:
    """The first ``rows`` rows of ``irfft2(spec, s=(spec.shape[-2], nw))``: the inverse over
    dim -2, then the real inverse over dim -1 of the kept rows only."""
    z = torch.fft.ifft(spec, dim=-2)
    return torch.fft.irfft(z if rows == z.shape[-2] else z[..., :rows, :], n=nw, dim=-1)


class _GridConvolution(torch.autograd.Function):
    """``out = bin(crop(irfft2(rfft2(x, s=grid) * kspec)))`` with a hand-written backward.

    ``x (B, C, hx, wx)`` (zero-padded at the end up to ``grid = (nh, nw)``), ``kspec`` the
    ``rfft2`` of the real wrapped kernel ``kern (..., C, nh, nw)`` (batch 1 or B, or none;
    ``kern`` is passed only to receive its gradient, or None), ``crop = (h, w)`` the output
    window at the grid origin, ``binning`` the mean over ``binning x binning`` blocks of it.

    Compared with autograd through the same torch calls it saves work and memory: the inverse
    transform is pruned to the ``h`` rows that are kept (``ifft`` over rows, then ``irfft``
    over columns of the kept rows only); the crop and the binning read the inverse's output in
    place; the backward needs one forward FFT of the output gradient, has no Hermitian
    re-weighting and no ``conj()`` of the batch spectrum (the kernel gradient, the
    cross-correlation ``sum_b conj(X_b) G_b``, is taken as ``X_b * rfft2(flip(g_b))`` and
    flipped back on the small kernel grid); on the CPU the batch goes through in chunks of
    at most ``_CPU_CHUNK_BYTES`` of spectrum per thread. First derivatives only.
    """

    @staticmethod
    def forward(ctx, x, kern, kspec, grid, crop, binning):  # noqa: D401
        need_x, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        nh, nw = grid
        h, w = crop
        b = x.shape[0]
        per_image = kspec.shape[-3] * kspec.shape[-2] * kspec.shape[-1] * kspec.element_size()
        step = b
        if x.device.type == "cpu":
            step = max(1, min(b, _CPU_CHUNK_BYTES * torch.get_num_threads() // per_image))
        batched_k = kspec.ndim == 4 and kspec.shape[0] == b > 1
        out = x.new_empty((b, x.shape[1], h // binning, w // binning))
        spectra = []  # the spectrum of x, kept for the kernel gradient
        for i in range(0, b, step):
            ks = kspec[i:i + step] if batched_k else kspec
            spec = torch.fft.rfft2(x[i:i + step], s=grid)
            if need_k:
                spectra.append(spec)
                spec = spec * ks
            else:
                spec.mul_(ks)
            y = _irfft2_rows(spec, h, nw)[..., :w]
            del spec
            out[i:i + step] = F.avg_pool2d(y, binning) if binning > 1 else y
        ctx.save_for_backward(kspec if need_x else None, *spectra)
        ctx.grid, ctx.crop, ctx.binning, ctx.step = grid, crop, binning, step
        ctx.batched_k, ctx.x_shape, ctx.kspec_shape = batched_k, tuple(x.shape), kspec.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        kspec, *spectra = ctx.saved_tensors
        (nh, nw), (h, w), f, step = ctx.grid, ctx.crop, ctx.binning, ctx.step
        if f > 1:  # adjoint of the block mean (what avg_pool2d's backward computes)
            gb = g / (f * f)
            g = gb[..., :, None, :, None].expand(*gb.shape[:-2], h // f, f, w // f, f)
            g = g.reshape(*gb.shape[:-2], h, w)
        need_x, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dx = g.new_empty(ctx.x_shape) if need_x else None
        kconj = kspec.conj().resolve_conj() if need_x else None
        hx, wx = ctx.x_shape[-2:]
        dk_spec = dk = None
        if need_k and ctx.batched_k:
            dk = g.new_empty((*ctx.kspec_shape[:-1], nw))

        def kernel_grad(spec):
            # dk[m] = sum_j g[j] x[j - m] (circular). With f[j] = g[h-1-j, w-1-j'] zero-padded,
            # r = irfft2(rfft2(f) X) is r[m] = dk[h-1-m], so dk = roll(flip(r), (h, w)).
            r = _irfft2_rows(spec, nh, nw)
            return torch.roll(r.flip(-2, -1), shifts=(h, w), dims=(-2, -1))

        for j, i in enumerate(range(0, g.shape[0], step)):
            gi = g[i:i + step]
            if need_x:  # correlation of g with the kernel, cropped to x
                ks = kconj[i:i + step] if ctx.batched_k else kconj
                gs = torch.fft.rfft2(gi, s=ctx.grid).mul_(ks)
                dx[i:i + step] = _irfft2_rows(gs, hx, nw)[..., :wx]
            if need_k:
                gs = torch.fft.rfft2(gi.flip(-2, -1), s=ctx.grid).mul_(spectra[j])
                if ctx.batched_k:
                    dk[i:i + step] = kernel_grad(gs)
                elif dk_spec is None:
                    dk_spec = gs.sum_to_size(ctx.kspec_shape)
                else:
                    dk_spec += gs.sum_to_size(ctx.kspec_shape)
        if need_k and not ctx.batched_k:
            dk = kernel_grad(dk_spec)
        return dx, dk, None, None, None, None


def _convolve(x: torch.Tensor, psf: torch.Tensor, boundary: str, binning: int) -> torch.Tensor:
    """:func:`convolve` followed by ``bin_sensor(., binning)``, validated, in one pass."""
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
    _check_binning(h, w, binning)
    out_dtype = torch.promote_types(x.dtype, psf.dtype)
    if not out_dtype.is_floating_point:
        raise ValueError(f"x and psf must be real floating point, got {x.dtype}, {psf.dtype}")
    # torch.fft has no half-precision CPU kernels and poor accuracy there: compute in float32.
    work = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32

    nh, nw, shift, pad = _fft_grid(boundary, h, w, kh, kw)
    xw = xb.to(work)
    if pad is not None:  # one copy: the edge-padded image fills the whole FFT grid
        xw = F.pad(xw, pad, mode="replicate")
    kern, kspec = _kernel_spectrum(psf, nh, nw, shift, work)
    fused = binning if work == out_dtype else 1  # else bin after the cast, as bin_sensor does
    y = _GridConvolution.apply(xw, kern, kspec, (nh, nw), (h, w), fused)
    y = y.to(out_dtype)
    if fused != binning:
        y = F.avg_pool2d(y, kernel_size=binning, stride=binning)
    return y.squeeze(0) if squeeze else y


def convolve(x: torch.Tensor, psf: torch.Tensor, boundary: str = "linear") -> torch.Tensor:
    """Per-channel FFT convolution of images with PSFs: ``y = psf * x``.

    ``y[..., i, j] = sum_{u,v} psf[..., u, v] * x[..., i - (u - Kh//2), j - (v - Kw//2)]``,
    with ``x`` outside the ``H x W`` grid taken as 0 (``boundary="linear"``, the "same" crop of
    the full linear convolution; equal to ``scipy.signal.fftconvolve(x, psf, mode="same")`` for
    odd K), periodic (``boundary="circular"``), or continued by its edge values
    (``boundary="replicate"``: a crop of a larger scene whose surroundings resemble its
    border, so light from just outside the field of view is not replaced by black).

    Computed with real FFTs on one grid per call (see :func:`_fft_grid`), differentiable to
    ``x`` and ``psf`` (first derivatives). When ``psf`` needs no gradient its spectrum is
    cached and reused while its values are unchanged.

    Args:
        x: ``(B, C, H, W)`` or ``(C, H, W)`` images.
        psf: ``(C, Kh, Kw)`` or ``(B, C, Kh, Kw)`` kernels (batch 1 broadcasts), same device.
        boundary: ``"linear"`` (zero padding), ``"circular"`` (periodic) or
            ``"replicate"`` (edge padding).

    Returns:
        Tensor with the shape of ``x`` and the promoted floating dtype of ``x`` and ``psf``.
    """
    return _convolve(x, psf, boundary, 1)


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
            sample = torch.poisson(rate.to(_draw_device(x, generator)),
                                   generator=generator).to(x.device) / photons
            x = x + (sample - x).detach()
        else:
            x = x + torch.sqrt(x.clamp(min=_SHOT_EPS) / photons) * _randn_like(x, generator)
    if read_noise_std > 0:
        x = x + _randn_like(x, generator).mul_(read_noise_std)
    return x


def _draw_device(x: torch.Tensor, generator: torch.Generator | None) -> torch.device:
    return x.device if generator is None else generator.device


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on ``generator``'s device, on ``x``'s."""
    eps = torch.randn(x.shape, generator=generator, device=_draw_device(x, generator),
                      dtype=x.dtype)
    return eps.to(x.device)


class _Quantize(torch.autograd.Function):
    """``round(clamp(x, 0, 1) * levels) / levels`` with the gradient of ``clamp(x, 0, 1)``."""

    @staticmethod
    def forward(ctx, x, levels):  # noqa: D401
        q = x.clamp(0.0, 1.0)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(q == x)  # 0 <= x <= 1 (False for NaN), as clamp's backward
        return q.mul_(levels).round_().div_(levels)

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return g * inside, None


def quantize(x: torch.Tensor, bits: int | None) -> torch.Tensor:
    """ADC: clamp to ``[0, 1]`` and round to ``2**bits - 1`` steps (``2**bits`` codes).

    Straight-through gradient: that of ``clamp(x, 0, 1)`` (1 inside ``[0, 1]``, 0 outside).
    Output values are ``round(k) / (2**bits - 1)`` in ``x``'s floating dtype (integer input:
    the default dtype); ``bits=None`` returns ``x`` unchanged.
    """
    if bits is None:
        return x
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ValueError(f"bits must be an int or None, got {bits!r}")
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    return _Quantize.apply(x, float(2**bits - 1))


def _check_binning(h: int, w: int, factor: int) -> None:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"binning factor must be an int >= 1, got {factor!r}")
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not divisible by binning factor {factor}")


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
    _check_binning(*x.shape[-2:], factor)
    return F.avg_pool2d(x, kernel_size=factor, stride=factor)


# --------------------------------------------------------------------------------------------
# Full pipeline
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensorModel:
    """Sensor parameters for :func:`form_image`.

    Attributes:
        boundary: PSF convolution boundary, one of :data:`IMAGE_BOUNDARIES`.
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
    y = _convolve(x, psf, sensor.boundary, sensor.binning)  # = bin_sensor(convolve(x, psf))
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
