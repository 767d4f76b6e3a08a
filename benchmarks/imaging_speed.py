#!/usr/bin/env python
"""CPU speed of camera image formation against its FFT-convolution floor, in one run.

Eight RGB 256x256 images go through the camera of the ``lopez2024`` preset at 256 px
(``get_preset("lopez2024").at_image_size(256)``: 160x160 px PSF, replicate boundary, read
noise, 8-bit ADC), forward and backward, with the loss ``y.mean()``. Rows, timed interleaved
in shuffled order so that a noisy shared machine hurts every row alike:

1. **formation, PSF given**: ``cam(x, psf=h, noise=True, generator=g)`` with ``h`` the
   camera's PSF computed once outside the timed region, as a leaf that requires grad (what a
   training step does after its PSF: convolution, noise, ADC; the gradient goes to ``h``);
2. **formation incl. PSF**: ``cam(x, noise=True, generator=g)``, the PSF computed inside and
   the gradient taken to the Zernike coefficients (``cam.trainable_um``);
3. **conv floor**: the bare ``irfft2(rfft2(x, s=grid) * rfft2(kern), s=grid)[..., :256, :256]``
   on the FFT grid that image formation uses, the gradient to ``kern`` (the PSF wrapped onto
   the grid, precomputed): the part of row 1 that no FFT implementation avoids;
4. **old formation, PSF given**: row 1 with the implementation of ``optics.imaging`` before
   the speed-up (a copy kept in this file: autograd through ``F.pad`` + ``rfft2`` +
   ``irfft2`` on a grid padded twice, the straight-through ADC as ``xc + (q - xc).detach()``);
5. **old conv floor**: row 3 on the old implementation's (larger) grid;
6. **formation fwd, fixed PSF / old formation fwd**: forward only under ``torch.no_grad`` with
   a PSF that needs no gradient (evaluation, attacks; the new code reuses the PSF's cached
   spectrum).

Timing, statistics and the page-fault count reuse ``benchmarks/psf_speed.py`` (imported):
every row reports the median, IQR and minimum wall-clock time of single calls after warm-up,
the median process CPU time and the median number of minor page faults per call. Thread pools
are pinned to ``--threads`` (default 1) before torch starts. The output ends with ``RATIO``
lines, ratios of wall-clock medians; the first is row 1 over row 3.
"""

from __future__ import annotations

import argparse
import os
import sys

_PINNED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
           "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS")
BATCH, SIZE = 8, 256


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch intra-op threads (OMP/MKL/... pools pinned to N before torch "
                        "is imported)")
    p.add_argument("--reps", type=int, default=60, metavar="N",
                   help="timed repetitions of every row (interleaved rounds)")
    p.add_argument("--warmup", type=int, default=3, metavar="N",
                   help="untimed warm-up calls of every row")
    p.add_argument("--no-old", action="store_true",
                   help="skip the rows of the old implementation")
    p.add_argument("--seed", type=int, default=0, help="seed of inputs and measurement order")
    p.add_argument("--malloc-tuned", action="store_true",
                   help="re-exec with glibc's MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ set "
                        "as psf_speed.py --malloc-tuned does (freed memory is kept: no page "
                        "faults); default: glibc defaults, what a user gets")
    args = p.parse_args(argv)
    if args.threads < 1 or args.reps < 1 or args.warmup < 0:
        p.error("need --threads >= 1, --reps >= 1 and --warmup >= 0")
    return args


ARGS = parse_args()  # before the heavy imports, so --help is instant
for _var in _PINNED:
    os.environ[_var] = str(ARGS.threads)

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _here)  # benchmarks/ (psf_speed, machine)
sys.path.insert(0, os.path.dirname(_here))  # benchmark the working tree
_argv, sys.argv = sys.argv, [os.path.join(_here, "psf_speed.py")]
try:  # psf_speed parses its own (default) options on import and pins the pools to 1 thread
    import psf_speed  # noqa: E402
finally:
    sys.argv = _argv
for _var in _PINNED:  # ... so pin them again to --threads
    os.environ[_var] = str(ARGS.threads)
if ARGS.malloc_tuned and os.environ.get(psf_speed._REEXEC_MARK) != "1":
    # glibc reads MALLOC_* only at start-up: restart this script with them set
    _env = dict(os.environ, **psf_speed._MALLOC_TUNED, **{psf_speed._REEXEC_MARK: "1"})
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], _env)

import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from machine import cpu_counters, loadavg  # noqa: E402  (benchmarks/machine.py)
from scipy.fft import next_fast_len  # noqa: E402

import optics.imaging as imaging  # noqa: E402
from optics.camera import Camera  # noqa: E402
from optics.imaging import _fft_grid, _wrap_kernel, apply_response, convolve  # noqa: E402
from optics.presets import get_preset  # noqa: E402

torch.set_num_threads(ARGS.threads)


# ------------------------------------------------------------- the old implementation
def old_convolve(x, psf, boundary="linear"):
    """``optics.imaging.convolve`` as it was before the speed-up (4-D ``x``, float32/64)."""
    h, w = x.shape[-2:]
    kh, kw = psf.shape[-2:]
    if boundary == "replicate":
        ph, pw = kh // 2, kw // 2
        padded = F.pad(x, (pw, kw - 1 - pw, ph, kh - 1 - ph), mode="replicate")
        return old_convolve(padded, psf, "linear")[..., ph:ph + h, pw:pw + w]
    if boundary == "circular":
        nh, nw = h, w
    else:
        ch, cw = kh // 2, kw // 2
        nh = next_fast_len(max(h + ch, h + kh - 1 - ch), real=True)
        nw = next_fast_len(max(w + cw, w + kw - 1 - cw), real=True)
    kern = _wrap_kernel(psf, nh, nw)
    spec = torch.fft.rfft2(x, s=(nh, nw)) * torch.fft.rfft2(kern)
    return torch.fft.irfft2(spec, s=(nh, nw))[..., :h, :w]


def old_grid(boundary, h, kh):
    """Side of the FFT grid the old implementation used (square images and kernels)."""
    if boundary == "circular":
        return h
    if boundary == "replicate":
        h = h + kh - 1
    return next_fast_len(max(h + kh // 2, h + kh - 1 - kh // 2), real=True)


def old_form_image(x, psf, sensor, noise=True, generator=None):
    """``optics.imaging.form_image`` as it was (Gaussian shot noise only)."""
    y = old_convolve(x, psf, sensor.boundary)
    if sensor.binning > 1:
        y = F.avg_pool2d(y, sensor.binning)
    if noise and sensor.photons is not None:
        eps = torch.randn(y.shape, generator=generator, dtype=y.dtype)
        y = y + torch.sqrt(y.clamp(min=1e-12) / (sensor.photons * sensor.binning**2)) * eps
    if noise and sensor.read_noise_std > 0:
        eps = torch.randn(y.shape, generator=generator, dtype=y.dtype)
        y = y + sensor.read_noise_std * eps
    y = apply_response(y, sensor.response, sensor.gamma)
    if sensor.bit_depth is None:
        return y
    levels = float(2**sensor.bit_depth - 1)
    yc = y.clamp(0.0, 1.0)
    return yc + (torch.round(yc * levels) / levels - yc).detach()


# ------------------------------------------------------------------------------- cases
def build_cases(seed: int, with_old: bool):
    """``(cases, notes, names)``: row label -> zero-argument callable (one repetition)."""
    cfg = get_preset("lopez2024").at_image_size(SIZE)
    cam = Camera(cfg, init_std_um=0.1, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, len(cfg.wavelengths_m), SIZE, SIZE, generator=g)
    with torch.no_grad():
        psf0 = cam.psf()
    k = psf0.shape[-1]
    sensor = cfg.sensor
    nh, nw, _, _ = _fft_grid(sensor.boundary, SIZE, SIZE, k, k)
    n_old = old_grid(sensor.boundary, SIZE, k)
    psf_leaf = psf0.clone().requires_grad_(True)
    noise_g = torch.Generator().manual_seed(seed + 1)

    def formation():
        psf_leaf.grad = None
        cam(x, psf=psf_leaf, noise=True, generator=noise_g.manual_seed(seed + 1)).mean().backward()

    def formation_with_psf():
        cam.trainable_um.grad = None
        cam(x, noise=True, generator=noise_g.manual_seed(seed + 1)).mean().backward()

    def floor_on(nh_, nw_):
        kern0 = _wrap_kernel(psf0, nh_, nw_)

        def floor():
            kern = kern0.clone().requires_grad_(True)
            spec = torch.fft.rfft2(x, s=(nh_, nw_)) * torch.fft.rfft2(kern)
            torch.fft.irfft2(spec, s=(nh_, nw_))[..., :SIZE, :SIZE].mean().backward()
        return floor

    per_image = len(cfg.wavelengths_m) * nh * (nw // 2 + 1) * 8
    step = max(1, min(BATCH, imaging._CPU_CHUNK_BYTES * torch.get_num_threads() // per_image))

    def fft_calls():
        with torch.no_grad():  # the big transforms of row 1, in its chunks, and nothing else
            for i in range(0, BATCH, step):
                xs = x[i:i + step]
                spec = torch.fft.rfft2(xs, s=(nh, nw))
                torch.fft.irfft(torch.fft.ifft(spec, dim=-2)[..., :SIZE, :], n=nw, dim=-1)
                torch.fft.rfft2(xs, s=(nh, nw))  # stands for the output gradient's transform

    def old_formation():
        psf_leaf.grad = None
        old_form_image(x, psf_leaf, sensor, generator=noise_g.manual_seed(seed + 1)
                       ).mean().backward()

    def formation_fwd():
        with torch.no_grad():
            cam(x, psf=psf0, noise=True, generator=noise_g.manual_seed(seed + 1))

    def old_formation_fwd():
        with torch.no_grad():
            old_form_image(x, psf0, sensor, generator=noise_g.manual_seed(seed + 1))

    tag = f"{BATCH}x3x{SIZE}^2"
    names = {
        "new": f"formation, PSF given, fwd+bwd {tag}",
        "new_psf": f"formation incl. PSF, fwd+bwd {tag}",
        "floor": f"conv floor on {nh}x{nw}, fwd+bwd",
        "ffts": "FFT calls of row 1 alone (3 per image)",
        "old": f"old formation, PSF given, fwd+bwd {tag}",
        "old_floor": f"old conv floor on {n_old}x{n_old}, fwd+bwd",
        "new_fwd": "formation fwd (no_grad, fixed PSF)",
        "old_fwd": "old formation fwd (no_grad, fixed PSF)",
    }
    cases = {names["new"]: formation, names["new_psf"]: formation_with_psf,
             names["floor"]: floor_on(nh, nw), names["ffts"]: fft_calls,
             names["new_fwd"]: formation_fwd}
    if with_old:
        cases.update({names["old"]: old_formation, names["old_floor"]: floor_on(n_old, n_old),
                      names["old_fwd"]: old_formation_fwd})

    # untimed check: the new and the old implementation form the same (noiseless) images
    with torch.no_grad():
        a = cam(x, psf=psf0, noise=False)
        b = old_form_image(x, psf0, sensor, noise=False)
        blur_err = float((convolve(x, psf0, sensor.boundary)
                          - old_convolve(x, psf0, sensor.boundary)).abs().max())
    notes = [
        f"camera: lopez2024 at {SIZE} px: {k}x{k} px PSF, boundary {sensor.boundary!r}, "
        f"read noise {sensor.read_noise_std}, photons {sensor.photons}, "
        f"{sensor.bit_depth}-bit ADC, binning {sensor.binning}; float32; "
        f"{len(cam.trainable_um)} trainable modes",
        f"FFT grid: {nh}x{nw} (old implementation: {n_old}x{n_old})",
        f"check (untimed): new vs old blur max|diff| = {blur_err:.1e} (values ~0.5); noiseless "
        f"8-bit images: {int((a != b).sum())} of {a.numel()} pixels differ, by at most "
        f"{float((a - b).abs().max()) * (2**sensor.bit_depth - 1):.0f} code (a value within "
        f"float32 rounding of a code boundary)",
    ]
    return cases, notes, names


def main():
    args = ARGS
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    load0, stat0 = loadavg(), cpu_counters()
    cases, notes, names = build_cases(args.seed, with_old=not args.no_old)
    print(f"# privlens image formation speed ({args.threads} thread(s), CPU)")
    print()
    for line in psf_speed.machine_info(None):
        print(f"- {line}")
    for note in notes:
        print(f"- {note}")
    print(f"- timing: time.perf_counter per call, {args.warmup} warm-up calls, {args.reps} "
          f"interleaved rounds in shuffled order, gc disabled inside timed calls; median and "
          f"IQR (q75 - q25)")
    wall, cpu, faults = psf_speed.measure(cases, args.reps, args.warmup, set(), args.reps,
                                          args.seed)
    stat1 = cpu_counters()
    busy = ""
    if stat0 and stat1 and stat1[1] > stat0[1]:
        busy = (f"; all CPUs {100 * (stat1[0] - stat0[0]) / (stat1[1] - stat0[1]):.0f}% busy "
                f"during the run (this process included)")
    print(f"- load average (1/5/15 min) before: {load0}, after: {loadavg()}{busy}; "
          f"total run time {time.perf_counter() - t_start:.1f} s")
    print()
    print("| what | median ms | IQR ms | min ms | CPU median ms | page faults/call | reps |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med, cpu_med = {}, {}
    for name in cases:
        m_, iqr, lo = psf_speed.summary(wall[name])
        med[name], cpu_med[name] = m_, statistics.median(cpu[name]) * 1e3
        print(f"| {name} | {m_:.1f} | {iqr:.1f} | {lo:.1f} | {cpu_med[name]:.1f} "
              f"| {statistics.median(faults[name]):.0f} | {len(wall[name])} |")
    print()

    def ratio(a, b, d=med):
        return d[names[a]] / d[names[b]] if names[a] in d and names[b] in d else math.nan

    print("ratios of CPU-time medians (steadier on a shared machine): "
          f"formation_over_conv_floor={ratio('new', 'floor', cpu_med):.3f}, "
          f"old_formation_over_conv_floor={ratio('old', 'floor', cpu_med):.3f}")
    r = ratio("new", "floor")
    print(f"target: formation_over_conv_floor <= 1.5 -> {'met' if r <= 1.5 else 'MISSED'}")
    print(f"RATIO formation_over_conv_floor={r:.3f}")
    print(f"RATIO formation_incl_psf_over_conv_floor={ratio('new_psf', 'floor'):.3f}")
    print(f"RATIO old_formation_over_conv_floor={ratio('old', 'floor'):.3f}")
    print(f"RATIO old_formation_over_old_conv_floor={ratio('old', 'old_floor'):.3f}")
    print(f"RATIO old_over_new_formation={ratio('old', 'new'):.3f}")
    print(f"RATIO formation_over_fft_calls={ratio('new', 'ffts'):.3f}")


if __name__ == "__main__":
    main()
