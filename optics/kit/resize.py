"""The one resize policy for images, used by every camera, trainer and report.

- smaller: ``area`` (the mean over each output pixel's footprint, as a sensor bins light);
- larger: ``bicubic`` (``align_corners=False``), then clamped to [0, 1], the image range.

Differentiable in both directions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["resize_to"]


def resize_to(x: torch.Tensor, size) -> torch.Tensor:
    """``(B, C, H, W)`` images in [0, 1] to ``size`` (an int for square, or ``(h, w)``)."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == (h, w):
        return x
    if h <= x.shape[-2] and w <= x.shape[-1]:
        return F.interpolate(x, size=(h, w), mode="area")
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
