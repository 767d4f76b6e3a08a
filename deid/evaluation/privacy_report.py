"""Every attack against every camera (``optics privacy-report``): the worst case per camera
over attacks, written as JSON, markdown (:mod:`.tables`) and a figure grid (:mod:`.figures`).
One attack is :func:`deid.evaluation.judge.run_attack`; the metrics are the judge's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

from deid.attacks.attacker import METHODS, AttackConfig, Attacker
from deid.attacks.cameras import BASELINES, DEFAULT_CAMERAS, build_camera
from deid.evaluation.figures import report_grid
from deid.evaluation.judge import Judge, run_attack
from deid.evaluation.tables import report_markdown
from deid.faces.corpus import FaceSets, load_face_sets
from deid.faces.corpus_builder import ensure_demo_corpus
from optics.kit.imageio import load_image, save_image
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to

__all__ = ["privacy_report", "worst_case"]

log = logging.getLogger(__name__)


def worst_case(atts: dict) -> dict:
    reids = {m: a["reid_top1"] for m, a in atts.items()}
    psnrs = {m: a["psnr_db"] for m, a in atts.items() if not math.isnan(a["psnr_db"])}
    worst_reid = max(reids, key=reids.get)
    worst_psnr = max(psnrs, key=psnrs.get) if psnrs else None
    return {"reid_top1": reids[worst_reid], "reid_attack": worst_reid,
            "psnr_db": psnrs[worst_psnr] if psnrs else float("nan"),
            "psnr_attack": worst_psnr}


def _load_samples(out: Path, names, size: int) -> dict:
    samples = {}
    for name in names:
        d = out / "samples" / name
        samples[name] = {p.stem: load_image(p, size) for p in sorted(d.glob("*.png"))}
    return samples


def privacy_report(out_dir, cameras=None, methods=METHODS, config: AttackConfig | None = None,
                   faces: FaceSets | None = None, calibration=None, lpips: bool = True,
                   progress: bool = True, redo=()) -> dict:
    """Every method against every camera; writes ``privacy_report.json``, ``.md`` and the
    figure grid into ``out_dir``. ``cameras``: specs for :func:`build_camera` (default: the
    presets, then the software baselines).

    Resumable: the JSON is rewritten after every attack, and a rerun into the same folder
    (same face size) skips the (camera, method) pairs already there, except methods listed in
    ``redo``; the figure is rebuilt from ``samples/`` (each camera's first test face)."""
    config = config or AttackConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cameras = list(cameras or (DEFAULT_CAMERAS + BASELINES))
    faces = faces or load_face_sets(config.size, ensure_demo_corpus())
    path = out / "privacy_report.json"
    results: dict = {}
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("config", {}).get("size") != config.size or \
                old.get("test_faces") != len(faces.test):
            raise ValueError(f"{path} was made with other faces or another face size; use "
                             f"another --out")
        results = old.get("cameras", {})
    judge = None
    cache: dict = {}

    def report():
        return {"config": dataclasses.asdict(config), "methods": list(methods),
                "test_faces": int(len(faces.test)), "johns_images": int(len(faces.johns)),
                "train_faces": int(len(faces.train)),
                "reid_chance": 1.0 / len(set(faces.johns_ids)),
                "cameras": {k: v for k, v in results.items() if v.get("attacks")}}

    bar = progress_bar(total=len(cameras) * len(methods), desc="privacy report",
                       disable=not progress)
    names = []
    for spec in cameras:
        cam = build_camera(spec, config.size, calibration=calibration)
        names.append(cam.name)
        entry = results.setdefault(cam.name, {"attacks": {}})
        entry["description"] = cam.description
        for m in methods:
            bar.set_postfix_str(f"{cam.name}/{m}")
            if m in entry["attacks"] and m not in redo:
                bar.update()
                continue
            if judge is None:
                judge = Judge(faces, lpips=lpips)
            att = Attacker(m, cam, config).prepare(faces.train, cache)
            r = run_attack(att, judge, seed=config.seed)
            entry["attacks"][m] = r["metrics"]
            sample_dir = out / "samples" / cam.name
            save_image(resize_to(r["y"][:1], config.size)[0], sample_dir / "y.png")
            if r["x_hat"] is not None:
                save_image(r["x_hat"][0], sample_dir / f"{m}.png")
            entry["worst_case"] = worst_case(entry["attacks"])
            path.write_text(json.dumps(report(), indent=1) + "\n")
            log.info("%s / %s: %s", cam.name, m, r["metrics"])
            bar.update()
    bar.close()
    rep = report()
    rep["cameras"] = {n: rep["cameras"][n] for n in names if n in rep["cameras"]}
    path.write_text(json.dumps(rep, indent=1) + "\n")
    report_grid(_load_samples(out, names, config.size), faces.test, methods,
                 out / "privacy_grid.png")
    (out / "privacy_report.md").write_text(report_markdown(rep) + "\n")
    return rep


