"""Differential privacy of a clipped latent code: the Laplace and Gaussian mechanisms.

A code clipped to ``[-C, C]^d`` changes by at most ``2 C d`` in L1 and ``2 C sqrt(d)`` in L2
between any two images, so

- Laplace noise of scale ``b = 2 C d / eps`` per entry makes the code ``eps``-DP;
- Gaussian noise of ``sigma = 2 C sqrt(d) sqrt(2 ln(1.25 / delta)) / eps`` makes it
  ``(eps, delta)``-DP (C. Dwork, A. Roth, "The Algorithmic Foundations of Differential
  Privacy", 2014, Thm. 3.6 and 3.22; the Gaussian bound is proved for ``eps < 1``, and is
  applied beyond it here as the formula the peers quote, not as a proof).

Anything computed from the noised code alone (the decoder) keeps the guarantee; a path from
the image around the noise voids it.
"""

from __future__ import annotations

import math

import torch

__all__ = ["MECHANISMS", "laplace_scale", "gaussian_sigma", "noise_scale", "privatize"]

MECHANISMS = ("laplace", "gaussian")


def _check(clip: float, dim: int, epsilon: float) -> None:
    if not clip > 0:
        raise ValueError(f"the clip bound C must be positive, got {clip}")
    if int(dim) != dim or dim < 1:
        raise ValueError(f"the code length d must be a positive whole number, got {dim}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive (inf: no noise), got {epsilon}")


def laplace_scale(clip: float, dim: int, epsilon: float) -> float:
    """Laplace scale ``b = 2 C d / eps`` (0 for ``eps = inf``)."""
    _check(clip, dim, epsilon)
    return 0.0 if math.isinf(epsilon) else 2.0 * clip * dim / epsilon


def gaussian_sigma(clip: float, dim: int, epsilon: float, delta: float) -> float:
    """Gaussian ``sigma = 2 C sqrt(d) sqrt(2 ln(1.25 / delta)) / eps`` (0 for ``eps = inf``)."""
    _check(clip, dim, epsilon)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if math.isinf(epsilon):
        return 0.0
    return 2.0 * clip * math.sqrt(dim) * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def noise_scale(mechanism: str, clip: float, dim: int, epsilon: float,
                delta: float = 1e-5) -> float:
    """The Laplace scale or the Gaussian sigma of ``mechanism``."""
    if mechanism == "laplace":
        return laplace_scale(clip, dim, epsilon)
    if mechanism == "gaussian":
        return gaussian_sigma(clip, dim, epsilon, delta)
    raise ValueError(f"mechanism must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")


def privatize(code: torch.Tensor, clip: float, epsilon: float, mechanism: str = "laplace",
              delta: float = 1e-5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Clip ``code (B, d)`` to ``[-C, C]`` and add the mechanism's noise (drawn on the CPU
    with ``generator``, so a seed gives the same noise on every device)."""
    scale = noise_scale(mechanism, clip, code.shape[-1], epsilon, delta)
    clipped = code.clamp(-clip, clip)
    if scale == 0.0:
        return clipped
    shape = tuple(clipped.shape)
    if mechanism == "laplace":
        # inverse CDF of Laplace(0, b) from uniforms in (-1/2, 1/2)
        u = torch.rand(shape, generator=generator, dtype=torch.float64) - 0.5
        u = u.clamp(-0.5 + 1e-12, 0.5 - 1e-12)
        noise = -scale * torch.sign(u) * torch.log1p(-2.0 * u.abs())
    else:
        noise = scale * torch.randn(shape, generator=generator, dtype=torch.float64)
    return clipped + noise.to(device=clipped.device, dtype=clipped.dtype)
