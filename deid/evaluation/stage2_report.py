"""``deid evaluate`` and ``deid ablation``: stage-2 outputs measured against their sources.

The protocol follows the paper (and StarGAN v2's ``metrics/eval.py``): every source is
de-identified with ``R`` public references (10 by default), and every metric of
:func:`deid.evaluation.stage2_eval.evaluate_deid` is averaged over the ``N x R`` pairs. The
sources are the demo corpus' ``johns`` faces (known identities, never trained on), the gallery
of the re-identification is the same clean faces (a source's own image is never its match),
the references are the public side of the stage-2 run's own split, and FID compares the
outputs with those references (the target domain's train images).

Beside the generator's rows stand three baselines measured the same way: ``clean`` (the
output is the source itself: the ceiling of identity leakage and the floor of FID and
landmark error), ``privacy image`` (the output is ``y``, the camera's image alone) and the
``colour floor`` (the source pooled to 4x4 cells: what colour alone leaks).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from deid.evaluation.stage2_eval import PUBLISHED_STARGAN_V2, evaluate_deid, markdown_table
from deid.faces.corpus import load_split
from deid.methods.stage2.config import Stage2Config
from deid.methods.stage2.data import load_stage2_data
from deid.methods.stage2.inference import Anonymizer
from deid.methods.stage2.run import train_stage2
from optics.kit.config import load_config
from optics.kit.files import write_text_atomic
from optics.kit.imageio import save_image
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to

__all__ = ["evaluate_run", "ablation", "ABLATION_GRID"]

log = logging.getLogger(__name__)

#: The paper's Table 1 grid: (heatmap input, LPIPS loss, expression loss) on or off.
ABLATION_GRID = [(h, lp, ex) for h in (True, False) for lp in (True, False)
                 for ex in (True, False)]


def _sources(split: str, max_sources: int | None, corpus=None):
    x, _, ids = load_split(corpus, split, 128, landmark_key=None)
    if ids is None:
        raise ValueError(f"the {split!r} split has no identities; evaluation needs them")
    ids = list(ids)
    if max_sources and len(x) > max_sources:  # keep every identity: take them in turn
        order = sorted(range(len(x)), key=lambda i: (ids[:i].count(ids[i]), i))[:max_sources]
        order.sort()
        x, ids = x[order], [ids[i] for i in order]
    return x, ids


def _outputs(anon: Anonymizer, x: torch.Tensor, styles: torch.Tensor, margin, seed: int,
             batch: int = 16) -> torch.Tensor:
    """``(N, R, 3, S, S)``: every source with every style (y rendered once per source)."""
    outs = []
    for i in range(0, len(x), batch):
        y, masks = anon.privacy(x[i:i + batch], seed=seed + i)
        per = [anon.generate(y, masks, s.expand(len(y), -1), margin).cpu() for s in styles]
        outs.append(torch.stack(per, dim=1))
    return torch.cat(outs)


def evaluate_run(stage1, stage2, out_dir, refs_per_source: int = 10, margins=None,
                 split: str = "johns", max_sources: int | None = None, seed: int = 0,
                 n_boot: int = 1000, judges=None, baselines: bool = True,
                 progress: bool = True) -> dict:
    """Evaluate a stage-2 run; writes ``evaluation.json``, ``evaluation.md`` and
    ``evaluation_grid.png`` into ``out_dir`` and returns the JSON's content.

    ``margins``: privacy-dial margins to evaluate (None: the run's default margin only).
    """
    anon = Anonymizer(stage1, stage2)
    cfg = anon.model.config
    s = cfg.img_size
    x, ids = _sources(split, max_sources)
    data = load_stage2_data(cfg.data or None, anon.frozen.stage1_size, seed=cfg.seed,
                            reference_fraction=cfg.reference_fraction)
    overlap = set(ids) & set(data.reference_identities)
    if overlap:
        raise ValueError(f"identity {sorted(overlap)[0]!r} is both an evaluated source and a "
                         f"reference of the run")
    refs = data.references[:refs_per_source]
    styles = anon.reference_styles(refs)
    if margins is None:
        margins = [anon.margin]
    src = resize_to(x, s)
    fid_ref = resize_to(data.references, s)  # every public face of the run's split
    results, grids = {}, []
    rows = [(f"privlens (margin {m})" if m is not None else "privlens", m) for m in margins]
    bar = progress_bar(rows, desc="evaluate", unit="setting", disable=not progress)
    for label, m in bar:
        outputs = _outputs(anon, x, styles, m, seed)
        results[label] = evaluate_deid(src, outputs, ids, gallery=src, gallery_ids=ids,
                                       judges=judges, fid_reference=fid_ref,
                                       n_boot=n_boot, seed=seed, label=label)
        grids.append(outputs[:6, 0])
    if baselines:
        y = torch.cat([anon.privacy(x[i:i + 16], seed=seed + i)[0].cpu()
                       for i in range(0, len(x), 16)])
        r = len(refs)
        floor = torch.nn.functional.interpolate(
            torch.nn.functional.adaptive_avg_pool2d(src, 4), size=(s, s), mode="nearest")
        for label, o in (("clean (no de-identification)", src),
                         ("privacy image y (stage 1 alone)", y),
                         ("colour floor (source pooled to 4x4)", floor)):
            results[label] = evaluate_deid(src, o[:, None].expand(-1, r, -1, -1, -1), ids,
                                           gallery=src, gallery_ids=ids, judges=judges,
                                           fid_reference=fid_ref, n_boot=n_boot,
                                           seed=seed, label=label)
        grids.insert(0, y[:6])
    grids.insert(0, src[:6])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat([torch.cat(list(g), dim=-1) for g in grids], dim=-2),
               out / "evaluation_grid.png")
    report = {"stage1": str(stage1), "stage2": str(stage2), "step": anon.model.step,
              "split": split, "sources": len(x), "identities": len(set(ids)),
              "references": len(refs), "img_size": s, "results": results}
    write_text_atomic(out / "evaluation.json", json.dumps(report, indent=1, default=str) + "\n")
    md = (f"# Stage-2 evaluation\n\n{len(x)} sources ({len(set(ids))} identities, split "
          f"`{split}`), {len(refs)} references each, {s} px, stage-2 step "
          f"{anon.model.step}.\n\n" + markdown_table(results, PUBLISHED_STARGAN_V2))
    write_text_atomic(out / "evaluation.md", md)
    return report


def ablation(base: Stage2Config, out_dir, steps: int, refs_per_source: int = 5,
             max_sources: int | None = 28, seed: int = 0, n_boot: int = 500,
             progress: bool = True) -> dict:
    """The paper's Table 1 grid at small scale: a run per (heatmap, LPIPS, expression) on or
    off, each trained ``steps`` from ``base`` and evaluated; runs done before are reused
    (a finished run is skipped, a partial one resumed). Writes ``ablation.json`` and
    ``ablation.md``."""
    out = Path(out_dir)
    rows = {}
    for heat, lp, ex in ABLATION_GRID:
        name = f"heatmap-{'on' if heat else 'off'}_lpips-{'on' if lp else 'off'}" \
               f"_expression-{'on' if ex else 'off'}"
        cfg = dataclasses.replace(
            base, steps=steps, use_heatmap=heat,
            lambda_lpips=base.lambda_lpips if lp else 0.0,
            expression=(base.expression if base.expression != "off" else "heatmap")
            if ex else "off")
        run = out / name
        done = (run / "run.json").exists() and \
            json.loads((run / "run.json").read_text()).get("steps") == steps
        if not done:
            resume = (run / "config.yaml").exists() and any(run.glob("ckpt_*.pt"))
            if resume and load_config(Stage2Config, run / "config.yaml") != cfg:
                raise ValueError(f"{run} holds a run with another config; use a new --out")
            train_stage2(cfg, run, resume=resume, progress=progress)
        ev = evaluate_run(cfg.stage1, run, run / "evaluation", refs_per_source,
                          max_sources=max_sources, seed=seed, n_boot=n_boot,
                          baselines=False, progress=False)
        rows[name] = next(iter(ev["results"].values()))
    report = {"steps": steps, "grid": [n for n in rows], "results": rows}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "ablation.json", json.dumps(report, indent=1, default=str) + "\n")
    write_text_atomic(out / "ablation.md", f"# Stage-2 ablation ({steps} steps each)\n\n"
                      + markdown_table(rows))
    return report
