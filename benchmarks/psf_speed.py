#!/usr/bin/env python
"""Single-thread CPU speed of the privlens PSF models against poppy and the bare FFT floor.

One run measures, interleaved in shuffled order so that a noisy shared machine hurts every
row alike (3 wavelengths 640/550/440 nm, 15 Noll terms, 256-sample pupil padded to 512):

1. ``FraunhoferPSF`` forward (``torch.no_grad``) and forward+backward, float32;
2. poppy's Fraunhofer ``OpticalSystem.calc_psf`` of the same system, one call per
   wavelength, the three call times summed (poppy computes in float64/complex128);
3. the FFT floor: ``torch.fft.fft2`` of a ``(3, 512, 512)`` complex64 tensor, forward and
   forward+backward;
4. the physical camera ``Camera(get_preset("lopez2024")).psf()``, forward and
   forward+backward (to ``cam.trainable_um``);
5. image formation of 8 RGB 256x256 images through that camera (PSF + convolution + noise +
   ADC), forward+backward, and the bare rfft2 convolution floor of the same sizes.

Every row reports the median, interquartile range and minimum of the wall-clock time
(``time.perf_counter``) of single calls after warm-up, the median process CPU time
(``time.process_time``; wall >> CPU flags a contended machine) and the median number of
minor page faults per call. glibc's malloc is left at its defaults unless ``--malloc-tuned``
is given (which re-execs the script with ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``
set and says so). Run with ``--help`` for the options. The output ends with two ``RATIO``
lines (ratios of wall-clock medians).
"""

from __future__ import annotations

import os
import sys

# Pin every thread pool to one thread BEFORE numpy / torch / numexpr are imported.
_PINNED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
           "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS")
for _var in _PINNED:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

WAVELENGTHS_M = (640e-9, 550e-9, 440e-9)
N_TERMS = 15
NPIX = 256
OVERSAMPLE = 2
M = NPIX * OVERSAMPLE
PUPIL_DIAMETER_M = 0.01  # sets only the angular pixel scale, not the cost
OPD_SCALE_M = 50e-9
IMAGE_BATCH = 8
IMAGE_SIZE = 256


# 32 MiB is glibc's historical cap for the mmap threshold; 4 GiB trim = never trim in practice.
_MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
                 "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30)}
_REEXEC_MARK = "PRIVLENS_BENCH_MALLOC_REEXEC"


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Threads are pinned to 1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--repeats", type=int, default=100, metavar="N",
                   help="timed repetitions of every torch row (interleaved rounds)")
    p.add_argument("--poppy-repeats", type=int, default=20, metavar="N",
                   help="timed repetitions of the poppy row (each = 3 calc_psf calls); "
                        "spread evenly over the rounds")
    p.add_argument("--warmup", type=int, default=5, metavar="N",
                   help="untimed warm-up calls of every row before timing")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 8 repeats, 4 poppy repeats, 2 warm-ups "
                        "(numbers are indicative only)")
    p.add_argument("--no-poppy", action="store_true",
                   help="skip poppy (its RATIO line is then reported as nan)")
    p.add_argument("--seed", type=int, default=0, help="seed of inputs and measurement order")
    p.add_argument("--malloc-tuned", action="store_true",
                   help="re-exec this script with "
                        + " and ".join(f"{k}={v}" for k, v in _MALLOC_TUNED.items())
                        + " so glibc keeps freed tensor memory instead of returning it to the "
                        "OS (no page faults per call); the output says so. Default: glibc "
                        "defaults, i.e. what a user gets")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.poppy_repeats, args.warmup = 8, 4, 2
    if args.repeats < 1 or args.poppy_repeats < 1 or args.warmup < 0:
        p.error("--repeats and --poppy-repeats must be >= 1, --warmup >= 0")
    return args


ARGS = parse_args()  # before the heavy imports, so --help is instant

if ARGS.malloc_tuned and os.environ.get(_REEXEC_MARK) != "1":
    # glibc reads MALLOC_* only at process start-up: setting them now would do nothing, so
    # restart the interpreter on this script with them in the environment.
    _env = dict(os.environ, **_MALLOC_TUNED)
    _env[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], _env)

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark the working tree

# --------------------------------------------------------------------------------- machine
from machine import cpu_counters, cpu_model, loadavg  # noqa: E402  (benchmarks/machine.py)

from optics.camera import Camera  # noqa: E402
from optics.imaging import _wrap_kernel  # noqa: E402
from optics.presets import get_preset  # noqa: E402
from optics.psf import FraunhoferPSF  # noqa: E402


def malloc_info() -> str:
    set_ = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    if not set_:
        return ("malloc: glibc defaults (MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ not "
                "set; freed large tensors may go back to the OS and page-fault when reused)")
    who = ("set by --malloc-tuned, which re-exec'd this script with them"
           if os.environ.get(_REEXEC_MARK) == "1" else "set by the caller's environment")
    return ("malloc: TUNED, " + ", ".join(f"{k}={v}" for k, v in sorted(set_.items()))
            + f" ({who}): glibc keeps freed memory (see the faults column)")


def machine_info(poppy_mod) -> list[str]:
    lines = [
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"cpu: {cpu_model()} ({os.cpu_count()} logical CPUs visible)",
        f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}"
        + (f", poppy {poppy_mod.__version__}" if poppy_mod else ", poppy not benchmarked"),
        f"torch threads: intra-op {torch.get_num_threads()}, inter-op "
        f"{torch.get_num_interop_threads()}; MKL {torch.backends.mkl.is_available()}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "env: " + ", ".join(f"{v}={os.environ[v]}" for v in _PINNED),
        malloc_info(),
    ]
    if poppy_mod:
        from poppy import accel_math
        lines.append(
            f"poppy: use_fftw={poppy_mod.conf.use_fftw} (pyfftw available: "
            f"{getattr(accel_math, '_FFTW_AVAILABLE', '?')}), use_mkl={poppy_mod.conf.use_mkl} "
            f"(mkl_fft available: {getattr(accel_math, '_MKLFFT_AVAILABLE', '?')}), "
            f"use_numexpr={poppy_mod.conf.use_numexpr} "
            f"(available: {getattr(accel_math, '_NUMEXPR_AVAILABLE', '?')}), float64/complex128"
        )
    return lines


# ----------------------------------------------------------------------------------- cases
def build_cases(seed: int, with_poppy: bool):
    """Return ``(cases, poppy_mod, notes)``; ``cases`` maps row label -> zero-arg callable
    that performs one repetition and returns the seconds it wants timed (or None to time the
    whole call)."""
    g = torch.Generator().manual_seed(seed)
    notes = []
    cases = {}

    # 1-2. FraunhoferPSF
    model = FraunhoferPSF(N_TERMS, WAVELENGTHS_M, NPIX, OVERSAMPLE, dtype=torch.float32)
    coeffs = (OPD_SCALE_M * torch.randn(N_TERMS, generator=g)).float()
    w_psf = torch.rand(len(WAVELENGTHS_M), M, M, generator=g)

    def psf_fwd():
        with torch.no_grad():
            model(coeffs)

    def psf_fwd_bwd():
        c = coeffs.clone().requires_grad_(True)
        (model(c) * w_psf).sum().backward()

    cases["privlens FraunhoferPSF fwd"] = psf_fwd
    cases["privlens FraunhoferPSF fwd+bwd"] = psf_fwd_bwd

    # 3. poppy
    poppy_mod = None
    if with_poppy:
        import astropy.units as u
        import poppy

        poppy_mod = poppy
        c_np = coeffs.double().numpy()
        d = PUPIL_DIAMETER_M
        osys = poppy.OpticalSystem(oversample=OVERSAMPLE, npix=NPIX, pupil_diameter=d * u.m)
        osys.add_pupil(poppy.CircularAperture(radius=d / 2 * u.m, gray_pixel=False))
        osys.add_pupil(poppy.ZernikeWFE(radius=d / 2 * u.m, coefficients=c_np * u.m))
        osys.add_image()

        def poppy_fwd():
            total = 0.0
            for wl in WAVELENGTHS_M:
                t0 = time.perf_counter()
                osys.calc_psf(wavelength=wl)
                total += time.perf_counter() - t0
            return total

        cases["poppy calc_psf, 3 wavelengths (sum of 3 calls)"] = poppy_fwd
        # Same system? Compare the images once (untimed).
        with torch.no_grad():
            ours = model(coeffs).double().numpy()
        err = 0.0
        for k, wl in enumerate(WAVELENGTHS_M):
            ref = osys.calc_psf(wavelength=wl)[0].data
            ref = ref / ref.sum()
            err = max(err, float(np.abs(ours[k] - ref).max() / ref.max()))
        notes.append(f"check: privlens float32 vs poppy float64 PSFs, max|diff|/max = {err:.2e}")

    # 4. FFT floor
    z = torch.randn(len(WAVELENGTHS_M), M, M, dtype=torch.complex64, generator=g)
    w_fft = torch.rand(len(WAVELENGTHS_M), M, M, 2, generator=g)

    def fft_fwd():
        with torch.no_grad():
            torch.fft.fft2(z)

    def fft_fwd_bwd():
        zz = z.clone().requires_grad_(True)
        torch.view_as_real(torch.fft.fft2(zz)).mul(w_fft).sum().backward()

    cases["FFT floor: fft2 (3,512,512) c64 fwd"] = fft_fwd
    cases["FFT floor: fft2 (3,512,512) c64 fwd+bwd"] = fft_fwd_bwd

    # 5. physical camera PSF
    cfg = get_preset("lopez2024")
    cam = Camera(cfg, init_std_um=0.1, generator=torch.Generator().manual_seed(seed))
    k = cfg.psf_size_px
    w_cam = torch.rand(len(cfg.wavelengths_m), k, k, generator=g)

    def cam_psf_fwd():
        with torch.no_grad():
            cam.psf()

    def cam_psf_fwd_bwd():
        cam.trainable_um.grad = None
        (cam.psf() * w_cam).sum().backward()

    cases["privlens Camera(lopez2024).psf() fwd"] = cam_psf_fwd
    cases["privlens Camera(lopez2024).psf() fwd+bwd"] = cam_psf_fwd_bwd

    # 6. image formation, and the bare rfft2 convolution floor of the same sizes
    x = torch.rand(IMAGE_BATCH, len(cfg.wavelengths_m), IMAGE_SIZE, IMAGE_SIZE, generator=g)
    g_noise = torch.Generator().manual_seed(seed + 1)

    def image_fwd_bwd():
        cam.trainable_um.grad = None
        cam(x, noise=True, generator=g_noise).mean().backward()

    from scipy.fft import next_fast_len

    n_fft = next_fast_len(max(IMAGE_SIZE + k // 2, IMAGE_SIZE + k - 1 - k // 2), real=True)
    with torch.no_grad():
        kern0 = _wrap_kernel(cam.psf(), n_fft, n_fft)

    def conv_floor_fwd_bwd():
        kern = kern0.clone().requires_grad_(True)
        spec = torch.fft.rfft2(x, s=(n_fft, n_fft)) * torch.fft.rfft2(kern)
        y = torch.fft.irfft2(spec, s=(n_fft, n_fft))[..., :IMAGE_SIZE, :IMAGE_SIZE]
        y.mean().backward()

    cases[f"privlens Camera image formation {IMAGE_BATCH}x3x{IMAGE_SIZE}^2 fwd+bwd"] = (
        image_fwd_bwd)
    cases[f"conv floor: rfft2 conv {IMAGE_BATCH}x3x{IMAGE_SIZE}^2 on {n_fft}^2 fwd+bwd"] = (
        conv_floor_fwd_bwd)
    notes.append(
        f"camera: lopez2024, {cfg.pupil_samples}-sample pupil, MFT to {k}x{k} px "
        f"(x{getattr(cfg, 'sub_pixels', cfg.pixel_oversample)} sub-pixels per side), "
        f"{len(cam.trainable_um)} trainable modes; "
        f"image rows include the PSF, linear-boundary FFT convolution on {n_fft}^2, noise, ADC"
    )
    return cases, poppy_mod, notes


# ------------------------------------------------------------------------------ measuring
def measure(cases: dict, repeats: int, warmup: int, slow: set, slow_repeats: int, seed: int):
    """Interleaved timing: ``repeats`` rounds; in each round every row (slow rows only in
    ``slow_repeats`` evenly spread rounds) runs once, in a freshly shuffled order. The
    garbage collector is disabled inside timed calls (as ``timeit`` does)."""
    for name, fn in cases.items():
        for _ in range(warmup if name not in slow else max(1, min(warmup, 2))):
            fn()
    slow_rounds = set(np.linspace(0, repeats - 1, min(slow_repeats, repeats)).round().astype(int)
                      .tolist()) if slow_repeats < repeats else set(range(repeats))
    extra_slow = max(0, slow_repeats - repeats)  # more slow reps than rounds: append them
    wall = {name: [] for name in cases}
    cpu = {name: [] for name in cases}
    faults = {name: [] for name in cases}
    rng = random.Random(seed)

    def run(name):
        gc.disable()
        try:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0 = time.process_time()
            t0 = time.perf_counter()
            inner = cases[name]()
            t1 = time.perf_counter()
            c1 = time.process_time()
            f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        finally:
            gc.enable()
        wall[name].append(inner if inner is not None else t1 - t0)
        cpu[name].append(c1 - c0)
        faults[name].append(f1 - f0)

    for r in range(repeats):
        gc.collect()
        names = [n for n in cases if n not in slow or r in slow_rounds]
        rng.shuffle(names)
        for name in names:
            run(name)
    for _ in range(extra_slow):
        for name in slow:
            run(name)
    return wall, cpu, faults


def summary(samples):
    """``(median, IQR, min)`` in milliseconds."""
    ms = np.asarray(samples) * 1e3
    q1, med, q3 = np.percentile(ms, [25, 50, 75])
    return med, q3 - q1, ms.min()


def main():
    args = ARGS
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    load0, stat0 = loadavg(), cpu_counters()
    cases, poppy_mod, notes = build_cases(args.seed, with_poppy=not args.no_poppy)
    print("# privlens PSF speed benchmark (single thread, CPU)")
    print()
    for line in machine_info(poppy_mod):
        print(f"- {line}")
    print(f"- system: {len(WAVELENGTHS_M)} wavelengths {[round(w * 1e9) for w in WAVELENGTHS_M]}"
          f" nm, {N_TERMS} Noll terms, {NPIX}-sample pupil padded to {M} (oversample "
          f"{OVERSAMPLE}), float32 (poppy: float64)")
    for note in notes:
        print(f"- {note}")
    slow = {n for n in cases if n.startswith("poppy")}
    print(f"- timing: time.perf_counter per call, {args.warmup} warm-up calls, "
          f"{args.repeats} interleaved rounds in shuffled order (poppy: {args.poppy_repeats} "
          f"rounds spread evenly), gc disabled inside timed calls; median and IQR (q75 - q25)"
          + (" [--quick: indicative only]" if args.quick else ""))
    wall, cpu, faults = measure(cases, args.repeats, args.warmup, slow, args.poppy_repeats,
                                args.seed)
    stat1 = cpu_counters()
    busy = ""
    if stat0 and stat1 and stat1[1] > stat0[1]:
        busy = (f"; all CPUs {100 * (stat1[0] - stat0[0]) / (stat1[1] - stat0[1]):.0f}% busy "
                f"during the run (this process included: 100% of one CPU = "
                f"{100 / (os.cpu_count() or 1):.0f}%)")
    print(f"- load average (1/5/15 min) before: {load0}, after: {loadavg()}{busy}; "
          f"total run time {time.perf_counter() - t_start:.1f} s")
    print()
    print("| what | median ms | IQR ms | min ms | CPU median ms | page faults/call | reps |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med = {}
    for name in cases:
        m_, iqr, lo = summary(wall[name])
        med[name] = m_
        print(f"| {name} | {m_:.3f} | {iqr:.3f} | {lo:.3f} "
              f"| {statistics.median(cpu[name]) * 1e3:.3f} | {statistics.median(faults[name]):.0f} "
              f"| {len(wall[name])} |")
    print()
    print("median/IQR/min: wall clock (time.perf_counter) per call. CPU median: process CPU "
          "time (time.process_time) of the same calls; wall well above it means this process "
          "was preempted (time stolen by a hypervisor is invisible to both). Page faults/call: "
          "median minor page faults (getrusage) per call, i.e. freshly mapped memory touched; "
          "each costs microseconds of kernel time (included in CPU). The poppy row is the sum "
          "of the three monochromatic calc_psf call times (its CPU and fault columns cover the "
          "three calls).")
    fb_name = "privlens FraunhoferPSF fwd+bwd"
    floor_name = "FFT floor: fft2 (3,512,512) c64 fwd+bwd"
    fb, floor = med[fb_name], med[floor_name]
    poppy_name = "poppy calc_psf, 3 wavelengths (sum of 3 calls)"
    r_poppy = fb / med[poppy_name] if poppy_name in med else float("nan")
    r_fft = fb / floor
    cpu_med = {name: statistics.median(v) for name, v in cpu.items()}
    if poppy_name in cpu_med:
        print(f"same ratios from CPU-time medians (steadier when the machine is shared): "
              f"fwd_bwd_over_poppy_fwd={cpu_med[fb_name] / cpu_med[poppy_name]:.3f}, "
              f"fwd_bwd_over_fft_floor={cpu_med[fb_name] / cpu_med[floor_name]:.3f}")

    def verdict(r, limit):
        return "n/a" if r != r else ("met" if r <= limit else "MISSED")

    print(f"targets: fwd_bwd_over_poppy_fwd <= 0.4 -> {verdict(r_poppy, 0.4)}; "
          f"fwd_bwd_over_fft_floor <= 3 -> {verdict(r_fft, 3)}")
    print(f"RATIO fwd_bwd_over_poppy_fwd={r_poppy:.3f}")
    print(f"RATIO fwd_bwd_over_fft_floor={r_fft:.3f}")


if __name__ == "__main__":
    main()
