"""Figures of the attack results: the report's camera x method grid, and one attack's faces."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["report_grid", "attack_grid"]


def _figure(size_in) -> Figure:
    fig = Figure(figsize=size_in)
    FigureCanvasAgg(fig)
    return fig


def report_grid(rows: dict, faces: torch.Tensor, methods, path: Path, index: int = 0):
    """Cameras (rows) by original, ``y`` and each reconstruction (columns) of test face
    ``index``; ``rows``: ``{camera: {"y": image, method: image}}``."""
    names = list(rows)
    cols = ["original", "y"] + [m for m in methods if m not in ("identity", "matched")]
    fig = _figure((1.6 * len(cols), 1.7 * len(names)))
    axes = fig.subplots(len(names), len(cols), squeeze=False)
    for r, cam in enumerate(names):
        for c, col in enumerate(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = faces[index] if col == "original" else rows[cam].get(col)
            if img is not None:
                ax.imshow(img.permute(1, 2, 0).clamp(0, 1).cpu().numpy(),
                          interpolation="nearest")
            if r == 0:
                ax.set_title(col, fontsize=9)
            if c == 0:
                ax.set_ylabel(cam, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def attack_grid(rows, originals, method, path):
    """One row per face: original, privacy image ``y`` and the method's reconstruction.
    ``rows``: ``{"camera#i": {"y": (C, H, W), method: (C, H, W)}}``."""
    fig = _figure((5, 1.8 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, (name, d) in enumerate(rows.items()):
        i = int(name.split("#")[1])
        for c, (title, img) in enumerate((("original", originals[i]), ("y", d["y"]),
                                          (method, d[method]))):
            axes[r, c].imshow(img.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
