"""Noll coefficients (micrometres of OPD) <-> deformable-mirror device amplitudes.

A :class:`DeviceCalibration` holds the matrix ``D`` (Noll 1..15 x 12 device modes): column k
is the pupil OPD, in micrometres per Noll term, that device mode k makes per device unit. It
is measured by ``rig calibrate`` (poke each mode at +/-A, fit the PSFs); a *nominal* one
(each mode on its (n, m) Noll partner with one assumed scale) is only good for dry runs.

``noll_to_device`` solves ``min_a || c - D a ||`` over the Noll terms 4..15 (piston, tip and
tilt only move or offset the image and the Zernike API cannot make them); what the mirror
cannot make is reported as a residual RMS (for orthonormal Noll terms the RMS OPD is the norm
of the coefficient vector). ``device_to_noll`` is the reverse map ``c = D a``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from hardware.mirror_modes import DEVICE_MODES, N_DEVICE_MODES, mode_flags
from optics.zernike import nm_to_noll

__all__ = ["N_NOLL", "DeviceCalibration", "DeviceSolution", "nominal_calibration",
           "noll_to_device", "device_to_noll", "load_calibration", "save_device_file",
           "load_device_file", "PROTOTYPE_AMPLITUDES", "prototype_amplitudes",
           "AmplitudeRangeError"]

log = logging.getLogger(__name__)

N_NOLL = 15  # Noll 1..15: the device modes reach radial order 4
FITTED_NOLL = tuple(range(4, N_NOLL + 1))  # what the mirror is asked to make

#: The paper's prototype mirror setting after calibration, in Thorlabs device units
#: (read as Thorlabs modes Z4..Z15, ANSI order from 1): beta4 = -0.83, beta6 = -0.31,
#: beta7 = 0.08, beta8 = -0.69, beta12 = -0.67, beta14 = 0.18, all others 0.
PROTOTYPE_AMPLITUDES = {"Z4": -0.83, "Z6": -0.31, "Z7": 0.08, "Z8": -0.69, "Z12": -0.67,
                        "Z14": 0.18}


class AmplitudeRangeError(ValueError):
    """Device amplitudes outside the mirror's range, refused."""


def prototype_amplitudes() -> np.ndarray:
    """The prototype preset as a (12,) device-amplitude vector."""
    a = np.zeros(N_DEVICE_MODES)
    for label, v in PROTOTYPE_AMPLITUDES.items():
        a[int(label[1:]) - 4] = v
    return a


@dataclasses.dataclass
class DeviceCalibration:
    """``matrix_um`` (15, 12): Noll 1..15 OPD (um) per device unit of each device mode.
    ``amplitude_range``: the mirror's device-unit limits. ``source`` says where it came from."""

    matrix_um: np.ndarray
    amplitude_range: tuple[float, float] = (-1.0, 1.0)
    source: str = "nominal"

    def __post_init__(self):
        self.matrix_um = np.asarray(self.matrix_um, dtype=float)
        if self.matrix_um.shape != (N_NOLL, N_DEVICE_MODES):
            raise ValueError(f"calibration matrix must be ({N_NOLL}, {N_DEVICE_MODES}), got "
                             f"{self.matrix_um.shape}")
        if not np.all(np.isfinite(self.matrix_um)):
            raise ValueError("calibration matrix must be finite")

    def scales_um(self) -> np.ndarray:
        """(12,) per-mode scale: the norm of each column over its own (n, +/-m) Noll pair,
        micrometres of OPD per device unit."""
        out = np.zeros(N_DEVICE_MODES)
        for k, d in enumerate(DEVICE_MODES):
            rows = _pair_rows(d.n, d.m)
            out[k] = np.linalg.norm(self.matrix_um[rows, k])
        return out

    def signs(self) -> np.ndarray:
        """(12,) sign of each mode on its nominal Noll partner."""
        return np.array([np.sign(self.matrix_um[d.noll - 1, k]) or 1.0
                         for k, d in enumerate(DEVICE_MODES)])

    def rotations_deg(self) -> np.ndarray:
        """(12,) apparent rotation of each non-round mode, degrees of *mount* rotation
        (the cos/sin pair turns by |m| times it); 0 for m = 0."""
        out = np.zeros(N_DEVICE_MODES)
        for k, d in enumerate(DEVICE_MODES):
            if d.m == 0:
                continue
            own = self.matrix_um[d.noll - 1, k]
            other = self.matrix_um[nm_to_noll(d.n, -d.m) - 1, k]
            s = np.sign(own) or 1.0
            # a sin term (m<0) turned by phi gains -sin(|m| phi) of the cos term; a cos term
            # gains +sin(|m| phi) of the sin term (see hardware.sim.fake_tldfm.HiddenMirror)
            ang = np.arctan2(s * other * (1 if d.m > 0 else -1), abs(own))
            out[k] = np.degrees(ang) / abs(d.m)
        return out

    def to_dict(self) -> dict:
        return {"convention": "noll", "units": "um_opd_per_device_unit",
                "device_modes": [d.label for d in DEVICE_MODES],
                "matrix_um": self.matrix_um.tolist(),
                "amplitude_range": list(self.amplitude_range), "source": self.source}

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def _pair_rows(n: int, m: int) -> list[int]:
    rows = {nm_to_noll(n, m) - 1, nm_to_noll(n, -m) - 1}
    return sorted(rows)


def nominal_calibration(scale_um: float = 1.0) -> DeviceCalibration:
    """Each device mode on its (n, m) Noll partner with ``scale_um`` um OPD per device unit,
    positive sign, no rotation. Only an assumption: use ``rig calibrate`` for a real map."""
    d = np.zeros((N_NOLL, N_DEVICE_MODES))
    for k, mode in enumerate(DEVICE_MODES):
        d[mode.noll - 1, k] = scale_um
    return DeviceCalibration(d, source=f"nominal ({scale_um:g} um per device unit)")


@dataclasses.dataclass
class DeviceSolution:
    amplitudes: np.ndarray  # (12,) device units, Z4..Z15
    achieved_um: np.ndarray  # (15,) Noll 1..15 the mirror makes with them
    residual_rms_um: float  # RMS OPD (Noll 4..15) the mirror cannot make
    clipped: bool

    @property
    def flags(self) -> int:
        return mode_flags()

    def as_dict(self) -> dict[str, float]:
        return {d.label: float(a) for d, a in zip(DEVICE_MODES, self.amplitudes, strict=True)}


def _vector(coefficients_um) -> np.ndarray:
    c = np.zeros(N_NOLL)
    if isinstance(coefficients_um, dict):
        for j, v in coefficients_um.items():
            j = int(j)
            if j > N_NOLL:
                if v:
                    log.warning("Noll %d (%.3g um) is beyond the mirror's modes; ignored", j, v)
                continue
            c[j - 1] = float(v)
    else:
        arr = np.asarray(coefficients_um, dtype=float).reshape(-1)
        c[: min(N_NOLL, arr.size)] = arr[:N_NOLL]
    if not np.all(np.isfinite(c)):
        raise ValueError("coefficients must be finite")
    return c


def noll_to_device(coefficients_um, calibration: DeviceCalibration,
                   clip: bool = False) -> DeviceSolution:
    """Least-squares device amplitudes for Noll ``coefficients_um`` (dict ``{noll: um}`` or a
    vector from Noll 1). Amplitudes outside the calibration's range raise
    :class:`AmplitudeRangeError`, or with ``clip=True`` are clipped (warning logged) and the
    residual is that of the clipped setting."""
    c = _vector(coefficients_um)
    rows = [j - 1 for j in FITTED_NOLL]
    d = calibration.matrix_um[rows]
    a, *_ = np.linalg.lstsq(d, c[rows], rcond=None)
    lo, hi = calibration.amplitude_range
    bad = (a < lo) | (a > hi)
    clipped = False
    if bad.any():
        names = ", ".join(f"{DEVICE_MODES[k].label}={a[k]:+.3f}" for k in np.flatnonzero(bad))
        msg = f"device amplitudes outside [{lo:g}, {hi:g}]: {names}"
        if not clip:
            raise AmplitudeRangeError(msg + " (refused; use --clip to clip them)")
        log.warning("%s; clipped", msg)
        a = np.clip(a, lo, hi)
        clipped = True
    achieved = calibration.matrix_um @ a
    resid = float(np.linalg.norm(c[rows] - achieved[rows]))
    return DeviceSolution(a, achieved, resid, clipped)


def device_to_noll(amplitudes, calibration: DeviceCalibration) -> dict[int, float]:
    """``{noll: um}`` (Noll 1..15) that device amplitudes (12,) make on the mirror."""
    a = np.asarray(amplitudes, dtype=float).reshape(-1)
    if a.shape != (N_DEVICE_MODES,):
        raise ValueError(f"expected {N_DEVICE_MODES} device amplitudes, got {a.size}")
    c = calibration.matrix_um @ a
    return {j + 1: float(v) for j, v in enumerate(c)}


def load_calibration(path) -> DeviceCalibration:
    """Read a device calibration: the JSON of :meth:`DeviceCalibration.save`, or the HDF5 file
    written by ``rig calibrate`` (dataset ``device_map/matrix_um``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such calibration file", str(path))
    if path.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as f:
            if "device_map/matrix_um" not in f:
                raise ValueError(f"{path}: no device_map/matrix_um (run rig calibrate through "
                                 "its poke step)")
            m = f["device_map/matrix_um"][()]
            rng = tuple(f["device_map"].attrs.get("amplitude_range", (-1.0, 1.0)))
        return DeviceCalibration(m, (float(rng[0]), float(rng[1])), source=str(path))
    try:
        data = json.loads(path.read_text())
        return DeviceCalibration(np.array(data["matrix_um"]),
                                 tuple(data.get("amplitude_range", (-1.0, 1.0))),
                                 source=data.get("source", str(path)))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a device calibration file ({e})") from None


def save_device_file(solution: DeviceSolution, path, **extra) -> Path:
    """Write the device file the bench loads: amplitudes per Thorlabs mode with the flags."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"device": "Thorlabs TLDFMX Zernike", "units": "device",
            "modes": [d.label for d in DEVICE_MODES], "flags": solution.flags,
            "amplitudes": solution.as_dict(),
            "achieved_um": {str(j + 1): float(v) for j, v in enumerate(solution.achieved_um)
                            if v != 0.0},
            "residual_rms_um": solution.residual_rms_um, "clipped": solution.clipped, **extra}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load_device_file(path) -> np.ndarray:
    """(12,) amplitudes from a device file written by :func:`save_device_file`."""
    path = Path(path)
    data = json.loads(Path(path).read_text())
    if data.get("units") != "device" or "amplitudes" not in data:
        raise ValueError(f"{path}: not a device amplitude file")
    a = np.zeros(N_DEVICE_MODES)
    for label, v in data["amplitudes"].items():
        a[int(label[1:]) - 4] = float(v)
    return a
