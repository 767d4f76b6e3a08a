#!/usr/bin/env python
"""Wall time of ``optics privacy-report`` before and after, both trees in the same run.

Each row runs the command line (``python -m optics privacy-report``) in a fresh process with
``PYTHONPATH`` set to one source tree, timed with ``time.perf_counter`` beside the CPU time of
the process and its children and the load average around it:

- ``base``: the tree given by ``--base`` (a checkout of the code before, e.g.
  ``git archive main | tar -x -C /tmp/rep-base``): one process, one attack after the other,
  dlib's ResNet as the only judge;
- ``new cold``: this tree with an empty store (three judges, attack workers as ``--workers``
  says, batched and deduplicated judging);
- ``new warm``: this tree into a new folder with the cold run's store (every judged pair is
  taken from it: what a second report with the same cameras costs);
- ``rerun``: this tree into the cold run's folder again (nothing left to do).

Every process gets ``--threads`` torch threads (``OMP_NUM_THREADS`` and friends); the base
tree's default is every CPU, so the default (1) pins both trees to one thread each.

The default setting is reduced so both trees fit in one sitting: ``defocus`` (a wide optical
PSF) and ``mosaic-8`` (a software baseline whose attacker re-reads its image), every method,
64 px, 8 held-out faces (every johns image), 100 inversion and denoiser steps. ``--full``
times the default report (no base row unless ``--full-base``: over an hour). The output ends
with ``RATIO`` lines (new / base wall time) and a check that the two trees agree on dlib's
re-identification of every (camera, attack).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, loadavg  # noqa: E402  (benchmarks/machine.py)

TREE = Path(__file__).resolve().parents[1]
REDUCED = ["--size", "64", "--max-faces", "8", "--cameras", "defocus,mosaic-8",
           "--set", "inversion_steps=100", "--set", "denoiser_steps=100"]
QUICK = ["--size", "32", "--max-faces", "4", "--cameras", "mosaic-8", "--methods",
         "identity,wiener,matched,inversion", "--set", "inversion_steps=20", "--set",
         "tune_faces=4"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base", metavar="DIR", help="the source tree before (no base row if "
                                                 "not given)")
    p.add_argument("--full", action="store_true", help="time the default report")
    p.add_argument("--full-base", action="store_true", help="with --full, run the base too")
    p.add_argument("--quick", action="store_true", help="smoke test: one camera, 32 px")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--workers", type=int, default=None,
                   help="attack workers of the new tree (default: the command's)")
    p.add_argument("--keep", metavar="DIR", help="keep the reports and the store here")
    return p.parse_args(argv)


def _children_cpu() -> float:
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def run(tree: Path, args: list[str], threads: int, log: Path) -> dict:
    """One ``optics privacy-report`` in a fresh process on ``tree``'s sources."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    cmd = [sys.executable, "-m", "optics", "privacy-report", "--quiet", *args]
    load0, cpu0, t0 = loadavg(), _children_cpu(), time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    out = {"wall_s": time.perf_counter() - t0, "cpu_s": _children_cpu() - cpu0,
           "load_before": load0, "load_after": loadavg(), "command": " ".join(cmd[1:])}
    if rc:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}); see {log}")
    return out


def _dlib_reid(report: dict) -> dict:
    """``(camera, attack) -> dlib re-ID top-1`` of either tree's report."""
    out = {}
    for cam, c in report["cameras"].items():
        for m, a in c["attacks"].items():
            v = a["judges"]["dlib"]["reid_top1"]["value"] if "judges" in a else a["reid_top1"]
            out[(cam, m)] = v
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="privacy-speed-"))
    for sub in ("base", "cold", "warm", "store"):
        shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    setting = [] if a.full else QUICK if a.quick else REDUCED
    print("# privacy report speed\n")
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"- cpu: {cpu_model()} ({os.cpu_count()} logical CPUs visible); python "
          f"{sys.version.split()[0]}; {a.threads} torch thread(s) per process")
    print(f"- setting: {' '.join(setting) or 'the defaults (full report)'}")
    print(f"- trees: base {a.base or '-'}, new {TREE}; folders {root}\n")
    rows = {}
    new = [*setting, "--store", str(root / "store")]
    if a.workers is not None:
        new += ["--workers", str(a.workers)]
    if a.base and (not a.full or a.full_base):
        rows["base"] = run(Path(a.base).resolve(), [*setting, "--out", str(root / "base")],
                           a.threads, root / "base.log")
    rows["new cold"] = run(TREE, [*new, "--out", str(root / "cold")], a.threads,
                           root / "cold.log")
    cold = json.loads((root / "cold" / "privacy_report.json").read_text())  # before rerun
    rows["new warm"] = run(TREE, [*new, "--out", str(root / "warm")], a.threads,
                           root / "warm.log")
    rows["rerun"] = run(TREE, [*new, "--out", str(root / "cold")], a.threads,
                        root / "rerun.log")
    print("| run | wall s | CPU s (all processes) | load before | load after |")
    print("|---|---:|---:|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['load_before']} | "
              f"{r['load_after']} |")
    info = cold["run"]
    print(f"\nnew cold: {info['workers']} attack worker(s); seconds summed over pairs: "
          f"prepare {info.get('seconds_prepare_total', 0):.0f}, attack "
          f"{info.get('seconds_attack_total', 0):.0f}, judge "
          f"{info.get('seconds_judge_total', 0):.0f} (embedding per judge: "
          + ", ".join(f"{j} {s:.0f}" for j, s in info.get("judge_seconds", {}).items())
          + f"); images embedded per judge {info.get('images_embedded', {})} of "
          f"{info.get('images_requested', 0)} asked for")
    per = {}
    for c in cold["cameras"].values():
        for m, x in c["attacks"].items():
            per[m] = per.get(m, 0.0) + x["seconds_prepare"] + x["seconds_attack"]
    print("new cold, prepare + attack seconds per method over cameras: "
          + ", ".join(f"{m} {s:.0f}" for m, s in sorted(per.items(), key=lambda kv: -kv[1])))
    warm = json.loads((root / "warm" / "privacy_report.json").read_text())["run"]
    print(f"new warm: {warm.get('pairs_from_store', 0)} of {warm['pairs_run']} pairs from the "
          f"store")
    if "base" in rows:
        old = _dlib_reid(json.loads((root / "base" / "privacy_report.json").read_text()))
        now = _dlib_reid(cold)
        diffs = {k: abs(old[k] - now[k]) for k in old if k in now}
        print(f"check: dlib re-ID top-1 of {len(diffs)} (camera, attack) pairs, base against "
              f"new: {sum(d > 1e-9 for d in diffs.values())} differ"
              + (f" (largest {max(diffs.values()):.3f})" if diffs else ""))
        for name in ("new cold", "new warm", "rerun"):
            print(f"RATIO {name.replace(' ', '_')}_over_base="
                  f"{rows[name]['wall_s'] / rows['base']['wall_s']:.3f}")
    print(json.dumps({k: {kk: round(v, 2) if isinstance(v, float) else v
                          for kk, v in r.items()} for k, r in rows.items()}))
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
