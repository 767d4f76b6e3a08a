"""Build and steer the fake Thorlabs TLDFM/TLDFMX library (``fake_tldfm.c``).

The fake is a shared library with the real C functions of Thorlabs' DMP40/DMH40 driver
libraries, so :class:`hardware.tldfm.TLDFMMirror` runs unchanged against it. Its extra
``FAKE_`` functions (documented in the header of ``fake_tldfm.c``) let a simulator or a test
set the hidden mirror response, read the mirror surface and inject faults.
``ctypes.CDLL`` of one path in one process returns the same loaded library, so a
:class:`FakeMirrorControl` and a :class:`~hardware.tldfm.TLDFMMirror` opened on the same
file share the device state.

The hidden response (:class:`HiddenMirror`) maps the 12 device-mode amplitudes (Thorlabs
device units) to the surface's Noll coefficients j = 1..15 in **micrometres of OPD**; it is
what ``rig calibrate`` has to discover.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from hardware.mirror_modes import DEVICE_MODES, N_DEVICE_MODES
from optics.kit.paths import privlens_home
from optics.zernike import nm_to_noll

__all__ = ["SOURCE", "N_NOLL", "build_fake_tldfm", "default_build_dir", "HiddenMirror",
           "DEFAULT_HIDDEN", "FakeState", "FakeMirrorControl", "FakeError"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fake_tldfm.c")
N_NOLL = 15  # surface Noll terms reported by the fake
N_SEGMENTS = 40
_CFLAGS = ("-shared", "-fPIC", "-O2")
_LIBS = ("-lm",)


class FakeError(RuntimeError):
    """A ``FAKE_`` call was refused (bad argument, or the device is open)."""


def default_build_dir() -> Path:
    """``$PRIVLENS_HOME/build``, else ``~/.cache/privlens/build``."""
    return privlens_home() / "build"


def build_fake_tldfm(build_dir: str | os.PathLike | None = None) -> Path:
    """Compile ``fake_tldfm.c`` with gcc into ``build_dir`` (default
    :func:`default_build_dir`) and return the library's path.

    The file name carries a hash of the source and flags, so an existing build is reused and
    an edited source gets a new file. The compiler writes to a temporary file that is renamed
    into place, so concurrent builds never see a half-written library.
    """
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(_CFLAGS + _LIBS).encode()).hexdigest()[:16]
    out_dir = Path(build_dir) if build_dir is not None else default_build_dir()
    target = out_dir / f"libfake_tldfm-{digest}.so"
    if target.is_file():
        return target
    gcc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc not found: the fake TLDFM library needs a C compiler "
                           "(e.g. apt-get install gcc)")
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=out_dir)
    os.close(fd)
    try:
        cmd = [gcc, *_CFLAGS, "-o", tmp, str(SOURCE), *_LIBS]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"compiling {SOURCE.name} failed: {last}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("built %s", target)
    return target


@dataclasses.dataclass(frozen=True)
class HiddenMirror:
    """The mirror's true response, per device mode Z4..Z15 (index 0..11).

    Device mode k with Zernike orders (n, m) produces the surface
    ``scales_um[k] * signs[k] * Z_nm(rho, theta - phi)``, ``phi = rotation_deg`` in degrees:
    the nominal shape turned **counter-clockwise** (from +x towards +y) by the mount rotation.
    Expanding the rotated term mixes the cos/sin pair of the same n, |m|:

    - ``cos(|m| (theta - phi)) = cos(|m| phi) cos(|m| theta) + sin(|m| phi) sin(|m| theta)``
    - ``sin(|m| (theta - phi)) = cos(|m| phi) sin(|m| theta) - sin(|m| phi) cos(|m| theta)``

    ``scales_um`` are **micrometres of OPD per device unit** (positive), ``signs`` are +-1.
    """

    scales_um: tuple[float, ...]
    signs: tuple[int, ...]
    rotation_deg: float = 0.0

    def __post_init__(self):
        scales = tuple(float(s) for s in self.scales_um)
        signs = tuple(int(s) for s in self.signs)
        if len(scales) != N_DEVICE_MODES or len(signs) != N_DEVICE_MODES:
            raise ValueError(f"need {N_DEVICE_MODES} scales and signs")
        if not all(math.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f"scales_um must be positive and finite, got {scales}")
        if not all(s in (-1, 1) for s in signs):
            raise ValueError(f"signs must be +1 or -1, got {signs}")
        if not math.isfinite(self.rotation_deg):
            raise ValueError("rotation_deg must be finite")
        object.__setattr__(self, "scales_um", scales)
        object.__setattr__(self, "signs", signs)
        object.__setattr__(self, "rotation_deg", float(self.rotation_deg))

    def matrix(self) -> np.ndarray:
        """``D``, shape (15, 12): row j-1 = Noll j, column k = device mode Z(k+4); surface
        Noll coefficients (um) = ``D @ amplitudes`` (device units)."""
        d = np.zeros((N_NOLL, N_DEVICE_MODES))
        phi = math.radians(self.rotation_deg)
        for k, mode in enumerate(DEVICE_MODES):
            s = self.scales_um[k] * self.signs[k]
            q = abs(mode.m)
            d[nm_to_noll(mode.n, mode.m) - 1, k] = s * math.cos(q * phi)
            if mode.m != 0:
                d[nm_to_noll(mode.n, -mode.m) - 1, k] = s * math.sin(q * phi) * np.sign(mode.m)
        return d


# Must equal the built-in default of fake_tldfm.c (tested).
DEFAULT_HIDDEN = HiddenMirror(
    scales_um=(0.55, 1.10, 0.62, 0.41, 0.78, 0.74, 0.45, 0.33, 0.52, 0.95, 0.58, 0.36),
    signs=(1, 1, 1, 1, -1, 1, 1, 1, -1, 1, 1, 1),
    rotation_deg=4.0,
)


class _CState(ctypes.Structure):
    _fields_ = [
        ("is_open", ctypes.c_int32),
        ("x_open", ctypes.c_int32),
        ("segment_count", ctypes.c_int32),
        ("device_count", ctypes.c_int32),
        ("hysteresis_mirror", ctypes.c_int32),
        ("hysteresis_points", ctypes.c_int32),
        ("relax_active", ctypes.c_int32),
        ("relax_next_step", ctypes.c_int32),
        ("relax_count", ctypes.c_int32),
        ("rejected_voltage_requests", ctypes.c_int32),
        ("rejected_amplitude_requests", ctypes.c_int32),
        ("calls", ctypes.c_int32),
        ("voltage_writes", ctypes.c_int32),
        ("session", ctypes.c_uint32),
        ("vmin", ctypes.c_double),
        ("vmax", ctypes.c_double),
        ("vflat", ctypes.c_double),
        ("gain_v", ctypes.c_double),
        ("voltages", ctypes.c_double * N_SEGMENTS),
    ]


@dataclasses.dataclass(frozen=True)
class FakeState:
    """Snapshot of the fake device. Voltages in **volts**, ``gain_v`` in V per device unit."""

    is_open: bool
    x_open: bool
    device_count: int
    hysteresis_mirror: bool
    hysteresis_points: int
    relax_active: bool
    relax_count: int
    rejected_voltage_requests: int
    rejected_amplitude_requests: int
    calls: int
    voltage_writes: int
    voltage_min_v: float
    voltage_max_v: float
    voltage_flat_v: float
    gain_v: float
    voltages_v: np.ndarray


_D_ARRAY = ctypes.POINTER(ctypes.c_double)


class FakeMirrorControl:
    """ctypes access to the fake's ``FAKE_`` functions (the simulator's side door)."""

    def __init__(self, library_path: str | os.PathLike):
        self.library_path = Path(library_path)
        lib = ctypes.CDLL(str(self.library_path))
        sigs = {
            "FAKE_restore_defaults": [],
            "FAKE_set_voltage_range": [ctypes.c_double, ctypes.c_double],
            "FAKE_set_device_count": [ctypes.c_int],
            "FAKE_set_mode_map": [_D_ARRAY, ctypes.c_int, ctypes.c_int],
            "FAKE_get_mode_map": [_D_ARRAY, ctypes.c_int, ctypes.c_int],
            "FAKE_get_surface_noll": [_D_ARRAY, ctypes.c_int],
            "FAKE_get_segment_layout": [_D_ARRAY, _D_ARRAY, ctypes.c_int],
            "FAKE_inject_fault": [ctypes.c_char_p, ctypes.c_int, ctypes.c_int],
            "FAKE_get_state": [ctypes.POINTER(_CState), ctypes.c_int],
        }
        for name, argtypes in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int
        self._lib = lib

    def _call(self, name: str, *args) -> None:
        status = getattr(self._lib, name)(*args)
        if status < 0:
            raise FakeError(f"{name} refused (status {status & 0xFFFFFFFF:#010x})")

    @staticmethod
    def _doubles(n: int):
        return (ctypes.c_double * n)()

    def restore_defaults(self) -> None:
        """Power-cycle the fake: closed, 0..300 V, default hidden map, faults and counters
        cleared."""
        self._call("FAKE_restore_defaults")

    def set_voltage_range(self, vmin_v: float, vmax_v: float) -> None:
        """Change the device's segment voltage range (only while the device is closed)."""
        self._call("FAKE_set_voltage_range", float(vmin_v), float(vmax_v))

    def set_device_count(self, n: int) -> None:
        """Make 0 or 1 devices visible to discovery (only while closed)."""
        self._call("FAKE_set_device_count", int(n))

    def set_mode_map(self, hidden: HiddenMirror | np.ndarray) -> None:
        """Set the hidden (15, 12) map from device units to surface Noll um."""
        d = hidden.matrix() if isinstance(hidden, HiddenMirror) else np.asarray(hidden, float)
        if d.shape != (N_NOLL, N_DEVICE_MODES):
            raise ValueError(f"mode map must be ({N_NOLL}, {N_DEVICE_MODES}), got {d.shape}")
        buf = self._doubles(d.size)
        buf[:] = np.ascontiguousarray(d).ravel().tolist()
        self._call("FAKE_set_mode_map", buf, N_NOLL, N_DEVICE_MODES)

    def mode_map(self) -> np.ndarray:
        buf = self._doubles(N_NOLL * N_DEVICE_MODES)
        self._call("FAKE_get_mode_map", buf, N_NOLL, N_DEVICE_MODES)
        return np.array(buf[:]).reshape(N_NOLL, N_DEVICE_MODES)

    def surface_noll_um(self) -> np.ndarray:
        """Surface Noll coefficients j = 1..15, **micrometres of OPD**, shape (15,)."""
        buf = self._doubles(N_NOLL)
        self._call("FAKE_get_surface_noll", buf, N_NOLL)
        return np.array(buf[:])

    def segment_layout(self) -> tuple[np.ndarray, np.ndarray]:
        """Segment centres: normalised radius ``rho`` and angle ``theta`` in **radians**,
        each shape (40,)."""
        rho, theta = self._doubles(N_SEGMENTS), self._doubles(N_SEGMENTS)
        self._call("FAKE_get_segment_layout", rho, theta, N_SEGMENTS)
        return np.array(rho[:]), np.array(theta[:])

    def inject_fault(self, code: int, after_n_calls: int = 0, function: str | None = None):
        """Make the (after_n_calls + 1)-th call from now of ``function`` (None: any TLDFM_/
        TLDFMX_ function but ``*_error_message``) return status ``code`` and do nothing."""
        name = function.encode() if function else None
        self._call("FAKE_inject_fault", name, int(code), int(after_n_calls))

    def clear_fault(self) -> None:
        self._call("FAKE_inject_fault", None, 0, 0)

    def state(self) -> FakeState:
        raw = _CState()
        self._call("FAKE_get_state", ctypes.byref(raw), ctypes.sizeof(raw))
        return FakeState(
            is_open=bool(raw.is_open), x_open=bool(raw.x_open),
            device_count=raw.device_count, hysteresis_mirror=bool(raw.hysteresis_mirror),
            hysteresis_points=raw.hysteresis_points, relax_active=bool(raw.relax_active),
            relax_count=raw.relax_count,
            rejected_voltage_requests=raw.rejected_voltage_requests,
            rejected_amplitude_requests=raw.rejected_amplitude_requests,
            calls=raw.calls, voltage_writes=raw.voltage_writes,
            voltage_min_v=raw.vmin, voltage_max_v=raw.vmax, voltage_flat_v=raw.vflat,
            gain_v=raw.gain_v, voltages_v=np.array(raw.voltages[:]))
