#!/usr/bin/env python
"""Speed of the batched torch deconvolution attacks against skimage looped over images.

One run times, in shuffled interleaved rounds, a batch of 16 RGB 256x256 images blurred by
the ``lopez2024`` camera's PSF (defocus + coma, cropped to an odd 61x61 window so skimage's
"same" convolution uses the same PSF centre):

1. ``optics.deconv.wiener`` (fixed balance, circular boundary, float32 and float64)
   against ``skimage.restoration.wiener`` called once per image and channel (float64);
2. ``optics.deconv.richardson_lucy`` (30 iterations, linear boundary) against
   ``skimage.restoration.richardson_lucy`` (30 iterations) per image and channel.

Threads are pinned to 1 (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``) unless
``--threads N``. The torch rows run on ``--device`` (default: CUDA if available, else CPU;
skimage always runs on the CPU). The output is a table of median wall-clock times and
images/s, and ``RATIO`` lines (torch images/s over skimage images/s).
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="images per batch")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--iterations", type=int, default=30, help="Richardson-Lucy iterations")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds of every torch row")
    p.add_argument("--sk-repeats", type=int, default=2, help="timed rounds of skimage rows")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch, BLAS, FFT)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--quick", action="store_true", help="smoke test: batch 2, 1 round each")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.sk_repeats = 2, 1, 1
    return args


ARGS = parse_args()
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)  # before numpy / torch are imported

import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark the working tree

from machine import cpu_model, loadavg  # noqa: E402  (benchmarks/machine.py)
from skimage import data, restoration  # noqa: E402

from optics.camera import Camera  # noqa: E402
from optics.deconv import richardson_lucy, wiener  # noqa: E402
from optics.imaging import convolve  # noqa: E402
from optics.presets import get_preset  # noqa: E402

BALANCE = 0.01


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(args, device):
    cam = Camera(get_preset("lopez2024").at_image_size(args.size),
                 coefficients_um={7: 0.3, 4: 0.2})
    with torch.no_grad():
        psf = cam.psf().double()
    k = psf.shape[-1]
    half = min(30, (k - 1) // 2)
    psf = psf[:, k // 2 - half:k // 2 + half + 1, k // 2 - half:k // 2 + half + 1]
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    img = torch.from_numpy(data.astronaut().astype(np.float64) / 255).permute(2, 0, 1)
    g = torch.Generator().manual_seed(args.seed)
    crops = []
    for _ in range(args.batch):
        r, c = (int(v) for v in torch.randint(0, 512 - args.size + 1, (2,), generator=g))
        crops.append(img[:, r:r + args.size, c:c + args.size])
    x = torch.stack(crops)
    y = (convolve(x, psf, "replicate") + 0.01 * torch.randn(x.shape, generator=g,
                                                            dtype=x.dtype)).clamp(0, 1)
    return y, psf


def main():
    args = ARGS
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    y64, psf64 = build(args, device)
    y_np, psf_np = y64.numpy(), psf64.numpy()
    b, c = y64.shape[:2]
    inputs = {dt: (y64.to(device, dt), psf64.to(device, dt))
              for dt in (torch.float32, torch.float64)}

    def torch_row(fn, dt):
        yt, pt = inputs[dt]

        def run():
            with torch.no_grad():
                fn(yt, pt)
            sync(device)
        return run

    def sk_wiener():
        for i in range(b):
            for ch in range(c):
                restoration.wiener(y_np[i, ch], psf_np[ch], BALANCE, clip=False)

    def sk_rl():
        for i in range(b):
            for ch in range(c):
                restoration.richardson_lucy(y_np[i, ch], psf_np[ch], args.iterations,
                                            clip=False)

    def t_wiener(yt, pt):
        return wiener(yt, pt, reg=BALANCE, boundary="circular", clip=False)

    def t_rl(yt, pt):
        return richardson_lucy(yt, pt, args.iterations, boundary="linear", clip=False)

    dev = device.type
    cases = {
        f"torch wiener float32 ({dev})": torch_row(t_wiener, torch.float32),
        f"torch wiener float64 ({dev})": torch_row(t_wiener, torch.float64),
        "skimage wiener float64 (loop)": sk_wiener,
        f"torch RL {args.iterations} it float32 ({dev})": torch_row(t_rl, torch.float32),
        f"torch RL {args.iterations} it float64 ({dev})": torch_row(t_rl, torch.float64),
        f"skimage RL {args.iterations} it float64 (loop)": sk_rl,
    }
    # same results? (untimed)
    w_err = float(np.abs(t_wiener(*inputs[torch.float64]).cpu().numpy()[0, 0]
                         - restoration.wiener(y_np[0, 0], psf_np[0], BALANCE, clip=False)).max())
    r_err = float(np.abs(t_rl(*inputs[torch.float64]).cpu().numpy()[0, 0]
                         - restoration.richardson_lucy(y_np[0, 0], psf_np[0], args.iterations,
                                                       clip=False)).max())
    slow = {n for n in cases if n.startswith("skimage")}
    for fn in cases.values():  # warm-up
        fn()
    times = {n: [] for n in cases}
    rng = random.Random(args.seed)
    t_start = time.perf_counter()
    for r in range(max(args.repeats, args.sk_repeats)):
        names = [n for n in cases if (r < args.sk_repeats if n in slow else r < args.repeats)]
        rng.shuffle(names)
        for n in names:
            t0 = time.perf_counter()
            cases[n]()
            times[n].append(time.perf_counter() - t0)

    print("# privlens deconvolution attack speed")
    print()
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; cpu: {cpu_model()} "
          f"({os.cpu_count()} logical CPUs); load before/after: {loadavg()}")
    print(f"- python {platform.python_version()}, torch {torch.__version__}, numpy "
          f"{np.__version__}; torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; torch device: {device}")
    print(f"- batch {b}x{c}x{args.size}x{args.size}, PSF {tuple(psf64.shape)} (lopez2024, "
          f"defocus + coma); Wiener balance {BALANCE}; RL {args.iterations} iterations; "
          f"median of {args.repeats} (torch) / {args.sk_repeats} (skimage) shuffled rounds "
          f"after 1 warm-up; total {time.perf_counter() - t_start:.1f} s")
    print(f"- check (float64, image 0 channel 0): max|torch - skimage| wiener {w_err:.1e}, "
          f"RL {r_err:.1e}")
    print()
    print("| what | median s / batch | images/s |")
    print("|---|---:|---:|")
    rate = {}
    for n, ts in times.items():
        med = statistics.median(ts)
        rate[n] = b / med
        print(f"| {n} | {med:.4f} | {rate[n]:.1f} |")
    print()
    print(f"RATIO wiener_torch32_over_skimage={rate[f'torch wiener float32 ({dev})'] / rate['skimage wiener float64 (loop)']:.2f}")  # noqa: E501
    print(f"RATIO wiener_torch64_over_skimage={rate[f'torch wiener float64 ({dev})'] / rate['skimage wiener float64 (loop)']:.2f}")  # noqa: E501
    it = args.iterations
    print(f"RATIO rl_torch32_over_skimage={rate[f'torch RL {it} it float32 ({dev})'] / rate[f'skimage RL {it} it float64 (loop)']:.2f}")  # noqa: E501
    print(f"RATIO rl_torch64_over_skimage={rate[f'torch RL {it} it float64 ({dev})'] / rate[f'skimage RL {it} it float64 (loop)']:.2f}")  # noqa: E501


if __name__ == "__main__":
    main()
