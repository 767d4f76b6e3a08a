"""Markdown tables of the privacy report."""

from __future__ import annotations

import math

__all__ = ["report_markdown", "fmt"]


def fmt(v, pct=False):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.0f}%" if pct else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def report_markdown(report: dict) -> str:
    """The headline (worst case per camera) and the full table."""
    lines = ["## Worst case over attacks", "",
             f"{report['test_faces']} held-out faces, {report['johns_images']} johns images "
             f"(re-identification chance {report['reid_chance']:.0%}); attacks trained on "
             f"{report['train_faces']} other faces.", "",
             "| camera | worst re-id top-1 | by | worst PSNR (dB) | by |",
             "| --- | --- | --- | --- | --- |"]
    for name, c in report["cameras"].items():
        w = c["worst_case"]
        lines.append(f"| {name} | {fmt(w['reid_top1'], True)} | {w['reid_attack']} | "
                     f"{fmt(w['psnr_db'])} | {w['psnr_attack']} |")
    lines += ["", "## Every camera and attack", "",
              "| camera | attack | PSNR | SSIM | LPIPS | FR dist | re-id top-1 |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in report["cameras"].items():
        for m, a in c["attacks"].items():
            lines.append(f"| {name} | {m} | {fmt(a['psnr_db'])} | {fmt(a['ssim'])} | "
                         f"{fmt(a['lpips'])} | {fmt(a['fr_distance'])} | "
                         f"{fmt(a['reid_top1'], True)} |")
    return "\n".join(lines)
