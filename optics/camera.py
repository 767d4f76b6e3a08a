"""The privacy camera: a learnable Zernike phase plate, a thin lens and a sensor.

``CameraConfig`` holds the physical figures (SI units in every name); ``Camera`` is a thin
``nn.Module`` that owns the learnable Noll coefficients (**micrometres of OPD**) and calls the
functional core in :mod:`optics.psf` and :mod:`optics.imaging`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from optics.imaging import SensorModel, form_image
from optics.materials import thin_lens_focal_length_m
from optics.propagation import SamplingError
from optics.psf import circular_aperture, sensor_mft_matrix, sensor_propagation_method, sensor_psf
from optics.zernike import compose_opd, zern_name, zernike_basis

__all__ = ["CameraConfig", "Camera", "defocus_target_psf", "best_focus_z4_um"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraConfig:
    """Physical description of one camera. Distances in metres, wavelengths in metres.

    The Zernike unit disk is the physical aperture (radius ``aperture_radius_m``), sampled by
    ``pupil_samples`` pixel-centred points across its diameter.
    """

    name: str = "custom"
    description: str = ""
    wavelengths_m: tuple[float, ...] = (640e-9, 550e-9, 440e-9)
    aperture_radius_m: float = 2.0e-3
    focal_length_m: float = 0.0495049504950495
    design_wavelength_m: float = 550e-9
    chromatic: bool = True
    sensor_distance_m: float = 0.05
    object_distance_m: float = 0.75
    pixel_pitch_m: float = 3.713e-6
    pupil_samples: int = 256
    psf_size_px: int = 128
    pixel_oversample: int = 0
    n_modes: int = 15
    trainable_modes: tuple[int, ...] | None = None
    freeze_piston_tip_tilt: bool = True
    learn_object_distance: bool = False
    image_size_px: int = 256
    sensor: SensorModel = field(default_factory=SensorModel)

    def __post_init__(self):
        def positive(name):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and not math.isnan(v)):
                raise ValueError(f"{name} must be positive, got {v}")

        for name in ("aperture_radius_m", "focal_length_m", "design_wavelength_m",
                     "sensor_distance_m", "object_distance_m", "pixel_pitch_m"):
            positive(name)
        if not self.wavelengths_m or any(not (w > 0) for w in self.wavelengths_m):
            raise ValueError(f"wavelengths_m must be positive, got {self.wavelengths_m}")
        if self.pupil_samples < 8 or self.psf_size_px < 1 or self.pixel_oversample < 0:
            raise ValueError("need pupil_samples >= 8, psf_size_px >= 1, pixel_oversample >= 0")
        if self.n_modes < 1:
            raise ValueError(f"n_modes must be >= 1, got {self.n_modes}")
        bad = [j for j in (self.trainable_modes or ()) if not 1 <= j <= self.n_modes]
        if bad:
            raise ValueError(f"trainable_modes {bad} outside Noll 1..{self.n_modes}")
        if self.image_size_px % self.sensor.binning:
            raise ValueError(
                f"image_size_px {self.image_size_px} is not divisible by binning "
                f"{self.sensor.binning}"
            )

    @property
    def focal_lengths_m(self) -> tuple[float, ...]:
        """Focal length per wavelength (fused-silica dispersion if ``chromatic``)."""
        if not self.chromatic:
            return tuple(self.focal_length_m for _ in self.wavelengths_m)
        return tuple(
            thin_lens_focal_length_m(self.focal_length_m, w, self.design_wavelength_m)
            for w in self.wavelengths_m
        )

    @property
    def sub_pixels(self) -> int:
        """Sub-samples per pixel side for pixel integration: ``pixel_oversample``, or with 0
        (auto) enough that sub-samples reach the intensity Nyquist pitch
        ``lambda_min z / (4 a)`` of the diffraction-limited PSF."""
        if self.pixel_oversample:
            return self.pixel_oversample
        nyquist = min(self.wavelengths_m) * self.sensor_distance_m / (4 * self.aperture_radius_m)
        return max(1, math.ceil(self.pixel_pitch_m / nyquist - 1e-9))

    @property
    def trainable(self) -> tuple[int, ...]:
        """Noll indices that are learnable (default 4..n_modes)."""
        modes = self.trainable_modes
        if modes is None:
            modes = tuple(range(1, self.n_modes + 1))
        if self.freeze_piston_tip_tilt:
            modes = tuple(j for j in modes if j > 3)
        return tuple(sorted(set(modes)))

    @property
    def output_size_px(self) -> int:
        return self.image_size_px // self.sensor.binning

    def replace(self, **changes) -> CameraConfig:
        return dataclasses.replace(self, **changes)

    def at_image_size(self, size_px: int) -> CameraConfig:
        """The same optics and field of view on a sensor of ``size_px`` pixels per side:
        pixel pitch and binning scale by ``image_size_px / size_px``, the PSF window shrinks
        to keep its physical extent (so ``lr16`` stays 16x16 at any size)."""
        if size_px == self.image_size_px:
            return self
        if size_px < 8:
            raise ValueError(f"image size must be >= 8 px, got {size_px}")
        scale = self.image_size_px / size_px
        binning = self.sensor.binning / scale
        if binning >= 1 and abs(binning - round(binning)) > 1e-9:
            raise ValueError(f"binning {self.sensor.binning} cannot be scaled to {size_px} px")
        sensor = dataclasses.replace(self.sensor, binning=max(1, round(binning)))
        return self.replace(image_size_px=size_px, pixel_pitch_m=self.pixel_pitch_m * scale,
                            psf_size_px=max(8, round(self.psf_size_px / scale)), sensor=sensor)


class Camera(nn.Module):
    """Differentiable camera ``y = C(H * x) + noise`` with a learnable Zernike phase plate.

    Parameters
    ----------
    config : :class:`CameraConfig`.
    coefficients_um : ``{noll_index: micrometres of OPD}`` initial values (others 0).
    init_std_um : standard deviation of a random initialisation of the trainable modes.

    ``psf() -> (C, K, K)`` on the sensor grid, summing to 1 per channel.
    ``forward(x (B, C, H, W) in [0, 1]) -> y (B, C, H/b, W/b)``.
    """

    def __init__(self, config: CameraConfig, coefficients_um: dict | None = None,
                 init_std_um: float = 0.0, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        cfg = config
        coefficients_um = dict(coefficients_um or {})
        bad = [j for j in coefficients_um if not 1 <= int(j) <= cfg.n_modes]
        if bad:
            raise ValueError(
                f"coefficients for Noll {bad} but the camera has modes 1..{cfg.n_modes}"
            )
        full = torch.zeros(cfg.n_modes, dtype=torch.float64)
        for j, v in coefficients_um.items():
            full[int(j) - 1] = float(v)
        if not torch.isfinite(full).all():
            raise ValueError("coefficients must be finite")
        idx = torch.tensor([j - 1 for j in cfg.trainable], dtype=torch.long)
        self.register_buffer("trainable_index", idx, persistent=False)
        init = full[idx].clone()
        if init_std_um > 0 and len(idx):
            init += init_std_um * torch.randn(len(idx), generator=generator, dtype=torch.float64)
        self.register_buffer("frozen_um", full.float())
        self.trainable_um = nn.Parameter(init.float())
        d = torch.tensor(cfg.object_distance_m, dtype=torch.float32)
        if cfg.learn_object_distance:
            self.object_distance_m = nn.Parameter(d)
        else:
            self.register_buffer("object_distance_m", d)
        n = cfg.pupil_samples
        self.register_buffer("basis", zernike_basis(cfg.n_modes, n, dtype=torch.float32))
        self.register_buffer("aperture", circular_aperture(n, dtype=torch.float32))
        self.register_buffer("focal_lengths_m", torch.tensor(cfg.focal_lengths_m))
        self.register_buffer("wavelengths_m", torch.tensor(cfg.wavelengths_m, dtype=torch.float64))
        # the Fresnel form that samples this geometry (re-chosen per call if d is learnable)
        self.method = "auto" if cfg.learn_object_distance else sensor_propagation_method(
            n, cfg.aperture_radius_m, cfg.wavelengths_m, cfg.focal_lengths_m,
            cfg.sensor_distance_m, cfg.object_distance_m, cfg.pixel_pitch_m, cfg.psf_size_px)
        mft = sensor_mft_matrix(n, 2 * cfg.aperture_radius_m / n, cfg.wavelengths_m,
                                cfg.sensor_distance_m, cfg.pixel_pitch_m, cfg.psf_size_px,
                                cfg.sub_pixels)
        self.register_buffer("mft", mft, persistent=False)

    # ----------------------------------------------------------------- coefficients
    def coefficients_um(self) -> torch.Tensor:
        """Full ``(n_modes,)`` Noll vector 1..n in micrometres of OPD (differentiable)."""
        return self.frozen_um.index_put((self.trainable_index,), self.trainable_um)

    def coefficients_dict(self) -> dict[int, float]:
        """``{noll: um}`` of the non-zero coefficients."""
        c = self.coefficients_um().detach().double().cpu().tolist()
        return {j + 1: v for j, v in enumerate(c) if v != 0.0}

    def opd_m(self) -> torch.Tensor:
        """Phase-plate OPD over the pupil grid, ``(N, N)`` metres."""
        return compose_opd(self.coefficients_um() * 1e-6, self.basis)

    def describe(self) -> str:
        """One line per non-zero mode, for logs."""
        return "\n".join(f"Z{j:<3d} {zern_name(j):<20s} {v:+.4f} um"
                         for j, v in self.coefficients_dict().items())

    # --------------------------------------------------------------------- physics
    def psf(self, check_sampling: bool = False, normalize: bool = True) -> torch.Tensor:
        """``(C, K, K)`` sensor PSF, each channel summing to 1 (``normalize=False``: fraction
        of the pupil power per pixel, see :func:`optics.psf.sensor_psf`)."""
        return self.psf_of(self.coefficients_um(), check_sampling=check_sampling,
                           normalize=normalize)

    def psf_of(self, coefficients_um: torch.Tensor, check_sampling: bool = False,
               normalize: bool = True) -> torch.Tensor:
        """PSF of this camera with other coefficients: ``(..., n_modes)`` Noll 1..n in um of
        OPD -> ``(..., C, K, K)`` (a batch of settings, e.g. phase-diversity planes)."""
        cfg = self.config
        opd = compose_opd(coefficients_um * 1e-6, self.basis)
        mft = self.mft.to(torch.complex128 if opd.dtype == torch.float64 else torch.complex64)
        return sensor_psf(
            opd, aperture=self.aperture, wavelength_m=self.wavelengths_m,
            aperture_radius_m=cfg.aperture_radius_m,
            focal_length_m=self.focal_lengths_m.to(opd.dtype),
            sensor_distance_m=cfg.sensor_distance_m,
            object_distance_m=self.object_distance_m.to(opd.dtype),
            pixel_pitch_m=cfg.pixel_pitch_m, psf_size=cfg.psf_size_px,
            pixel_oversample=cfg.sub_pixels,
            mft_y=mft, mft_x=mft,
            check_sampling=check_sampling, normalize=normalize, method=self.method,
        )

    def captured_energy(self) -> torch.Tensor:
        """``(C,)`` fraction of the light through the pupil that lands in the PSF window."""
        with torch.no_grad():
            return self.psf(normalize=False).sum(dim=(-2, -1))

    def validate(self, min_captured: float = 0.95) -> None:
        """Raise :class:`SamplingError` if the current coefficients alias on the pupil grid;
        log a warning if the PSF window cuts off more than ``1 - min_captured`` of the light."""
        with torch.no_grad():
            self.psf(check_sampling=True)
        captured = self.captured_energy()
        if float(captured.min()) < min_captured:
            log.warning(
                "%s: the %d px PSF window holds only %s of the light; the PSF is truncated "
                "(raise psf_size_px)", self.config.name, self.config.psf_size_px,
                ", ".join(f"{float(c):.1%}" for c in captured),
            )

    def forward(self, x: torch.Tensor, *, noise: bool = True,
                generator: torch.Generator | None = None, psf: torch.Tensor | None = None):
        """Image ``x (B, C, H, W)`` in [0, 1] through the camera."""
        if x.shape[-3] != len(self.config.wavelengths_m):
            raise ValueError(
                f"image has {x.shape[-3]} channels, camera has {len(self.config.wavelengths_m)}"
            )
        h = self.psf() if psf is None else psf
        return form_image(x, h.to(x.dtype), self.config.sensor, noise=noise, generator=generator)


def best_focus_z4_um(config: CameraConfig) -> float:
    """The Noll ``Z4`` (um of OPD, RMS over the pupil) that focuses the design wavelength of
    ``config`` on its object plane (``0`` for the bench's 4f relay, which images the object).

    Geometric optics: the lens (focal length ``f``) images the object at ``s_o`` to
    ``s_i = 1 / (1/f - 1/s_o)``; a sensor at ``d`` sees the spherical OPD error
    ``W(rho) = (a^2 rho^2 / 2) (1/d - 1/s_i)`` (``a`` the aperture radius), whose ``rho^2``
    part a Z4 of ``-(a^2 / 2) (1/d - 1/s_i) / (2 sqrt 3)`` cancels (Z4 = sqrt3 (2 rho^2 - 1)).
    The ``lopez2024`` camera (focused at 5 m, face at 0.75 m) needs about -0.654 um."""
    inv_si = 1.0 / config.focal_length_m - 1.0 / config.object_distance_m  # 1/inf = 0
    a = config.aperture_radius_m
    w2_m = 0.5 * a * a * (1.0 / config.sensor_distance_m - inv_si)
    return -w2_m / (2.0 * math.sqrt(3.0)) * 1e6


def defocus_target_psf(config: CameraConfig, defocus_um: float) -> torch.Tensor:
    """Stage-1 target ``H_f``: the camera's PSF with only a Noll ``Z4`` of ``defocus_um``
    micrometres of OPD (RMS over the pupil) added to its own geometry. ``(C, K, K)``."""
    if not math.isfinite(defocus_um):
        raise ValueError(f"defocus must be finite, got {defocus_um}")
    cfg = config.replace(n_modes=max(4, config.n_modes), trainable_modes=())
    cam = Camera(cfg, {4: defocus_um})
    try:
        cam.validate()
    except SamplingError as e:
        raise SamplingError(f"defocus target of {defocus_um} um: {e}") from None
    with torch.no_grad():
        return cam.psf()
