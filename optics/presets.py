"""Registry of camera presets (frozen :class:`~optics.camera.CameraConfig` instances).

- ``lopez2024``: the published privacy camera (Lopez et al., "Privacy-preserving optics for
  enhancing protection in face de-identification", CVPR 2024): 50 mm lens-to-sensor
  distance focused at 5 m, 2.0 mm aperture radius, 3.713 um pixels, R/G/B at 640/550/440 nm
  with fused-silica dispersion, faces at 0.75 m. Unlike the published code, the Zernike
  unit disk *is* the 2.0 mm aperture and coefficients are micrometres of OPD.
- ``prototype-4f``: the bench. A Thorlabs DMH40 deformable mirror (10 mm clear aperture)
  sits in the Fourier plane of a 4f relay of 50 mm achromats in front of a Canon EOS M50
  (22.3 mm / 6000 px = 3.72 um pixels). The relay images the object onto the sensor, so the
  PSF is the far field of the mirror pupil at 50 mm; achromats: no focal shift. 15 modes.
- ``lr16``: the low-resolution baseline: an in-focus, colour-corrected lens (no phase plate), a
  sensor binned 16x, which turns 256x256 into 16x16.
"""

from __future__ import annotations

from optics.camera import CameraConfig
from optics.imaging import SensorModel

__all__ = ["PRESETS", "get_preset", "preset_names"]

_LOPEZ = CameraConfig(
    name="lopez2024",
    description="Published privacy camera (CVPR 2024), Zernike disk = 2 mm aperture",
    wavelengths_m=(640e-9, 550e-9, 440e-9),
    aperture_radius_m=2.0e-3,
    focal_length_m=1.0 / (1.0 / 5.0 + 1.0 / 0.05),  # 50 mm image distance focused at 5 m
    design_wavelength_m=550e-9,
    chromatic=True,
    sensor_distance_m=0.05,
    object_distance_m=0.75,
    pixel_pitch_m=3.713e-6,
    pupil_samples=256,
    psf_size_px=160,
    n_modes=15,
    image_size_px=256,
    sensor=SensorModel(boundary="replicate", read_noise_std=0.005, bit_depth=8),
)

_PROTO = CameraConfig(
    name="prototype-4f",
    description="DMH40 mirror in a 4f relay of 50 mm achromats, Canon EOS M50 sensor",
    wavelengths_m=(640e-9, 550e-9, 440e-9),
    aperture_radius_m=5.0e-3,
    focal_length_m=0.05,
    chromatic=False,
    sensor_distance_m=0.05,
    object_distance_m=float("inf"),
    pixel_pitch_m=22.3e-3 / 6000,
    pupil_samples=256,
    psf_size_px=64,
    n_modes=15,
    image_size_px=256,
    sensor=SensorModel(boundary="replicate", read_noise_std=0.005, bit_depth=8),
)

_LR16 = _LOPEZ.replace(
    name="lr16",
    description="Low-resolution baseline: in-focus lens, sensor binned 16x (256 -> 16 px)",
    focal_length_m=1.0 / (1.0 / 0.75 + 1.0 / 0.05),  # focused on the face
    chromatic=False,  # a colour-corrected camera lens
    psf_size_px=32,
    n_modes=4,
    trainable_modes=(),
    sensor=SensorModel(boundary="replicate", read_noise_std=0.005, bit_depth=8, binning=16),
)

PRESETS: dict[str, CameraConfig] = {c.name: c for c in (_LOPEZ, _PROTO, _LR16)}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> CameraConfig:
    """Preset by name; ``KeyError`` with the list of names if unknown."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown camera preset {name!r}; choose from {preset_names()}") from None
