"""Markdown tables of the privacy report (:mod:`.privacy_report`)."""

from __future__ import annotations

import math

__all__ = ["report_markdown", "fmt", "ci", "pct_ci"]


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v, pct=False):
    if _nan(v):
        return "-"
    return f"{100 * v:.0f}%" if pct else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def ci(d: dict | None, digits: int = 3) -> str:
    """``value [lo, hi]`` of a ``{"value", "lo", "hi"}`` figure (``-`` if there is none)."""
    if not d or _nan(d.get("value")):
        return "-"
    return f"{d['value']:.{digits}f} [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}]"


def pct_ci(d: dict | None) -> str:
    """``43% [29, 57]``: a proportion and its interval in percent."""
    if not d or _nan(d.get("value")):
        return "-"
    return f"{100 * d['value']:.0f}% [{100 * d['lo']:.0f}, {100 * d['hi']:.0f}]"


def _n(d: dict | None) -> str:
    """``56 / 7``: the probes (images) and identities behind a re-ID figure."""
    return f"{d['n']} / {d['n_groups']}" if d and "n" in d else "-"


def _intro(report: dict) -> str:
    ident = report["identity_set"]
    judges = ", ".join(report["judges"])
    return (f"{report['test_faces']} held-out faces; re-identification is leave-one-out top-1 "
            f"on {ident['images']} johns images of {ident['identities']} identities (chance "
            f"{report['reid_chance']:.0%}) against the clean gallery (`matched`: against "
            f"the gallery through the same camera); identity judges: {judges}. Intervals are "
            f"95% bootstrap intervals (re-identification: identities, then images; distances: "
            f"faces). Attacks are trained and tuned on {report['train_faces']} other faces.")


def report_markdown(report: dict) -> str:
    """The headline (each camera's worst case over attacks and judges, with the baseline
    rows), then every camera, attack and judge."""
    judges = report["judges"]
    lines = ["## Worst case over attacks and judges", "", _intro(report), "",
             "| camera | worst re-ID top-1 [95% CI] | images / identities | attack | judge | "
             "worst PSNR (dB) | by |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in report["cameras"].items():
        w = c["worst_case"]
        r = w["reid_top1"]
        lines.append(f"| {name} | {pct_ci(r)} | {_n(r)} | {r['attack']} | {r['judge']} | "
                     f"{fmt(w['psnr_db'])} | {w['psnr_attack'] or '-'} |")
    base = report["reid_baselines"]
    lines += ["", "Baselines on the clean johns images, no camera (n = "
              f"{base['chance']['n']} images, {base['chance']['n_groups']} identities):", "",
              "| baseline | re-ID top-1 [95% CI] | images / identities |", "| --- | --- | --- |",
              f"| chance (1 / identities) | {100 * base['chance']['value']:.0f}% | "
              f"{_n(base['chance'])} |"]
    for k, label in (("colour_floor_mean_rgb", "colour floor: mean RGB of the central crop"),
                     ("colour_floor_pooled_4x4", "colour floor: 4x4 pooled central crop")):
        if k in base:
            lines.append(f"| {label} | {pct_ci(base[k])} | {_n(base[k])} |")
    head = ["camera", "attack", "PSNR", "SSIM", "LPIPS"]
    head += [f"{j} distance" for j in judges] + [f"{j} re-ID top-1" for j in judges]
    head += ["worst re-ID (judge)", "re-ID images / identities"]
    lines += ["", "## Every camera, attack and judge", "",
              "Distance to the clean face in each judge's metric (dlib: Euclidean, 0.6 is its "
              "same-person threshold; the others: 1 - cosine); re-ID top-1 with its 95% "
              "interval.", "",
              "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, c in report["cameras"].items():
        for m, a in c["attacks"].items():
            per = a.get("judges", {})
            w = a.get("worst_over_judges", {}).get("reid_top1")
            cells = [name, m, fmt(a["psnr_db"]), fmt(a["ssim"]), fmt(a["lpips"])]
            cells += [ci(per.get(j, {}).get("distance_to_clean")) for j in judges]
            cells += [pct_ci(per.get(j, {}).get("reid_top1")) for j in judges]
            cells += [f"{fmt(w['value'], True)} ({w['judge']})" if w else "-", _n(w)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
