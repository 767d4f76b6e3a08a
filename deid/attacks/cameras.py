"""The cameras an attacker faces, each with the PSF the attacker knows.

An :class:`AttackCamera` maps clean faces ``x (B, 3, S, S)`` in [0, 1] to what is captured
(``forward``, seeded noise) and carries ``psf (C, K, K)`` on the *captured* image's pixel grid
(the attacker's knowledge: simulated, from a stage-1 run, or measured by ``rig calibrate``).

Cameras (:func:`build_camera` names):

- ``none``: no optics, ``y = x``;
- ``defocus``: the stage-1 target ``H_f`` (lopez2024 optics, defocus only);
- ``defocus-D``: the same optics with ``D`` micrometres of Z4 instead (the PSF window grows
  until it holds 99% of the light);
- ``focus-D``: the same optics refocused on the face (Z4 of
  :func:`optics.camera.best_focus_z4_um`, -0.654 um) plus ``D`` micrometres of Z4: the
  defocus family measured from best focus (``focus-0.654`` is ``defocus-0``);
- ``lr16``: the 16x16 low-resolution camera (its PSF on the 16x16 grid is about one pixel);
- ``lowres-N``: the same in-focus lens on an ``N x N`` sensor (``lowres-16`` is ``lr16``);
- ``prototype``: the prototype-4f bench with the paper's mirror amplitudes, converted to
  Noll OPD by a device calibration (``--calibration``; default: the simulated bench's mirror);
- ``PRESET``: any other camera preset (``optics presets``: ``lopez2024``, ``prototype-4f``),
  as it is, with no phase plate;
- ``RUN_DIR``: a stage-1 run (its camera config and learned coefficients);
- ``blur-S``: software Gaussian blur of sigma ``S`` px (at 128 px), then 8-bit quantisation;
- ``mosaic-B``: software pixelation in ``B x B`` blocks (at 128 px), shown at full size.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch

from calibration.device_map import (
    DeviceCalibration,
    device_to_noll,
    load_calibration,
    prototype_amplitudes,
)
from deid.methods.stage1.inference import load_run_camera
from deid.methods.stage1.trainer import Stage1Config
from hardware.sim.fake_tldfm import DEFAULT_HIDDEN
from optics.camera import Camera, best_focus_z4_um, defocus_target_psf
from optics.imaging import SensorModel, form_image, quantize
from optics.kit.config import load_config
from optics.presets import get_preset, preset_names
from optics.propagation import SamplingError

__all__ = ["AttackCamera", "build_camera", "check_camera_spec", "optical_camera",
           "DEFAULT_CAMERAS", "BASELINES", "gaussian_psf", "box_psf", "load_psf"]

DEFAULT_CAMERAS = ("none", "defocus", "lr16", "prototype")
BASELINES = ("blur-2", "blur-4", "blur-8", "mosaic-4", "mosaic-8", "mosaic-16")
REFERENCE_SIZE_PX = 128  # software baselines' strengths are given at this image size


@dataclasses.dataclass
class AttackCamera:
    name: str
    forward: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
    psf: torch.Tensor  # (C, K, K), on y's pixel grid, channels sum to 1
    description: str = ""
    output_size: int | None = None  # y's side if it differs from x's
    #: the attacker's reading of y before deconvolution (default: y itself); pixelation's
    #: blocks are re-interpolated smoothly, since its operator is not a convolution
    observe: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        with torch.no_grad():
            g = torch.Generator(device=x.device).manual_seed(seed)
            return self.forward(x, g)


def gaussian_psf(sigma_px: float, channels: int = 3) -> torch.Tensor:
    """(C, K, K) normalised Gaussian, K = 2 ceil(4 sigma) + 1."""
    r = max(1, math.ceil(4 * sigma_px))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (t / sigma_px) ** 2)
    k = g[:, None] * g[None, :]
    return (k / k.sum()).expand(channels, -1, -1).clone()


def box_psf(block_px: int, channels: int = 3) -> torch.Tensor:
    """(C, K, K) box of ``block_px`` (odd K; the pixelation's averaging, not its sampling)."""
    k = block_px + (1 - block_px % 2)
    box = torch.zeros(k, k)
    box[:block_px, :block_px] = 1.0
    return (box / box.sum()).expand(channels, -1, -1).clone()


def load_psf(spec: str, channels: int = 3) -> torch.Tensor:
    """A PSF the attacker measured: ``FILE.npy`` or ``FILE.h5:DATASET`` (e.g. a PSF stack of
    ``rig calibrate``: ``calibration.h5:psf/stack`` takes its first, in-focus plane) holding
    (K, K) or (C, K, K) values; negative values are clipped and each channel is
    normalised to sum 1. A single channel is used for all ``channels``."""
    import numpy as np

    path, _, key = spec.partition(":") if not spec.endswith(".npy") else (spec, "", "")
    if path.endswith(".npy"):
        a = np.load(path)
    else:
        import h5py

        with h5py.File(path, "r") as f:
            if not key or key not in f:
                raise ValueError(f"{path}: give a dataset, e.g. {path}:psf/stack")
            a = f[key][()]
    a = np.asarray(a, dtype=np.float64)
    if key.split("/")[-1].startswith("stack") and a.ndim == 3:
        a = a[0]  # a rig-calibrate diversity stack (one colour): the in-focus plane
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{spec}: expected a square PSF, got shape {a.shape}")
    t = torch.from_numpy(np.clip(a, 0, None)).float()
    if t.shape[0] == 1:
        t = t.expand(channels, -1, -1).clone()
    total = t.sum(dim=(-2, -1), keepdim=True)
    if float(total.min()) <= 0:
        raise ValueError(f"{spec}: the PSF holds no light")
    return t / total


def _delta(channels=3) -> torch.Tensor:
    d = torch.zeros(channels, 1, 1)
    d[:, 0, 0] = 1.0
    return d


def _number(spec: str) -> float:
    """The number after the dash of ``name-N``; a one-line error if there is none."""
    try:
        value = float(spec.split("-", 1)[1])
    except ValueError:
        raise ValueError(f"camera {spec!r}: expected a number after the dash") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"camera {spec!r}: the number must be finite and >= 0")
    return value


def _window_for_defocus(optics, defocus_um: float, min_captured: float = 0.99,
                        max_px: int = 1024) -> int:
    """The smallest PSF window (px, grown by 1.25x steps from the preset's) whose defocus PSF
    holds ``min_captured`` of the light in every channel; at most the largest window the
    pupil sampling allows (then a warning says how much light it holds)."""
    k = previous = optics.psf_size_px
    while True:
        try:
            cam = Camera(optics.replace(psf_size_px=k, n_modes=max(4, optics.n_modes),
                                        trainable_modes=()), {4: defocus_um})
            captured = float(cam.captured_energy().min())
        except SamplingError:  # the window reached the pupil grid's alias period
            if k == previous:
                raise
            return previous
        if captured >= min_captured or k >= max_px:
            return k
        previous, k = k, min(max_px, int(k * 1.25) + 1)


def _z4_camera(spec: str, optics, z4_um: float, description: str,
               grow_window: bool = False) -> AttackCamera:
    """``optics`` with only a Noll Z4 of ``z4_um`` (um of OPD) added to its own geometry; with
    ``grow_window`` the PSF window grows until it holds 99% of the light."""
    if grow_window:
        optics = optics.replace(psf_size_px=_window_for_defocus(optics, z4_um))
    h = defocus_target_psf(optics, z4_um).float()

    def fwd(x, g):
        return form_image(x, h.to(x.device, x.dtype), optics.sensor, generator=g)

    return AttackCamera(spec, fwd, h, description)


def optical_camera(name, cam: Camera, description="") -> AttackCamera:
    """An optical :class:`Camera` (its current coefficients, frozen) as an attack camera."""
    with torch.no_grad():
        psf = cam.psf().float()
    binning = cam.config.sensor.binning

    def fwd(x, g):
        return cam(x, generator=g, psf=psf.to(x.device))

    if binning > 1:  # the attacker sees a binned image: its PSF is the binned one (~ 1 px)
        k = max(1, psf.shape[-1] // binning)
        psf = torch.nn.functional.adaptive_avg_pool2d(psf[None], (k | 1, k | 1))[0]
        psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    return AttackCamera(name, fwd, psf, description, cam.config.output_size_px)


def _stage1_run(path: Path, size: int) -> AttackCamera:
    cfg = load_config(Stage1Config, path / "config.yaml")
    return optical_camera(path.name, load_run_camera(path, size),
                          f"stage-1 run {path} ({cfg.camera} optics, learned mask)")


def check_camera_spec(spec: str) -> None:
    """A one-line ``ValueError`` for a camera name :func:`build_camera` would refuse, without
    building anything (so a long report fails before it starts)."""
    if spec in ("none", "defocus", "lr16", "prototype") or spec in preset_names():
        return
    if spec.startswith(("defocus-", "focus-", "blur-", "mosaic-", "lowres-")):
        _number(spec)
        return
    if not (Path(spec) / "coefficients.json").exists():
        raise ValueError(_unknown(spec))


def _unknown(spec: str) -> str:
    return (f"unknown camera {spec!r}: use none, defocus, defocus-D, focus-D, prototype, blur-S, "
            f"mosaic-B, lowres-N, a preset ({', '.join(preset_names())}) or a stage-1 run folder")


def build_camera(spec: str, size: int = REFERENCE_SIZE_PX, calibration=None,
                 defocus_um: float = 0.5) -> AttackCamera:
    """The camera named ``spec`` (see the module docstring) for ``size x size`` faces."""
    sensor = SensorModel(boundary="replicate", read_noise_std=0.005, bit_depth=8)
    scale = size / REFERENCE_SIZE_PX
    if spec == "none":
        return AttackCamera("none", lambda x, g: x, _delta(), "no optics")
    if spec == "defocus" or spec.startswith(("defocus-", "focus-")):
        optics = get_preset("lopez2024").at_image_size(size)
        if spec == "defocus":
            return _z4_camera(spec, optics, defocus_um,
                              f"lopez2024 optics, {defocus_um} um Z4 only (H_f)")
        d = _number(spec)
        if spec.startswith("focus-"):  # counted from best focus on the face
            return _z4_camera(spec, optics, best_focus_z4_um(optics) + d, f"lopez2024 optics "
                              f"refocused on the face, then {d} um Z4", grow_window=True)
        return _z4_camera(spec, optics, d, f"lopez2024 optics, {d} um Z4 only",
                          grow_window=True)
    if spec == "lr16":
        return optical_camera("lr16", Camera(get_preset("lr16").at_image_size(size)),
                              "16x16 sensor behind an in-focus lens")
    if spec.startswith("lowres-"):
        side = int(_number(spec))
        base = get_preset("lr16")
        if side < 1 or base.image_size_px % side:
            raise ValueError(f"{spec}: the sensor side must divide {base.image_size_px} px")
        optics = base.replace(sensor=dataclasses.replace(
            base.sensor, binning=base.image_size_px // side)).at_image_size(size)
        return optical_camera(spec, Camera(optics),
                              f"{side}x{side} sensor behind an in-focus lens")
    if spec == "prototype":
        if calibration is None:
            cal = DeviceCalibration(DEFAULT_HIDDEN.matrix(), source="simulated bench mirror")
        else:
            cal = load_calibration(calibration)
        coeffs = {j: v for j, v in device_to_noll(prototype_amplitudes(), cal).items()
                  if j >= 4}
        cam = Camera(get_preset("prototype-4f").at_image_size(size), coefficients_um=coeffs)
        return optical_camera("prototype", cam, f"prototype-4f with the paper's mirror amplitudes "
                                          f"({cal.source})")
    if spec.startswith("blur-"):
        sigma = _number(spec) * scale
        h = gaussian_psf(sigma)
        soft = dataclasses.replace(sensor, read_noise_std=0.0)

        def fwd(x, g):
            return form_image(x, h.to(x.device, x.dtype), soft, noise=False)

        return AttackCamera(spec, fwd, h, f"software Gaussian blur, sigma {sigma:g} px")
    if spec.startswith("mosaic-"):
        block = max(1, round(int(_number(spec)) * scale))

        def fwd(x, g):
            s = x.shape[-1]
            small = torch.nn.functional.avg_pool2d(x, block, ceil_mode=True)
            big = torch.nn.functional.interpolate(small, scale_factor=block, mode="nearest")
            return quantize(big[..., :s, :s], 8)

        def observe(y):
            s = y.shape[-1]
            small = torch.nn.functional.avg_pool2d(y, block, ceil_mode=True)
            big = torch.nn.functional.interpolate(small, scale_factor=block, mode="bicubic",
                                                  align_corners=False)
            return big[..., :s, :s].clamp(0, 1)

        return AttackCamera(spec, fwd, box_psf(block), f"software pixelation, {block} px "
                                                       f"blocks", observe=observe)
    if spec in preset_names():
        return optical_camera(spec, Camera(get_preset(spec).at_image_size(size)),
                              f"{spec} preset optics, no phase plate")
    path = Path(spec)
    if path.is_dir() and (path / "coefficients.json").exists():
        return _stage1_run(path, size)
    raise ValueError(_unknown(spec))
