#!/usr/bin/env python
"""Wall time of ``optics privacy-report`` against the code path it replaced, in one run.

Rows (each timed with ``time.perf_counter``, with the CPU time of this process and its
children and the load average around it):

- ``old``: the report loop before the work was shared out, kept here as the reference: one
  process with torch's default threads, one attack after the other; every attack renders the
  held-out and johns faces again, every tuned attack renders its tuning faces again, the face
  denoiser is trained once per report and nothing is kept across reports; each pair's
  reconstructions are embedded by every judge (dlib, MobileFaceNet, FaceRes) one judge after
  the other (the clean faces once per judge), and scored as the report scores them;
- ``new cold``: :func:`deid.evaluation.privacy_report.privacy_report` as it is, with an empty
  store (attack workers, batched and deduplicated judging);
- ``new warm``: the same into a new folder with the cold run's store (every judged pair is
  taken from the store: what a second report with the same cameras costs);
- ``rerun``: the same folder again (nothing left to do: the resumable JSON).

The default run is reduced but representative: every method and every judge, an optical
camera with a wide PSF (``defocus``), a software baseline whose attacker re-reads its image
(``mosaic-8``) and a low-resolution sensor (``lr16``), at 64 px, 8 held-out faces, every
other johns image (28 of 56, every identity), and 100 inversion and denoiser steps.
``--full`` times the default report instead (128 px, every camera, method and face; about an
hour of CPU per attack worker), new cold, warm and rerun; its ``old`` row runs only with
``--full-reference`` (several hours on two shared cores). The output ends with ``RATIO``
lines (new / old wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark the working tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import cpu_model, loadavg  # noqa: E402  (benchmarks/machine.py)

from deid.attacks.attacker import METHODS, AttackConfig, Attacker  # noqa: E402
from deid.attacks.cameras import BASELINES, DEFAULT_CAMERAS, build_camera  # noqa: E402
from deid.evaluation.judges import default_judges, judge_distance  # noqa: E402
from deid.evaluation.privacy_report import privacy_report  # noqa: E402
from deid.evaluation.reid_table import reid_interval  # noqa: E402
from deid.evaluation.stats import mean_with_interval  # noqa: E402
from deid.faces.corpus import FaceSets, load_face_sets  # noqa: E402
from deid.faces.corpus_builder import ensure_demo_corpus  # noqa: E402
from deid.judges.lpips import lpips_distance  # noqa: E402
from deid.judges.quality import psnr, ssim  # noqa: E402
from optics.kit.resize import resize_to  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--full", action="store_true", help="time the default report instead")
    p.add_argument("--full-reference", action="store_true",
                   help="with --full, also run the old path (hours)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: one camera, four methods, 32 px")
    p.add_argument("--workers", type=int, default=None, help="attack workers of the new path")
    p.add_argument("--keep", metavar="DIR", help="keep the reports and the store here")
    return p.parse_args(argv)


def _usage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def timed(fn):
    load0, cpu0, t0 = loadavg(), _usage(), time.perf_counter()
    out = fn()
    return out, {"wall_s": time.perf_counter() - t0, "cpu_s": _usage() - cpu0,
                 "load_before": load0, "load_after": loadavg()}


# --------------------------------------------------------------------------- the old path
class _OldCache(dict):
    """The old attacker's cache: the face denoiser and the DDRM priors, but no renders of the
    tuning faces (the old attacker rendered them for every tuned attack)."""

    def __setitem__(self, key, value):
        if not (isinstance(key, tuple) and key and key[0] == "tune_y"):
            super().__setitem__(key, value)


def old_report(specs, methods, cfg: AttackConfig, faces: FaceSets, lpips: bool) -> dict:
    """The reference: the old loop with every judge run after it, one judge at a time."""
    judges = default_judges()
    ids = np.asarray(faces.johns_ids)
    clean = {j: (e(faces.test), e(faces.johns)) for j, e in judges.items()}
    cache = _OldCache()
    out = {}
    for spec in specs:
        cam = build_camera(spec, cfg.size)
        for m in methods:
            att = Attacker(m, cam, cfg).prepare(faces.train, cache)
            y = cam(faces.test, seed=cfg.seed)
            y_johns = cam(faces.johns, seed=cfg.seed + 1)
            with torch.no_grad():
                x_hat = att.reconstruct(y)
                per = {}
                if x_hat is None:
                    g = resize_to(y_johns, cfg.size)
                    for j, e in judges.items():
                        ej = e(g)
                        per[j] = {"reid_top1": reid_interval(ej, ej, ids, cfg.seed)}
                    out[(cam.name, m)] = per
                    continue
                x_johns = att.reconstruct(y_johns)
                row = {"psnr_db": float(psnr(faces.test, x_hat).mean()),
                       "ssim": float(ssim(faces.test, x_hat).mean()),
                       "lpips": float(lpips_distance(faces.test, x_hat).mean()) if lpips
                       else float("nan")}
                for j, e in judges.items():
                    d = judge_distance(j, e(x_hat), clean[j][0])
                    per[j] = {"distance_to_clean": mean_with_interval(d, seed=cfg.seed),
                              "reid_top1": reid_interval(e(x_johns), clean[j][1], ids,
                                                         cfg.seed)}
            out[(cam.name, m)] = {**row, **per}
    return out


# --------------------------------------------------------------------------- the runs
def reduced_faces(size: int, quick: bool) -> FaceSets:
    f = load_face_sets(size, ensure_demo_corpus())
    keep = slice(None, None, 4 if quick else 2)  # every identity keeps images
    return FaceSets(train=f.train, test=f.test[: 4 if quick else 8], johns=f.johns[keep],
                    johns_ids=list(np.asarray(f.johns_ids)[keep]))


def main(argv=None) -> int:
    args = parse_args(argv)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="privacy-speed-"))
    root.mkdir(parents=True, exist_ok=True)
    if args.full:
        cfg, specs, methods = AttackConfig(), list(DEFAULT_CAMERAS + BASELINES), list(METHODS)
        faces = load_face_sets(cfg.size, ensure_demo_corpus())
    elif args.quick:
        cfg = AttackConfig(size=32, tune_faces=4, inversion_steps=20, denoiser_steps=20)
        specs, methods = ["mosaic-8"], ["identity", "wiener", "matched", "inversion"]
        faces = reduced_faces(cfg.size, True)
    else:
        cfg = AttackConfig(size=64, inversion_steps=100, denoiser_steps=100)
        specs, methods = ["defocus", "mosaic-8", "lr16"], list(METHODS)
        faces = reduced_faces(cfg.size, False)
    print("# privacy report speed\n")
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"- cpu: {cpu_model()} ({os.cpu_count()} logical CPUs visible), nice "
          f"{os.nice(0)}; python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"default torch threads {torch.get_num_threads()}")
    print(f"- run: {'full default report' if args.full else 'quick' if args.quick else 'reduced'}"
          f": cameras {','.join(specs)}; methods {','.join(methods)}; {cfg.size} px; "
          f"{len(faces.test)} held-out faces, {len(faces.johns)} johns images of "
          f"{len(set(faces.johns_ids))} identities, {len(faces.train)} attacker faces; "
          f"inversion {cfg.inversion_steps} steps, denoiser {cfg.denoiser_steps} steps")
    print(f"- folders: {root}\n")
    rows = {}
    old = None
    if not args.full or args.full_reference:
        old, rows["old"] = timed(lambda: old_report(specs, methods, cfg, faces, True))
    store = root / "store"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(root / "cold", ignore_errors=True)
    shutil.rmtree(root / "warm", ignore_errors=True)

    def new(folder):
        return privacy_report(root / folder, specs, methods, cfg, faces=faces, progress=False,
                              store=store, workers=args.workers)

    cold, rows["new cold"] = timed(lambda: new("cold"))
    warm, rows["new warm"] = timed(lambda: new("warm"))
    _, rows["rerun"] = timed(lambda: new("cold"))
    if old is not None:  # the same attacks and judges: the same figures
        diffs = [abs(r["reid_top1"]["value"] - cold["cameras"][cam]["attacks"][m]["judges"][j]
                     ["reid_top1"]["value"])
                 for (cam, m), o in old.items() for j, r in o.items() if isinstance(r, dict)]
        print(f"- check: old against new re-identification, {len(diffs)} figures (camera, "
              f"attack, judge): {sum(d > 1e-9 for d in diffs)} differ, largest difference "
              f"{max(diffs):.3g} (embedding batches differ, so float rounding can move a "
              f"near tie)\n")
    print("| run | wall s | CPU s (all processes) | load before | load after |")
    print("|---|---:|---:|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['load_before']} | "
              f"{r['load_after']} |")
    run = cold["run"]
    print(f"\nnew cold, per stage (seconds summed over {run['workers']} workers): prepare "
          f"{run.get('seconds_prepare_total', 0):.0f}, attack "
          f"{run.get('seconds_attack_total', 0):.0f}, judge "
          f"{run.get('seconds_judge_total', 0):.0f} (per judge: "
          + ", ".join(f"{j} {s:.0f}" for j, s in run.get("judge_seconds", {}).items())
          + f"); images embedded per judge {run.get('images_embedded', {})} of "
          f"{run.get('images_requested', 0)} asked for")
    print(f"new warm: {warm['run'].get('pairs_from_store', 0)} of {warm['run']['pairs_run']} "
          f"pairs from the store\n")
    print(json.dumps({k: {kk: round(v, 2) if isinstance(v, float) else v
                          for kk, v in r.items()} for k, r in rows.items()}))
    if "old" in rows:
        for name in ("new cold", "new warm", "rerun"):
            print(f"RATIO {name.replace(' ', '_')}_over_old="
                  f"{rows[name]['wall_s'] / rows['old']['wall_s']:.3f}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
