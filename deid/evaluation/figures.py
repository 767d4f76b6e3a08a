"""Figures of the attack results: the report's camera x method grid, each camera's worst
re-identification per judge, and one attack's faces."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["report_grid", "worst_case_figure", "attack_grid"]


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


def worst_case_figure(report: dict, path: Path):
    """Per camera (rows) and identity judge (markers): the highest re-identification top-1
    over attacks with its 95% interval, against chance and the colour floors (lines)."""
    names = list(report["cameras"])
    judges = list(report["judges"])
    fig = _figure((6.4, 0.9 + 0.42 * max(1, len(names))))
    ax = fig.subplots()
    markers = "osD^v<>"
    step = 0.6 / max(1, len(judges))
    for k, j in enumerate(judges):
        xs, los, his, ys = [], [], [], []
        for r, name in enumerate(names):
            figs = [a["judges"][j]["reid_top1"] for a in report["cameras"][name]["attacks"]
                    .values() if j in a.get("judges", {})]
            if not figs:
                continue
            best = max(figs, key=lambda d: (d["value"], d["lo"]))
            xs.append(best["value"])
            los.append(best["value"] - best["lo"])
            his.append(best["hi"] - best["value"])
            ys.append(r + (k - (len(judges) - 1) / 2) * step)
        ax.errorbar(xs, ys, xerr=[los, his], fmt=markers[k % len(markers)], ms=4, capsize=2,
                    lw=1, label=j)
    base = report.get("reid_baselines", {})
    for key, style, label in (("chance", ":", "chance"),
                              ("colour_floor_mean_rgb", "--", "colour floor (mean RGB)"),
                              ("colour_floor_pooled_4x4", "-.", "colour floor (4x4)")):
        if key in base:
            ax.axvline(base[key]["value"], color="0.4", ls=style, lw=1, label=label)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("worst-case re-identification top-1 over attacks (95% interval)")
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0.0))
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
