"""Total-variation attacks: TV deconvolution by ADMM, and Chambolle's TV denoiser.

References
----------
- L. Rudin, S. Osher, E. Fatemi, "Nonlinear total variation based noise removal
  algorithms", Physica D 60, 1992 (the ROF model).
- A. Chambolle, "An algorithm for total variation minimization and applications", J. Math.
  Imaging Vis. 20, 2004 (the dual projection algorithm of :func:`tv_denoise`, in the form
  used by ``skimage.restoration.denoise_tv_chambolle``).
- S. Boyd, N. Parikh, E. Chu, B. Peleato, J. Eckstein, "Distributed optimization and
  statistical learning via the alternating direction method of multipliers", Found. Trends
  Mach. Learn. 3(1), 2011, sec. 6.4.1 (total-variation ADMM).
- Y. Wang, J. Yang, W. Yin, Y. Zhang, "A new alternating minimization algorithm for total
  variation image reconstruction", SIAM J. Imaging Sci. 1(3), 2008 (the FFT x-update and the
  vectorial (isotropic) shrinkage).
"""

from __future__ import annotations

import torch

from optics.deconv import (
    _finish,
    _grid,
    _laplacian_symbol,
    _otf,
    _pad,
    _per_channel,
    _prepare,
    estimate_noise_sigma,
)

__all__ = ["tv_deconvolution", "tv_denoise"]


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodic forward differences along H and W."""
    return torch.roll(x, -1, dims=-2) - x, torch.roll(x, -1, dims=-1) - x


def _grad_adjoint(gy: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_grad` (minus the periodic backward-difference divergence)."""
    return (torch.roll(gy, 1, dims=-2) - gy) + (torch.roll(gx, 1, dims=-1) - gx)


def _grad_into(gy: torch.Tensor, gx: torch.Tensor, x: torch.Tensor) -> None:
    """:func:`_grad` of ``x`` written into ``gy`` and ``gx`` (no temporaries)."""
    torch.sub(x[..., 1:, :], x[..., :-1, :], out=gy[..., :-1, :])
    torch.sub(x[..., :1, :], x[..., -1:, :], out=gy[..., -1:, :])
    torch.sub(x[..., :, 1:], x[..., :, :-1], out=gx[..., :, :-1])
    torch.sub(x[..., :, :1], x[..., :, -1:], out=gx[..., :, -1:])


def _grad_adjoint_into(out: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
    """:func:`_grad_adjoint` of ``(gy, gx)`` written into ``out``; returns ``out``."""
    torch.add(gy, gx, out=out).neg_()
    out[..., 1:, :] += gy[..., :-1, :]
    out[..., :1, :] += gy[..., -1:, :]
    out[..., :, 1:] += gx[..., :, :-1]
    out[..., :, :1] += gx[..., :, -1:]
    return out


def tv_deconvolution(
    y: torch.Tensor,
    psf: torch.Tensor,
    lam=None,
    rho: float | None = None,
    iterations: int = 100,
    boundary: str = "replicate",
    clip: bool = True,
) -> torch.Tensor:
    """Isotropic TV deconvolution ``min_x 1/2 ||h * x - y||^2 + lam TV(x)`` by ADMM.

    ``TV(x) = sum_i |grad x|_i`` (Euclidean norm of the two periodic forward differences). With
    the split ``z = grad x`` and scaled dual ``u``, every iteration does

    - ``x = F^-1[(conj(H) Y + rho conj(G) F(z - u)) / (|H|^2 + rho |G|^2)]`` (closed form on
      the periodic grid, ``|G|^2`` the Laplacian symbol),
    - ``z = shrink(grad x + u, lam / rho)``, ``shrink(v, t) = v max(1 - t / |v|, 0)`` with
      ``|v|`` the norm over both gradient components (vectorial shrinkage),
    - ``u = u + grad x - z``.

    Args:
        y: ``(B, C, H, W)`` sensor images; psf: ``(C, K, K)`` or ``(B, C, K, K)``.
        lam: TV weight (float or ``(B, C)``), in units of ``y``; ``None``: ``0.1 * sigma``
            with ``sigma`` from :func:`~optics.deconv.estimate_noise_sigma`, floored
            at ``1e-4``.
        rho: ADMM penalty; ``None``: ``10 * lam`` (per image and channel).
        iterations: ADMM iterations.
        boundary: ``"replicate"`` / ``"reflect"`` (pad + taper, crop) or ``"circular"``.
        clip: clamp to ``[0, 1]``.

    Returns:
        ``(B, C, H, W)``, dtype and device of ``y``.
    """
    yw, psf_w, out_dtype = _prepare(y, psf)
    b, c, h, w = yw.shape
    if lam is None:
        lam_t = (0.1 * estimate_noise_sigma(yw)).clamp_min(1e-4).reshape(b, c, 1, 1)
    else:
        lam_t = _per_channel(lam, b, c, yw)
    rho_t = 10.0 * lam_t if rho is None else _per_channel(rho, b, c, yw)
    if not bool((lam_t >= 0).all()) or not bool((rho_t > 0).all()):
        raise ValueError("need lam >= 0 and rho > 0")
    nh, nw = _grid(h, w, *psf_w.shape[-2:], boundary)
    yp = _pad(yw, nh, nw, boundary)
    otf = _otf(psf_w, nh, nw)
    denom = otf.abs() ** 2 + rho_t * _laplacian_symbol(nh, nw, yw.dtype, yw.device)
    # the x-update as X = A + B F(G^T w), w = z - u: A, B once, no complex division per step
    a_hat = otf.conj() * torch.fft.rfft2(yp) / denom
    b_hat = rho_t / denom
    thresh = lam_t / rho_t
    x = yp
    # the loop keeps u and w = z - u only: with v = grad x + u and the shrinkage factor
    # s = max(1 - t / |v|, 0), z = s v and u' = v - z, so w' = z - u' = (2 s - 1) v
    uy, ux = torch.zeros_like(yp), torch.zeros_like(yp)
    wy, wx = _grad(x)
    vy, vx, mag, d = (torch.empty_like(yp) for _ in range(4))
    for _ in range(iterations):
        x = torch.fft.irfft2(torch.fft.rfft2(_grad_adjoint_into(d, wy, wx)).mul_(b_hat)
                             .add_(a_hat), s=(nh, nw))
        _grad_into(vy, vx, x)
        vy.add_(uy)
        vx.add_(ux)
        torch.mul(vy, vy, out=mag).addcmul_(vx, vx).sqrt_().clamp_min_(1e-30)
        scale = torch.reciprocal(mag, out=mag).mul_(thresh).neg_().add_(1.0).clamp_min_(0.0)
        for v, u, w_ in ((vy, uy, wy), (vx, ux, wx)):
            torch.mul(v, scale, out=w_)  # z
            torch.sub(v, w_, out=u)  # u' = v - z
            w_.sub_(u)  # w' = z - u'
    return _finish(x, h, w, clip, out_dtype)


def tv_denoise(x: torch.Tensor, weight, iterations: int = 50) -> torch.Tensor:
    """Chambolle's projection algorithm for ``min_u 1/2 ||u - x||^2 + weight TV(u)``, batched.

    Isotropic TV with forward differences and Neumann boundaries (the difference across the
    last row/column is 0), each ``(H, W)`` plane separately. The iteration and the weight
    convention are those of ``skimage.restoration.denoise_tv_chambolle``: with ``eps=0`` and
    ``max_num_iter=iterations`` it returns the same result for each channel of ``x`` (step
    ``tau = 1/4``; ``iterations`` counts evaluations of ``u``, so ``iterations - 1`` dual
    updates are made).

    Args:
        x: ``(..., H, W)`` images (any leading dims, e.g. ``(B, C, H, W)``).
        weight: float, or a tensor broadcastable to ``x.shape[:-2]`` (e.g. ``(B, C)``), > 0.
        iterations: number of iterations (>= 1).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    wt = torch.as_tensor(weight, dtype=x.dtype, device=x.device)
    if not bool((wt > 0).all()):
        raise ValueError("weight must be > 0")
    wt = torch.broadcast_to(wt, x.shape[:-2])[..., None, None]
    tau = 0.25
    py = torch.zeros_like(x)
    px = torch.zeros_like(x)
    out = x
    for i in range(iterations):
        if i > 0:
            # out = x - div(p) with the backward-difference divergence (p = 0 past the edge)
            d = -(py + px)
            d[..., 1:, :] += py[..., :-1, :]
            d[..., :, 1:] += px[..., :, :-1]
            out = x + d
        if i == iterations - 1:
            break
        gy = torch.zeros_like(x)
        gx = torch.zeros_like(x)
        gy[..., :-1, :] = out[..., 1:, :] - out[..., :-1, :]
        gx[..., :, :-1] = out[..., :, 1:] - out[..., :, :-1]
        norm = 1.0 + torch.sqrt(gy**2 + gx**2) * (tau / wt)
        py = (py - tau * gy) / norm
        px = (px - tau * gx) / norm
    return out
