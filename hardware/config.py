"""The rig config: which backend drives each device (``real`` or ``sim``), and the bench
geometry. Saved to and loaded from YAML (:mod:`optics.kit.config`); ``--sim`` on any ``rig``
command turns every device to ``sim``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from optics.kit.config import apply_overrides, load_config
from optics.presets import get_preset
from optics.psf import defocus_to_z4_m

__all__ = ["MirrorConfig", "CameraDeviceConfig", "StageConfig", "SimConfig", "RigConfig",
           "load_rig_config", "BACKENDS"]

BACKENDS = ("real", "sim")


@dataclass
class MirrorConfig:
    backend: str = "sim"
    library: str = "TLDFM_64"  # path of Thorlabs' TLDFM library (sim: the fake is built)
    library_x: str = "TLDFMX_64"  # path of the TLDFMX (Zernike) library
    resource: str = ""  # VISA resource; empty: the first mirror found
    hysteresis: bool = True


@dataclass
class CameraDeviceConfig:
    backend: str = "sim"
    serial: str = ""  # empty in sim: the virtual camera's serial
    iso: str = "100"
    shutterspeed: str = "1/100"
    aperture: str = "8"
    imageformat: str = "Large Fine JPEG"
    capturetarget: str = "Internal RAM"
    timeout_s: float = 15.0

    def settings(self) -> dict:
        return {"iso": self.iso, "shutterspeed": self.shutterspeed, "aperture": self.aperture,
                "imageformat": self.imageformat, "capturetarget": self.capturetarget}


@dataclass
class StageConfig:
    backend: str = "sim"  # "real", "sim" or "none" (no stage: no phase diversity)
    port: str = ""  # serial port; empty: found by serial number
    serial: str = ""
    device: str = "KDC101"
    counts_per_mm: float = 34554.96  # KDC101 + Z8 actuator
    focus_mm: float = 6.0  # stage position that puts the pinhole in the collimator's focus
    diversity_mm: tuple[float, ...] = (0.0, 3.0, -3.0)  # offsets from focus for phase diversity
    timeout_s: float = 30.0


@dataclass
class SimConfig:
    """What the simulator hides from calibration, and how it renders."""

    image_size_px: int = 256
    seed: int = 0
    dark_level: float = 0.03  # sensor offset, fraction of full scale
    read_noise_std: float = 0.004  # fraction of full scale
    # bench aberration with a flat mirror, Noll 1.. (um OPD); tip/tilt = pinhole off axis
    static_aberration_um: tuple[float, ...] = (0.0, 0.03, -0.02, 0.02, -0.015, 0.01, 0.0, 0.008)
    pinhole_offset_px: tuple[float, ...] = (3.0, -2.0)  # (row, col) whole pixels off axis
    mirror_scales_um: tuple[float, ...] = ()  # empty: the fake library's built-in default
    mirror_signs: tuple[float, ...] = ()
    mirror_rotation_deg: float = 0.0
    reference_rotation_deg: float = 1.5  # the reference camera, relative to the privacy one
    reference_scale: float = 1.03
    reference_shift_px: tuple[float, ...] = (5.0, -4.0)  # (x, y)
    faces: str = ""  # folder of face images for capture scenes; empty: the demo corpus
    workdir: str = ""  # where virtual-camera folders live; empty: a temporary folder


@dataclass
class RigConfig:
    mirror: MirrorConfig = field(default_factory=MirrorConfig)
    privacy_camera: CameraDeviceConfig = field(default_factory=CameraDeviceConfig)
    reference_camera: CameraDeviceConfig = field(default_factory=CameraDeviceConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    optics: str = "prototype-4f"  # optics preset of the privacy branch
    collimator_focal_length_m: float = 0.15  # pinhole collimator (phase-diversity scale)
    sim: SimConfig = field(default_factory=SimConfig)

    def __post_init__(self):
        for name in ("mirror", "privacy_camera", "reference_camera"):
            b = getattr(self, name).backend
            if b not in BACKENDS:
                raise ValueError(f"{name}.backend must be one of {BACKENDS}, got {b!r}")
        if self.stage.backend not in BACKENDS + ("none",):
            raise ValueError(f"stage.backend must be real, sim or none, got "
                             f"{self.stage.backend!r}")

    @property
    def any_sim(self) -> bool:
        return "sim" in (self.mirror.backend, self.privacy_camera.backend,
                         self.reference_camera.backend, self.stage.backend)

    def simulated(self) -> RigConfig:
        """The same rig with every device simulated (``--sim``)."""
        stage = self.stage.backend if self.stage.backend == "none" else "sim"
        return dataclasses.replace(
            self,
            mirror=dataclasses.replace(self.mirror, backend="sim"),
            privacy_camera=dataclasses.replace(self.privacy_camera, backend="sim"),
            reference_camera=dataclasses.replace(self.reference_camera, backend="sim"),
            stage=dataclasses.replace(self.stage, backend=stage))

    def diversity_um_per_mm(self) -> float:
        """Noll Z4 (um OPD, RMS) per mm of pinhole travel from the collimator's focus: the
        vergence is dz / f_c^2 dioptres, and W = V r^2 / 2 has Z4 = V a^2 / (4 sqrt 3)."""
        a = get_preset(self.optics).aperture_radius_m
        return defocus_to_z4_m(1e-3 / self.collimator_focal_length_m**2, a) * 1e6


def load_rig_config(path=None, overrides=(), sim: bool = False) -> RigConfig:
    """Rig config from YAML (or the default all-simulated rig), ``key=value`` overrides, and
    ``--sim``."""
    cfg = load_config(RigConfig, path) if path else RigConfig()
    cfg = apply_overrides(cfg, overrides)
    return cfg.simulated() if sim else cfg
