"""Diagnostic figures of the camera: phase map, PSF, MTF, image pairs, Zernike coefficients.

Every function writes one PNG (``dpi=120``) to ``path`` (parent folders are created) and
returns ``path`` as a :class:`pathlib.Path`. Figures are drawn on
:class:`matplotlib.figure.Figure` objects attached to an explicit Agg canvas, never through
``pyplot``: the process-wide backend is left alone, nothing needs a display, and no figure
stays registered (each is cleared once saved). Arrays may be torch tensors or numpy arrays.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from optics.metrics import mtf, radial_profile
from optics.zernike import zern_name

__all__ = [
    "plot_phase_map",
    "plot_psf",
    "plot_mtf",
    "plot_image_pair",
    "plot_coefficients",
]

DPI = 120
_LOG_FLOOR = 1e-6


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight")
    fig.clear()
    return path


def _channel_colours(c: int) -> list:
    if c == 3:
        return ["tab:red", "tab:green", "tab:blue"]
    if c == 1:
        return ["k"]
    return [f"C{i}" for i in range(c)]


def _labels(labels, c: int) -> list[str]:
    if labels is None:
        return [f"channel {i}" for i in range(c)]
    labels = [str(s) for s in labels]
    if len(labels) != c:
        raise ValueError(f"{len(labels)} labels for {c} channels")
    return labels


def _as_chw(psf) -> np.ndarray:
    p = _np(psf)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"psf must be (C, K, K) or (K, K), got shape {p.shape}")
    return p


# --------------------------------------------------------------------------------------------


def plot_phase_map(opd_m, aperture, wavelength_m: float, path, title: str | None = None) -> Path:
    """Phase-plate OPD in waves.

    ``opd_m (N, N)`` metres over the pupil grid, ``aperture (N, N)`` (0 outside), and the
    wavelength (metres) that sets the wave unit. Pixels outside the aperture are blank (NaN);
    the diverging colour scale is symmetric about 0 and labelled ``waves at <lambda> nm``.
    The title line carries the RMS (piston removed) and peak-to-valley in waves.
    """
    if not wavelength_m > 0:
        raise ValueError(f"wavelength must be positive, got {wavelength_m}")
    opd = _np(opd_m)
    ap = _np(aperture)
    if opd.ndim != 2 or opd.shape != ap.shape:
        raise ValueError(f"opd {opd.shape} and aperture {ap.shape} must be the same (N, N)")
    inside = ap > 0
    waves = np.where(inside, opd / wavelength_m, np.nan)
    vals = waves[inside]
    lim = float(np.nanmax(np.abs(vals))) if vals.size else 0.0
    lim = lim if lim > 0 else 1e-3
    rms = float(np.std(vals)) if vals.size else 0.0
    pv = float(np.ptp(vals)) if vals.size else 0.0
    lam_nm = wavelength_m * 1e9

    fig = _new_figure(5.2, 4.4)
    ax = fig.add_subplot()
    im = ax.imshow(waves, cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower",
                   extent=(-1, 1, -1, 1), interpolation="nearest")
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(f"waves at {lam_nm:g} nm")
    ax.set_xlabel("x / aperture radius")
    ax.set_ylabel("y / aperture radius")
    head = title if title is not None else "Phase-plate OPD"
    ax.set_title(f"{head}\nRMS {rms:.3f} waves, PV {pv:.3f} waves", fontsize=10)
    return _save(fig, path)


def plot_psf(psf, pixel_pitch_m: float, path, labels=None) -> Path:
    """One log10 panel per channel of ``psf (C, K, K)`` (each relative to its own peak,
    floored at 1e-6), axes in micrometres from the optical axis (pixel ``K // 2``), plus an
    RGB composite panel (linear, each channel divided by its own peak; channels taken as
    R, G, B in order, a single channel shown grey)."""
    p = _as_chw(psf)
    c, k, _ = p.shape
    labels = _labels(labels, c)
    pitch_um = pixel_pitch_m * 1e6
    lo = (-(k // 2) - 0.5) * pitch_um
    hi = (k - 1 - k // 2 + 0.5) * pitch_um
    extent = (lo, hi, lo, hi)
    peak = p.max(axis=(-2, -1), keepdims=True)
    rel = p / np.where(peak > 0, peak, 1.0)

    fig = _new_figure(3.3 * (c + 1) + 0.8, 3.4)
    axes = fig.subplots(1, c + 1, squeeze=False)[0]
    im = None
    for i in range(c):
        ax = axes[i]
        im = ax.imshow(np.log10(np.maximum(rel[i], _LOG_FLOOR)), cmap="inferno",
                       vmin=math.log10(_LOG_FLOOR), vmax=0.0, extent=extent, origin="lower",
                       interpolation="nearest")
        ax.set_title(labels[i], fontsize=10)
        ax.set_xlabel("x (um)")
        if i == 0:
            ax.set_ylabel("y (um)")
    fig.colorbar(im, ax=list(axes[:c]), label="log10(PSF / peak)", shrink=0.85)

    if c == 1:
        rgb = np.repeat(rel[0][..., None], 3, axis=-1)
    else:
        rgb = np.zeros((k, k, 3))
        for i in range(min(c, 3)):
            rgb[..., i] = rel[i]
    ax = axes[c]
    ax.imshow(np.clip(rgb, 0.0, 1.0), extent=extent, origin="lower", interpolation="nearest")
    ax.set_title("RGB composite (each / peak)", fontsize=10)
    ax.set_xlabel("x (um)")
    return _save(fig, path)


def plot_mtf(psf, pixel_pitch_m: float, path, labels=None) -> Path:
    """Azimuthally averaged MTF of each channel of ``psf (C, K, K)`` against spatial
    frequency on the sensor in cycles/mm (out to the window's corners), with the Nyquist
    frequency ``1 / (2 pitch)`` marked. Includes the pixel-aperture MTF."""
    p = _as_chw(psf)
    c, k, _ = p.shape
    labels = _labels(labels, c)
    m = mtf(p)
    radii, prof = radial_profile(m)
    df = 1.0 / (k * pixel_pitch_m) / 1e3  # cycles/mm per bin
    freq = radii * df
    nyquist = 1.0 / (2 * pixel_pitch_m) / 1e3

    fig = _new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    for i, colour in enumerate(_channel_colours(c)):
        ax.plot(freq, prof[i], color=colour, label=labels[i])
    ax.axvline(nyquist, color="0.4", ls="--", lw=1, label=f"Nyquist {nyquist:.0f} cyc/mm")
    ax.set_xlim(0, freq[-1])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("spatial frequency (cycles/mm)")
    ax.set_ylabel("MTF (radial average)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _as_hwc(img) -> np.ndarray:
    a = _np(img)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"image must be (C, H, W), (H, W, C) or (H, W), got shape {a.shape}")
    if a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.shape[-1] != 3:
        raise ValueError(f"image must have 1 or 3 channels, got shape {a.shape}")
    return np.clip(a, 0.0, 1.0)


def plot_image_pair(x, y, path, titles=("scene x", "camera y")) -> Path:
    """Side by side ``x`` and ``y``, each ``(C, H, W)`` or ``(H, W, C)`` (``C`` = 1 or 3,
    a leading batch of 1 is dropped) with values in [0, 1] (clipped); sizes may differ."""
    a, b = _as_hwc(x), _as_hwc(y)
    fig = _new_figure(8.0, 4.2)
    axes = fig.subplots(1, 2)
    for ax, img, t in zip(axes, (a, b), titles, strict=True):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(f"{t} ({img.shape[0]}x{img.shape[1]})", fontsize=10)
        ax.set_axis_off()
    return _save(fig, path)


def plot_coefficients(coeffs_dict: dict, path) -> Path:
    """Bar chart of Zernike coefficients ``{noll: micrometres of OPD}`` (keys may be strings,
    as after a JSON round trip), labelled ``Z<j> <name>``."""
    items = sorted((int(j), float(v)) for j, v in coeffs_dict.items())
    fig = _new_figure(max(5.0, 0.55 * len(items) + 2.0), 4.2)
    ax = fig.add_subplot()
    if items:
        js, vs = zip(*items, strict=True)
        pos = np.arange(len(js))
        colours = [to_rgb("tab:red") if v < 0 else to_rgb("tab:blue") for v in vs]
        ax.bar(pos, vs, color=colours)
        ax.set_xticks(pos, [f"Z{j} {zern_name(j)}" for j in js], rotation=60, ha="right",
                      fontsize=8)
    else:
        ax.text(0.5, 0.5, "no non-zero coefficients", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xticks([])
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_ylabel("coefficient (um OPD, RMS)")
    ax.set_title("Zernike coefficients (Noll)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
