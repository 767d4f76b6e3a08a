"""Refractive index of optical glasses (Sellmeier), for chromatic focal shift.

Reference: I. H. Malitson, "Interspecimen comparison of the refractive index of fused
silica", JOSA 55(10), 1965. Sellmeier form ``n^2 - 1 = sum_i B_i lam^2 / (lam^2 - C_i)``
with ``lam`` in **micrometres**.
"""

from __future__ import annotations

import math

__all__ = ["FUSED_SILICA", "refractive_index", "thin_lens_focal_length_m"]

#: (B_i, C_i in um^2) for fused silica (Malitson 1965), valid 0.21-3.71 um.
FUSED_SILICA = (
    (0.6961663, 0.0684043**2),
    (0.4079426, 0.1162414**2),
    (0.8974794, 9.896161**2),
)


def refractive_index(wavelength_m: float, sellmeier=FUSED_SILICA) -> float:
    """Refractive index at ``wavelength_m`` (metres) from Sellmeier terms."""
    if not wavelength_m > 0:
        raise ValueError(f"wavelength must be positive, got {wavelength_m} m")
    lam2 = (wavelength_m * 1e6) ** 2
    return math.sqrt(1.0 + sum(b * lam2 / (lam2 - c) for b, c in sellmeier))


def thin_lens_focal_length_m(
    focal_length_m: float, wavelength_m: float, design_wavelength_m: float, sellmeier=FUSED_SILICA
) -> float:
    """Focal length (metres) at ``wavelength_m`` of a singlet that has ``focal_length_m`` at
    ``design_wavelength_m``: ``1/f`` scales with ``n - 1`` (lensmaker's equation)."""
    n = refractive_index(wavelength_m, sellmeier)
    n0 = refractive_index(design_wavelength_m, sellmeier)
    return focal_length_m * (n0 - 1.0) / (n - 1.0)
