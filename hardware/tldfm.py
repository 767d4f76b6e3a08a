"""ctypes backend for the Thorlabs DMP40 driver / DMH40 deformable mirror.

The device is controlled through Thorlabs' VXIpnp C libraries: ``TLDFM_64`` (segment
voltages, limits, hysteresis) and ``TLDFMX_64`` (Zernike patterns, relax). Signatures follow
Thorlabs' ``TLDFM.h`` and ``TLDFMX.h`` (2019). Every call's status is checked: a negative
status raises :class:`~hardware.devices.DeviceError` with the function name and Thorlabs'
text from ``TLDFM_error_message``; a positive status (a warning) is logged.

Safety: the Zernike library computes voltages without clipping them, so
:meth:`TLDFMMirror.set_zernike` checks the computed pattern against the voltage limits read
from the device before anything is applied. No out-of-range voltage or amplitude is ever
passed to the library.

Tests run this class unchanged against ``hardware/sim/fake_tldfm.c``, a shared library with
the same C functions.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import numpy as np

from hardware.devices import DeformableMirror, DeviceError, DeviceLimitError
from hardware.mirror_modes import ALL_MODES_FLAG, N_DEVICE_MODES

__all__ = ["TLDFMMirror", "VI_SUCCESS", "VI_ERROR", "TLDFM_ERROR_EXTERNAL_PWR",
           "TLDFM_ERROR_USBCOMM", "TLDFMX_ERROR_AMPL_RANGE", "HYSTERESIS_TARGETS",
           "status_hex"]

log = logging.getLogger(__name__)

# ---- VISA / Thorlabs types and status codes -------------------------------------------------
ViStatus = ctypes.c_int32
ViSession = ctypes.c_uint32
ViUInt32 = ctypes.c_uint32
ViInt32 = ctypes.c_int32
ViInt16 = ctypes.c_int16
ViBoolean = ctypes.c_uint16
ViReal64 = ctypes.c_double
ViPReal64 = ctypes.POINTER(ctypes.c_double)
ViChar_p = ctypes.c_char_p

VI_SUCCESS = 0
VI_ERROR = -(2**31)
VI_TRUE, VI_FALSE = 1, 0
_TLDFM_ERROR_OFFSET = VI_ERROR + 0x3FFC0900
TLDFM_ERROR_EXTERNAL_PWR = _TLDFM_ERROR_OFFSET + 0x0C
TLDFM_ERROR_USBCOMM = VI_ERROR + 0x3FFC0B00
TLDFMX_ERROR_AMPL_RANGE = _TLDFM_ERROR_OFFSET + 0xFF + 0x09

HYSTERESIS_TARGETS = {"mirror": 0, "tilt": 1, "both": 2}  # T_MIRROR, T_TILT, T_BOTH
_T_MIRROR = 0
_BUFFER_SIZE = 256  # TLDFM_BUFFER_SIZE
_NAME_SIZE = 28  # TLDFM_MAX_INSTR_NAME_LENGTH, TLDFM_MAX_SN_LENGTH
_ERR_BUFFER_SIZE = 512  # TLDFM_ERR_DESCR_BUFER_SIZE
_P = ctypes.POINTER

_TLDFM_SIGNATURES = {
    "TLDFM_get_device_count": [ViSession, _P(ViUInt32)],
    "TLDFM_get_device_information": [ViSession, ViUInt32, ViChar_p, ViChar_p, ViChar_p,
                                     _P(ViBoolean), ViChar_p],
    "TLDFM_init": [ViChar_p, ViBoolean, ViBoolean, _P(ViSession)],
    "TLDFM_close": [ViSession],
    "TLDFM_reset": [ViSession],
    "TLDFM_self_test": [ViSession, _P(ViInt16), ViChar_p],
    "TLDFM_error_message": [ViSession, ViStatus, ViChar_p],
    "TLDFM_get_segment_count": [ViSession, _P(ViUInt32)],
    "TLDFM_get_segment_minimum": [ViSession, ViPReal64],
    "TLDFM_get_segment_maximum": [ViSession, ViPReal64],
    "TLDFM_get_device_configuration": [ViSession, _P(ViUInt32), ViPReal64, ViPReal64,
                                       ViPReal64, _P(ViUInt32), ViPReal64, ViPReal64,
                                       ViPReal64],
    "TLDFM_set_segment_voltage": [ViSession, ViUInt32, ViReal64],
    "TLDFM_get_segment_voltage": [ViSession, ViUInt32, ViPReal64],
    "TLDFM_set_segment_voltages": [ViSession, ViPReal64],
    "TLDFM_get_segment_voltages": [ViSession, ViPReal64],
    "TLDFM_set_hysteresis_parameters": [ViSession, ViUInt32, ViUInt32, ViReal64, ViPReal64,
                                        ViPReal64],
    "TLDFM_enable_hysteresis_compensation": [ViSession, ViUInt32, ViBoolean],
}
_TLDFMX_SIGNATURES = {
    "TLDFMX_init": [ViChar_p, ViBoolean, ViBoolean, _P(ViSession)],
    "TLDFMX_close": [ViSession],
    "TLDFMX_get_parameters": [ViSession, ViPReal64, ViPReal64, _P(ViInt32), _P(ViInt32),
                              _P(ViInt32)],
    "TLDFMX_relax": [ViSession, ViUInt32, ViBoolean, ViBoolean, ViPReal64, ViPReal64,
                     _P(ViInt32)],
    "TLDFMX_calculate_zernike_pattern": [ViSession, ViUInt32, ViPReal64, ViPReal64],
}


def status_hex(status: int) -> str:
    """A ViStatus as Thorlabs prints it, e.g. ``0xBFFC090C``."""
    return f"0x{status & 0xFFFFFFFF:08X}"


def _declare(lib: ctypes.CDLL, signatures: dict, path) -> dict:
    funcs = {}
    for name, argtypes in signatures.items():
        try:
            fn = getattr(lib, name)
        except AttributeError as e:
            raise DeviceError(f"{name} not found in {path}") from e
        fn.argtypes = argtypes
        fn.restype = ViStatus
        funcs[name] = fn
    return funcs


class TLDFMMirror(DeformableMirror):
    """A DMP40/DMH40 deformable mirror through the TLDFM and TLDFMX libraries.

    Parameters
    ----------
    library_path : ``TLDFM_64`` shared library (or the fake).
    library_x_path : ``TLDFMX_64``; None means the TLDFMX functions live in ``library_path``
        too (true of the fake; the real drivers ship two DLLs).
    resource : VISA resource name; None picks the first available device.
    reset : reset the device at open (all segments to the minimum voltage).
    hysteresis : switch the mirror's hysteresis compensation on (True) or off at open.

    Segment count, voltage limits (**volts**) and the Zernike amplitude limits (device units)
    are read from the device at open.
    """

    def __init__(self, library_path: str | os.PathLike, library_x_path=None, resource=None,
                 reset: bool = False, hysteresis: bool = True):
        self._handle: int | None = None
        self.library_path = Path(library_path)
        self.library_x_path = Path(library_x_path) if library_x_path else self.library_path
        try:
            lib = ctypes.CDLL(str(self.library_path))
            libx = (lib if self.library_x_path == self.library_path
                    else ctypes.CDLL(str(self.library_x_path)))
        except OSError as e:
            raise DeviceError(f"cannot load the Thorlabs DM library: {e}") from e
        self._f = _declare(lib, _TLDFM_SIGNATURES, self.library_path)
        self._f.update(_declare(libx, _TLDFMX_SIGNATURES, self.library_x_path))

        self.info = self._find(resource)
        self.resource = self.info["resource"]
        handle = ViSession(0)
        self._call("TLDFMX_init", self.resource.encode(), VI_TRUE,
                   VI_TRUE if reset else VI_FALSE, ctypes.byref(handle))
        self._handle = handle.value
        try:
            self._read_limits()
            self.enable_hysteresis_compensation("mirror", enable=hysteresis)
        except BaseException:
            self._release(raise_errors=False)
            raise
        self._amplitudes = np.zeros(self.n_modes)
        log.info("opened %s (%s, S/N %s): %d segments, %g..%g V, amplitudes %g..%g, "
                 "hysteresis compensation %s", self.resource, self.info["name"],
                 self.info["serial"], self.segment_count, self.voltage_min_v,
                 self.voltage_max_v, self.amplitude_min, self.amplitude_max,
                 "on" if hysteresis else "off")

    # ---- plumbing -------------------------------------------------------------------------
    def _error_text(self, status: int) -> str:
        buf = ctypes.create_string_buffer(_ERR_BUFFER_SIZE)
        rc = self._f["TLDFM_error_message"](self._handle or 0, status, buf)
        text = buf.value.decode(errors="replace").strip()
        if rc < 0 or not text:
            return f"status {status_hex(status)} (no description)"
        return text

    def _call(self, name: str, *args) -> int:
        status = self._f[name](*args)
        if status < 0:
            raise DeviceError(f"{name} failed: {self._error_text(status)} "
                              f"[{status_hex(status)}]")
        if status > 0:
            log.warning("%s: %s [%s]", name, self._error_text(status), status_hex(status))
        return status

    def _session(self) -> int:
        if self._handle is None:
            raise DeviceError(f"mirror {getattr(self, 'resource', '')} is closed")
        return self._handle

    def _find(self, resource) -> dict:
        count = ViUInt32(0)
        self._call("TLDFM_get_device_count", 0, ctypes.byref(count))
        seen = []
        for i in range(count.value):
            manufacturer = ctypes.create_string_buffer(_BUFFER_SIZE)
            name = ctypes.create_string_buffer(_BUFFER_SIZE)
            serial = ctypes.create_string_buffer(_BUFFER_SIZE)
            rsrc = ctypes.create_string_buffer(_BUFFER_SIZE)
            available = ViBoolean(0)
            self._call("TLDFM_get_device_information", 0, i, manufacturer, name, serial,
                       ctypes.byref(available), rsrc)
            info = {"manufacturer": manufacturer.value.decode(errors="replace"),
                    "name": name.value.decode(errors="replace"),
                    "serial": serial.value.decode(errors="replace"),
                    "resource": rsrc.value.decode(errors="replace"),
                    "available": bool(available.value)}
            seen.append(info)
            if resource is None and info["available"]:
                return info
            if resource is not None and info["resource"] == resource:
                return info
        if resource is not None:
            raise DeviceError(f"deformable mirror {resource!r} not found "
                              f"(found: {[d['resource'] for d in seen] or 'none'})")
        if seen:
            raise DeviceError(f"no available deformable mirror: {len(seen)} found, all in use")
        raise DeviceError("no Thorlabs deformable mirror (DMP40/DMH40) found")

    def _read_limits(self) -> None:
        h = self._session()
        seg, tilt = ViUInt32(0), ViUInt32(0)
        vals = [ViReal64(0.0) for _ in range(6)]
        self._call("TLDFM_get_device_configuration", h, ctypes.byref(seg),
                   ctypes.byref(vals[0]), ctypes.byref(vals[1]), ctypes.byref(vals[2]),
                   ctypes.byref(tilt), ctypes.byref(vals[3]), ctypes.byref(vals[4]),
                   ctypes.byref(vals[5]))
        self.segment_count = int(seg.value)
        self.voltage_min_v = float(vals[0].value)
        self.voltage_max_v = float(vals[1].value)
        self.tilt_count = int(tilt.value)
        if self.segment_count < 1 or not self.voltage_max_v > self.voltage_min_v:
            raise DeviceError(f"implausible device configuration: {self.segment_count} "
                              f"segments, {self.voltage_min_v}..{self.voltage_max_v} V")
        amin, amax = ViReal64(0.0), ViReal64(0.0)
        count, meas, relax = ViInt32(0), ViInt32(0), ViInt32(0)
        self._call("TLDFMX_get_parameters", h, ctypes.byref(amin), ctypes.byref(amax),
                   ctypes.byref(count), ctypes.byref(meas), ctypes.byref(relax))
        if count.value != N_DEVICE_MODES:
            raise DeviceError(f"device reports {count.value} Zernike modes, expected "
                              f"{N_DEVICE_MODES} (Z4..Z15)")
        self.amplitude_min = float(amin.value)
        self.amplitude_max = float(amax.value)
        self.n_modes = int(count.value)
        self.relax_steps = int(relax.value)

    def _doubles(self, values=None, n=None):
        n = self.segment_count if n is None else n
        buf = (ctypes.c_double * n)()
        if values is not None:
            buf[:] = [float(v) for v in values]
        return buf

    # ---- DeformableMirror -----------------------------------------------------------------
    def set_voltages(self, voltages_v, clip: bool = False) -> np.ndarray:
        """Apply segment voltages (**volts**, shape (segment_count,)), refused or clipped by
        :meth:`check_voltages` first. Leaves :attr:`amplitudes` (the last Zernike request)
        unchanged."""
        h = self._session()
        v = self.check_voltages(voltages_v, clip)
        self._call("TLDFM_set_segment_voltages", h, self._doubles(v))
        log.debug("segment voltages set: %.4g..%.4g V", v.min(), v.max())
        return v

    def get_voltages(self) -> np.ndarray:
        h = self._session()
        buf = self._doubles()
        self._call("TLDFM_get_segment_voltages", h, buf)
        return np.array(buf[:])

    def zernike_pattern(self, amplitudes, flags: int = ALL_MODES_FLAG) -> np.ndarray:
        """Voltages (**volts**) the library computes for device-mode amplitudes, *not*
        applied and *not* range-checked. Amplitudes must be within the device limits."""
        h = self._session()
        a = self.check_amplitudes(amplitudes, clip=False)
        out = self._doubles()
        self._call("TLDFMX_calculate_zernike_pattern", h, int(flags),
                   self._doubles(a, self.n_modes), out)
        return np.array(out[:])

    def set_zernike(self, amplitudes, clip: bool = False) -> np.ndarray:
        """Apply device-mode amplitudes Z4..Z15 (device units, shape (12,)).

        Amplitudes are checked against the device's limits, the library computes the
        voltage pattern, and the pattern is checked against the voltage limits before it is
        applied. ``clip=False`` refuses either violation with
        :class:`~hardware.devices.DeviceLimitError`; ``clip=True`` clips and logs. Returns
        the voltages applied.
        """
        a = self.check_amplitudes(amplitudes, clip)
        pattern = self.zernike_pattern(a)
        try:
            v = self.check_voltages(pattern, clip)
        except DeviceLimitError as e:
            raise DeviceLimitError(f"amplitudes {np.round(a, 4).tolist()} need voltages "
                                   f"outside the range: {e}") from None
        self._call("TLDFM_set_segment_voltages", self._session(), self._doubles(v))
        self._amplitudes = a
        log.debug("Zernike amplitudes set: %s", np.round(a, 4).tolist())
        return v

    def relax(self) -> int:
        """Run Thorlabs' relax sequence (the library computes each pattern, this applies
        it) until no steps remain; returns the number of patterns applied."""
        h = self._session()
        mirror = self._doubles()
        arms = self._doubles(n=max(self.tilt_count, 1))
        remaining = ViInt32(0)
        limit = max(self.relax_steps, 1) * 10 + 10
        steps = 0
        first = True
        while True:
            self._call("TLDFMX_relax", h, _T_MIRROR, VI_TRUE if first else VI_FALSE, VI_FALSE,
                       mirror, arms, ctypes.byref(remaining))
            first = False
            v = self.check_voltages(mirror[:], clip=False)
            self._call("TLDFM_set_segment_voltages", h, self._doubles(v))
            steps += 1
            if remaining.value <= 0:
                break
            if steps >= limit:
                raise DeviceError(f"relax did not finish after {steps} steps "
                                  f"({remaining.value} still remaining)")
        self._amplitudes = np.zeros(self.n_modes)
        log.info("mirror relaxed in %d steps", steps)
        return steps

    def enable_hysteresis_compensation(self, target: str = "mirror",
                                       enable: bool = True) -> None:
        """Switch hysteresis compensation of ``target`` ("mirror", "tilt", "both") on or
        off."""
        code = self._target(target)
        self._call("TLDFM_enable_hysteresis_compensation", self._session(), code,
                   VI_TRUE if enable else VI_FALSE)

    def set_hysteresis_parameters(self, target: str, nonlinear_factor: float,
                                  thresholds, weights) -> None:
        """Load the hysteresis inverter model of ``target``: thresholds and weights of equal
        length."""
        th = np.asarray(thresholds, dtype=float).reshape(-1)
        w = np.asarray(weights, dtype=float).reshape(-1)
        if th.shape != w.shape or th.size == 0:
            raise ValueError("thresholds and weights must be non-empty and of equal length")
        self._call("TLDFM_set_hysteresis_parameters", self._session(), self._target(target),
                   th.size, float(nonlinear_factor), self._doubles(th, th.size),
                   self._doubles(w, w.size))

    @staticmethod
    def _target(target: str) -> int:
        try:
            return HYSTERESIS_TARGETS[target]
        except KeyError:
            raise ValueError(f"target must be one of {sorted(HYSTERESIS_TARGETS)}, "
                             f"got {target!r}") from None

    def self_test(self) -> tuple[int, str]:
        """The device's self-test: (result code, 0 = passed; message)."""
        result = ViInt16(0)
        msg = ctypes.create_string_buffer(_BUFFER_SIZE)
        self._call("TLDFM_self_test", self._session(), ctypes.byref(result), msg)
        return int(result.value), msg.value.decode(errors="replace")

    def _release(self, raise_errors: bool) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            self._call("TLDFMX_close", handle)
            log.info("closed %s", getattr(self, "resource", "mirror"))
        except DeviceError:
            if raise_errors:
                raise
            log.exception("closing the mirror failed")

    def close(self) -> None:
        """Release the device (idempotent). A failing close still forgets the session, then
        raises :class:`~hardware.devices.DeviceError`."""
        self._release(raise_errors=True)

    @property
    def is_open(self) -> bool:
        return self._handle is not None

    def __del__(self):
        try:
            if getattr(self, "_handle", None) is not None:
                self._release(raise_errors=False)
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass
