"""Noll-indexed Zernike polynomials on numpy arrays or torch tensors.

References
----------
- R. J. Noll, "Zernike polynomials and atmospheric turbulence", JOSA 66(3), 1976.
- V. N. Mahajan, "Zernike circle polynomials and optical aberrations of systems with
  circular pupils", Appl. Opt. 33(34), 1994.

Conventions (the same as poppy, hcipy, prysm and aotools):

- Noll index ``j`` starts at 1 (piston).
- Normalisation: ``sqrt(n + 1)``, times ``sqrt(2)`` when ``m != 0``, so every term has
  unit RMS over the unit disk.
- ``m > 0`` (even ``j``) uses ``cos(m theta)``; ``m < 0`` (odd ``j``) uses ``sin(|m| theta)``.
- Values outside the unit disk (``rho > 1``) are exactly 0.

``rho`` is the radius normalised to the aperture radius (dimensionless) and ``theta`` the
polar angle in radians, counter-clockwise from +x. Polynomial values are dimensionless; a
wavefront is ``opd = sum_j beta_j Z_j`` in whatever length unit ``beta`` carries.
"""

from __future__ import annotations

from functools import cache
from math import factorial, sqrt

import numpy as np
import torch

__all__ = [
    "noll_to_nm",
    "nm_to_noll",
    "zern_name",
    "radial",
    "zernike",
    "pupil_polar_grid",
    "zernike_basis",
    "compose_opd",
    "decompose_opd",
]

_NAMES = {
    1: "Piston",
    2: "Tilt X",
    3: "Tilt Y",
    4: "Defocus",
    5: "Astigmatism 45",
    6: "Astigmatism 0",
    7: "Coma Y",
    8: "Coma X",
    9: "Trefoil Y",
    10: "Trefoil X",
    11: "Spherical",
    12: "2nd Astigmatism 0",
    13: "2nd Astigmatism 45",
    14: "Tetrafoil 0",
    15: "Tetrafoil 45",
}


def _check_index(j) -> int:
    if isinstance(j, bool) or not isinstance(j, (int, np.integer)):
        raise TypeError(f"Noll index must be an integer, got {j!r}")
    if j < 1:
        raise ValueError(f"Noll index must be >= 1, got {j}")
    return int(j)


@cache
def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order ``n`` and signed azimuthal frequency ``m`` of Noll index ``j`` (>= 1)."""
    j = _check_index(j)
    n = 0
    while (n + 1) * (n + 2) // 2 < j:
        n += 1
    k = j - n * (n + 1) // 2 - 1  # position within radial order n, 0..n
    m_abs = 2 * ((k + 1) // 2) if n % 2 == 0 else 2 * (k // 2) + 1
    if m_abs == 0:
        return n, 0
    return n, (m_abs if j % 2 == 0 else -m_abs)


def nm_to_noll(n: int, m: int) -> int:
    """Noll index of the term with radial order ``n`` and signed azimuthal frequency ``m``."""
    if n < 0 or abs(m) > n or (n - abs(m)) % 2:
        raise ValueError(f"no Zernike term with n={n}, m={m}")
    for j in range(n * (n + 1) // 2 + 1, (n + 1) * (n + 2) // 2 + 1):
        if noll_to_nm(j) == (n, m):
            return j
    raise AssertionError("unreachable")  # pragma: no cover


def zern_name(j: int) -> str:
    """Human-readable name of Noll term ``j`` (for logs and plots)."""
    n, m = noll_to_nm(j)
    return _NAMES.get(j, f"Z{j} (n={n}, m={m})")


@cache
def _radial_coefficients(n: int, m_abs: int) -> tuple[tuple[int, int], ...]:
    """(power, integer coefficient) pairs of the radial polynomial R_n^|m|."""
    terms = []
    for s in range((n - m_abs) // 2 + 1):
        c = (-1) ** s * factorial(n - s)
        c //= factorial(s) * factorial((n + m_abs) // 2 - s) * factorial((n - m_abs) // 2 - s)
        terms.append((n - 2 * s, c))
    return tuple(terms)


def radial(n: int, m: int, rho):
    """Radial polynomial ``R_n^|m|(rho)`` (un-normalised; no disk cut)."""
    out = 0.0 * rho
    for power, c in _radial_coefficients(n, abs(m)):
        out = out + c * rho**power
    return out


def zernike(j: int, rho, theta):
    """Noll-normalised Zernike term ``Z_j(rho, theta)``, zero for ``rho > 1``.

    Parameters
    ----------
    j : Noll index (>= 1).
    rho : radius normalised to the aperture radius; numpy array or torch tensor, any shape.
    theta : polar angle in **radians**, same shape and type as ``rho``.

    Returns an array of the same type, dtype and shape. Differentiable in torch.
    """
    n, m = noll_to_nm(j)
    is_torch = isinstance(rho, torch.Tensor)
    xp = torch if is_torch else np
    if not is_torch:
        rho = np.asarray(rho, dtype=float)
        theta = np.asarray(theta, dtype=float)
    value = radial(n, m, rho)
    if m == 0:
        value = value * sqrt(n + 1)
    elif m > 0:
        value = value * (sqrt(2 * (n + 1)) * xp.cos(m * theta))
    else:
        value = value * (sqrt(2 * (n + 1)) * xp.sin(-m * theta))
    return xp.where(rho <= 1, value, 0.0 * value)


def pupil_polar_grid(npix: int, *, dtype=torch.float64, device=None, xp=torch):
    """Pixel-centred polar grid over a square of ``npix`` samples whose inscribed circle is
    the unit disk.

    Sample ``i`` sits at ``x = (i - (npix - 1) / 2) * 2 / npix``, so the unit disk exactly
    fills the grid and no sample lies on the grid's symmetry axes for even ``npix``.
    Rows are y, columns are x. Returns ``(rho, theta)``, each ``(npix, npix)``.
    """
    if npix < 2:
        raise ValueError(f"npix must be >= 2, got {npix}")
    if xp is np:
        c = (np.arange(npix) - (npix - 1) / 2) * (2.0 / npix)
        y, x = np.meshgrid(c, c, indexing="ij")
        return np.hypot(x, y), np.arctan2(y, x)
    c = (torch.arange(npix, dtype=dtype, device=device) - (npix - 1) / 2) * (2.0 / npix)
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.hypot(x, y), torch.atan2(y, x)


def zernike_basis(indices, npix: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Stack of Zernike terms sampled on :func:`pupil_polar_grid`.

    ``indices`` is an int ``p`` (terms 1..p) or an iterable of Noll indices.
    Returns a ``(len(indices), npix, npix)`` tensor, zero outside the unit disk.
    """
    if isinstance(indices, (int, np.integer)):
        indices = range(1, int(indices) + 1)
    indices = [_check_index(j) for j in indices]
    rho, theta = pupil_polar_grid(npix, dtype=torch.float64, device=device)
    basis = torch.stack([zernike(j, rho, theta) for j in indices])
    return basis.to(dtype)


def compose_opd(coefficients, basis):
    """OPD map ``sum_j c_j basis_j``; ``coefficients (..., p)``, ``basis (p, H, W)`` ->
    ``(..., H, W)`` in the unit of the coefficients."""
    return torch.tensordot(coefficients, basis, dims=([-1], [0]))


def decompose_opd(opd, basis, mask=None):
    """Least-squares Zernike coefficients of an OPD map: the inverse of :func:`compose_opd`.

    ``opd (H, W)``, ``basis (p, H, W)``; ``mask (H, W)`` selects the samples to fit (default:
    where any basis term is non-zero). Solves on the sampled grid, so it inverts
    :func:`compose_opd` exactly even where the discrete basis is not orthogonal.
    """
    if mask is None:
        mask = (basis != 0).any(dim=0)
    a = basis[:, mask].T
    b = opd[mask].unsqueeze(-1)
    return torch.linalg.lstsq(a, b).solution.squeeze(-1)
