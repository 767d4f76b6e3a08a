"""Image-quality metrics of sensor PSFs: Strehl ratio, encircled energy, MTF, FWHM.

All functions take PSFs as torch tensors or numpy arrays of shape ``(..., K, K)``
(usually ``(C, K, K)``, one channel per wavelength, as returned by
:meth:`optics.camera.Camera.psf`) and return the same kind of object (torch in, torch out;
numpy in, numpy out), in float64 and detached from the autograd graph. Distances are in
**sensor pixels** unless a name says otherwise; the optical axis is pixel ``(K // 2, K // 2)``.

The energy in each PSF pixel is treated as spread uniformly over the pixel, which is how the
camera model produces it (each pixel integrates the optical intensity over its area).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from optics.camera import Camera, CameraConfig

__all__ = [
    "in_focus_object_distance_m",
    "diffraction_limited_config",
    "diffraction_limited_psf",
    "strehl_ratio",
    "encircled_energy",
    "psf_centroid",
    "mtf",
    "mtf_frequencies_cyc_per_mm",
    "radial_profile",
    "fwhm_px",
    "psf_summary",
]

_FOCUS_TOL_DPT = 1e-12


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _to_tensor(x) -> tuple[torch.Tensor, bool]:
    """``(float64 tensor, was_numpy)``; tensors are detached, never modified in place."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64), False
    return torch.as_tensor(np.asarray(x, dtype=np.float64)), True


def _out(t: torch.Tensor, as_numpy: bool):
    return t.cpu().numpy() if as_numpy else t


def _check_square(t: torch.Tensor, what: str = "psf") -> int:
    if t.ndim < 2 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"{what} must be (..., K, K), got shape {tuple(t.shape)}")
    return t.shape[-1]


def _normalise(t: torch.Tensor) -> torch.Tensor:
    total = t.sum(dim=(-2, -1), keepdim=True)
    if not bool((total > 0).all()):
        raise ValueError("every PSF channel must have positive total energy")
    return t / total


# --------------------------------------------------------------------------------------------
# Strehl ratio
# --------------------------------------------------------------------------------------------


def in_focus_object_distance_m(config: CameraConfig) -> float:
    """Object distance (metres) that the design focal length images onto the sensor:
    ``1 / (1/f - 1/z)``; ``inf`` when ``|1/f - 1/z| < 1e-12`` dioptres (sensor in the focal
    plane). Raises ``ValueError`` if ``1/f - 1/z < 0`` (only a virtual object is in focus)."""
    v = 1.0 / config.focal_length_m - 1.0 / config.sensor_distance_m
    if abs(v) < _FOCUS_TOL_DPT:
        return float("inf")
    if v < 0:
        raise ValueError(
            f"sensor at {config.sensor_distance_m} m is inside the focal length "
            f"{config.focal_length_m} m: no real object is in focus"
        )
    return 1.0 / v


def diffraction_limited_config(config: CameraConfig) -> CameraConfig:
    """The aberration-free twin of ``config``: same aperture, wavelengths, sensor distance and
    pixel sampling, with the object in focus for the design focal length and an achromatic
    lens (``chromatic=False``), so every channel is an in-focus Airy pattern. The focal length
    never changes the sensor sampling of the PSF (``lambda z / 2a`` per pupil frequency), so
    the twin's PSF is the correct peak reference for ``config``.

    If the sensor sits inside the focal length (no real object in focus), the object distance
    is kept and the focal length is set to image it instead: the same zero-vergence pupil.
    """
    try:
        d = in_focus_object_distance_m(config)
        changes = {"object_distance_m": d}
    except ValueError:
        f = 1.0 / (1.0 / config.object_distance_m + 1.0 / config.sensor_distance_m)
        changes = {"focal_length_m": f}
    return config.replace(chromatic=False, learn_object_distance=False, trainable_modes=(),
                          **changes)


def diffraction_limited_psf(camera_or_config: Camera | CameraConfig) -> torch.Tensor:
    """``(C, K, K)`` PSF (sum 1 per channel, no grad) of :func:`diffraction_limited_config`
    of a camera or config: zero Zernike coefficients, object in focus, same sampling."""
    cfg = camera_or_config.config if isinstance(camera_or_config, Camera) else camera_or_config
    if not isinstance(cfg, CameraConfig):
        raise TypeError(f"expected a Camera or CameraConfig, got {type(camera_or_config)}")
    with torch.no_grad():
        return Camera(diffraction_limited_config(cfg)).psf()


def strehl_ratio(psf, reference_psf):
    """Strehl ratio: peak of ``psf`` over peak of the aberration-free ``reference_psf``.

    Parameters
    ----------
    psf : ``(..., K, K)`` PSF (any positive scale; normalised to sum 1 per channel here).
    reference_psf : ``(..., K, K)`` diffraction-limited PSF with the *same* pixel sampling,
        e.g. :func:`diffraction_limited_psf`; broadcast against ``psf``'s leading dims.

    Returns ``(...,)``, e.g. ``(C,)``: 1 for a perfect system, < 1 with aberrations. The peak
    is taken wherever it lies (a tilted or comatic PSF is not penalised for moving). The
    sampled (pixel-integrated) peak is used for both, so the value is the *sampled* Strehl,
    close to the optical one when the pixel is small against ``lambda F#``.
    """
    p, as_np = _to_tensor(psf)
    r, _ = _to_tensor(reference_psf)
    k = _check_square(p)
    if _check_square(r, "reference_psf") != k:
        raise ValueError(f"psf is {k} px square, reference_psf {r.shape[-1]} px")
    r = r.to(p.device)
    peak = _normalise(p).amax(dim=(-2, -1))
    ref_peak = _normalise(r).amax(dim=(-2, -1))
    return _out(peak / ref_peak, as_np)


# --------------------------------------------------------------------------------------------
# encircled energy
# --------------------------------------------------------------------------------------------


def _quadrant_area(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Area of ``[0, a] x [0, b]`` inside the disk of radius ``r`` at the origin; ``a, b, r
    >= 0`` (broadcast)."""
    a = torch.minimum(a, r)
    b = torch.minimum(b, r)
    # the circle is above height b for x < xc
    xc = torch.sqrt(torch.clamp(r**2 - b**2, min=0.0))
    x0 = torch.minimum(a, xc)

    def prim(x):  # integral of sqrt(r^2 - x^2) dx from 0 to x
        ratio = torch.where(r > 0, x / torch.where(r > 0, r, 1.0), torch.zeros_like(x))
        return 0.5 * (x * torch.sqrt(torch.clamp(r**2 - x**2, min=0.0))
                      + r**2 * torch.asin(torch.clamp(ratio, -1.0, 1.0)))

    return b * x0 + prim(a) - prim(x0)


def _signed_corner_area(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed area of the rectangle between the origin and ``(x, y)`` inside the disk."""
    return torch.sign(x) * torch.sign(y) * _quadrant_area(x.abs(), y.abs(), r)


def _disk_energy(p: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor,
                 r: torch.Tensor) -> torch.Tensor:
    """Energy of ``p (..., K, K)`` inside disks centred at ``(cy, cx) (...,)`` (pixel
    coordinates; pixel ``i`` spans ``[i - 1/2, i + 1/2]``) of radii ``r (R,)``, each pixel
    weighted by the exact fraction of its area inside the disk. Returns ``(..., R)``.

    Summation by parts: with ``G`` the signed disk area between the centre and each of the
    ``(K + 1)^2`` pixel corners, a pixel's area is the mixed difference of ``G`` over its four
    corners, so the energy is ``sum_corners G * D`` with ``D`` the mixed difference of the
    zero-padded PSF. Radii are processed in chunks to bound memory.
    """
    k = p.shape[-1]
    edges = torch.arange(k + 1, dtype=torch.float64, device=p.device) - 0.5
    y = (edges - cy[..., None])[..., None, :, None]  # (..., 1, K+1, 1)
    x = (edges - cx[..., None])[..., None, None, :]  # (..., 1, 1, K+1)
    padded = torch.nn.functional.pad(p, (1, 1, 1, 1))
    d = padded[..., 1:, 1:] - padded[..., :-1, 1:] - padded[..., 1:, :-1] + padded[..., :-1, :-1]
    d = d.unsqueeze(-3)  # (..., 1, K+1, K+1): weight of corner G(i, j)
    batch = max(1, math.prod(p.shape[:-2]))
    chunk = max(1, 2_000_000 // (batch * (k + 1) ** 2))
    out = []
    for rr in torch.split(r, chunk):
        g = _signed_corner_area(x, y, rr.reshape(-1, 1, 1))  # (..., R', K+1, K+1)
        out.append((g * d).sum(dim=(-2, -1)))
    return torch.cat(out, dim=-1)


def psf_centroid(psf):
    """Energy centroid ``(..., 2)`` as ``(row, col)`` pixel coordinates of a ``(..., K, K)``
    PSF (pixel ``i`` centred at coordinate ``i``)."""
    p, as_np = _to_tensor(psf)
    k = _check_square(p)
    p = _normalise(p)
    i = torch.arange(k, dtype=torch.float64, device=p.device)
    cy = (p.sum(dim=-1) * i).sum(dim=-1)
    cx = (p.sum(dim=-2) * i).sum(dim=-1)
    return _out(torch.stack([cy, cx], dim=-1), as_np)


def encircled_energy(psf, radii_px=(1, 2, 4), centre: str = "axis"):
    """Fraction of each channel's energy inside circles of the given radii.

    Parameters
    ----------
    psf : ``(..., K, K)`` PSF (normalised to sum 1 per channel here).
    radii_px : radii in **pixels** (non-negative; a scalar or a sequence of ``R`` values).
    centre : ``"axis"`` (the optical axis, pixel ``(K // 2, K // 2)``) or ``"centroid"`` (each
        channel's own energy centroid).

    Returns ``(..., R)``. Each pixel counts with the exact fraction of its area inside the
    circle (energy uniform within a pixel), so the curve is continuous and non-decreasing in
    radius: a delta PSF on the axis gives ``pi r^2`` for ``r <= 1/2`` and exactly 1 for
    ``r >= sqrt(2)/2``. Energy outside the ``K x K`` window is not known, so the value tends
    to 1 once the circle covers the window.
    """
    p, as_np = _to_tensor(psf)
    k = _check_square(p)
    p = _normalise(p)
    r = torch.as_tensor(radii_px, dtype=torch.float64, device=p.device).reshape(-1)
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise ValueError(f"radii must be finite and non-negative, got {r.tolist()}")
    if centre == "axis":
        cy = cx = torch.full(p.shape[:-2], float(k // 2), dtype=torch.float64,
                             device=p.device)
    elif centre == "centroid":
        c = psf_centroid(p)
        cy, cx = c[..., 0], c[..., 1]
    else:
        raise ValueError(f"centre must be 'axis' or 'centroid', got {centre!r}")
    ee = _disk_energy(p, cy, cx, r)
    return _out(ee.clamp(0.0, 1.0), as_np)


# --------------------------------------------------------------------------------------------
# MTF
# --------------------------------------------------------------------------------------------


def mtf(psf):
    """Modulation transfer function ``|FFT(psf)|`` normalised to 1 at DC.

    ``psf (..., K, K)`` -> ``(..., K, K)``, ``fftshift``-ed so DC is at ``(K // 2, K // 2)``.
    Index ``k`` along an axis is the spatial frequency ``(k - K // 2) / (K * pixel_pitch)``
    (see :func:`mtf_frequencies_cyc_per_mm`); the edges are the sensor's Nyquist frequency.
    Includes the pixel's own (sinc) MTF, since the camera PSF is pixel-integrated.
    """
    p, as_np = _to_tensor(psf)
    _check_square(p)
    p = _normalise(p)
    m = torch.fft.fftshift(torch.fft.fft2(p).abs(), dim=(-2, -1))
    return _out(m, as_np)


def mtf_frequencies_cyc_per_mm(k: int, pixel_pitch_m: float) -> np.ndarray:
    """``(K,)`` spatial frequencies (cycles/mm on the sensor) of the rows/columns of
    :func:`mtf`; the frequency per radial bin of :func:`radial_profile` is
    ``1 / (K * pixel_pitch_m) / 1000`` cycles/mm per pixel."""
    return (np.arange(k) - k // 2) / (k * pixel_pitch_m) / 1e3


def radial_profile(img, centre=None, nbins: int | None = None):
    """Azimuthal average of ``img (..., K, K)`` (square or not: ``(..., H, W)``).

    Parameters
    ----------
    centre : ``(row, col)`` in pixel coordinates (floats allowed); default ``(H // 2, W // 2)``,
        the optical axis of a PSF and the DC pixel of :func:`mtf`.
    nbins : number of 1-pixel-wide bins kept; default enough to reach the farthest pixel.

    Bin ``b`` averages the pixels whose distance from the centre rounds to ``b``.
    Returns ``(radii (nbins,), profile (..., nbins))``: radii are the bin centres
    ``0, 1, 2, ...`` in pixels; bins without pixels are NaN.
    """
    t, as_np = _to_tensor(img)
    if t.ndim < 2:
        raise ValueError(f"img must be (..., H, W), got shape {tuple(t.shape)}")
    h, w = t.shape[-2:]
    cy, cx = (h // 2, w // 2) if centre is None else (float(centre[0]), float(centre[1]))
    y = torch.arange(h, dtype=torch.float64, device=t.device) - cy
    x = torch.arange(w, dtype=torch.float64, device=t.device) - cx
    dist = torch.hypot(y[:, None], x[None, :])
    idx = torch.floor(dist + 0.5).to(torch.long).reshape(-1)
    n_all = int(idx.max()) + 1
    nb = n_all if nbins is None else int(nbins)
    if nb < 1:
        raise ValueError(f"nbins must be >= 1, got {nbins}")
    counts = torch.bincount(idx, minlength=max(nb, n_all)).to(torch.float64)[:nb]
    flat = t.reshape(-1, h * w)
    sums = torch.zeros(flat.shape[0], max(nb, n_all), dtype=torch.float64, device=t.device)
    sums.index_add_(1, idx, flat)
    sums = sums[:, :nb]
    prof = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, math.nan))
    prof = prof.reshape(t.shape[:-2] + (nb,))
    radii = torch.arange(nb, dtype=torch.float64, device=t.device)
    return _out(radii, as_np), _out(prof, as_np)


# --------------------------------------------------------------------------------------------
# FWHM and summary
# --------------------------------------------------------------------------------------------


def fwhm_px(psf):
    """Approximate full width at half maximum (pixels) per channel, ``(..., K, K) -> (...,)``:
    the diameter of the disk with the same area as the pixels at or above half the peak,
    ``2 sqrt(n / pi)``. Exact for a well-sampled round Gaussian; only indicative for coarsely
    sampled or irregular PSFs (a single hot pixel gives ``2 / sqrt(pi) = 1.13``)."""
    p, as_np = _to_tensor(psf)
    _check_square(p)
    peak = p.amax(dim=(-2, -1), keepdim=True)
    n = (p >= 0.5 * peak).sum(dim=(-2, -1)).to(torch.float64)
    return _out(2.0 * torch.sqrt(n / math.pi), as_np)


def _wavelength_key(w_m: float) -> str:
    return f"{w_m * 1e9:g}nm"


def psf_summary(camera: Camera, radii_px=(1, 2, 4)) -> dict:
    """JSON-serialisable summary of a camera's current PSF (plain python floats/str only).

    Returns ``{"camera": name, "pixel_pitch_um": float, "coefficients_um": {"<noll>": um},
    "channels": {"640nm": {"wavelength_nm", "strehl", "ee_1px", "ee_2px", "ee_4px",
    "fwhm_px", "captured_energy"}, ...}}``; Strehl is against
    :func:`diffraction_limited_psf` of the camera, encircled energies (``ee_<r>px``, one
    per radius) are about the optical axis;
    ``captured_energy`` is the fraction of the pupil's light inside the PSF window.
    """
    cfg = camera.config
    with torch.no_grad():
        psf = camera.psf().detach()
    ref = diffraction_limited_psf(cfg)
    strehl = strehl_ratio(psf, ref).cpu().tolist()
    ee = encircled_energy(psf, radii_px, centre="axis").cpu().tolist()
    fw = fwhm_px(psf).cpu().tolist()
    captured = camera.captured_energy().cpu().tolist()
    channels = {}
    for c, w in enumerate(cfg.wavelengths_m):
        entry = {"wavelength_nm": float(w * 1e9), "strehl": float(strehl[c])}
        for r, v in zip(radii_px, ee[c], strict=True):
            entry[f"ee_{r:g}px"] = float(v)
        entry["fwhm_px"] = float(fw[c])
        entry["captured_energy"] = float(captured[c])
        channels[_wavelength_key(w)] = entry
    return {
        "camera": str(cfg.name),
        "pixel_pitch_um": float(cfg.pixel_pitch_m * 1e6),
        "coefficients_um": {str(j): float(v) for j, v in camera.coefficients_dict().items()},
        "channels": channels,
    }
