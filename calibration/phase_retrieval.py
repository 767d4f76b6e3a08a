"""Zernike phase retrieval from measured PSFs with the differentiable optics simulator.

Model fitting (Gonsalves' phase diversity; Paxman, Schulz and Fienup, JOSA A 9, 1992): find
the Noll coefficients ``c`` (micrometres of OPD) whose simulated PSFs, at the known defocus
offsets ``d_i`` of each diversity plane, match the measured ones in least squares:

    min_c  sum_i min_{s_i, b_i} || s_i H(c + d_i e_4) + b_i - M_i ||^2 / sum_i || M_i - <M_i> ||^2

The per-plane gain ``s_i`` and offset ``b_i`` are solved in closed form inside the loss, so
the exposure and any residual background level (a hundredth of a count per pixel already
moves the sum of a 64 x 64 crop by as much as a sharp PSF's signal) do not bias the fit.

A single in-focus PSF cannot tell the sign of the even modes (defocus, astigmatism,
spherical, tetrafoil: ``H(W) = H(-W)`` for a point-symmetric ``W``); a defocused plane breaks
that symmetry, which is why the bench moves the pinhole with the stage. Tip and tilt are
fitted as nuisance terms (the crop is centred on the centroid, not the axis). The fit runs in
float64 with L-BFGS from one or more starts and keeps the best.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from optics.camera import Camera, CameraConfig

__all__ = ["PhaseRetrievalConfig", "FitResult", "PSFFitter"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PhaseRetrievalConfig:
    n_modes: int = 15  # fit Noll 2..n_modes (tip/tilt as nuisance)
    wavelength_index: int = 1  # colour channel fitted (green)
    pupil_samples: int = 128  # the fitting model's pupil grid
    max_iter: int = 60  # L-BFGS iterations per start
    tolerance: float = 1e-10


@dataclasses.dataclass
class FitResult:
    coefficients_um: np.ndarray  # (n_modes,) Noll 1..n, um OPD (piston 0)
    loss: float  # relative squared error
    correlation: float  # mean Pearson correlation of model and measured PSFs
    starts: int

    def as_dict(self) -> dict[int, float]:
        return {j + 1: float(v) for j, v in enumerate(self.coefficients_um)}


def _affine_residual(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``sum_i min_{s,b} || s h_i + b - m_i ||^2`` over planes (D, K, K), closed form."""
    hc = h - h.mean(dim=(-2, -1), keepdim=True)
    mc = m - m.mean(dim=(-2, -1), keepdim=True)
    hh = (hc * hc).sum(dim=(-2, -1))
    hm = (hc * mc).sum(dim=(-2, -1))
    mm = (mc * mc).sum(dim=(-2, -1))
    return (mm - hm**2 / hh.clamp_min(1e-30)).sum()


class PSFFitter:
    """Fits PSF stacks of one camera channel. ``camera_config`` is the bench's optics (its
    PSF window size must equal the measured crop size)."""

    def __init__(self, camera_config: CameraConfig, config: PhaseRetrievalConfig | None = None):
        self.config = cfg = config or PhaseRetrievalConfig()
        lam = camera_config.wavelengths_m[cfg.wavelength_index]
        focal = camera_config.focal_lengths_m[cfg.wavelength_index]
        cam_cfg = camera_config.replace(
            wavelengths_m=(lam,), focal_length_m=focal, chromatic=False,
            n_modes=cfg.n_modes, trainable_modes=tuple(range(2, cfg.n_modes + 1)),
            freeze_piston_tip_tilt=False, pupil_samples=cfg.pupil_samples)
        self.camera = Camera(cam_cfg).double()
        self.size = cam_cfg.psf_size_px

    def model(self, coefficients_um, diversity_um) -> torch.Tensor:
        """(D, K, K) model PSFs for coefficients (n_modes,) and Z4 offsets (D,)."""
        c = torch.as_tensor(coefficients_um, dtype=torch.float64)
        d = torch.as_tensor(np.asarray(diversity_um, dtype=float))
        batch = c.expand(len(d), -1).clone()
        batch[:, 3] = batch[:, 3] + d
        return self.camera.psf_of(batch)[:, 0]

    def scan_start(self, measured, diversity_um, base_um, noll: int,
                   values_um=None) -> np.ndarray:
        """Best start along one mode: ``base_um`` with Noll ``noll`` set to each of
        ``values_um`` (forward model only). Large single-mode aberrations (a poked mirror
        mode) lie far outside L-BFGS's basin from zero; a 1-D scan puts the fit inside it."""
        m = np.asarray(measured, dtype=float).reshape(-1, self.size, self.size)
        if values_um is None:
            values_um = np.linspace(-1.5, 1.5, 31)
        best = None
        for v in values_um:
            s = np.array(base_um, dtype=float)[: self.config.n_modes].copy()
            s[noll - 1] = v
            with torch.no_grad():
                loss = float(_affine_residual(self.model(s, diversity_um), torch.from_numpy(m)))
            if best is None or loss < best[0]:
                best = (loss, s)
        return best[1]

    def fit(self, measured, diversity_um=(0.0,), starts=None) -> FitResult:
        """Fit a stack ``measured (D, K, K)`` (each normalised to sum 1) taken at Z4 offsets
        ``diversity_um (D,)``. ``starts``: list of initial coefficient vectors (default zero)."""
        m = torch.as_tensor(np.asarray(measured, dtype=float))
        if m.ndim == 2:
            m = m[None]
        if m.shape[-1] != self.size or m.shape[-2] != self.size:
            raise ValueError(f"measured PSFs are {tuple(m.shape[-2:])}, the model window is "
                             f"{self.size}x{self.size}")
        if len(diversity_um) != m.shape[0]:
            raise ValueError(f"{m.shape[0]} PSFs but {len(diversity_um)} diversity offsets")
        n = self.config.n_modes
        starts = [np.zeros(n)] if starts is None else [np.asarray(s, float)[:n] for s in starts]
        norm = float(((m - m.mean(dim=(-2, -1), keepdim=True)) ** 2).sum())
        best = None
        for s0 in starts:
            p = torch.tensor(np.asarray(s0)[1:], dtype=torch.float64, requires_grad=True)
            opt = torch.optim.LBFGS([p], lr=1.0, max_iter=self.config.max_iter,
                                    tolerance_change=self.config.tolerance,
                                    line_search_fn="strong_wolfe")

            def closure(opt=opt, p=p):
                opt.zero_grad()
                c = torch.cat([p.new_zeros(1), p])
                loss = _affine_residual(self.model(c, diversity_um), m) / norm
                loss.backward()
                return loss

            opt.step(closure)
            with torch.no_grad():
                c = torch.cat([p.new_zeros(1), p])
                loss = float(_affine_residual(self.model(c, diversity_um), m) / norm)
            if best is None or loss < best[0]:
                best = (loss, c.detach().numpy().copy())
        loss, c = best
        with torch.no_grad():
            h = self.model(c, diversity_um).numpy()
        corr = float(np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1]
                              for a, b in zip(h, m.numpy(), strict=True)]))
        log.debug("phase retrieval: loss %.3g, correlation %.4f", loss, corr)
        return FitResult(c, loss, corr, len(starts))
