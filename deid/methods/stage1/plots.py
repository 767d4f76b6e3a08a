"""Training figures: scenes against privacy images, heatmaps on ``y``, loss curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_xy_grid", "plot_heatmap_overlay", "plot_loss_curves"]


def _img(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    fig.clear()
    return path


def plot_xy_grid(x: torch.Tensor, y: torch.Tensor, path) -> Path:
    """Two rows: scenes ``x (B, 3, H, W)`` and camera images ``y`` (any size)."""
    b = len(x)
    fig = Figure(figsize=(1.8 * b, 3.8))
    for i in range(b):
        for row, (t, name) in enumerate(((x, "x"), (y, "y"))):
            ax = fig.add_subplot(2, b, row * b + i + 1)
            ax.imshow(_img(t[i]), interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name, loc="left", fontsize=9)
    return _save(fig, path)


def plot_heatmap_overlay(y: torch.Tensor, heatmaps: torch.Tensor, path) -> Path:
    """Summed heatmaps (upsampled) over the privacy images, with soft-argmax points."""
    b = len(y)
    size = y.shape[-1] if y.shape[-1] >= 32 else 128
    y_up = F.interpolate(y.float(), size=(size, size), mode="nearest")
    hm = F.interpolate(heatmaps.float(), size=(size, size), mode="bilinear",
                       align_corners=False)
    fig = Figure(figsize=(2.0 * b, 2.2))
    for i in range(b):
        ax = fig.add_subplot(1, b, i + 1)
        ax.imshow(_img(y_up[i]))
        m = hm[i].clamp(min=0).sum(0).cpu().numpy()
        ax.imshow(m / max(m.max(), 1e-8), cmap="magma", alpha=0.45)
        flat = hm[i].flatten(1).argmax(1).cpu().numpy()
        ax.scatter(flat % size, flat // size, s=3, c="cyan")
        ax.set_axis_off()
    return _save(fig, path)


def plot_loss_curves(history: list[dict], path) -> Path:
    fig = Figure(figsize=(7, 3.2))
    if history:
        steps = [h["step"] for h in history]
        for k, ax in zip(("loss", "hmap"), (fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)),
                         strict=True):
            ax.plot(steps, [h[k] for h in history], lw=1)
            if k == "loss":
                ax.plot(steps, [h["image_term"] for h in history], lw=1, label="1 - mse")
                ax.plot(steps, [h["psf_term"] for h in history], lw=1, label="psf term")
                ax.legend(fontsize=7)
            ax.set_xlabel("step")
            ax.set_title(k, fontsize=9)
    return _save(fig, path)
