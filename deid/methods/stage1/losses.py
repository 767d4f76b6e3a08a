"""Stage-1 objective ``L = L_optics + alpha2 * L_hmap (+ identity term)``.

- ``L_optics = 1 - mean((x - y)^2) + alpha1 * ||H - H_f||_2 / ||H_f||_2``: push the privacy
  image ``y`` away from the scene ``x`` while keeping the PSF ``H`` near a defocus target
  ``H_f``. The PSF distance is relative (PSFs sum to 1 per channel, so their absolute norms
  are tiny and depend on the sampling); that makes ``alpha1`` independent of the PSF size.
- ``L_hmap = mean |U(y) - U*(x)|``: the student heatmaps on ``y`` follow the frozen teacher's
  on ``x``.
- Identity (optional): ``relu(margin - ||e(y) - e(x)||)`` with a differentiable face
  embedder ``e``, pushing ``y`` away from its own face until they are ``margin`` apart.
  Against an attacker who degrades a gallery with the same camera this is not enough (the
  ``y`` of different people must also look alike), hence the spread term
  ``mean_i ||e(y_i) - mean_j e(y_j)||``, which pulls the batch's embeddings together. It is
  computed per process, so under DDP it depends on the local batch.
- Window energy: ``sum_c relu(e_min - E_c)``, ``E_c`` the fraction of channel ``c``'s light
  that falls inside the simulated PSF window. The simulator normalises the PSF inside the
  window, so a PSF that outgrows it loses its halo and images come out *sharper* than the
  physics says; this term keeps the design inside the window (``e_min = 0.95``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["resize_to", "image_distance_loss", "psf_target_loss", "heatmap_loss", "identity_loss",
           "identity_spread_loss", "window_energy_loss"]


def resize_to(y: torch.Tensor, size) -> torch.Tensor:
    """``y (B, C, h, w)`` bilinearly resized to ``size`` (an int or ``(H, W)``); unchanged if
    it already has that size (e.g. a low-resolution camera image brought to the scene's)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(y.shape[-2:]) == size:
        return y
    return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def image_distance_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - mean((x - y)^2)`` for images in [0, 1]; a low-resolution ``y`` is upsampled."""
    return 1.0 - (x - resize_to(y, x.shape[-2:])).pow(2).mean()


def psf_target_loss(psf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||H - H_f||_2 / ||H_f||_2`` over all channels and pixels; ``(C, K, K)`` each."""
    return (psf - target).flatten().norm() / target.flatten().norm()


def heatmap_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of heatmaps ``(B, K, h, w)``."""
    return (student - teacher).abs().mean()


def identity_loss(emb_y: torch.Tensor, emb_x: torch.Tensor, margin: float = 0.6) -> torch.Tensor:
    """Hinge on the embedding distance: zero once ``||e(y) - e(x)|| >= margin``."""
    return F.relu(margin - (emb_y - emb_x).norm(dim=-1)).mean()


def identity_spread_loss(emb_y: torch.Tensor) -> torch.Tensor:
    """Mean distance of the embeddings ``(B, D)`` from their batch mean."""
    return (emb_y - emb_y.mean(dim=0, keepdim=True)).norm(dim=-1).mean()


def window_energy_loss(captured: torch.Tensor, min_captured: float = 0.95) -> torch.Tensor:
    """``sum_c relu(min_captured - captured_c)`` for the captured fractions ``(C,)``."""
    return F.relu(min_captured - captured).sum()
