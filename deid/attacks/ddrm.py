"""DDRM (denoising diffusion restoration models) with a circulant, FFT-diagonalised blur.

The attacker sees ``y = H x + n``, ``n ~ N(0, sigma_0^2 I)``, where ``H`` convolves each colour
channel with its own PSF, and samples ``x`` from an approximate posterior ``p(x | y)`` whose
prior is a diffusion model's noise prediction ``eps = model(x_t, t)``.

References
----------
- B. Kawar, M. Elad, S. Ermon, J. Song, "Denoising Diffusion Restoration Models", NeurIPS 2022
  (arXiv:2201.11793), Sec. 3-4 and Appendix; the three per-component update rules below are
  their Eq. (7)-(8) as run by ``efficient_generalized_steps`` of the public code.
- J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020
  (linear beta schedule 1e-4..0.02, T = 1000).
- R. M. Gray, "Toeplitz and circulant matrices: a review", Found. Trends Commun. Inf. Theory
  2(3), 2006 (circulant matrices are diagonalised by the DFT).
- N. Wiener, *Extrapolation, Interpolation, and Smoothing of Stationary Time Series*, 1949
  (the posterior mean of a stationary Gaussian under a circulant blur).

The operator and its SVD
------------------------
On an ``N x M`` periodic grid, ``H = F^* diag(OTF) F`` with ``F`` the unitary 2-D DFT
(``torch.fft.fft2(..., norm="ortho")``) and ``OTF = fft2(psf wrapped to the grid, centre at
(0, 0))`` (unnormalised, so ``OTF[0, 0] = sum(psf) = 1``). Writing ``OTF = |OTF| * phase``:

    H = U S V^T,   V^T = F,   S = diag(|OTF|),   U^T = diag(conj(phase)) F,

per channel and frequency. The phase goes into ``U``; ``V`` is the plain DFT. Nothing here
builds a dense ``U`` or ``V``: ``Vt``/``V`` are FFTs and ``Ut``/``U`` FFTs times the phase.

Complex coefficients. A real image has a Hermitian spectrum, ``X[-k] = conj(X[k])``. The pair
``(k, -k)`` carries two real degrees of freedom, ``sqrt(2) Re X[k]`` and ``sqrt(2) Im X[k]``
(the coefficients on the real, orthonormal cosine and sine basis images), and the
self-conjugate frequencies (DC, Nyquist rows/columns) carry one, ``X[k]`` itself (real). Both
share the singular value ``|OTF[k]|`` because ``|OTF[-k]| = |OTF[k]|`` for a real PSF. So the
complex DFT is a real orthogonal ``V`` in disguise, and every DDRM update -- a real, per-
component affine map whose coefficients depend only on ``s`` -- acts on ``Re`` and ``Im``
alike and keeps spectra Hermitian; ``V`` of them is real (the ``.real`` only drops rounding).

White noise. For real pixel noise ``z ~ N(0, I)``, ``Z = F z`` has ``E|Z[k]|^2 = 1``, with
``Z[k]`` real ``N(0, 1)`` at self-conjugate frequencies and ``Re``, ``Im`` independent
``N(0, 1/2)`` otherwise, tied by ``Z[-k] = conj(Z[k])``: exactly unit white noise on the real
coordinates above. The sampler therefore draws every injected noise in *pixel space* and
transforms it (:meth:`CirculantBlur.Vt`), never ``randn`` on complex coefficients directly.
``U^T n`` of white ``n`` is white too (an all-pass filter of white noise).

Boundaries
----------
The PSF's support is ``K x K``; a sensor image is a crop of a convolution with a scene larger
than the frame, not a circular one. :func:`ddrm` pads ``y`` by ``pad_px`` (default ``K // 2``)
pixels per side with ``pad_mode`` (``"replicate"``, ``"reflect"`` or ``"circular"``), treats
the padded image as a circulant observation on the padded grid, and crops the result back.
The padded border is only a guess, so it costs some accuracy near the edges; with
``pad_px=0`` the model is exactly circulant (``optics.imaging.convolve(..., "circular")``).
The noise-prediction model sees the *padded* grid (a :class:`GaussianPrior` must be fitted
at that size; a UNet needs it to be its resolution).

Data scaling
------------
Interface values (``y``, ``x_hat``, ``sigma_0``) are in [0, 1] units; the diffusion model
works in [-1, 1]: ``x' = 2 x - 1``. Because each PSF sums to 1, ``H 1 = 1`` and
``y' = 2 y - 1 = H x' + 2 n``: the noise level is doubled, ``sigma_0' = 2 sigma_0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from optics.imaging import _wrap_kernel

__all__ = [
    "PAD_MODES",
    "linear_betas",
    "alphas_cumprod",
    "otf",
    "CirculantBlur",
    "ddrm_spectral",
    "ddrm",
    "GaussianPrior",
]

PAD_MODES = ("replicate", "reflect", "circular")
S_MIN = 1e-3  # singular values below this are treated as 0 (as ZERO in DDRM's GeneralH)
_SIGMA_FLOOR = 1e-30  # guards 1 / sigma_0 in branches that sigma_0 = 0 never selects


# --------------------------------------------------------------------------------------------
# Diffusion schedule
# --------------------------------------------------------------------------------------------


def linear_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """DDPM's linear noise schedule ``beta_t``, ``t = 0 .. T-1`` (Ho et al. 2020)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=dtype, device=device)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """``abar_t = prod_{s <= t} (1 - beta_s)``, so ``x_t = sqrt(abar_t) x_0 +
    sqrt(1 - abar_t) eps``; step ``t = -1`` (clean data) has ``abar = 1`` by convention."""
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


# --------------------------------------------------------------------------------------------
# The circulant operator and its spectral SVD
# --------------------------------------------------------------------------------------------


def otf(psf: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Optical transfer function of ``psf`` on a periodic ``height x width`` grid.

    Args:
        psf: ``(C, K, K)`` or ``(B, C, K, K)``, optical axis at pixel ``K // 2`` (entries that
            wrap onto the same cell of a grid smaller than ``K`` are summed).

    Returns:
        Complex ``(1 or B, C, height, width)``: ``fft2`` (unnormalised) of the PSF re-centred
        at pixel (0, 0), so ``ifft2(otf * fft2(x))`` is ``convolve(x, psf, "circular")``.
    """
    if psf.ndim == 3:
        psf = psf.unsqueeze(0)
    if psf.ndim != 4:
        raise ValueError(f"psf must be (C, K, K) or (B, C, K, K), got {tuple(psf.shape)}")
    return torch.fft.fft2(_wrap_kernel(psf, height, width))


class CirculantBlur:
    """``H = U S V^T`` of a per-channel circular convolution, all factors applied by FFTs.

    Method names follow DDRM's ``H_functions`` (``V``, ``Vt``, ``U``, ``Ut``, ``singulars``,
    ``H``, ``Ht``, ``H_pinv``), but vectors stay images ``(B, C, N, M)`` (pixel side) or their
    complex Hermitian spectra of the same shape (spectral side); see the module docstring.

    Args:
        psf: ``(C, K, K)`` or ``(B, C, K, K)`` PSF(s), axis at ``K // 2``.
        height, width: size ``N x M`` of the periodic grid.
    """

    def __init__(self, psf: torch.Tensor, height: int, width: int) -> None:
        self.shape = (height, width)
        self.otf = otf(psf, height, width)
        self.s = self.otf.abs()  # singular values, real, (1|B, C, N, M)
        mag = torch.where(self.s > 0, self.s, torch.ones_like(self.s))
        self.phase = torch.where(self.s > 0, self.otf / mag, torch.ones_like(self.otf))

    def singulars(self) -> torch.Tensor:
        """``|OTF|`` per (batch,) channel and frequency (no ordering, no zero padding)."""
        return self.s

    def Vt(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 (DDRM's names)
        """Pixel image -> spectral coefficients: the unitary DFT ``F x``."""
        return torch.fft.fft2(x, norm="ortho")

    def V(self, z: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Hermitian spectrum -> real pixel image: ``F^* z`` (imaginary rounding dropped)."""
        return torch.fft.ifft2(z, norm="ortho").real

    def Ut(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Observation -> its coefficients on ``U``: ``conj(phase) F y``."""
        return self.phase.conj() * torch.fft.fft2(y, norm="ortho")

    def U(self, z: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Inverse of :meth:`Ut`: ``F^* (phase z)``, real."""
        return torch.fft.ifft2(self.phase * z, norm="ortho").real

    def H(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """``U S V^T x``, i.e. the circular convolution of ``x`` with the PSF."""
        return self.U(self.s * self.Vt(x))

    def Ht(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """``V S U^T y``, the adjoint (correlation with the PSF)."""
        return self.V(self.s * self.Ut(y))

    def H_pinv(self, y: torch.Tensor, s_min: float = S_MIN) -> torch.Tensor:  # noqa: N802
        """``V S^+ U^T y`` with ``1 / s`` where ``s > s_min`` and 0 elsewhere."""
        kept = self.s > s_min
        inv = torch.where(kept, 1.0 / torch.where(kept, self.s, torch.ones_like(self.s)),
                          torch.zeros_like(self.s))
        return self.V(inv * self.Ut(y))


# --------------------------------------------------------------------------------------------
# The DDRM sampler, entirely in the spectral domain
# --------------------------------------------------------------------------------------------


def _call_model(model: Callable, x_t: torch.Tensor, t: int) -> torch.Tensor:
    """``model(x_t, t)`` with ``t`` a float ``(B,)`` tensor (as DDRM passes it); an
    ``nn.Module`` gets its own parameter dtype and the result comes back in ``x_t``'s."""
    dtype = x_t.dtype
    if isinstance(model, torch.nn.Module):
        p = next(iter(model.parameters()), None)
        if p is not None and p.is_floating_point():
            dtype = p.dtype
    tt = torch.full((x_t.shape[0],), float(t), device=x_t.device, dtype=torch.float32)
    eps = model(x_t.to(dtype), tt)
    if eps.shape[1] == 2 * x_t.shape[1]:  # learned-variance models stack (eps, var)
        eps = eps[:, : x_t.shape[1]]
    return eps.to(x_t.dtype)


def ddrm_spectral(y: torch.Tensor, op: CirculantBlur, model: Callable, sigma_0: float, *,
                  steps: int = 20, eta: float = 0.85, eta_b: float = 1.0,
                  generator: torch.Generator | None = None, s_min: float = S_MIN,
                  betas: torch.Tensor | None = None, noise_scale: float = 1.0) -> torch.Tensor:
    """DDRM posterior sample in model space (data in [-1, 1]); Kawar et al. 2022, Eq. (7)-(8).

    Works on ``xbar_t = x_t / sqrt(abar_t)`` (noise level ``sigma_t = sqrt(1 - abar_t) /
    sqrt(abar_t)``) component by component in the spectral domain, with ``ybar = U^T y / s``.
    Each step predicts ``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` and, with
    ``X0 = V^T x0``, ``E = V^T eps``, ``Z = V^T z`` (``z`` white pixel noise), sets::

        s <= s_min (missing):          X0 + sqrt(1 - eta^2) sigma_next E + eta sigma_next Z
        s sigma_next < sigma_0:        X0 + sqrt(1 - eta^2) sigma_next (U^T y - s X0) / sigma_0
                                          + eta sigma_next Z
        s sigma_next >= sigma_0:       eta_b ybar + (1 - eta_b) X0
                                          + sqrt(sigma_next^2 - eta_b^2 sigma_0^2 / s^2) Z

    then ``x_next = sqrt(abar_next) V(xbar_next)``. The schedule is ``t in range(0, T, T //
    steps)`` run backwards, the last step going to ``abar = 1`` (``sigma_next = 0``), so the
    result is the last ``x0`` prediction in every component (``ybar`` itself on the kept
    components when ``sigma_0 = 0``, a noiseless observation). Initialisation is
    ``p(xbar_T | y)``: ``ybar + sqrt(sigma_T^2 - sigma_0^2 / s^2) Z`` where
    ``s sigma_T > sigma_0``, else ``sigma_T Z``.

    One deliberate difference from the public code: there ``x_T = V(xbar_T) / sigma_T``;
    here ``x_T = sqrt(abar_T) V(xbar_T)`` (the definition of ``xbar``; the two differ by the
    factor ``sqrt(1 - abar_T)``, 1 - 2e-5 at ``t = 950``).

    Args:
        y: ``(B, C, N, M)`` observation in model units (``2 y - 1``).
        op: the circulant operator on the ``N x M`` grid.
        model: ``model(x_t, t) -> eps``, ``t`` a float ``(B,)`` tensor of step indices.
        sigma_0: noise std of ``y`` in model units (twice the [0, 1] value).
        steps: number of denoising steps (model calls).
        eta, eta_b: DDRM's ``eta`` (= ``etaA`` = ``etaC`` of the public code) and ``etaB``.
        generator: random source (``None``: torch's global one).
        s_min: singular values at or below it take the "missing" update.
        betas: ``(T,)`` schedule; default :func:`linear_betas`.
        noise_scale: factor on every injected noise (1: a posterior sample). With an affine
            prior the result is affine in the noises, so ``1 / sqrt(k)`` gives, in law, the
            mean of ``k`` independent samples (:func:`ddrm`'s ``samples``).

    Returns:
        ``(B, C, N, M)`` sample ``x_0`` in model units, not clipped.
    """
    if sigma_0 < 0:
        raise ValueError(f"sigma_0 must be >= 0, got {sigma_0}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    betas = linear_betas(device=y.device) if betas is None else betas
    n_t = betas.numel()
    if not 1 <= steps <= n_t:
        raise ValueError(f"steps must be in [1, {n_t}], got {steps}")
    abar = alphas_cumprod(betas).tolist()
    seq = list(range(0, n_t, n_t // steps))
    seq_next = [-1] + seq[:-1]

    def ab(t: int) -> float:
        return 1.0 if t < 0 else abar[t]

    def sig(t: int) -> float:
        return math.sqrt(1.0 - ab(t)) / math.sqrt(ab(t))

    def white() -> torch.Tensor:  # real white N(0, I) in pixel space, as coefficients
        z = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        return op.Vt(z if noise_scale == 1.0 else z.mul_(noise_scale))

    s = op.singulars().to(y.dtype)
    kept = s > s_min
    s_safe = torch.where(kept, s, torch.ones_like(s))
    uty = op.Ut(y)
    ybar = torch.where(kept, uty / s_safe, torch.zeros_like(uty))
    noise_var_ybar = (sigma_0 / s_safe) ** 2  # variance of ybar's noise (kept components)
    sig0_safe = max(sigma_0, _SIGMA_FLOOR)

    t_last = seq[-1]
    sig_t = sig(t_last)
    informed = kept & (s * sig_t > sigma_0)
    var0 = torch.where(informed, sig_t**2 - noise_var_ybar, torch.full_like(s, sig_t**2))
    xbar = torch.where(informed, ybar, torch.zeros_like(ybar)) + var0.clamp_min(0).sqrt() * white()
    c_eta = math.sqrt(1.0 - eta**2)
    affine = getattr(model, "eps_affine", None)
    if affine is not None:  # a prior whose eps is affine and diagonal in V: see below
        if hasattr(model, "_check"):
            model._check(xbar)  # the prior's grid must be the padded grid
        return op.V(_spectral_affine_steps(
            xbar * math.sqrt(ab(t_last)), affine, list(zip(reversed(seq), reversed(seq_next),
                                                            strict=True)),
            ab, sig, white, s, kept, s_safe, uty, noise_var_ybar, sigma_0, sig0_safe, eta,
            eta_b, c_eta))
    x_t = math.sqrt(ab(t_last)) * op.V(xbar)

    for t, t_next in zip(reversed(seq), reversed(seq_next), strict=True):
        a = ab(t)
        eps = _call_model(model, x_t, t)
        x0 = (x_t - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
        sn = sig(t_next)
        x0_s, eps_s, z = op.Vt(x0), op.Vt(eps), white()
        missing = x0_s + c_eta * sn * eps_s + eta * sn * z
        after = x0_s + c_eta * sn * (uty - s * x0_s) / sig0_safe + eta * sn * z
        before_std = (sn**2 - eta_b**2 * noise_var_ybar).clamp_min(0).sqrt()
        before = eta_b * ybar + (1.0 - eta_b) * x0_s + before_std * z
        is_before = kept & (s * sn >= sigma_0)
        is_after = kept & ~is_before
        xbar = torch.where(is_before, before, torch.where(is_after, after, missing))
        x_t = math.sqrt(ab(t_next)) * op.V(xbar)
    return x_t


def _spectral_affine_steps(x_s, affine, steps, ab, sig, white, s, kept, s_safe, uty,
                           noise_var_ybar, sigma_0, sig0_safe, eta, eta_b, c_eta):
    """:func:`ddrm_spectral`'s loop for a model whose noise prediction is affine and diagonal
    in the spectral basis, ``V^T eps = e1 X + e0`` (``X = V^T x_t``; a stationary Gaussian
    prior, :meth:`GaussianPrior.eps_affine`). Then ``X0 = k1 X + k0`` and each of the three
    update rules is affine in ``(X, U^T y, Z)``, so a step is
    ``X' = sqrt(abar') (cX X + cU U^T y + cZ Z + c0)`` with per-component coefficients
    (``(C, N, M)``, not per image): the same updates, in about a fifth of the operations and
    one FFT (the fresh noise) per step instead of six. Returns the final spectrum."""
    real = s.dtype
    for t, t_next in steps:
        a, sn = ab(t), sig(t_next)
        e1, e0 = affine(t)
        e1, e0 = e1.to(s.device, real), e0.to(s.device, x_s.dtype)
        k1 = (1.0 - math.sqrt(1.0 - a) * e1) / math.sqrt(a)
        k0 = -math.sqrt(1.0 - a) / math.sqrt(a) * e0
        is_before = kept & (s * sn >= sigma_0)
        is_after = kept & ~is_before
        q = c_eta * sn / sig0_safe
        before_std = (sn**2 - eta_b**2 * noise_var_ybar).clamp_min(0).sqrt()
        c_x = torch.where(is_before, (1.0 - eta_b) * k1,
                          torch.where(is_after, (1.0 - q * s) * k1, k1 + c_eta * sn * e1))
        c_0 = torch.where(is_before, (1.0 - eta_b) * k0,
                          torch.where(is_after, (1.0 - q * s) * k0, k0 + c_eta * sn * e0))
        c_u = torch.where(is_before, eta_b / s_safe,
                          torch.where(is_after, torch.full_like(s, q), torch.zeros_like(s)))
        c_z = torch.where(is_before, before_std, torch.full_like(s, eta * sn))
        x_s = (c_x * x_s).add_(c_u * uty).add_(c_z * white()).add_(c_0)
        x_s.mul_(math.sqrt(ab(t_next)))
    return x_s


def ddrm(y: torch.Tensor, psf: torch.Tensor, model: Callable, sigma_0: float,
         steps: int = 20, eta: float = 0.85, eta_b: float = 1.0, seed: int | None = None, *,
         pad_px: int | None = None, pad_mode: str = "replicate", s_min: float = S_MIN,
         betas: torch.Tensor | None = None, clip: bool = True,
         samples: int = 1) -> torch.Tensor:
    """DDRM attack: a posterior sample of the scene given the privacy image (package interface),
    or the mean of ``samples`` of them (an estimate of the posterior mean ``E[x | y]``).

    Args:
        y: ``(B, C, H, W)`` sensor image in [0, 1].
        psf: ``(C, K, K)`` or ``(B, C, K, K)`` PSF, each channel summing to 1, axis at ``K//2``.
        model: noise predictor ``model(x_t, t) -> eps`` on the padded grid, data in [-1, 1]
            (a :class:`GaussianPrior`, a :class:`deid.attacks.ddpm_unet.DDPMUNet`, ...).
        sigma_0: std of the sensor noise in [0, 1] units (doubled internally).
        steps, eta, eta_b: DDRM settings (defaults of the paper: 20, 0.85, 1).
        seed: seeds the sampler's own generator (``None``: torch's global generator).
        pad_px: pixels padded on each side before the circulant model (default ``K // 2``;
            0 treats ``y`` as exactly circulant).
        pad_mode: ``"replicate"``, ``"reflect"`` or ``"circular"``.
        s_min: singular values (``|OTF|``) at or below it count as zero.
        betas: diffusion schedule (default linear 1e-4..0.02, T = 1000).
        clip: clip the result to [0, 1] (the interface); ``False`` returns the raw sample.
        samples: posterior samples averaged (before the clip). With an affine prior (a
            :class:`GaussianPrior`) the sampler is affine in its noises, so one run with every
            injected noise scaled by ``1 / sqrt(samples)`` *is*, in law, the mean of
            ``samples`` independent runs: it costs one run. Other models run ``samples``
            times, one after the other from the one seeded generator.

    Returns:
        ``(B, C, H, W)`` estimate in [0, 1] (if ``clip``), same device and dtype as ``y``.
    """
    if y.ndim != 4:
        raise ValueError(f"y must be (B, C, H, W), got {tuple(y.shape)}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    out_dtype = y.dtype
    work = y.dtype if y.dtype in (torch.float32, torch.float64) else torch.float32
    psf = psf.to(device=y.device, dtype=work)
    p = psf.shape[-1] // 2 if pad_px is None else int(pad_px)
    if p < 0:
        raise ValueError(f"pad_px must be >= 0, got {pad_px}")
    y_pm = 2.0 * y.to(work) - 1.0
    if p > 0:
        y_pm = F.pad(y_pm, (p, p, p, p), mode=pad_mode)
    op = CirculantBlur(psf, *y_pm.shape[-2:])
    gen = None
    if seed is not None:
        gen = torch.Generator(device=y.device)
        gen.manual_seed(int(seed))
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    folded = getattr(model, "eps_affine", None) is not None
    runs = 1 if folded else samples
    with torch.no_grad():
        x = 0.0
        for _ in range(runs):
            x = x + ddrm_spectral(y_pm, op, model, 2.0 * float(sigma_0), steps=steps, eta=eta,
                                  eta_b=eta_b, generator=gen, s_min=s_min, betas=betas,
                                  noise_scale=1.0 / math.sqrt(samples) if folded else 1.0)
        x = x / runs if runs > 1 else x
    if p > 0:
        x = x[..., p:-p, p:-p]
    x = (x + 1.0) / 2.0
    if clip:
        x = x.clamp(0.0, 1.0)
    return x.to(out_dtype)


# --------------------------------------------------------------------------------------------
# A stationary Gaussian prior with an exact noise prediction
# --------------------------------------------------------------------------------------------


class GaussianPrior(torch.nn.Module):
    """``x ~ N(mu, Sigma)`` in model units ([-1, 1]) with ``Sigma = F^* diag(P) F`` per channel.

    ``P[c, k] = E|(F (x - mu))[c, k]|^2`` is a per-channel power spectrum on an ``N x M``
    grid (unitary DFT, so white unit noise has ``P = 1``); ``mu`` is a full mean image. With
    ``x_t = a x_0 + b eps`` (``a = sqrt(abar_t)``, ``b = sqrt(1 - abar_t)``) the exact MMSE
    noise prediction is linear in ``x_t``, per frequency::

        E[eps | x_t]^(k) = b (X_t[k] - a Mu[k]) / (a^2 P[k] + b^2),

    (``X_t = F x_t``, ``Mu = F mu``), i.e. ``eps = b (a^2 Sigma + b^2 I)^{-1} (x_t - a mu)``.
    It is both the optimal DDPM noise predictor for this prior and a usable face prior when
    fitted on face crops (:meth:`fit`).

    Args:
        mean: ``(C, N, M)`` mean image in model units.
        power: ``(C, N, M)`` power spectrum ``P`` (> 0), Hermitian-symmetric.
        betas: ``(T,)`` diffusion schedule (default :func:`linear_betas`).
    """

    def __init__(self, mean: torch.Tensor, power: torch.Tensor,
                 betas: torch.Tensor | None = None) -> None:
        super().__init__()
        if mean.ndim != 3 or mean.shape != power.shape:
            raise ValueError(f"mean and power must both be (C, N, M), got {tuple(mean.shape)}, "
                             f"{tuple(power.shape)}")
        if not bool((power > 0).all()):
            raise ValueError("power must be > 0 everywhere")
        betas = linear_betas() if betas is None else betas
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("power", power.detach().clone())
        self.register_buffer("abar", alphas_cumprod(betas).to(mean.device))

    @classmethod
    def fit(cls, images: torch.Tensor, min_power: float = 1e-6,
            betas: torch.Tensor | None = None) -> GaussianPrior:
        """Mean image and per-channel power spectrum of ``images (B, C, N, M)`` in [0, 1].

        ``P = mean_b |F(x_b - mu)|^2`` (the diagonal of the sample covariance in the DFT basis,
        i.e. its stationary part), floored at ``min_power`` (model units squared).
        """
        if images.ndim != 4 or images.shape[0] < 2:
            raise ValueError(f"images must be (B >= 2, C, N, M), got {tuple(images.shape)}")
        x = 2.0 * images.to(torch.float64) - 1.0
        mu = x.mean(dim=0)
        power = torch.fft.fft2(x - mu, norm="ortho").abs().square().mean(dim=0)
        return cls(mu, power.clamp_min(min_power), betas=betas)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.mean.shape)

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-3:]) != self.image_shape:
            raise ValueError(f"the prior is on {self.image_shape} (C, N, M) images; got "
                             f"{tuple(x.shape[-3:])} (fit it at the padded size ddrm uses)")

    def _abar(self, t, batch: int, device) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.abar.device).round().long().reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        return self.abar[t].to(device).view(-1, 1, 1, 1)

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """Exact ``E[eps | x_t]`` at step(s) ``t`` (int or ``(B,)``), ``x_t (B, C, N, M)``."""
        self._check(x_t)
        abar = self._abar(t, x_t.shape[0], x_t.device)
        a, b = abar.sqrt(), (1.0 - abar).sqrt()
        p, mu = self.power.to(x_t.device), self.mean.to(x_t.device)
        xs = torch.fft.fft2(x_t.to(torch.float64) - a * mu, norm="ortho")
        e = torch.fft.ifft2(b * xs / (a**2 * p + b**2), norm="ortho").real
        return e.to(x_t.dtype)

    def eps_affine(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(e1, e0)`` with ``F E[eps | x_t] = e1 * F x_t + e0`` at step ``t`` (an int):
        ``e1 = b / (a^2 P + b^2)`` real and ``e0 = -a e1 Mu`` complex, both ``(C, N, M)``,
        float64 / complex128 (the DDRM sampler's spectral path, :func:`ddrm_spectral`)."""
        abar = self.abar[int(round(float(t)))].to(torch.float64)
        a, b = abar.sqrt(), (1.0 - abar).sqrt()
        e1 = b / (abar * self.power + b * b)
        return e1, -a * e1 * torch.fft.fft2(self.mean, norm="ortho")

    def eps_spectral(self, x_s: torch.Tensor, t: int) -> torch.Tensor:
        """:meth:`eps` in the unitary DFT basis, ``F E[eps | x_t]`` from ``x_s = F x_t``
        (complex ``(B, C, N, M)``), by :meth:`eps_affine`."""
        self._check(x_s)
        e1, e0 = self.eps_affine(t)
        return (e1.to(x_s.device) * x_s.to(torch.complex128) + e0.to(x_s.device)).to(x_s.dtype)

    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        return self.eps(x_t, t)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws from the prior, ``(n, C, N, M)`` in [0, 1] units (not clipped)."""
        z = torch.randn((n, *self.image_shape), generator=generator, dtype=torch.float64,
                        device=self.mean.device)
        x = self.mean + torch.fft.ifft2(self.power.sqrt() * torch.fft.fft2(z, norm="ortho"),
                                        norm="ortho").real
        return (x + 1.0) / 2.0

    def posterior(self, y: torch.Tensor, psf: torch.Tensor,
                  sigma_0: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact Gaussian posterior of ``x`` given ``y = H x + n`` (``H`` circulant on the
        prior's grid, no padding), in [0, 1] units.

        Per frequency, with ``O = OTF``, model units ``Y' = F(2 y - 1)``, ``s' = 2 sigma_0``::

            E[X | y] = Mu + P conj(O) (Y' - O Mu) / (|O|^2 P + s'^2)     (Wiener filter)
            Var[X | y] = P s'^2 / (|O|^2 P + s'^2)

        Returns:
            ``(mean (B, C, N, M) image in [0, 1], not clipped; variance (1|B, C, N, M) of
            each unitary-DFT coefficient, E|X[k] - E[X[k] | y]|^2, in [0, 1] units squared)``.
        """
        self._check(y)
        h = otf(psf.to(device=y.device, dtype=torch.float64), *y.shape[-2:])
        p, mu = self.power.to(y.device), self.mean.to(y.device)
        mu_s = torch.fft.fft2(mu, norm="ortho")
        ys = torch.fft.fft2(2.0 * y.to(torch.float64) - 1.0, norm="ortho")
        noise_var = (2.0 * float(sigma_0)) ** 2
        denom = h.abs().square() * p + noise_var
        post = mu_s + p * h.conj() * (ys - h * mu_s) / denom
        x = torch.fft.ifft2(post, norm="ortho").real
        var = p * noise_var / denom
        return ((x + 1.0) / 2.0).to(y.dtype), var / 4.0

    def posterior_mean(self, y: torch.Tensor, psf: torch.Tensor, sigma_0: float) -> torch.Tensor:
        """Exact ``E[x | y]`` (a Wiener filter with the prior's spectrum), [0, 1] units; see
        :meth:`posterior`."""
        return self.posterior(y, psf, sigma_0)[0]
