"""Point-spread functions of a circular pupil carrying a Zernike phase mask.

References
----------
- J. W. Goodman, *Introduction to Fourier Optics*, 3rd ed.: sec. 4.2 (Fresnel integral),
  5.2 (thin lens phase ``exp(-i k r^2 / 2f)``), 6.4 (aberrations, generalised pupil).
- M. Born and E. Wolf, *Principles of Optics*, sec. 9.2 (defocus as a wave aberration).

Two models:

- :func:`fraunhofer_psf` is the far-field PSF in angular units, computed exactly as poppy's
  ``OpticalSystem`` does (zero-padded FFT), so poppy is a pixel-for-pixel oracle.
- :func:`sensor_psf` is the physical camera: point source at object distance ``d``, Zernike
  phase plate, thin lens (optionally chromatic), Fresnel propagation over ``z`` to a sensor of
  pixel pitch ``p``, integrated over each pixel and normalised to sum 1 per channel.

Sign conventions (see :mod:`optics.propagation`): phases follow Goodman, so a point source at
``d`` adds ``+pi r^2 / (lambda d)``, a lens ``-pi r^2/(lambda f)`` and the Fresnel kernel
``+pi r^2/(lambda z)``; sensor coordinates follow poppy (point-reflected with respect to
Goodman's, as a real lens inverts the image), so PSFs match poppy's pixel for pixel. The
residual curvature left on the pupil is the *vergence*
``V = 1/d - 1/f + 1/z`` (dioptres), which vanishes at focus (the lens equation). Defocus by
``V`` is the same as a Noll ``Z4`` term of ``beta4 = V a^2 / (4 sqrt 3)`` metres of OPD
(``a`` the aperture radius), up to piston.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from optics.propagation import SamplingError, centred_coords, fresnel_tf, mft, mft_matrices
from optics.zernike import compose_opd, zernike_basis

__all__ = [
    "circular_aperture",
    "fraunhofer_psf",
    "fraunhofer_pixel_scale_rad",
    "FraunhoferPSF",
    "vergence_dpt",
    "defocus_to_z4_m",
    "max_phase_step_rad",
    "sensor_psf",
    "sensor_mft_matrix",
    "sensor_propagation_method",
    "tf_grid_size",
    "pixel_overlap_matrix",
    "SamplingError",
]


def circular_aperture(npix: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Hard-edged disk inscribed in an ``npix`` pixel-centred grid (1 inside, 0 outside);
    the same samples as poppy's ``CircularAperture(gray_pixel=False)`` on a Fraunhofer
    ``Wavefront`` (poppy's ``FresnelWavefront`` samples sit half a pixel away)."""
    c = (torch.arange(npix, dtype=torch.float64, device=device) - (npix - 1) / 2) * (2.0 / npix)
    r = torch.hypot(c[:, None], c[None, :])
    return (r <= 1.0).to(dtype)


def fraunhofer_pixel_scale_rad(wavelength_m, pupil_diameter_m: float, oversample: int = 2):
    """Angular pixel scale ``lambda / (D * oversample)`` (radians) of :func:`fraunhofer_psf`."""
    return np.asarray(wavelength_m, dtype=float) / (pupil_diameter_m * oversample)


def _checkerboard(n: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    i = torch.arange(n, device=device)
    return (1 - 2 * ((i[:, None] + i[None, :]) % 2)).to(dtype)


class _Intensity(torch.autograd.Function):
    """``|E|^2`` with a one-step backward ``2 E grad`` (autograd's generic rule builds and adds
    two complex zero-filled gradients, which costs more than the FFTs here)."""

    @staticmethod
    def forward(ctx, field):
        ctx.save_for_backward(field)
        return field.real.square() + field.imag.square()

    @staticmethod
    def backward(ctx, grad):
        (field,) = ctx.saved_tensors
        return torch.view_as_complex(torch.view_as_real(field) * (2 * grad).unsqueeze(-1))


class FraunhoferPSF(torch.nn.Module):
    """Fast, differentiable far-field PSF for fixed sampling (basis and aperture built once).

    ``forward(coefficients_m (..., p)) -> (..., C, M, M)`` with ``M = npix * oversample``, one
    channel per wavelength, each normalised to sum 1; channel ``c`` has pixel scale
    ``lambda_c / (D * oversample)`` radians and its optical axis at pixel ``M // 2``.

    Speed (see ``docs/benchmarks.md``): the output ``fftshift`` is folded into the aperture as
    a ``(-1)^(x+y)`` checkerboard; the normalisation too, since the total energy does not
    depend on the phase (Parseval), so the PSF needs no division; ``|E|^2`` has a one-step
    backward. A pruned two-pass FFT (skipping the zero rows) measured slower than one
    zero-padded ``ifft2`` on this build, so the padding is left to ``ifft2``.
    """

    def __init__(self, n_terms: int, wavelength_m, npix: int, oversample: int = 2,
                 dtype=torch.float32, device=None):
        super().__init__()
        if oversample < 1 or int(oversample) != oversample:
            raise ValueError(f"oversample must be a positive integer, got {oversample}")
        if npix * oversample % 2:
            raise ValueError("npix * oversample must be even")
        lam = torch.as_tensor(wavelength_m, dtype=torch.float64).reshape(-1)
        if not bool((lam > 0).all()):
            raise ValueError(f"wavelengths must be positive, got {lam.tolist()} m")
        self.npix, self.oversample, self.m = npix, int(oversample), npix * int(oversample)
        self.register_buffer("basis", zernike_basis(n_terms, npix, dtype=dtype, device=device))
        self.register_buffer(
            "wavenumber", (2 * math.pi / lam).to(dtype=dtype, device=device).reshape(-1, 1, 1)
        )
        aperture = circular_aperture(npix, device=device)
        # ifft2(norm="forward") sums without 1/M^2, so sum |E_out|^2 = M^2 sum |E_in|^2
        amp = aperture * _checkerboard(npix, device=device)
        amp = amp / (self.m * aperture.square().sum().sqrt())
        self.register_buffer("amplitude", amp.to(dtype))

    def forward(self, coefficients_m: torch.Tensor) -> torch.Tensor:
        opd = compose_opd(coefficients_m, self.basis).unsqueeze(-3)  # (..., 1, N, N)
        field = torch.polar(self.amplitude.expand_as(opd), self.wavenumber * opd)
        field = torch.fft.ifft2(field, s=(self.m, self.m), norm="forward")
        return _Intensity.apply(field)


def fraunhofer_psf(coefficients_m, wavelength_m, pupil_diameter_m: float, npix: int,
                   oversample: int = 2):
    """Far-field PSF of a circular pupil with a Noll Zernike OPD; poppy's Fraunhofer model.

    Parameters
    ----------
    coefficients_m : ``(p,)`` Noll coefficients 1..p in **metres of OPD** (numpy or torch).
    wavelength_m : scalar or ``(C,)`` wavelengths in metres.
    pupil_diameter_m : diameter ``D`` of the pupil, which fills the ``npix`` grid. It sets only
        the pixel scale, ``lambda / (D * oversample)`` radians.
    npix : pupil samples across ``D``; output is ``npix * oversample`` square.

    Returns ``(M, M)`` for a scalar wavelength, else ``(C, M, M)``, each summing to 1; numpy
    in, numpy out (float64); torch in, torch out (dtype of the input, differentiable).
    """
    if not pupil_diameter_m > 0:
        raise ValueError(f"pupil diameter must be positive, got {pupil_diameter_m} m")
    as_numpy = not isinstance(coefficients_m, torch.Tensor)
    c = torch.as_tensor(np.asarray(coefficients_m, dtype=float) if as_numpy else coefficients_m)
    scalar = np.ndim(wavelength_m) == 0
    model = FraunhoferPSF(c.shape[-1], wavelength_m, npix, oversample, dtype=c.dtype,
                          device=c.device)
    psf = model(c)
    if scalar:
        psf = psf.squeeze(-3)
    return psf.detach().numpy() if as_numpy else psf


def vergence_dpt(object_distance_m, focal_length_m, sensor_distance_m):
    """Residual vergence ``1/d - 1/f + 1/z`` in dioptres (1/m); 0 when the sensor is at the
    image of the object. ``object_distance_m = inf`` is a source at infinity."""
    return 1.0 / object_distance_m - 1.0 / focal_length_m + 1.0 / sensor_distance_m


def defocus_to_z4_m(vergence, aperture_radius_m: float):
    """Noll ``Z4`` coefficient (metres of OPD) equivalent to a residual vergence (dioptres):
    ``pi V r^2 / lambda = 2 pi (2 sqrt3 beta4 rho^2) / lambda`` with ``r = a rho``."""
    return vergence * aperture_radius_m**2 / (4 * math.sqrt(3))


def max_phase_step_rad(phase: torch.Tensor, aperture: torch.Tensor) -> float:
    """Largest phase difference (radians) between neighbouring pupil samples inside the
    aperture; above ``pi`` the sampled phasor aliases."""
    inside_x = (aperture[..., :, 1:] > 0) & (aperture[..., :, :-1] > 0)
    inside_y = (aperture[..., 1:, :] > 0) & (aperture[..., :-1, :] > 0)
    dx = (phase[..., :, 1:] - phase[..., :, :-1]).abs() * inside_x
    dy = (phase[..., 1:, :] - phase[..., :-1, :]).abs() * inside_y
    return float(torch.maximum(dx.amax(), dy.amax()))


def _vergences(object_distance_m, focal_length_m, sensor_distance_m):
    d = float(object_distance_m)
    f = np.asarray(focal_length_m, dtype=float).reshape(-1)
    source_lens = 1.0 / d - 1.0 / f  # curvature left on the pupil by source and lens
    return source_lens, source_lens + 1.0 / sensor_distance_m


def tf_grid_size(n: int, dx_m: float, window_m: float) -> int:
    """Samples per side of the zero-padded grid of the transfer-function form: at least twice
    the pupil, and the sensor window plus the pupil (so light does not wrap into it)."""
    from scipy.fft import next_fast_len

    return next_fast_len(max(2 * n, int(math.ceil(window_m / dx_m)) + n))


def sensor_propagation_method(n: int, aperture_radius_m: float, wavelength_m, focal_length_m,
                              sensor_distance_m: float, object_distance_m, pixel_pitch_m: float,
                              psf_size: int) -> str:
    """Which Fresnel form samples this geometry: ``'ir'`` or ``'tf'`` (else SamplingError).

    - ``'ir'`` (single transform, evaluated by MFT on the sensor): the residual vergence
      ``V = 1/d - 1/f + 1/z`` must change the pupil phase by at most pi per sample, and the
      sensor window must fit in the alias period ``lambda z / dx``. Preferred when it holds.
    - ``'tf'`` (transfer function on a zero-padded pupil grid, then exact area integration onto
      the pixels): the source-and-lens curvature ``1/d - 1/f`` must be sampled, the pupil pitch
      must not exceed the pixel pitch, and ``z <= M dx^2 / lambda`` (Voelz) on the padded grid.
      This is the near-field case, e.g. a lensless mask a few millimetres from the sensor.
    """
    lam = np.asarray(wavelength_m, dtype=float).reshape(-1)
    a, z = aperture_radius_m, sensor_distance_m
    dx = 2 * a / n
    window = psf_size * pixel_pitch_m
    source_lens, residual = _vergences(object_distance_m, focal_length_m, z)
    ir_step = float(np.max(2 * math.pi * np.abs(residual) * a * dx / lam))
    ir_period = float(lam.min()) * z / dx
    if ir_step <= math.pi and window <= ir_period:
        return "ir"
    m = tf_grid_size(n, dx, window)
    tf_step = float(np.max(2 * math.pi * np.abs(source_lens) * a * dx / lam))
    z_crit = m * dx**2 / float(lam.max())
    if tf_step <= math.pi and dx <= pixel_pitch_m / 2 and z <= z_crit:
        return "tf"
    raise SamplingError(
        f"no Fresnel form is sampled: impulse-response needs a residual-defocus phase step "
        f"<= pi (got {ir_step:.3g} rad) and a window <= lambda z/dx = {ir_period * 1e3:.3g} mm "
        f"(got {window * 1e3:.3g} mm); transfer-function needs a lens-curvature step <= pi "
        f"(got {tf_step:.3g} rad), pupil pitch {dx * 1e6:.3g} um <= half the pixel pitch "
        f"{pixel_pitch_m * 1e6:.3g} um and z <= {z_crit:.3g} m; raise pupil_samples"
    )


def pixel_overlap_matrix(cell_centres_m, cell_pitch_m: float, pixel_centres_m,
                         pixel_pitch_m: float) -> torch.Tensor:
    """``B[k, i]``: fraction of grid cell ``i`` lying inside sensor pixel ``k`` (1-D), so
    ``B @ E @ B.T`` integrates a piecewise-constant cell energy ``E`` exactly over pixels."""
    lo = torch.maximum(pixel_centres_m[:, None] - pixel_pitch_m / 2,
                       cell_centres_m[None, :] - cell_pitch_m / 2)
    hi = torch.minimum(pixel_centres_m[:, None] + pixel_pitch_m / 2,
                       cell_centres_m[None, :] + cell_pitch_m / 2)
    return (hi - lo).clamp(min=0) / cell_pitch_m


def sensor_psf(opd_m, *, aperture, wavelength_m, aperture_radius_m: float, focal_length_m,
               sensor_distance_m: float, object_distance_m, pixel_pitch_m: float,
               psf_size: int, pixel_oversample: int = 2, mft_y=None, mft_x=None,
               check_sampling: bool = True, normalize: bool = True, method: str = "auto"):
    """Physical PSF on the sensor, per wavelength, normalised to sum 1.

    Parameters
    ----------
    opd_m : ``(..., N, N)`` phase-plate OPD in **metres** over the pupil grid, which spans the
        aperture diameter ``2a`` (pixel-centred, pitch ``2a/N``).
    aperture : ``(N, N)`` amplitude transmission.
    wavelength_m, focal_length_m : ``(C,)`` (chromatic lenses have one ``f`` per wavelength;
        ``inf`` means no lens). Pass wavelengths in float64: a float32 550 nm is already off
        by 3e-7 of the PSF.
    object_distance_m : scalar (may be ``inf``; may require grad).
    pixel_pitch_m : sensor pixel pitch; the PSF is integrated over each pixel (``'ir'``: by
        averaging ``pixel_oversample^2`` sub-samples; ``'tf'``: exactly, cell by cell).
    psf_size : output pixels per side; the optical axis is at pixel ``psf_size // 2``.
    mft_y, mft_x : precomputed :func:`sensor_mft_matrix` (optional, for speed; ``'ir'``).
    normalize : if False, each pixel holds the fraction of the power entering the pupil that
        falls on it, so the channel sum is the energy captured by the window (<= 1).
    method : ``'auto'`` picks by :func:`sensor_propagation_method`; or ``'ir'`` / ``'tf'``.

    ``'ir'``: the lens-to-sensor Fresnel integral in its single-transform (impulse-response)
    form: the quadratic phases of source, lens and kernel fold into the vergence ``V`` on the
    pupil, and the Fourier integral is evaluated directly on the sensor sub-pixels by a matrix
    Fourier transform. ``'tf'``: transfer-function propagation of the zero-padded pupil field.
    With ``check_sampling`` the phase (including the mask) is checked for aliasing.

    Returns ``(..., C, psf_size, psf_size)``.
    """
    lam = torch.as_tensor(wavelength_m, dtype=torch.float64).reshape(-1)
    n = opd_m.shape[-1]
    dx = 2 * aperture_radius_m / n
    real = opd_m.dtype
    dev = opd_m.device
    lam_t = lam.to(device=dev, dtype=real).reshape(-1, 1, 1)
    f_t = torch.as_tensor(focal_length_m, dtype=real, device=dev).reshape(-1, 1, 1)
    d = object_distance_m
    if not isinstance(d, torch.Tensor):
        d = torch.tensor(float(d), dtype=real, device=dev)
    if method == "auto":
        method = sensor_propagation_method(n, aperture_radius_m, lam.numpy(),
                                           f_t.detach().cpu().double().numpy(),
                                           sensor_distance_m, float(d.detach()), pixel_pitch_m,
                                           psf_size)
    if method not in ("ir", "tf"):
        raise ValueError(f"unknown propagation method {method!r}; use 'auto', 'ir' or 'tf'")
    xi = centred_coords(n, dx, dtype=real, device=dev)
    r2 = xi[:, None] ** 2 + xi[None, :] ** 2
    curvature = 1.0 / d - 1.0 / f_t  # (C, 1, 1) dioptres, source and lens
    if method == "ir":
        curvature = curvature + 1.0 / sensor_distance_m  # residual vergence V
    phase = (2 * math.pi / lam_t) * opd_m.unsqueeze(-3) + (math.pi / lam_t) * curvature * r2
    if check_sampling:
        step = max_phase_step_rad(phase.detach(), aperture)
        if step > math.pi:
            raise SamplingError(
                f"pupil phase changes by {step:.3g} rad between samples (> pi): the defocus "
                f"or Zernike amplitude is too large for {n} pupil samples; raise pupil_samples"
            )
        period = float(lam.min()) * sensor_distance_m / dx
        window = psf_size * pixel_pitch_m
        if method == "ir" and window > period:
            raise SamplingError(
                f"PSF window {window * 1e3:.3g} mm exceeds the alias period lambda z / dx = "
                f"{period * 1e3:.3g} mm; raise pupil_samples or shrink psf_size"
            )
    field = torch.polar(aperture.to(real).expand_as(phase), phase)
    power_in = (aperture.to(real) ** 2).sum()
    if method == "tf":
        pixels = _tf_sensor_energy(field, dx, lam, sensor_distance_m, pixel_pitch_m, psf_size)
        if not normalize:
            return pixels / power_in
        return pixels / pixels.sum(dim=(-2, -1), keepdim=True)
    if mft_y is None or mft_x is None:
        mft_y = mft_x = sensor_mft_matrix(n, dx, lam, sensor_distance_m, pixel_pitch_m,
                                          psf_size, pixel_oversample, device=dev,
                                          dtype=field.dtype)
    out = mft(field, mft_y, mft_x)
    intensity = out.real**2 + out.imag**2
    s, o = psf_size, pixel_oversample
    intensity = intensity.unflatten(-1, (s, o)).unflatten(-3, (s, o)).sum(dim=(-3, -1))
    if not normalize:  # Parseval: |u|^2 = dx^4 |MFT|^2 / (lambda z)^2 per sub-pixel area
        scale = dx**2 * (pixel_pitch_m / o) ** 2 / (lam_t * sensor_distance_m) ** 2
        return intensity * scale / power_in
    return intensity / intensity.sum(dim=(-2, -1), keepdim=True)


def _tf_sensor_energy(field, dx, lam, z, pixel_pitch_m, psf_size):
    """Transfer-function branch of :func:`sensor_psf`: pad, propagate, integrate on pixels.
    Returns the energy per pixel in units of ``|field|^2`` per pupil sample."""
    n = field.shape[-1]
    m = tf_grid_size(n, dx, psf_size * pixel_pitch_m)
    pad = (m - n) // 2
    padded = torch.nn.functional.pad(field, (pad, m - n - pad, pad, m - n - pad))
    out = fresnel_tf(padded, dx, lam.to(padded.real.dtype), z, check=False)
    energy = out.real**2 + out.imag**2  # per cell, same units as |field|^2 (TF is unitary)
    real = energy.dtype
    # the optical axis is the pupil centre; the minus sign turns Goodman's sensor coordinates
    # into poppy's point-reflected ones, as the single-transform form does (see module doc)
    cells = -centred_coords(m, dx, dtype=torch.float64, device=field.device,
                            centre=pad + (n - 1) / 2)
    pix = centred_coords(psf_size, pixel_pitch_m, device=field.device, centre=psf_size // 2)
    b = pixel_overlap_matrix(cells, dx, pix, pixel_pitch_m).to(real)
    return b @ energy @ b.T


def sensor_mft_matrix(n: int, dx_m: float, wavelength_m, sensor_distance_m: float,
                      pixel_pitch_m: float, psf_size: int, pixel_oversample: int = 2, *,
                      device=None, dtype=torch.complex128):
    """``(C, psf_size * o, N)`` transform from pupil samples to sensor sub-pixel centres; the
    optical axis is the centre of pixel ``psf_size // 2``."""
    o = pixel_oversample
    if o < 1:
        raise ValueError(f"pixel_oversample must be >= 1, got {o}")
    xi = centred_coords(n, dx_m, device=device)
    pix = centred_coords(psf_size, pixel_pitch_m, device=device, centre=psf_size // 2)
    sub = centred_coords(o, pixel_pitch_m / o, device=device)
    x_out = (pix[:, None] + sub[None, :]).reshape(-1)
    return mft_matrices(xi, x_out, wavelength_m, sensor_distance_m, dtype=dtype)

