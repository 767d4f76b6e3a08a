"""Device interfaces of the bench: deformable mirror, camera, camera pair, stage.

Every backend (real hardware, or the real backend code talking to a device-level fake)
implements one of these small interfaces, so calibration and capture never know which one
they drive. Units are in the names: volts (``_v``), millimetres (``_mm``), seconds (``_s``);
mirror Zernike amplitudes are Thorlabs *device units* in [-1, 1] (ANSI Z4..Z15 order, see
:mod:`hardware.mirror_modes`).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time

import numpy as np

__all__ = ["DeviceError", "DeviceTimeout", "DeviceLimitError", "DeformableMirror", "Frame",
           "Camera", "PairedFrame", "CameraPair", "Stage"]

log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """A device reported an error, or stopped answering."""


class DeviceTimeout(DeviceError, TimeoutError):
    """A device did not finish (move, capture, relax) within its timeout."""


class DeviceLimitError(DeviceError, ValueError):
    """A request outside the device's limits was refused before it reached the device."""


def _checked(values, n: int, lo: float, hi: float, clip: bool, what: str,
             unit: str) -> np.ndarray:
    """``values`` as a float vector of length ``n`` in ``[lo, hi]``: a wrong length or a
    non-finite value is refused; out of range is refused, or clipped with a warning."""
    v = np.asarray(values, dtype=float).reshape(-1)
    if v.shape != (n,):
        raise DeviceLimitError(f"expected {n} {what}s, got {v.size}")
    if not np.all(np.isfinite(v)):
        raise DeviceLimitError(f"{what}s must be finite")
    bad = (v < lo) | (v > hi)
    if bad.any():
        msg = (f"{int(bad.sum())} {what}(s) outside [{lo:g}, {hi:g}] {unit} "
               f"(range seen {v.min():.4g}..{v.max():.4g})")
        if not clip:
            raise DeviceLimitError(msg + "; refused (use clip=True to clip)")
        log.warning("%s; clipped", msg)
        v = np.clip(v, lo, hi)
    return v


class _Closes:
    """``with device:`` closes it on the way out (every device has an idempotent close)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DeformableMirror(_Closes, abc.ABC):
    """A segmented deformable mirror with a Zernike API of ``n_modes`` device modes.

    Limits are read from the device at open; nothing is hard-coded.
    """

    segment_count: int
    voltage_min_v: float
    voltage_max_v: float
    amplitude_min: float  # device units
    amplitude_max: float
    n_modes: int = 12

    @abc.abstractmethod
    def set_voltages(self, voltages_v, clip: bool = False) -> np.ndarray:
        """Apply segment voltages, shape (segment_count,). Out-of-range values are refused
        (:class:`DeviceLimitError`) or, with ``clip=True``, clipped with a warning. Returns the
        voltages applied."""

    @abc.abstractmethod
    def get_voltages(self) -> np.ndarray:
        """Segment voltages now on the mirror, volts, shape (segment_count,)."""

    @abc.abstractmethod
    def set_zernike(self, amplitudes, clip: bool = False) -> np.ndarray:
        """Apply device-mode amplitudes, shape (n_modes,), Z4..Z15 in device units. Refuse or
        clip out-of-range amplitudes (and resulting voltages) as :meth:`set_voltages` does.
        Returns the voltages applied."""

    @abc.abstractmethod
    def relax(self) -> int:
        """Run the relax routine until it reports no steps remaining; returns the steps."""

    @abc.abstractmethod
    def enable_hysteresis_compensation(self, target: str = "mirror") -> None:
        """``target`` in {"mirror", "tilt", "both"}."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device (idempotent)."""

    @property
    def amplitudes(self) -> np.ndarray:
        """Last device-mode amplitudes set through :meth:`set_zernike` (zeros after relax)."""
        return np.array(getattr(self, "_amplitudes", np.zeros(self.n_modes)), dtype=float)

    def check_voltages(self, voltages_v, clip: bool) -> np.ndarray:
        """Validated copy of ``voltages_v``: shape and finiteness checked, range refused or
        clipped (and logged). Backends call this before anything reaches the device."""
        return _checked(voltages_v, self.segment_count, self.voltage_min_v, self.voltage_max_v,
                        clip, "segment voltage", "V")

    def check_amplitudes(self, amplitudes, clip: bool) -> np.ndarray:
        """The same for device-mode amplitudes (device units)."""
        return _checked(amplitudes, self.n_modes, self.amplitude_min, self.amplitude_max, clip,
                        "mode amplitude", "device units")



@dataclasses.dataclass
class Frame:
    """One captured frame. ``image`` is (H, W, 3) uint8 RGB (or (H, W) for mono).
    Times are host ``time.time()`` seconds: when the trigger was sent, when the file arrived."""

    image: np.ndarray
    camera: str  # serial number
    trigger_time_s: float
    arrival_time_s: float
    filename: str = ""
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def latency_s(self) -> float:
        return self.arrival_time_s - self.trigger_time_s


class Camera(_Closes, abc.ABC):
    """A still camera addressed by serial number. Capture = trigger, then wait for the file."""

    serial: str

    @abc.abstractmethod
    def configure(self, settings: dict) -> dict:
        """Apply settings (iso, shutterspeed, aperture, imageformat, capturetarget); returns
        the values the camera reports afterwards."""

    @abc.abstractmethod
    def trigger(self) -> float:
        """Fire the shutter; returns the trigger time (host seconds). Non-blocking."""

    @abc.abstractmethod
    def wait_frame(self, timeout_s: float) -> Frame:
        """Block until the triggered frame arrives (FILE_ADDED) and return it; raise
        :class:`DeviceTimeout` after ``timeout_s`` and :class:`DeviceError` if the camera
        went away."""

    def capture(self, timeout_s: float = 10.0) -> Frame:
        self.trigger()
        return self.wait_frame(timeout_s)

    @abc.abstractmethod
    def close(self) -> None:
        """Release the camera (idempotent)."""



@dataclasses.dataclass
class PairedFrame:
    """A synchronised pair; ``reference`` is the ground-truth side branch."""

    privacy: Frame
    reference: Frame | None
    skew_s: float  # trigger time difference, reference - privacy


class CameraPair(_Closes):
    """Fires the privacy and the reference camera together and records the trigger skew."""

    def __init__(self, privacy: Camera, reference: Camera | None):
        self.privacy = privacy
        self.reference = reference

    def capture(self, timeout_s: float = 10.0) -> PairedFrame:
        t_p = self.privacy.trigger()
        t_r = self.reference.trigger() if self.reference is not None else t_p
        fp = self.privacy.wait_frame(timeout_s)
        fr = self.reference.wait_frame(timeout_s) if self.reference is not None else None
        return PairedFrame(fp, fr, t_r - t_p)

    def close(self) -> None:
        for c in (self.privacy, self.reference):
            if c is not None:
                c.close()



class Stage(_Closes, abc.ABC):
    """A single-axis motorised stage; positions in millimetres, blocking moves."""

    serial: str

    @property
    @abc.abstractmethod
    def position_mm(self) -> float:
        """Current position, mm."""

    @abc.abstractmethod
    def home(self, timeout_s: float = 60.0) -> None:
        """Home the axis; block until homed or raise :class:`DeviceTimeout`."""

    @abc.abstractmethod
    def move_to(self, position_mm: float, timeout_s: float = 30.0) -> float:
        """Absolute move; block until it completes; returns the final position, mm."""

    def move_by(self, distance_mm: float, timeout_s: float = 30.0) -> float:
        return self.move_to(self.position_mm + distance_mm, timeout_s)

    @abc.abstractmethod
    def close(self) -> None:
        """Release the stage (idempotent)."""



def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.02):
    """Poll ``predicate()`` until true; raise :class:`DeviceTimeout` naming ``what``."""
    t_end = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() > t_end:
            raise DeviceTimeout(f"{what}: no answer within {timeout_s:g} s")
        time.sleep(poll_s)
