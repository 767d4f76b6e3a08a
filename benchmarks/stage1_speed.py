#!/usr/bin/env python
"""CPU speed and peak memory of one stage-1 training step, with and without the attack term.

For every requested thread count the script starts a fresh worker process (this script with
``--worker --threads N``), so thread settings and peak RSS are clean. The worker pins
``OMP_NUM_THREADS`` & co. to N before importing torch, calls ``torch.set_num_threads(N)``,
builds two ``Stage1Trainer`` from ``configs/stage1-demo.yaml`` (128x128, batch 8, lopez2024,
noise and flips on) with synthetic ``torch.rand`` images and a randomly initialised FAN teacher
(``configs/teacher-demo.yaml`` layout, width ``--width``), and times, interleaved in shuffled
order:

1. ``step``: ``trainer.train_step()`` with the demo config, i.e. with the attack-aware
   identity term (``attack_identity_weight`` 1): batch assembly, camera, student and teacher
   FAN, the Wiener attack and the dlib twin, losses, backward, Adam step (what
   ``optics train-stage1`` does per step, minus logging);
2. ``plain``: the same step of a second trainer with ``attack_identity_weight = 0`` (no
   identity twin); ``step / plain`` is the cost ratio of the attack term, and
   ``step - plain`` its cost, measured in the same process. When the config computes the
   term on every k-th step only (``attack_every`` > 1), a third trainer with
   ``attack_every = 1`` (``step_each``) times a step that computes it, and a table gives the
   config's mean step over the plain one's (the cost per step of a run);
3. the camera alone, as the step runs it: ``camera.psf()`` once, image formation of the 8
   images one sample at a time with per-sample noise generators (the trainer's noise path),
   the optics loss ``image term + alpha1 * PSF term``, backward to the Zernike coefficients;
4. the FAN alone: the student forward+backward on a fixed (detached) 8x3x128x128 batch and
   the teacher forward under ``torch.no_grad``, ``alpha2 * heatmap loss``;
5. ``identity``: the attack term alone (``trainer._attack_identity``): Wiener filters of a
   fixed 8-image y at every attack balance, the picked restorations through the dlib-ResNet
   twin, forward+backward to y and the PSF (needs the cached face-api weights); the clean
   embeddings e(x) are given (inside the step they cost one more twin forward of 8 chips).

``--baseline DIR`` runs the same workers on another checkout (e.g. the tree before a change,
``git archive HEAD | tar -x -C DIR``), alternating with this one, so before and after are
measured in the same run under the same machine load; the worker imports the package from
that tree (this script, the harness, stays the same; the table's ``package`` line shows where
each worker's ``deid`` came from).

"rest" = plain - camera - FAN (optimiser, batch assembly, autograd glue). Peak memory is the
worker's ``VmHWM`` from ``/proc/self/status`` (cross-checked with ``getrusage``
``ru_maxrss``); it includes the Python interpreter and torch themselves, whose share is printed
as the RSS after the imports and after set-up (trainers, camera, images). The worker prints one
JSON line; the parent prints the machine, the load average and markdown tables. Run with
``--help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_PINNED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
           "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE1_CONFIG = os.path.join(ROOT, "configs", "stage1-demo.yaml")
TEACHER_CONFIG = os.path.join(ROOT, "configs", "teacher-demo.yaml")
JSON_MARK = "STAGE1_SPEED_JSON "
_OMP_EXTRA = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=int, default=20, metavar="N",
                   help="timed training steps (and timed camera / FAN calls), after --warmup")
    p.add_argument("--warmup", type=int, default=3, metavar="N",
                   help="untimed warm-up calls of every row")
    p.add_argument("--width", type=int, default=32,
                   help="FAN width of teacher and student (32 = configs/teacher-demo.yaml)")
    p.add_argument("--threads", default="1,2",
                   help="comma-separated torch thread counts, one fresh worker process each")
    p.add_argument("--rounds", type=int, default=1, metavar="R",
                   help="run the list of workers R times in alternation (one table row each)")
    p.add_argument("--wait-policy", choices=("PASSIVE", "ACTIVE"), default=None,
                   help="set OMP_WAIT_POLICY in the workers' environment (default: leave it "
                        "as the caller's environment has it, i.e. usually unset = libgomp's "
                        "spin-then-sleep, what a user gets)")
    p.add_argument("--seed", type=int, default=0, help="seed of inputs, teacher and order")
    p.add_argument("--baseline", default=None, metavar="DIR",
                   help="also time the package of this checkout (e.g. the tree before a "
                        "change), alternating with the working tree, one row each")
    p.add_argument("--malloc", choices=("keep", "default"), default="keep",
                   help="keep: glibc keeps freed blocks in the worker, as every privlens CLI "
                        "process does (optics.kit.malloc; set by this harness for both "
                        "trees); default: glibc's own thresholds")
    p.add_argument("--root", default=ROOT, help=argparse.SUPPRESS)  # the tree a worker imports
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.thread_list = [int(t) for t in str(args.threads).split(",") if t.strip()]
    except ValueError:
        p.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if not args.thread_list or min(args.thread_list) < 1:
        p.error("--threads needs at least one count, each >= 1")
    if args.worker and len(args.thread_list) != 1:
        p.error("--worker runs exactly one thread count")
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        p.error("need --steps >= 1, --warmup >= 0 and --rounds >= 1")
    if args.baseline is not None:
        args.baseline = os.path.abspath(args.baseline)
        if not os.path.isfile(os.path.join(args.baseline, "deid", "methods", "stage1",
                                           "trainer.py")):
            p.error(f"--baseline {args.baseline} is not a privlens checkout")
    return args


# ----------------------------------------------------------------------------- machine
from machine import cpu_counters, cpu_model, loadavg, proc_status_mb  # noqa: E402,I001


# ------------------------------------------------------------------------------ worker
def worker(args) -> None:
    n = args.thread_list[0]
    for var in _PINNED:  # before torch (and numpy) are imported
        os.environ[var] = str(n)
    if args.malloc == "keep":  # what optics.kit.malloc does in a CLI process, for any tree
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        for option in (-3, -1):  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD: 1 GB
            libc.mallopt(option, ctypes.c_int(1 << 30))

    import copy
    import dataclasses
    import gc
    import random
    import resource
    import statistics
    import tempfile
    import warnings

    import numpy as np
    import torch

    torch.set_num_threads(n)
    sys.path.insert(0, args.root)  # benchmark that tree (default: the working tree)
    warnings.filterwarnings("ignore")

    from deid.faces.fan import FAN
    from deid.methods.stage1.losses import (
        heatmap_loss,
        identity_loss,
        identity_spread_loss,
        image_distance_loss,
        psf_target_loss,
    )
    from deid.methods.stage1.trainer import Stage1Config, Stage1Trainer, build_camera
    from deid.methods.teacher import FANTrainConfig
    from optics.kit.config import load_config
    from optics.kit.distributed import DistInfo
    from optics.kit.schedule import sample_generator

    rss_imports = proc_status_mb("VmRSS")
    torch.manual_seed(args.seed)
    import yaml

    from optics.kit.config import from_dict

    # the fields this tree's Stage1Config knows (a baseline tree may predate some of them)
    raw = yaml.safe_load(open(STAGE1_CONFIG)) or {}
    known = {f.name for f in dataclasses.fields(Stage1Config)}
    base = from_dict(Stage1Config, {k: v for k, v in raw.items() if k in known})
    cfg = dataclasses.replace(base, data="", teacher="", device="cpu", tensorboard=False)
    fan_cfg = load_config(FANTrainConfig, TEACHER_CONFIG).fan_config().replace(
        input_size=cfg.image_size, width=args.width)
    teacher = FAN.from_config(fan_cfg)  # random init: the cost does not depend on weights
    s = cfg.image_size
    n_images = 4 * cfg.batch_size
    train_x = torch.rand(n_images, 3, s, s)

    identity_net = None
    if max(cfg.identity_weight, cfg.identity_spread_weight, cfg.attack_identity_weight) > 0:
        from deid.judges.identity_net import IdentityNet

        identity_net = IdentityNet.load()  # the cached face-api weights (as training needs)
    tmp = tempfile.TemporaryDirectory(prefix="stage1_speed_")
    trainer = Stage1Trainer(cfg, tmp.name, DistInfo(), train_x, teacher, val_images=train_x[:8],
                            identity_net=identity_net)
    # the same step without the attack term (nor an identity twin)
    cfg_plain = dataclasses.replace(cfg, identity_weight=0.0, identity_spread_weight=0.0,
                                    attack_identity_weight=0.0)
    plain = Stage1Trainer(cfg_plain, os.path.join(tmp.name, "plain"), DistInfo(), train_x,
                          teacher, val_images=train_x[:8])

    # camera alone, exactly as Stage1Model.forward + the optics loss terms run it
    cam = build_camera(cfg, torch.Generator().manual_seed(cfg.seed))
    target = trainer.target_psf
    x_cam = train_x[: cfg.batch_size].clone()
    cam_params = [p for p in cam.parameters() if p.requires_grad]
    counter = {"cam": 0}

    def camera_fwd_bwd():
        for p in cam_params:
            p.grad = None
        k = counter["cam"]
        counter["cam"] += 1
        gens = [sample_generator(cfg.seed, k, i) for i in range(len(x_cam))]
        psf = cam.psf()
        if cfg.noise:
            y = torch.cat([cam(x_cam[i:i + 1], generator=g, psf=psf)
                           for i, g in enumerate(gens)])
        else:
            y = cam(x_cam, noise=False, psf=psf)
        loss = image_distance_loss(x_cam, y) + cfg.alpha1 * psf_target_loss(psf, target)
        loss.backward()

    # FAN alone: student fwd+bwd on a fixed camera-like input, teacher fwd under no_grad
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    teacher_nograd = copy.deepcopy(teacher).eval().requires_grad_(False)
    y_fan = torch.rand(cfg.batch_size, 3, s, s)
    x_fan = torch.rand(cfg.batch_size, 3, s, s)

    def fan_fwd_bwd():
        student.zero_grad(set_to_none=True)
        hm = student(y_fan)
        with torch.no_grad():
            hm_t = teacher_nograd(x_fan)
        (cfg.alpha2 * heatmap_loss(hm, hm_t)).backward()

    cases = {"step": trainer.train_step, "plain": plain.train_step, "camera": camera_fwd_bwd,
             "fan": fan_fwd_bwd}
    every = int(getattr(cfg, "attack_every", 1))
    if every > 1:  # every step with the attack term (the config computes it every k-th step)
        each = Stage1Trainer(dataclasses.replace(cfg, attack_every=1),
                             os.path.join(tmp.name, "each"), DistInfo(), train_x, teacher,
                             val_images=train_x[:8], identity_net=identity_net)
        cases["step_each"] = each.train_step
    if identity_net is not None:
        # identity terms alone: chips of a fixed camera-like y through the dlib twin (and,
        # for the attack term, through the Wiener filters first), fwd+bwd to y and the PSF
        from deid.judges.identity_net import warp_to_chips

        y_id = torch.rand(cfg.batch_size, 3, s, s)
        x_id = train_x[: cfg.batch_size]
        aff = trainer.chip_affines[: cfg.batch_size]
        with torch.no_grad():
            e_x = identity_net(warp_to_chips(x_id, aff))
            psf_id = trainer.camera.psf()

        def identity_fwd_bwd():
            y = y_id.clone().requires_grad_(True)
            psf = psf_id.clone().requires_grad_(True)
            loss = torch.zeros(())
            if cfg.identity_weight > 0 or cfg.identity_spread_weight > 0:
                e_y = identity_net(warp_to_chips(y, aff))
                loss = (cfg.identity_weight * identity_loss(e_y, e_x, cfg.identity_margin)
                        + cfg.identity_spread_weight * identity_spread_loss(e_y))
            if cfg.attack_identity_weight > 0:
                loss = loss + cfg.attack_identity_weight * trainer._attack_identity(
                    y, psf, e_x, aff, x=x_id)
            loss.backward()

        cases["identity"] = identity_fwd_bwd
    rss_setup = proc_status_mb("VmRSS")
    for _ in range(args.warmup):
        for fn in cases.values():
            fn()
    wall = {k: [] for k in cases}
    cpu = {k: [] for k in cases}
    rng = random.Random(args.seed)
    t_all = time.perf_counter()
    for _ in range(args.steps):
        gc.collect()
        names = list(cases)
        rng.shuffle(names)
        for name in names:
            gc.disable()
            try:
                c0 = time.process_time()
                t0 = time.perf_counter()
                cases[name]()
                t1 = time.perf_counter()
                c1 = time.process_time()
            finally:
                gc.enable()
            wall[name].append(t1 - t0)
            cpu[name].append(c1 - c0)
    t_all = time.perf_counter() - t_all
    last = trainer.history[-1]
    tmp.cleanup()

    def stats(v):
        ms = np.asarray(v) * 1e3
        q1, med, q3 = np.percentile(ms, [25, 50, 75])
        return {"median_ms": float(med), "iqr_ms": float(q3 - q1), "min_ms": float(ms.min()),
                "mean_ms": float(ms.mean())}

    out = {
        "threads": n,
        "root": args.root,
        "package": os.path.dirname(os.path.dirname(sys.modules["deid"].__file__)),
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {v: os.environ.get(v) for v in _PINNED + _OMP_EXTRA},
        "camera_config": {"name": trainer.camera.config.name,
                          "image_size_px": trainer.camera.config.image_size_px,
                          "psf_size_px": trainer.camera.config.psf_size_px,
                          "pupil_samples": trainer.camera.config.pupil_samples,
                          "trainable": sum(p.numel() for p in cam_params)},
        "fan": {"width": fan_cfg.width, "num_modules": fan_cfg.num_modules,
                "depth": fan_cfg.effective_depth,
                "params": sum(p.numel() for p in student.parameters())},
        "config": {"image_size": cfg.image_size, "batch_size": cfg.batch_size,
                   "noise": cfg.noise, "augment": cfg.augment, "camera": cfg.camera,
                   "n_modes": cfg.n_modes},
        "steps": args.steps, "warmup": args.warmup,
        "wall": {k: stats(v) for k, v in wall.items()},
        "cpu_median_ms": {k: float(statistics.median(v) * 1e3) for k, v in cpu.items()},
        "cpu_mean_ms": {k: float(statistics.fmean(v) * 1e3) for k, v in cpu.items()},
        "steps_per_s": float(len(wall["step"]) / sum(wall["step"])),
        "timed_seconds": t_all,
        "rss_imports_mb": rss_imports,
        "rss_setup_mb": rss_setup,
        "vmhwm_mb": proc_status_mb("VmHWM"),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # kB
        "last_loss": last["loss"],
        "last_attack_identity": last["attack_identity"],
        "attack_every": every,
    }
    print(JSON_MARK + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------ parent
def run_worker(args, n: int, root: str = ROOT) -> dict:
    env = dict(os.environ)
    for var in _PINNED:
        env[var] = str(n)
    if args.wait_policy:
        env["OMP_WAIT_POLICY"] = args.wait_policy
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(n),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--width", str(args.width),
           "--seed", str(args.seed), "--root", root, "--malloc", args.malloc]
    load0, stat0 = loadavg(), cpu_counters()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    stat1 = cpu_counters()
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"worker with {n} thread(s) failed (exit {proc.returncode})")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(JSON_MARK)]
    if not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"worker with {n} thread(s) printed no result line")
    res = json.loads(lines[-1][len(JSON_MARK):])
    if os.path.realpath(res["package"]) != os.path.realpath(root):
        raise SystemExit(f"the worker for {root} imported deid from {res['package']}")
    res["load_before"], res["load_after"] = load0, loadavg()
    res["cpus_busy_pct"] = (100 * (stat1[0] - stat0[0]) / (stat1[1] - stat0[1])
                            if stat0 and stat1 and stat1[1] > stat0[1] else float("nan"))
    return res


def label(r: dict) -> str:
    """Thread count, with the OpenMP wait policy if one was set."""
    policy = r["env"].get("OMP_WAIT_POLICY")
    return f"{r['threads']}" + (f" ({policy})" if policy else "")


def tree(r: dict, args) -> str:
    """``working tree`` or ``baseline`` (the ``--baseline`` checkout)."""
    return "baseline" if args.baseline and r["root"] == args.baseline else "working tree"


def main(args) -> None:
    t_start = time.perf_counter()
    roots = [ROOT] + ([args.baseline] if args.baseline else [])
    results = []
    for k in range(args.rounds):
        for n in args.thread_list:
            # alternate which tree goes first, so neither always runs on a cooler machine
            for root in (roots if k % 2 == 0 else roots[::-1]):
                results.append(run_worker(args, n, root))
    results.sort(key=lambda r: (r["root"] != ROOT, r["threads"]))
    r0 = results[0]
    cam, fan, cfg = r0["camera_config"], r0["fan"], r0["config"]
    print("# privlens stage-1 training speed (CPU)")
    print()
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"- cpu: {cpu_model()} ({os.cpu_count()} logical CPUs visible)")
    print(f"- python {r0['python']}, torch {r0['torch']}, numpy {r0['numpy']}; "
          f"CPU capability {r0['cpu_capability']}")
    print(f"- config: {os.path.relpath(STAGE1_CONFIG, ROOT)} ({cfg['camera']}, "
          f"{cfg['image_size']}x{cfg['image_size']}, batch {cfg['batch_size']}, "
          f"{cfg['n_modes']} Noll modes, noise={cfg['noise']}, flips={cfg['augment']}); "
          f"synthetic torch.rand images, randomly initialised teacher")
    print(f"- camera: {cam['name']} at {cam['image_size_px']} px, {cam['pupil_samples']}-sample "
          f"pupil, {cam['psf_size_px']} px PSF, {cam['trainable']} trainable modes")
    print(f"- FAN (student = copy of teacher): width {fan['width']}, {fan['num_modules']} "
          f"module(s), hourglass depth {fan['depth']}, {fan['params']:,} parameters")
    print(f"- timing: one fresh process per tree and thread count (OMP/MKL/OPENBLAS_NUM_THREADS "
          f"and torch.set_num_threads = N, inter-op threads left at torch's default "
          f"{r0['interop_threads']}); {r0['warmup']} warm-up calls, then {r0['steps']} "
          f"interleaved rounds (step, plain step, camera, FAN, identity in shuffled order), "
          f"time.perf_counter, gc off inside timed calls")
    print(f"- trees: working tree {ROOT}" + (f"; baseline {args.baseline}" if args.baseline
                                            else ""))
    print("- OpenMP env of the workers: " + ", ".join(
        f"{v}={r0['env'].get(v) or 'unset'}" for v in _OMP_EXTRA))
    for r in results:
        print(f"- worker {tree(r, args)}, {r['threads']} thread(s): load average (1/5/15 min) "
              f"before {r['load_before']}, after {r['load_after']}; all CPUs "
              f"{r['cpus_busy_pct']:.0f}% busy during the worker; RSS after imports "
              f"{r['rss_imports_mb']:.0f} MB, after set-up {r['rss_setup_mb']:.0f} MB, "
              f"ru_maxrss {r['ru_maxrss_mb']:.0f} MB; last loss {r['last_loss']:.4f} "
              f"(attack term {r['last_attack_identity']:.4f}); package {r['package']}")
    print(f"- total run time {time.perf_counter() - t_start:.1f} s")
    print()
    print("| tree | threads | plain step ms | step with attack term ms | ratio "
          "| attack term ms (step - plain) | its share of the step % "
          "| attack term alone fwd+bwd ms | camera ms | FAN ms | rest ms | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        w = r["wall"]
        each = "step_each" if "step_each" in w else "step"
        step, pl = w[each]["median_ms"], w["plain"]["median_ms"]
        c, f = w["camera"]["median_ms"], w["fan"]["median_ms"]
        ident = f"{w['identity']['median_ms']:.1f}" if "identity" in w else "-"
        print(f"| {tree(r, args)} | {label(r)} | {pl:.1f} | {step:.1f} | {step / pl:.2f} "
              f"| {step - pl:.1f} | {100 * (step - pl) / step:.0f} | {ident} | {c:.1f} "
              f"| {f:.1f} | {pl - c - f:.1f} | {r['vmhwm_mb']:.0f} |")
    print()
    print("| tree | threads | step IQR ms | step min ms | step CPU ms | plain IQR ms "
          "| plain min ms | plain CPU ms | ratio of CPU medians | ratio of minima "
          "| steps/s (with attack term) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        w, cpu = r["wall"], r["cpu_median_ms"]
        print(f"| {tree(r, args)} | {label(r)} | {w['step']['iqr_ms']:.1f} "
              f"| {w['step']['min_ms']:.1f} | {cpu['step']:.1f} | {w['plain']['iqr_ms']:.1f} "
              f"| {w['plain']['min_ms']:.1f} | {cpu['plain']:.1f} "
              f"| {cpu['step'] / cpu['plain']:.2f} "
              f"| {w['step']['min_ms'] / w['plain']['min_ms']:.2f} | {r['steps_per_s']:.2f} |")
    lazy = [r for r in results if r.get("attack_every", 1) > 1]
    if lazy:
        print()
        print("| tree | threads | attack term every k-th step | config's step, mean ms "
              "| plain step, mean ms | **ratio of means** | ratio of CPU means "
              "| step with the term, mean ms |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in lazy:
            w, cm = r["wall"], r["cpu_mean_ms"]
            print(f"| {tree(r, args)} | {label(r)} | {r['attack_every']} "
                  f"| {w['step']['mean_ms']:.1f} | {w['plain']['mean_ms']:.1f} "
                  f"| **{w['step']['mean_ms'] / w['plain']['mean_ms']:.2f}** "
                  f"| {cm['step'] / cm['plain']:.2f} | {w['step_each']['mean_ms']:.1f} |")
    print()
    print("ms columns: wall-clock medians of single calls. ratio: step / plain step, both timed "
          "in the same worker. Attack term: step - plain (what the term adds to a step); "
          "'alone' times trainer._attack_identity on a fixed y with e(x) given (the search over "
          "the balances, the restorations, the twin, backward). rest = plain - camera - FAN "
          "(Adam, batch assembly, autograd glue). Peak RSS: the worker's VmHWM (includes Python "
          "+ torch). CPU ms: process CPU time (all threads); CPU > wall means the threads ran "
          "in parallel, wall >> CPU means preemption; on a shared machine the ratio of the "
          "CPU medians is the steadier one.")


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        worker(ARGS)
    else:
        main(ARGS)
