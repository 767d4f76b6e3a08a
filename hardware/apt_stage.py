"""Thorlabs APT motorised stage (KDC101 or TDC001 with a Z8 actuator) as a :class:`Stage`.

Built on ``thorlabs_apt_device`` (a daemon thread per device runs an asyncio loop that polls
MOT_REQ_DCSTATUSUPDATE at about 9 Hz; commands are fire-and-forget). This module adds what a
calibration script needs: blocking moves in **mm** with timeouts, travel limits checked before
anything is sent, device errors as :class:`DeviceError`, and a stage that stops answering
detected from stale status as :class:`DeviceTimeout`.

Reference: Thorlabs, *APT Communications Protocol*, issue 37; KDC101 + Z8: 34554.96
encoder counts per mm.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import serial as pyserial
import thorlabs_apt_device
from thorlabs_apt_device import protocol as apt
from thorlabs_apt_device.enums import EndPoint

from hardware.devices import DeviceError, DeviceLimitError, DeviceTimeout, Stage

__all__ = ["AptController", "APT_CONTROLLERS", "AptStage", "Z8_COUNTS_PER_MM"]

log = logging.getLogger(__name__)

#: Encoder counts per mm of a Z8 actuator on a KDC101 (Thorlabs' APT protocol manual).
Z8_COUNTS_PER_MM = 34554.96

# Messages that carry a full DC status block (the client copies them into ``status``).
_STATUS_MSGS = ("mot_get_dcstatusupdate", "mot_get_statusupdate", "mot_move_completed",
                "mot_move_stopped")


@dataclasses.dataclass(frozen=True)
class AptController:
    """A supported controller: the ``thorlabs_apt_device`` class name, the serial-number
    prefix Thorlabs assigns it, and the endpoint HW_REQ_INFO goes to."""

    name: str
    serial_prefix: str
    info_dest: int = EndPoint.USB
    description: str = ""


APT_CONTROLLERS = {
    "KDC101": AptController("KDC101", "27", EndPoint.USB, "K-Cube brushed DC servo"),
    "TDC001": AptController("TDC001", "83", EndPoint.USB, "T-Cube DC servo"),
}


def _tracked(base):
    """Subclass of a ``thorlabs_apt_device`` class that timestamps status messages, counts
    end-of-move messages, keeps HW_GET_INFO and rich error replies (which the library drops),
    and turns serial-port failures into a recorded error instead of a dead read loop."""

    class Tracked(base):
        def __init__(self, *args, **kwargs):
            # Set before the base class starts its thread.
            self.pl_cond = threading.Condition()
            self.pl_last_status_t = None  # time.monotonic() of the last status block
            self.pl_counts = {"completed": 0, "stopped": 0, "homed": 0}
            self.pl_homed_t = 0.0  # time.monotonic() of the last MOVE_HOMED
            self.pl_info = None
            self.pl_errors = []
            self.pl_port_error = None
            self.pl_bad_messages = 0
            super().__init__(*args, **kwargs)
            self._unpacker.on_error = "continue"  # no warning per dropped byte

        def _process_message(self, m):
            super()._process_message(m)
            with self.pl_cond:
                if m.msg in _STATUS_MSGS:
                    self.pl_last_status_t = time.monotonic()
                if m.msg == "mot_move_completed":
                    self.pl_counts["completed"] += 1
                elif m.msg == "mot_move_stopped":
                    self.pl_counts["stopped"] += 1
                elif m.msg == "mot_move_homed":
                    self.pl_counts["homed"] += 1
                    self.pl_homed_t = time.monotonic()
                elif m.msg == "hw_get_info":
                    self.pl_info = m._asdict()
                elif m.msg == "hw_richresponse":
                    notes = m.notes.split(b"\0", 1)[0].decode(errors="replace")
                    self.pl_errors.append((m.msg_ident, m.code, notes))
                self.pl_cond.notify_all()

        def _schedule_reads(self):
            # The library's loop handles one decoding error per 10 ms tick, dropping one byte
            # each time, so after line noise it never catches up with ~2 kB/s of replies.
            # Here each tick keeps reading (for at most 50 ms) while bytes are waiting.
            t_end = time.monotonic() + 0.05
            try:
                while True:
                    try:
                        for msg in self._unpacker:
                            self._process_message(msg)
                    except (pyserial.SerialException, OSError):
                        raise
                    except Exception as e:  # noise that looked like a message header
                        self.pl_bad_messages += 1
                        self._log.debug("undecodable message dropped: %r", e)
                    if not self._port.in_waiting or time.monotonic() > t_end:
                        break
            except (pyserial.SerialException, OSError, AttributeError) as e:
                with self.pl_cond:
                    if self.pl_port_error is None:
                        self.pl_port_error = e
                    self.pl_cond.notify_all()
                self._log.debug("read loop stopped: %s", e)
                return
            if self._loop is not None:
                self._loop.call_later(self.read_interval, self._schedule_reads)

        def _write(self, command_bytes):
            if self._port is None:
                return
            try:
                super()._write(command_bytes)
            except (pyserial.SerialException, OSError) as e:
                with self.pl_cond:
                    if self.pl_port_error is None:
                        self.pl_port_error = e
                    self.pl_cond.notify_all()

    Tracked.__name__ = Tracked.__qualname__ = f"Tracked{base.__name__}"
    return Tracked


class AptStage(Stage):
    """A single-axis Thorlabs APT stage; positions in **mm**, blocking moves.

    ``port`` is a tty path; without it the first serial port whose USB serial number matches
    ``serial`` (or the controller's prefix) is used. ``limits_mm = (min, max)`` refuses moves
    outside it with :class:`DeviceLimitError`. ``status_timeout_s`` is how old the last
    status may be before the stage counts as not answering (:class:`DeviceTimeout`).
    """

    poll_s = 0.05

    def __init__(self, port: str | None = None, serial: str | None = None,
                 device: str = "KDC101", counts_per_mm: float = Z8_COUNTS_PER_MM,
                 home_on_open: bool = False, status_timeout_s: float = 2.0,
                 limits_mm: tuple[float, float] | None = None,
                 home_timeout_s: float = 60.0, tolerance_counts: int = 1):
        if device not in APT_CONTROLLERS:
            raise ValueError(f"unsupported APT controller {device!r}; "
                             f"supported: {', '.join(sorted(APT_CONTROLLERS))}")
        self.controller = APT_CONTROLLERS[device]
        self.counts_per_mm = float(counts_per_mm)
        self.status_timeout_s = float(status_timeout_s)
        self.limits_mm = None if limits_mm is None else (float(limits_mm[0]),
                                                         float(limits_mm[1]))
        self.tolerance_counts = int(tolerance_counts)
        self.port = port
        self.serial = serial or ""
        self.info: dict = {}
        self._dev = None
        self._closed = False
        self._stop_requested = False

        cls = _tracked(getattr(thorlabs_apt_device, device))
        serial_re = serial if serial is not None else self.controller.serial_prefix
        try:
            self._dev = cls(serial_port=port, serial_number=serial_re, home=False)
        except RuntimeError as e:  # the library's "no device found"
            raise DeviceError(f"{device} stage (serial {serial or '?'}): {e}") from e
        except (pyserial.SerialException, OSError) as e:
            raise DeviceError(f"{device} stage on {port}: cannot open port: {e}") from e
        self.port = self._dev._port.port if self._dev._port is not None else port
        self._dev.register_error_callback(self._cb_error)
        try:
            self._open(home_on_open, home_timeout_s)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- open / close
    def _open(self, home_on_open: bool, home_timeout_s: float) -> None:
        d = self._dev
        d.set_enabled(True)
        d._loop.call_soon_threadsafe(
            d._write, apt.hw_req_info(source=EndPoint.HOST, dest=self.controller.info_dest))
        self._wait(lambda: d.pl_last_status_t is not None, self.status_timeout_s,
                   "no status at open (powered, connected, right port?)", check_stale=False)
        try:
            self._wait(lambda: d.pl_info is not None, self.status_timeout_s,
                       "no HW_GET_INFO reply", check_stale=False)
        except DeviceTimeout:
            log.warning("%s: did not answer HW_REQ_INFO; continuing", self.name)
        if d.pl_info is not None:
            info = d.pl_info
            self.info = {
                "serial": str(info["serial_number"]),
                "model": info["model_number"].split(b"\0", 1)[0].decode(errors="replace"),
                "hw_type": info["type"],
                "firmware": ".".join(str(x) for x in info["firmware_version"]),
                "hw_version": info["hw_version"],
                "channels": info["nchs"],
            }
            if self.serial and self.info["serial"] != self.serial:
                log.warning("%s: reports serial %s", self.name, self.info["serial"])
            self.serial = self.serial or self.info["serial"]
        log.info("opened %s at %.4f mm (%s)", self.name, self.position_mm, self.info or "no info")
        if home_on_open:
            self.home(home_timeout_s)

    @property
    def name(self) -> str:
        """One-line identity for log and error messages."""
        return f"{self.controller.name} stage {self.serial or '?'} on {self.port}"

    def close(self) -> None:
        """Stop the motor and release the port (idempotent)."""
        if self._closed:
            return
        self._closed = True
        d = self._dev
        if d is None:
            return
        try:
            d.close()  # queues a stop, then ends the loop; the loop thread closes the port
            d._thread.join(timeout=2.0)
        except Exception as e:  # a dead loop or port must not break close()
            log.debug("%s: close: %s", self.name, e)
        if d._thread.is_alive():
            log.warning("%s: client thread did not stop within 2 s", self.name)
        log.info("closed %s", self.name)

    # ----------------------------------------------------------------- state
    def _check(self) -> None:
        """Raise for a closed stage, a failed port or a device-reported error."""
        if self._closed:
            raise DeviceError(f"{self.name}: closed")
        d = self._dev
        with d.pl_cond:
            port_error = d.pl_port_error
            errors, d.pl_errors = d.pl_errors, []
        if port_error is not None:
            raise DeviceError(f"{self.name}: serial port failed ({port_error}); "
                              "stage disconnected?")
        if errors:
            msgid, code, notes = errors[0]
            raise DeviceError(f"{self.name}: device reported error {code} "
                              f"(message 0x{msgid:04x}): {notes}")

    def _check_stale(self, doing: str) -> None:
        t = self._dev.pl_last_status_t
        age = float("inf") if t is None else time.monotonic() - t
        if age > self.status_timeout_s:
            raise DeviceTimeout(f"{self.name}: no status for {age:.1f} s "
                                f"(limit {self.status_timeout_s:g} s) {doing}; "
                                "the stage stopped answering")

    def _wait(self, predicate, timeout_s: float, what: str, check_stale: bool = True):
        """Block until ``predicate()``; device errors, stale status and the deadline raise."""
        d = self._dev
        t_end = time.monotonic() + timeout_s
        with d.pl_cond:
            while True:
                self._check()
                if predicate():
                    return
                if check_stale:
                    self._check_stale(what)
                left = t_end - time.monotonic()
                if left <= 0:
                    raise DeviceTimeout(f"{self.name}: {what}: not done within {timeout_s:g} s")
                d.pl_cond.wait(min(self.poll_s, left))

    def _cb_error(self, source, msgid, code, notes):  # library error callback
        with self._dev.pl_cond:
            self._dev.pl_errors.append((msgid, code, str(notes)))
            self._dev.pl_cond.notify_all()

    @property
    def _status(self) -> dict:
        return self._dev.status

    @property
    def position_mm(self) -> float:
        """Last reported position, mm (raises if the stage stopped answering)."""
        self._check()
        self._check_stale("reading the position")
        return self._status["position"] / self.counts_per_mm

    @property
    def is_moving(self) -> bool:
        s = self._status
        return bool(s["moving_forward"] or s["moving_reverse"] or s["homing"])

    @property
    def homed(self) -> bool:
        return bool(self._status["homed"])

    def identify(self) -> None:
        """Flash the controller's front-panel LED."""
        self._check()
        if self.controller.name == "KDC101":
            self._dev.identify()
        else:
            self._dev.identify(channel=0)

    def check_limits(self, position_mm: float) -> None:
        if self.limits_mm is None:
            return
        lo, hi = self.limits_mm
        if not (lo <= position_mm <= hi):
            msg = (f"{self.name}: target {position_mm:.4f} mm outside travel "
                   f"[{lo:g}, {hi:g}] mm; refused")
            log.error(msg)
            raise DeviceLimitError(msg)

    # ----------------------------------------------------------------- motion
    def _counts(self, position_mm: float) -> int:
        return int(round(position_mm * self.counts_per_mm))

    def _run_move(self, send, target_mm: float, timeout_s: float, what: str) -> float:
        """Send a move and block until MOVE_COMPLETED (or a fresh idle status at the target)."""
        d = self._dev
        target = self._counts(target_mm)
        with d.pl_cond:
            done0, stopped0 = d.pl_counts["completed"], d.pl_counts["stopped"]
            t_sent = time.monotonic()
        self._stop_requested = False
        send()

        def finished():
            if d.pl_counts["completed"] > done0:
                return True
            if d.pl_counts["stopped"] > stopped0:
                if self._stop_requested:
                    return True
                raise DeviceError(f"{self.name}: {what} stopped by the controller at "
                                  f"{self._status['position'] / self.counts_per_mm:.4f} mm")
            fresh = d.pl_last_status_t is not None and d.pl_last_status_t > t_sent + 0.05
            return (fresh and not self.is_moving
                    and abs(self._status["position"] - target) <= self.tolerance_counts)

        t0 = time.monotonic()
        self._wait(finished, timeout_s, what)
        pos = self._status["position"] / self.counts_per_mm
        err = abs(self._status["position"] - target)
        if self._stop_requested:
            log.info("%s: %s interrupted by stop() at %.4f mm", self.name, what, pos)
        elif err > self.tolerance_counts:
            log.warning("%s: %s ended at %.4f mm, %d counts off", self.name, what, pos, err)
        log.debug("%s: %s took %.3f s", self.name, what, time.monotonic() - t0)
        return pos

    def move_to(self, position_mm: float, timeout_s: float = 30.0) -> float:
        """Absolute move; blocks until done; returns the final position, mm."""
        self._check()
        self.check_limits(position_mm)
        counts = self._counts(position_mm)
        return self._run_move(lambda: self._dev.move_absolute(position=counts), position_mm,
                              timeout_s, f"move to {position_mm:.4f} mm")

    def move_by(self, distance_mm: float, timeout_s: float = 30.0) -> float:
        """Relative move (MOT_MOVE_RELATIVE); blocks until done; returns the final position."""
        start = self.position_mm
        self.check_limits(start + distance_mm)
        counts = self._counts(distance_mm)
        return self._run_move(lambda: self._dev.move_relative(distance=counts),
                              start + counts / self.counts_per_mm, timeout_s,
                              f"move by {distance_mm:+.4f} mm")

    def home(self, timeout_s: float = 60.0) -> None:
        """Home the axis; blocks until MOVE_HOMED (or a fresh status says homed)."""
        self._check()
        d = self._dev
        with d.pl_cond:
            homed0 = d.pl_counts["homed"]
            t_sent = time.monotonic()
        d.home()
        seen_homing = False

        def finished():
            # MOVE_HOMED (a short message without status, so wait for the next status too),
            # or, as a fallback, a status that showed homing and now shows homed.
            nonlocal seen_homing
            if d.pl_counts["homed"] > homed0:
                return d.pl_last_status_t is not None and d.pl_last_status_t > d.pl_homed_t
            if d.pl_last_status_t is None or d.pl_last_status_t <= t_sent:
                return False
            seen_homing = seen_homing or bool(self._status["homing"])
            return seen_homing and self.homed and not self.is_moving

        self._wait(finished, timeout_s, "homing")
        log.info("%s: homed", self.name)

    def stop(self, immediate: bool = False, timeout_s: float | None = None) -> float:
        """Stop any motion; blocks until the stage reports it stopped; returns position, mm."""
        self._check()
        self._stop_requested = True
        d = self._dev
        with d.pl_cond:
            stopped0 = d.pl_counts["stopped"]
        d.stop(immediate=immediate)
        self._wait(lambda: d.pl_counts["stopped"] > stopped0, timeout_s or self.status_timeout_s,
                   "stop")
        return self._status["position"] / self.counts_per_mm

    def __repr__(self) -> str:
        return f"AptStage({self.name})"
