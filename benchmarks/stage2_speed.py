#!/usr/bin/env python
"""Speed and peak memory of one stage-2 training iteration (StarGAN v2's four sub-steps + EMA).

For every setting (generator size ``S`` from ``--sizes`` times thread count from
``--threads``, on the CPU; and ``S`` from ``--gpu-sizes`` on the GPU when
``torch.cuda.is_available()``) the script starts a fresh worker process (this script with
``--worker``), so thread settings and peak RSS are clean. The worker pins ``OMP_NUM_THREADS``
& co. to N before importing torch, calls ``torch.set_num_threads(N)`` and builds a
``Stage2Solver`` without any downloaded data or checkpoint:

- data: ``torch.rand`` sources and references at the stage-1 size ``R`` (``--stage1-size``,
  128 as ``configs/stage1-demo.yaml``), 4 x batch of each, distinct identities;
- frozen parts: a real ``optics.camera.Camera(get_preset("lopez2024").at_image_size(R))``,
  randomly initialised FANs in the layout of ``configs/teacher-demo.yaml`` as U and U*,
  ``LPIPS(pretrained=False)`` (random weights, the same compute as the real one) and the
  identity twin: the real dlib twin (``training_twin(IdentityNet.load(fetch=False))``) when
  the face-api weights are cached, else a small stand-in (printed; it makes the twin's share
  look far too small). The dlib chip affines are fixed (``FrozenParts.chip_affines`` is
  replaced): detection is a one-off at start-up, not a per-step cost;
- config: ``Stage2Config`` with base width 32 and cap 256 (the small config), batch 8,
  privacy dial weight 1, LPIPS weight 1, heatmap expression loss; or the fields of
  ``--config`` (e.g. ``configs/stage2-demo.yaml``), with ``img_size`` set per setting.

After ``--warmup`` untimed rounds the worker times ``--steps`` rounds; in each, in shuffled
order and in the same process:

1. ``iteration``: ``solver.train_step()``, the whole iteration (batch, D latent, D reference,
   G latent, G reference, EMA update);
2. ``batch``: ``solver.batch(step)`` alone: the camera renders the batch at ``R`` (one sample
   at a time, per-sample noise), U's heatmaps, the face-part masks, resizing to ``S``;
3. the frozen networks the G sub-steps run inside their losses, on a fixed output-sized
   tensor that requires grad (forward + backward to it): ``teacher`` (U*'s heatmaps of x
   under no_grad and of the output, the expression loss), ``twin`` (the dial: e(x) under
   no_grad and e(output)) and ``lpips`` (LPIPS(reference, output)). Each G sub-step runs
   teacher and twin once, the reference one also LPIPS, so the in-loss frozen cost per
   iteration is ``2 teacher + 2 twin + 1 lpips``.

"networks" = iteration - batch - in-loss frozen: G, F, E, D forward and backward, R1, Adam,
EMA (an estimate: inside the step the frozen networks' backward continues into G). Peak
memory is the worker's ``VmHWM`` from ``/proc/self/status`` (it includes Python and torch,
whose share is printed as the RSS after the imports and after set-up) and, on a GPU,
``torch.cuda.max_memory_allocated``. The worker prints one JSON line; the parent prints the
machine, the load average and markdown tables, beside the published reference (about 0.86 s
per iteration at 256 px on one V100, batch 4; 300k iterations in about 3 days: StarGAN v2 /
the paper's Face-DeId code), which is quoted, not measured here. Run with ``--help`` for the
options. A benchmark, not a test: nothing here asserts a time.
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
_OMP_EXTRA = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEACHER_CONFIG = os.path.join(ROOT, "configs", "teacher-demo.yaml")
DEMO_CONFIG = os.path.join(ROOT, "configs", "stage2-demo.yaml")
JSON_MARK = "STAGE2_SPEED_JSON "
#: The published reference the issue quotes (not measured by this script).
PUBLISHED = {"label": "published (V100, 256 px, batch 4)", "s_per_iter": 0.86, "batch": 4,
             "iterations": 300_000, "days": 3.0}
#: Defaults of the options a --config file may set instead.
DEFAULTS = {"base_width": 32, "max_width": 256, "batch_size": 8}
_SIZES = (32, 64, 128, 256, 512)  # Stage2Config.img_size


def _int_list(p, text: str, flag: str, allow_empty: bool = False) -> list[int]:
    try:
        out = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        p.error(f"{flag} must be comma-separated integers, got {text!r}")
    if not out and not allow_empty:
        p.error(f"{flag} needs at least one value")
    return out


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for options whose default is None (their help says it)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Full run: python benchmarks/stage2_speed.py (64 and 128 px, 1 and 2 threads; "
               "256 px on the GPU if there is one). Smoke test: --sizes 64 --steps 1 "
               "--warmup 0 --threads 1.",
        formatter_class=_Formatter,
    )
    p.add_argument("--sizes", default="64,128",
                   help="comma-separated generator sizes S (px) timed on the CPU")
    p.add_argument("--gpu-sizes", default="256",
                   help="comma-separated sizes timed on the GPU when torch.cuda.is_available() "
                        "('' = none)")
    p.add_argument("--threads", default="1,2",
                   help="comma-separated torch thread counts, one fresh worker per size and "
                        "count (a GPU worker uses the largest)")
    p.add_argument("--steps", type=int, default=10, metavar="N",
                   help="timed rounds (iteration, batch(), teacher, twin, LPIPS), after --warmup")
    p.add_argument("--warmup", type=int, default=2, metavar="N",
                   help="untimed warm-up rounds")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="a Stage2Config file (e.g. configs/stage2-demo.yaml) instead of the "
                        "defaults; img_size comes from --sizes, stage1/data/teacher are ignored "
                        "(synthetic set-up), and --batch / --base-width / --max-width override "
                        "it when given")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help=f"global batch (default {DEFAULTS['batch_size']}, or the --config's)")
    p.add_argument("--base-width", type=int, default=None,
                   help=f"G/E/D channels at full resolution (default {DEFAULTS['base_width']}, "
                        f"or the --config's)")
    p.add_argument("--max-width", type=int, default=None,
                   help=f"cap on the channels (default {DEFAULTS['max_width']}, or the "
                        f"--config's)")
    p.add_argument("--stage1-size", type=int, default=128, metavar="R",
                   help="stage-1 size R: the camera, U and U* work there")
    p.add_argument("--fan-width", type=int, default=32,
                   help="width of U and U* (32 = configs/teacher-demo.yaml)")
    p.add_argument("--domains", type=int, default=1,
                   help="number of domains (1 = the demo corpus; 2 = e.g. CelebA-HQ female/male)")
    p.add_argument("--twin", choices=("auto", "dlib", "stand-in"), default="auto",
                   help="identity twin of the privacy dial: the dlib twin (needs the cached "
                        "face-api weights), a small stand-in, or auto (dlib when cached)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, networks and order")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)  # worker's S
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)  # worker's device
    args = p.parse_args(argv)
    args.size_list = _int_list(p, args.sizes, "--sizes", allow_empty=True)
    args.gpu_size_list = _int_list(p, args.gpu_sizes, "--gpu-sizes", allow_empty=True)
    args.thread_list = _int_list(p, args.threads, "--threads")
    if not args.size_list and not args.gpu_size_list:
        p.error("nothing to time: --sizes and --gpu-sizes are both empty")
    for s in args.size_list + args.gpu_size_list:
        if s not in _SIZES:
            p.error(f"sizes must be among {', '.join(map(str, _SIZES))}, got {s}")
    if min(args.thread_list) < 1:
        p.error("--threads: each count must be >= 1")
    if args.worker and (len(args.thread_list) != 1 or args.size is None):
        p.error("--worker runs exactly one thread count and one --size")
    if args.steps < 1 or args.warmup < 0:
        p.error("need --steps >= 1 and --warmup >= 0")
    if args.batch is not None and args.batch < 2:
        p.error("--batch must be >= 2")
    if args.stage1_size < 32 or args.stage1_size % 4:
        p.error("--stage1-size must be a multiple of 4 and >= 32")
    if args.domains < 1:
        p.error("--domains must be >= 1")
    if args.config is not None:
        args.config = os.path.abspath(args.config)
        if not os.path.isfile(args.config):
            p.error(f"--config {args.config} does not exist")
    return args


# ----------------------------------------------------------------------------- machine
from machine import cpu_counters, cpu_model, loadavg, proc_status_mb  # noqa: E402,I001


# ------------------------------------------------------------------------------ worker
def worker(args) -> None:
    n = args.thread_list[0]
    for var in _PINNED:  # before torch (and numpy) are imported
        os.environ[var] = str(n)

    import dataclasses
    import gc
    import random
    import resource
    import tempfile
    import warnings

    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(n)
    sys.path.insert(0, ROOT)
    warnings.filterwarnings("ignore")

    from deid.faces.fan import FAN
    from deid.judges.identity_net import IdentityNet
    from deid.judges.identity_twin import DlibTwin, training_twin
    from deid.judges.lpips import LPIPS
    from deid.methods.stage2.config import Stage2Config
    from deid.methods.stage2.data import Stage2Data
    from deid.methods.stage2.frozen import FrozenParts
    from deid.methods.stage2.losses import expression_heatmap_loss, privacy_dial_loss
    from deid.methods.stage2.nets import count_parameters
    from deid.methods.stage2.solver import SUB_STEPS, Stage2Solver
    from deid.methods.teacher import FANTrainConfig
    from optics.camera import Camera
    from optics.kit.config import load_config
    from optics.kit.distributed import DistInfo
    from optics.presets import get_preset

    rss_imports = proc_status_mb("VmRSS")
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    # ---- config: the small config (or --config), this setting's size
    base = load_config(Stage2Config, args.config) if args.config else Stage2Config(
        privacy_weight=1.0, lambda_lpips=1.0, expression="heatmap", **DEFAULTS)
    override = {k: v for k, v in (("batch_size", args.batch), ("base_width", args.base_width),
                                  ("max_width", args.max_width)) if v is not None}
    cfg = dataclasses.replace(base, img_size=args.size, stage1="", data="", teacher="",
                              device=str(device), tensorboard=False, **override)
    R = args.stage1_size
    torch.manual_seed(args.seed)

    # ---- frozen parts: real camera, random FANs (demo teacher layout), LPIPS, twin
    camera = Camera(get_preset("lopez2024").at_image_size(R)).requires_grad_(False)
    fan_cfg = load_config(FANTrainConfig, TEACHER_CONFIG).fan_config().replace(
        input_size=R, width=args.fan_width)
    regressor, teacher = FAN.from_config(fan_cfg), FAN.from_config(fan_cfg)

    class StandInTwin(nn.Module):
        """A small embedder on 150 px chips (the dial's routing, not dlib's cost)."""

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.AvgPool2d(10), nn.Flatten(), nn.Linear(3 * 15 * 15, 128))

        def forward(self, chips):
            return self.net(chips)

    twin, twin_note, twin_params = None, "", 0
    if args.twin in ("auto", "dlib"):
        try:
            id_net = IdentityNet.load(fetch=False)
            twin = training_twin(id_net)
            twin_params = count_parameters(id_net)  # DlibTwin holds them as buffers
        except Exception as e:  # weights not cached (or unreadable)
            if args.twin == "dlib":
                raise
            twin_note = f"face-api weights not available: {type(e).__name__}: {e}"
    if twin is not None:
        kind = "DlibTwin" if isinstance(twin, DlibTwin) else type(twin).__name__
        twin_desc = f"dlib twin ({kind} of IdentityNet, cached face-api weights)"
    else:
        twin = StandInTwin()
        twin_params = count_parameters(twin)
        twin_desc = ("STAND-IN twin (avg-pool + linear on 150 px chips; far cheaper than "
                     "dlib's ResNet" + (f"; {twin_note}" if twin_note else "") + ")")
    frozen = FrozenParts(camera, regressor, cfg.img_size, teacher=teacher, twin=twin,
                         lpips=LPIPS(pretrained=False)).to(device)

    def fixed_affines(images: torch.Tensor) -> torch.Tensor:
        """Chip pixel -> image pixel maps that cut the whole image (dlib's detection is a
        one-off at start-up, not a per-step cost)."""
        a = torch.zeros(len(images), 2, 3)
        a[:, 0, 0] = a[:, 1, 1] = images.shape[-1] / 150
        return a

    frozen.chip_affines = fixed_affines  # this object only: the solver asks it once

    # ---- synthetic data at R
    g = torch.Generator().manual_seed(args.seed + 1)
    m = 4 * cfg.batch_size
    k = args.domains
    data = Stage2Data(
        sources=torch.rand(m, 3, R, R, generator=g), source_domains=torch.arange(m) % k,
        source_identities=[f"s{i}" for i in range(m)],
        references=torch.rand(m, 3, R, R, generator=g), reference_domains=torch.arange(m) % k,
        reference_identities=[f"r{i}" for i in range(m)],
        domains=[f"d{i}" for i in range(k)], kind="demo")
    tmp = tempfile.TemporaryDirectory(prefix="stage2_speed_")
    solver = Stage2Solver(cfg, data, frozen, tmp.name, DistInfo(device=device))

    # ---- the frozen networks of the losses, on a fixed output-sized tensor
    b0 = solver.batch(0)
    fake0 = torch.rand(b0.x.shape, generator=g).to(device)
    g_steps = [s for s in SUB_STEPS if s.startswith("g_")]
    per_iter = {"teacher": len(g_steps), "twin": len(g_steps),
                "lpips": sum(s.endswith("reference") for s in g_steps)}
    counter = {"batch": 1}

    def batch_alone():
        solver.batch(counter["batch"])
        counter["batch"] += 1

    def teacher_fwd_bwd():
        fake = fake0.clone().requires_grad_(True)
        with torch.no_grad():
            t_src = frozen.teacher_heatmaps(b0.x)
        expression_heatmap_loss(t_src, frozen.teacher_heatmaps(fake)).backward()

    def twin_fwd_bwd():
        fake = fake0.clone().requires_grad_(True)
        with torch.no_grad():
            e_x = frozen.identity(b0.x, b0.affines)
        privacy_dial_loss(frozen.identity(fake, b0.affines), e_x, b0.margin).backward()

    def lpips_fwd_bwd():
        fake = fake0.clone().requires_grad_(True)
        frozen.lpips(b0.ref, fake).mean().backward()

    last = {}

    def iteration():
        last.update(solver.train_step())

    cases = {"iteration": iteration, "batch": batch_alone}
    if cfg.expression == "heatmap" and cfg.lambda_exp > 0:
        cases["teacher"] = teacher_fwd_bwd
    elif cfg.expression == "pixel" and cfg.lambda_exp > 0:  # U*(x) only, no grad
        cases["teacher"] = lambda: frozen.teacher_heatmaps(b0.x).detach()
    if cfg.privacy_weight > 0:
        cases["twin"] = twin_fwd_bwd
    if cfg.lambda_lpips > 0:
        cases["lpips"] = lpips_fwd_bwd
    per_iter = {k: v for k, v in per_iter.items() if k in cases}

    rss_setup = proc_status_mb("VmRSS")
    for _ in range(args.warmup):
        for fn in cases.values():
            fn()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
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
                sync()
                c0 = time.process_time()
                t0 = time.perf_counter()
                cases[name]()
                sync()
                t1 = time.perf_counter()
                c1 = time.process_time()
            finally:
                gc.enable()
            wall[name].append(t1 - t0)
            cpu[name].append(c1 - c0)
    t_all = time.perf_counter() - t_all
    tmp.cleanup()

    def stats(v):
        s = np.asarray(v)
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        return {"mean_s": float(s.mean()), "min_s": float(s.min()), "median_s": float(med),
                "iqr_s": float(q3 - q1)}

    def frozen_params(mod):
        return None if mod is None else count_parameters(mod)

    out = {
        "threads": n,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "size": cfg.img_size,
        "stage1_size": R,
        "package": os.path.dirname(os.path.dirname(sys.modules["deid"].__file__)),
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {v: os.environ.get(v) for v in _PINNED + _OMP_EXTRA},
        "config_file": args.config,
        "config": {f: getattr(cfg, f) for f in (
            "img_size", "batch_size", "base_width", "max_width", "style_dim", "latent_dim",
            "mapping_width", "w_hpf", "use_heatmap", "lambda_adv", "lambda_r1", "lambda_sty",
            "lambda_ds", "ds_decay_steps", "lambda_cyc", "lambda_lpips", "expression",
            "lambda_exp", "privacy_weight", "noise")},
        "margins": list(cfg.privacy_margins),
        "num_domains": k,
        "images_per_side": m,
        "camera": {"name": camera.config.name, "image_size_px": camera.config.image_size_px,
                   "psf_size_px": camera.config.psf_size_px,
                   "pupil_samples": camera.config.pupil_samples},
        "fan": {"width": fan_cfg.width, "num_modules": fan_cfg.num_modules,
                "depth": fan_cfg.effective_depth, "input_size": fan_cfg.input_size},
        "twin": twin_desc,
        "stand_in_twin": isinstance(twin, StandInTwin),
        "params": {k_: count_parameters(solver.nets[k_]) for k_ in solver.nets},
        "frozen_params": {"U": frozen_params(frozen.regressor),
                          "U*": frozen_params(frozen.teacher),
                          "twin": twin_params,
                          "lpips": frozen_params(frozen.lpips)},
        "per_iteration": per_iter,
        "steps": args.steps, "warmup": args.warmup,
        "wall": {k_: stats(v) for k_, v in wall.items()},
        "cpu_mean_s": {k_: float(np.mean(v)) for k_, v in cpu.items()},
        "timed_seconds": t_all,
        "rss_imports_mb": rss_imports,
        "rss_setup_mb": rss_setup,
        "vmhwm_mb": proc_status_mb("VmHWM"),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # kB
        "cuda_peak_mb": (torch.cuda.max_memory_allocated(device) / 2**20) if cuda else None,
        "last": {k_: last.get(k_) for k_ in ("d_latent/total", "d_reference/total",
                                             "g_latent/total", "g_reference/total")},
        "solver_steps": solver.step,
    }
    print(JSON_MARK + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------ parent
def cuda_available() -> bool:
    """Ask a throw-away interpreter (the parent does not import torch)."""
    proc = subprocess.run([sys.executable, "-c",
                           "import torch; print(int(torch.cuda.is_available()))"],
                          capture_output=True, text=True)
    return proc.returncode == 0 and proc.stdout.strip().endswith("1")


def run_worker(args, size: int, n: int, device: str) -> dict:
    env = dict(os.environ)
    for var in _PINNED:
        env[var] = str(n)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--size", str(size),
           "--device", device, "--threads", str(n), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--stage1-size", str(args.stage1_size),
           "--fan-width", str(args.fan_width), "--domains", str(args.domains),
           "--twin", args.twin, "--seed", str(args.seed)]
    for flag, value in (("--config", args.config), ("--batch", args.batch),
                        ("--base-width", args.base_width), ("--max-width", args.max_width)):
        if value is not None:
            cmd += [flag, str(value)]
    what = f"{device}, {size} px, {n} thread(s)"
    print(f"running worker: {what} ...", file=sys.stderr, flush=True)
    load0, stat0 = loadavg(), cpu_counters()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    stat1 = cpu_counters()
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"worker ({what}) failed (exit {proc.returncode})")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(JSON_MARK)]
    if not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"worker ({what}) printed no result line")
    res = json.loads(lines[-1][len(JSON_MARK):])
    if os.path.realpath(res["package"]) != os.path.realpath(ROOT):
        raise SystemExit(f"the worker imported deid from {res['package']}, not {ROOT}")
    res["load_before"], res["load_after"] = load0, loadavg()
    res["cpus_busy_pct"] = (100 * (stat1[0] - stat0[0]) / (stat1[1] - stat0[1])
                            if stat0 and stat1 and stat1[1] > stat0[1] else float("nan"))
    return res


def setting(r: dict) -> str:
    dev = "CPU" if r["device"] == "cpu" else f"{r['device']} ({r['device_name']})"
    return f"{dev}, {r['size']} px, {r['threads']} thread(s)"


def split(r: dict) -> dict:
    """Mean seconds per iteration: the whole, batch(), the in-loss frozen networks (per
    iteration multiplicity) and the networks (the rest)."""
    w = r["wall"]
    it, bt = w["iteration"]["mean_s"], w["batch"]["mean_s"]
    in_loss = sum(c * w[k]["mean_s"] for k, c in r["per_iteration"].items())
    return {"iteration": it, "batch": bt, "in_loss": in_loss, "networks": it - bt - in_loss}


def _fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def main(args) -> None:
    t_start = time.perf_counter()
    jobs = [(s, n, "cpu") for s in args.size_list for n in args.thread_list]
    gpu = bool(args.gpu_size_list) and cuda_available()
    if gpu:
        jobs += [(s, max(args.thread_list), "cuda") for s in args.gpu_size_list]
    results = [run_worker(args, s, n, dev) for s, n, dev in jobs]
    r0 = results[0]
    cfg, cam, fan = r0["config"], r0["camera"], r0["fan"]
    print("# privlens stage-2 training speed")
    print()
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"- cpu: {cpu_model()} ({os.cpu_count()} logical CPUs visible)")
    gpus = sorted({r["device_name"] for r in results if r["device"] != "cpu"})
    print(f"- gpu: {', '.join(gpus) if gpus else 'none used'}"
          + ("" if gpu or not args.gpu_size_list else " (torch.cuda.is_available() is False)"))
    print(f"- python {r0['python']}, torch {r0['torch']}, numpy {r0['numpy']}; "
          f"CPU capability {r0['cpu_capability']}")
    src = os.path.relpath(r0["config_file"], ROOT) if r0["config_file"] else "the defaults"
    print(f"- config ({src}, img_size per setting): batch {cfg['batch_size']}, base width "
          f"{cfg['base_width']}, cap {cfg['max_width']}, style {cfg['style_dim']}, latent "
          f"{cfg['latent_dim']}, mapping width {cfg['mapping_width']}, w_hpf {cfg['w_hpf']}, "
          f"heatmap masks {cfg['use_heatmap']}; weights adv {cfg['lambda_adv']}, R1 "
          f"{cfg['lambda_r1']}, sty {cfg['lambda_sty']}, ds {cfg['lambda_ds']} (on: the timed "
          f"steps are early, < {cfg['ds_decay_steps']}), cyc {cfg['lambda_cyc']}, LPIPS "
          f"{cfg['lambda_lpips']}, expression {cfg['expression']} x {cfg['lambda_exp']}, "
          f"privacy dial {cfg['privacy_weight']} (margins {r0['margins']}); "
          f"noise {cfg['noise']}; {r0['num_domains']} domain(s)")
    print(f"- data: torch.rand sources and references, {r0['images_per_side']} each, at the "
          f"stage-1 size R = {r0['stage1_size']} px; fixed dlib chip affines (detection is a "
          f"one-off at start-up)")
    print(f"- frozen: camera {cam['name']} at {cam['image_size_px']} px "
          f"({cam['pupil_samples']}-sample pupil, {cam['psf_size_px']} px PSF); U and U* "
          f"randomly initialised FANs (configs/teacher-demo.yaml layout: width {fan['width']}, "
          f"{fan['num_modules']} module(s), depth {fan['depth']}, {fan['input_size']} px); "
          f"LPIPS(pretrained=False) (random weights, the same compute); twin: {r0['twin']}")
    if any(r["stand_in_twin"] for r in results):
        print("- **warning**: the stand-in twin is far cheaper than the dlib twin, so the "
              "twin column and the frozen share are too small")
    print(f"- timing: one fresh process per setting (OMP/MKL/OPENBLAS_NUM_THREADS and "
          f"torch.set_num_threads = N, inter-op threads left at torch's default "
          f"{r0['interop_threads']}); {r0['warmup']} warm-up rounds, then {r0['steps']} "
          f"rounds of (iteration, batch(), in-loss frozen networks) in shuffled order, "
          f"time.perf_counter (after torch.cuda.synchronize on a GPU), gc off inside timed "
          f"calls")
    print("- OpenMP env of the workers: " + ", ".join(
        f"{v}={r0['env'].get(v) or 'unset'}" for v in _OMP_EXTRA))
    for r in results:
        last = ", ".join(f"{k} {_fmt(v, '.4f')}" for k, v in r["last"].items())
        print(f"- worker {setting(r)}: load average (1/5/15 min) before {r['load_before']}, "
              f"after {r['load_after']}; all CPUs {r['cpus_busy_pct']:.0f}% busy during the "
              f"worker; RSS after imports {r['rss_imports_mb']:.0f} MB, after set-up "
              f"{r['rss_setup_mb']:.0f} MB, ru_maxrss {r['ru_maxrss_mb']:.0f} MB; "
              f"{r['timed_seconds']:.1f} s timed; last losses: {last}")
    print(f"- total run time {time.perf_counter() - t_start:.1f} s")
    print()
    print("| setting | batch | s/iteration, mean | s/iteration, min | s per sample (mean) "
          "| frozen: batch() s | frozen: in the losses s | networks s | networks % "
          "| 300k iterations, days | peak RSS MB | GPU peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        sp, b = split(r), r["config"]["batch_size"]
        it = sp["iteration"]
        print(f"| {setting(r)} | {b} | {it:.3f} | {r['wall']['iteration']['min_s']:.3f} "
              f"| {it / b:.3f} | {sp['batch']:.3f} | {sp['in_loss']:.3f} "
              f"| {sp['networks']:.3f} | {100 * sp['networks'] / it:.0f} "
              f"| {it * PUBLISHED['iterations'] / 86400:.1f} | {r['vmhwm_mb']:.0f} "
              f"| {_fmt(r['cuda_peak_mb'], '.0f')} |")
    pb = PUBLISHED
    print(f"| {pb['label']} | {pb['batch']} | ~{pb['s_per_iter']:.2f} | - "
          f"| ~{pb['s_per_iter'] / pb['batch']:.3f} | - | - | - | - | ~{pb['days']:.0f} | - "
          f"| - |")
    print()
    print("| setting | iteration IQR s | iteration CPU s | batch() min s "
          "| U* expression fwd+bwd s | twin (dial) fwd+bwd s | LPIPS fwd+bwd s "
          "| per iteration |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        w, c = r["wall"], r["per_iteration"]
        cells = [_fmt(w[k]["mean_s"]) if k in w else "-" for k in ("teacher", "twin", "lpips")]
        mult = " + ".join(f"{v} x {k}" for k, v in c.items()) or "-"
        print(f"| {setting(r)} | {w['iteration']['iqr_s']:.3f} "
              f"| {r['cpu_mean_s']['iteration']:.3f} | {w['batch']['min_s']:.3f} "
              f"| {' | '.join(cells)} | {mult} |")
    print()
    print("| size | G | F | E | D | G+F+E+D | U | U* | twin | LPIPS |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    seen = set()
    for r in results:
        key = (r["size"], json.dumps(r["params"], sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        p, fp = r["params"], r["frozen_params"]
        nets = [p["generator"], p["mapping"], p["style_encoder"], p["discriminator"]]
        print(f"| {r['size']} | " + " | ".join(f"{v:,}" for v in nets) + f" | {sum(nets):,} | "
              + " | ".join(_fmt(fp[k], ",") for k in ("U", "U*", "twin", "lpips")) + " |")
    print()
    print("Seconds are wall-clock means of single calls (min: the fastest). frozen: batch() is "
          "solver.batch(step) alone (camera rendering at R, U's heatmaps, masks, resizing); "
          "in the losses = the per-iteration multiples of the U*, twin and LPIPS calls, each "
          "timed forward+backward on a fixed output-sized tensor; networks = iteration - "
          "batch() - in-loss frozen (G, F, E, D, R1, Adam, EMA; an estimate). 300k iterations: "
          "the mean extrapolated, not timed. Peak RSS: the worker's VmHWM (includes Python + "
          "torch); GPU peak: torch.cuda.max_memory_allocated. CPU s: process CPU time (all "
          "threads). The published row is quoted (StarGAN v2 / the paper's Face-DeId code: "
          "about 0.86 s per iteration at 256 px on one V100, batch 4, 300k iterations in about "
          "3 days), not measured here: another machine, size, batch and widths.")


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        worker(ARGS)
    else:
        main(ARGS)
