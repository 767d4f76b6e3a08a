"""Scalar Fresnel propagation: transfer-function, impulse-response and matrix-Fourier forms.

References
----------
- J. W. Goodman, *Introduction to Fourier Optics*, 3rd ed., sec. 4.2 (Fresnel integral) and
  5.2 (thin lens).
- D. G. Voelz, *Computational Fourier Optics*, SPIE 2011, ch. 5: ``propTF`` / ``propIR`` and
  the critical sampling ``z_c = N dx^2 / lambda`` that decides between them.
- R. Soummer et al., "Fast computation of Lyot-style coronagraph propagation", Opt. Express
  15(24), 2007 (matrix Fourier transform).

Conventions
-----------
Fields are complex tensors ``(..., N, N)`` sampled on a pixel-centred square grid of pitch
``dx_m`` (rows y, columns x). Wavelengths and distances are in **metres**. The constant phase
``exp(ikz)`` is dropped. Phases follow Goodman's ``exp(-i omega t)`` convention: the Fresnel
kernel is ``exp(+i pi r^2 / (lambda z))``, a point source at distance ``d`` gives
``exp(+i pi r^2 / (lambda d))``, a thin lens ``exp(-i pi r^2 / (lambda f))``, and an OPD
the phasor ``exp(+i 2 pi OPD / lambda)`` (poppy's). :func:`fresnel_tf` and :func:`fresnel_ir`
keep Goodman's coordinates. The camera's sensor coordinates are poppy's, point-reflected
with respect to Goodman's (``x -> -x``, the inversion a real lens produces): in the
single-transform form that is the inverse-DFT kernel ``exp(+2 pi i x.xi / (lambda z))`` of
:func:`mft_matrices`, and it makes PSFs agree with poppy's pixel for pixel.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "SamplingError",
    "critical_distance_m",
    "centred_coords",
    "fresnel_tf",
    "fresnel_ir",
    "fresnel_propagate",
    "mft_matrices",
    "mft",
]


class SamplingError(ValueError):
    """A configuration whose numerical sampling would alias."""


def critical_distance_m(n: int, dx_m: float, wavelength_m: float) -> float:
    """Voelz's critical distance ``N dx^2 / lambda`` (metres): below it the transfer-function
    form is sampled correctly, above it the impulse-response form is."""
    return n * dx_m**2 / wavelength_m


def centred_coords(n: int, pitch: float, *, dtype=torch.float64, device=None, centre=None):
    """Sample positions ``(i - centre) * pitch`` for ``i = 0..n-1``; ``centre`` defaults to the
    pixel-centred ``(n - 1) / 2``."""
    c = (n - 1) / 2 if centre is None else centre
    return (torch.arange(n, dtype=dtype, device=device) - c) * pitch


def _as_column(v, ref: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or ``(C,)`` quantity against fields ``(..., C, N, N)``."""
    v = torch.as_tensor(v, dtype=ref.real.dtype, device=ref.device)
    return v.reshape(v.shape + (1, 1)) if v.ndim else v


def fresnel_tf(field, dx_m: float, wavelength_m, z_m, *, check: bool = True):
    """Fresnel propagation by the transfer function ``exp(-i pi lambda z (fx^2 + fy^2))``.

    ``field (..., N, N)`` complex; ``wavelength_m`` scalar or ``(C,)`` matching the channel
    axis. Output is on the same grid. Circular: zero-pad the field first for free space.
    Valid (unaliased transfer function) for ``z <= N dx^2 / lambda``.
    """
    n = field.shape[-1]
    lam = _as_column(wavelength_m, field)
    z = _as_column(z_m, field)
    if check:
        zc = critical_distance_m(n, dx_m, float(lam.max()))
        if float(z.abs().max()) > zc * (1 + 1e-9):
            raise SamplingError(
                f"transfer-function Fresnel needs z <= N dx^2/lambda = {zc:.4g} m, got "
                f"{float(z.abs().max()):.4g} m; use the impulse-response form"
            )
    f = torch.fft.fftfreq(n, d=dx_m, dtype=lam.dtype, device=field.device)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    h = torch.polar(torch.ones_like(f2 * lam), -math.pi * lam * z * f2)
    return torch.fft.ifft2(torch.fft.fft2(field) * h)


def fresnel_ir(field, dx_m: float, wavelength_m, z_m, *, check: bool = True):
    """Fresnel propagation by convolution with the impulse response
    ``exp(i pi r^2 / (lambda z)) / (i lambda z)``, on the same grid.

    Valid (unaliased kernel) for ``z >= N dx^2 / lambda``. Circular: zero-pad first.
    """
    n = field.shape[-1]
    lam = _as_column(wavelength_m, field)
    z = _as_column(z_m, field)
    if check:
        zc = critical_distance_m(n, dx_m, float(lam.min()))
        if float(z.abs().min()) < zc * (1 - 1e-9):
            raise SamplingError(
                f"impulse-response Fresnel needs z >= N dx^2/lambda = {zc:.4g} m, got "
                f"{float(z.abs().min()):.4g} m; use the transfer-function form"
            )
    x = centred_coords(n, dx_m, dtype=lam.dtype, device=field.device, centre=n // 2)
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    kernel = torch.polar(dx_m**2 / (lam * z), math.pi * r2 / (lam * z)) * (-1j)
    kernel = torch.fft.ifftshift(kernel, dim=(-2, -1))
    return torch.fft.ifft2(torch.fft.fft2(field) * torch.fft.fft2(kernel))


def fresnel_propagate(field, dx_m: float, wavelength_m, z_m, method: str = "auto"):
    """Fresnel propagation by whichever of :func:`fresnel_tf` / :func:`fresnel_ir` the
    critical distance ``N dx^2 / lambda`` says is sampled (``method='auto'``), or the one
    named (``'tf'``, ``'ir'``)."""
    if method == "auto":
        n = field.shape[-1]
        lam = torch.as_tensor(wavelength_m, dtype=torch.float64)
        z = float(torch.as_tensor(z_m).abs().max())
        zc_min = critical_distance_m(n, dx_m, float(lam.max()))
        zc_max = critical_distance_m(n, dx_m, float(lam.min()))
        if z <= zc_min:
            method = "tf"
        elif z >= zc_max:
            method = "ir"
        else:
            raise SamplingError(
                f"z = {z:.4g} m lies between the critical distances of the shortest and "
                f"longest wavelength ({zc_min:.4g}-{zc_max:.4g} m); propagate per channel"
            )
    if method == "tf":
        return fresnel_tf(field, dx_m, wavelength_m, z_m)
    if method == "ir":
        return fresnel_ir(field, dx_m, wavelength_m, z_m)
    raise ValueError(f"unknown Fresnel method {method!r}; use 'auto', 'tf' or 'ir'")


def mft_matrices(x_in_m, x_out_m, wavelength_m, z_m, *, dtype=torch.complex128):
    """Matrices ``A[c, k, i] = exp(+2 pi i x_out[k] x_in[i] / (lambda_c z))`` of the separable
    Fourier transform from pupil samples ``x_in_m (N,)`` to output samples ``x_out_m (M,)``.

    ``wavelength_m`` scalar or ``(C,)``; returns ``(C, M, N)`` (or ``(M, N)`` for a scalar).
    """
    lam = torch.as_tensor(wavelength_m, dtype=torch.float64, device=x_in_m.device)
    scale = (2 * math.pi / (lam * z_m)).reshape(lam.shape + (1, 1))
    arg = scale * (x_out_m.to(torch.float64)[:, None] * x_in_m.to(torch.float64)[None, :])
    return torch.polar(torch.ones_like(arg), arg).to(dtype)


def mft(field, a_y, a_x):
    """Separable matrix Fourier transform ``a_y @ field @ a_x^T`` (no normalisation).

    ``field (..., C, N, N)`` (rows y, columns x), ``a_y (C, My, N)``, ``a_x (C, Mx, N)`` ->
    ``(..., C, My, Mx)``. Evaluates the Fourier integral at arbitrary output samples, so the
    PSF lands directly on the sensor grid with no resampling.
    """
    return a_y @ field @ a_x.transpose(-1, -2)
