"""A fake Thorlabs KDC101/TDC001 motion controller speaking the binary APT protocol on a pty.

References: Thorlabs, *APT Communications Protocol*, issue 37 (message layout, HW_GET_INFO,
MOT_GET_DCSTATUSUPDATE, status bits, KDC101 velocity/acceleration scaling with
T = 2048 / 6e6 s); Thorlabs Z8 actuator with KDC101: 34554.96 encoder counts per **mm**.

The fake owns the master side of a pseudo-terminal and parses the *device* side of the
protocol itself (host -> controller messages); the client opens :attr:`FakeAptDevice.port`
like any serial port. Motion is a trapezoidal velocity profile (constant velocity when
``acceleration_mm_s2`` is None), computed analytically from the command time, so read-backs
are exact functions of time.

Wire format (little-endian): short message ``<H msgid><B p1><B p2><B dest><B src>``; long
message ``<H msgid><H length><B dest|0x80><B src>`` followed by ``length`` data bytes.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import random
import select
import struct
import threading
import time
import tty

from hardware.apt_stage import Z8_COUNTS_PER_MM

__all__ = ["FakeAptDevice", "FAULTS", "FakeModel", "FAKE_MODELS", "Frame", "FrameParser",
           "pack_short", "pack_long", "dcstatus_data", "status_bits", "move_duration_s",
           "trapezoid_distance", "KDC101_T_S", "velocity_to_apt", "acceleration_to_apt"]

log = logging.getLogger(__name__)

KDC101_T_S = 2048 / 6e6  # sampling interval of the KDC101/TDC001 velocity loop, s

HOST = 0x01
USB = 0x50
RACK = 0x11
BAYS = tuple(range(0x21, 0x2B))
DEVICE_ENDPOINTS = frozenset((USB, RACK) + BAYS)
HEADER_SIZE = 6
MAX_DATA_LEN = 255  # "currently no data packet exceeds 255 bytes" (protocol document)

FAULTS = (None, "silent", "garbage", "disconnect")


class MsgId:
    """Message ids used by the fake (names as in the protocol document)."""

    HW_DISCONNECT = 0x0002
    HW_REQ_INFO = 0x0005
    HW_GET_INFO = 0x0006
    HW_START_UPDATEMSGS = 0x0011
    HW_STOP_UPDATEMSGS = 0x0012
    HW_RESPONSE = 0x0080
    HW_RICHRESPONSE = 0x0081
    MOD_SET_CHANENABLESTATE = 0x0210
    MOD_REQ_CHANENABLESTATE = 0x0211
    MOD_GET_CHANENABLESTATE = 0x0212
    MOD_IDENTIFY = 0x0223
    MOT_SET_VELPARAMS = 0x0413
    MOT_REQ_VELPARAMS = 0x0414
    MOT_GET_VELPARAMS = 0x0415
    MOT_SET_JOGPARAMS = 0x0416
    MOT_REQ_JOGPARAMS = 0x0417
    MOT_GET_JOGPARAMS = 0x0418
    MOT_REQ_STATUSBITS = 0x0429
    MOT_GET_STATUSBITS = 0x042A
    MOT_SET_GENMOVEPARAMS = 0x043A
    MOT_REQ_GENMOVEPARAMS = 0x043B
    MOT_GET_GENMOVEPARAMS = 0x043C
    MOT_SET_HOMEPARAMS = 0x0440
    MOT_REQ_HOMEPARAMS = 0x0441
    MOT_GET_HOMEPARAMS = 0x0442
    MOT_MOVE_HOME = 0x0443
    MOT_MOVE_HOMED = 0x0444
    MOT_SET_MOVERELPARAMS = 0x0445
    MOT_MOVE_RELATIVE = 0x0448
    MOT_SET_MOVEABSPARAMS = 0x0450
    MOT_MOVE_ABSOLUTE = 0x0453
    MOT_MOVE_VELOCITY = 0x0457
    MOT_MOVE_COMPLETED = 0x0464
    MOT_MOVE_STOP = 0x0465
    MOT_MOVE_STOPPED = 0x0466
    MOT_MOVE_JOG = 0x046A
    MOT_REQ_STATUSUPDATE = 0x0480
    MOT_GET_STATUSUPDATE = 0x0481
    MOT_REQ_DCSTATUSUPDATE = 0x0490
    MOT_GET_DCSTATUSUPDATE = 0x0491
    MOT_ACK_DCSTATUSUPDATE = 0x0492
    MOT_REQ_DCPIDPARAMS = 0x04A1
    MOT_GET_DCPIDPARAMS = 0x04A2
    MOT_REQ_AVMODES = 0x04B4
    MOT_GET_AVMODES = 0x04B5


MSG_NAMES = {v: k for k, v in vars(MsgId).items() if k.isupper()}


# Status bits of MOT_GET_DCSTATUSUPDATE (protocol document, "status bits").
SB_FORWARD_LIMIT = 0x00000001
SB_REVERSE_LIMIT = 0x00000002
SB_MOVING_FORWARD = 0x00000010
SB_MOVING_REVERSE = 0x00000020
SB_CONNECTED = 0x00000100
SB_HOMING = 0x00000200
SB_HOMED = 0x00000400
SB_ENABLED = 0x80000000


@dataclasses.dataclass(frozen=True)
class FakeModel:
    """A controller the fake can pretend to be. ``hw_type`` is HW_GET_INFO's type field."""

    name: str
    serial_prefix: str
    hw_type: int
    notes: str


FAKE_MODELS = {
    "KDC101": FakeModel("KDC101", "27", 16, "Brushed DC K-Cube"),
    "TDC001": FakeModel("TDC001", "83", 16, "APT DC Motor Controller"),
}


# ----------------------------------------------------------------------------- encoding
def pack_short(msgid: int, param1: int, param2: int, dest: int, source: int) -> bytes:
    """6-byte header-only message."""
    return struct.pack("<HBBBB", msgid, param1 & 0xFF, param2 & 0xFF, dest, source)


def pack_long(msgid: int, dest: int, source: int, data: bytes) -> bytes:
    """Header with the long-form flag (``dest | 0x80``) followed by ``data``."""
    return struct.pack("<HHBB", msgid, len(data), dest | 0x80, source) + data


def status_bits(*, enabled: bool, homed: bool, homing: bool, direction: int,
                forward_limit: bool = False, reverse_limit: bool = False) -> int:
    """DC status bit field; ``direction`` is +1 (towards positive counts), -1 or 0."""
    bits = SB_CONNECTED
    if enabled:
        bits |= SB_ENABLED
    if homed:
        bits |= SB_HOMED
    if homing:
        bits |= SB_HOMING
    if direction > 0:
        bits |= SB_MOVING_FORWARD
    elif direction < 0:
        bits |= SB_MOVING_REVERSE
    if forward_limit:
        bits |= SB_FORWARD_LIMIT
    if reverse_limit:
        bits |= SB_REVERSE_LIMIT
    return bits


def dcstatus_data(chan: int, position_counts: int, velocity_raw: int, bits: int) -> bytes:
    """14-byte data block ``<HlhHL``: channel, position (counts), velocity, reserved, bits."""
    velocity_raw = max(-32768, min(32767, int(velocity_raw)))
    return struct.pack("<HlhHL", chan, int(position_counts), velocity_raw, 0, bits)


def velocity_to_apt(counts_per_s: float) -> int:
    """KDC101/TDC001 velocity units: counts/s * T * 65536."""
    return int(round(counts_per_s * KDC101_T_S * 65536))


def acceleration_to_apt(counts_per_s2: float) -> int:
    """KDC101/TDC001 acceleration units: counts/s^2 * T^2 * 65536."""
    return int(round(counts_per_s2 * KDC101_T_S ** 2 * 65536))


def velocity_from_apt(raw: int) -> float:
    return raw / (KDC101_T_S * 65536)


def acceleration_from_apt(raw: int) -> float:
    return raw / (KDC101_T_S ** 2 * 65536)


# ----------------------------------------------------------------------------- motion
def move_duration_s(distance: float, velocity: float, acceleration: float | None) -> float:
    """Time for a trapezoidal (or, with ``acceleration=None``, constant-velocity) move of
    ``distance`` (any length unit) at ``velocity`` and ``acceleration`` in the same unit."""
    d = abs(distance)
    if d == 0:
        return 0.0
    if acceleration is None or math.isinf(acceleration):
        return d / velocity
    d_ramp = velocity ** 2 / acceleration  # accelerate + decelerate
    if d >= d_ramp:
        return d / velocity + velocity / acceleration
    return 2.0 * math.sqrt(d / acceleration)  # triangular profile


def trapezoid_distance(distance: float, velocity: float, acceleration: float | None,
                       t: float) -> tuple[float, float]:
    """(distance travelled, speed) at time ``t`` into a move of total ``distance`` >= 0."""
    total = move_duration_s(distance, velocity, acceleration)
    if t <= 0:
        return 0.0, 0.0
    if t >= total:
        return distance, 0.0
    if acceleration is None or math.isinf(acceleration):
        return velocity * t, velocity
    t_ramp = min(velocity / acceleration, total / 2)
    v_peak = acceleration * t_ramp
    d_ramp = 0.5 * acceleration * t_ramp ** 2
    if t < t_ramp:
        return 0.5 * acceleration * t ** 2, acceleration * t
    if t <= total - t_ramp:
        return d_ramp + v_peak * (t - t_ramp), v_peak
    t_left = total - t
    return distance - 0.5 * acceleration * t_left ** 2, acceleration * t_left


@dataclasses.dataclass
class _Move:
    start_counts: float
    target_counts: float
    t0: float
    velocity: float  # counts/s
    acceleration: float | None  # counts/s^2
    kind: str  # "move" or "home"

    @property
    def duration_s(self) -> float:
        return move_duration_s(self.target_counts - self.start_counts, self.velocity,
                               self.acceleration)

    def state(self, now: float) -> tuple[float, float]:
        """(position in counts, signed speed in counts/s)."""
        d = self.target_counts - self.start_counts
        s, v = trapezoid_distance(abs(d), self.velocity, self.acceleration, now - self.t0)
        sign = 1.0 if d >= 0 else -1.0
        return self.start_counts + sign * s, sign * v


# ----------------------------------------------------------------------------- parsing
@dataclasses.dataclass(frozen=True)
class Frame:
    """One host -> device message as received."""

    msgid: int
    param1: int
    param2: int
    dest: int
    source: int
    data: bytes
    raw: bytes

    @property
    def name(self) -> str:
        return MSG_NAMES.get(self.msgid, f"0x{self.msgid:04x}")

    @property
    def chan(self) -> int:
        """Channel: ``param1`` of a short message, the leading ``<H`` of a long one."""
        if self.data:
            return struct.unpack_from("<H", self.data)[0] if len(self.data) >= 2 else 1
        return self.param1


class FrameParser:
    """Incremental parser of host -> device APT messages (the library's Unpacker only
    accepts device -> host messages). Bytes that cannot start a valid header are dropped
    one at a time, so the parser resynchronises after noise."""

    def __init__(self):
        self.buf = b""
        self.dropped = 0

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        out = []
        while len(self.buf) >= HEADER_SIZE:
            msgid, p1, p2, dest_b, src = struct.unpack_from("<HBBBB", self.buf)
            is_long = bool(dest_b & 0x80)
            dest = dest_b & 0x7F
            length = (p1 | (p2 << 8)) if is_long else 0
            if dest not in DEVICE_ENDPOINTS or src != HOST or length > MAX_DATA_LEN:
                self.buf = self.buf[1:]
                self.dropped += 1
                continue
            if len(self.buf) < HEADER_SIZE + length:
                break
            raw = self.buf[:HEADER_SIZE + length]
            self.buf = self.buf[HEADER_SIZE + length:]
            if is_long:
                out.append(Frame(msgid, 0, 0, dest, src, raw[HEADER_SIZE:], raw))
            else:
                out.append(Frame(msgid, p1, p2, dest, src, b"", raw))
        return out


# ----------------------------------------------------------------------------- the fake
class FakeAptDevice:
    """A KDC101-like controller on a pseudo-terminal, driven from its own thread.

    Parameters are in **mm**, **mm/s** and **mm/s^2**; the wire carries encoder counts
    (``counts_per_mm``). Set :attr:`fault` at any time to one of :data:`FAULTS`:

    * ``None`` -- normal operation;
    * ``"silent"`` -- keeps reading (and moving) but never replies;
    * ``"garbage"`` -- replies to every message with random bytes instead of the answer;
    * ``"disconnect"`` -- closes the pty at once (the client's port fails); permanent.

    ``transcript`` is a deque of ``(direction, bytes)``, direction ``"rx"`` (host -> fake,
    one parsed message) or ``"tx"`` (fake -> host, one message or one burst of garbage).
    """

    def __init__(self, serial: str = "27000001", model: str = "KDC101",
                 counts_per_mm: float = Z8_COUNTS_PER_MM, velocity_mm_s: float = 2.3,
                 acceleration_mm_s2: float | None = 4.0, home_velocity_mm_s: float | None = None,
                 min_mm: float = 0.0, max_mm: float = 25.0, start_mm: float = 0.0,
                 enabled: bool = True, transcript_max: int = 20000, seed: int = 0,
                 ack_limit: int = 50, update_interval_s: float = 0.1):
        if model not in FAKE_MODELS:
            raise ValueError(f"unknown model {model!r}; known: {sorted(FAKE_MODELS)}")
        self.model = FAKE_MODELS[model]
        if not serial.startswith(self.model.serial_prefix):
            log.warning("serial %s does not start with %s's prefix %s", serial, model,
                        self.model.serial_prefix)
        self.serial = serial
        self.counts_per_mm = float(counts_per_mm)
        self.velocity_mm_s = float(velocity_mm_s)
        self.acceleration_mm_s2 = acceleration_mm_s2
        self.home_velocity_mm_s = home_velocity_mm_s or velocity_mm_s
        self.min_mm = float(min_mm)
        self.max_mm = float(max_mm)
        self.enabled = enabled
        self.homed = False
        self.identify_count = 0
        self.jog_step_counts = int(round(0.1 * self.counts_per_mm))
        self.backlash_counts = 0
        self.home_offset_counts = 0
        self.pending_rel_counts = 0
        self.pending_abs_counts = 0
        self.ack_limit = ack_limit
        self.update_interval_s = update_interval_s
        self.transcript: collections.deque = collections.deque(maxlen=transcript_max)
        self.received_counts: collections.Counter = collections.Counter()
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._fault = None
        self._counts = float(round(start_mm * counts_per_mm))
        self._move: _Move | None = None
        self._auto_updates = False
        self._unacked = 0
        self._next_update = 0.0
        self._parser = FrameParser()
        self._src = USB  # endpoint the replies come from (the dest the host used last)
        self._stop = threading.Event()

        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # binary-clean before any client opens it
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._closed_fds = False
        self._thread = threading.Thread(target=self._run, name=f"FakeApt-{serial}",
                                        daemon=True)
        self._thread.start()
        log.info("fake %s %s on %s", model, serial, self.port)

    # ------------------------------------------------------------------ public API
    @property
    def fault(self):
        return self._fault

    @fault.setter
    def fault(self, value):
        if value not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {value!r}")
        with self._lock:
            self._fault = value
        log.info("fake %s: fault = %r", self.serial, value)
        if value == "disconnect":
            self._close_fds()

    @property
    def position_counts(self) -> int:
        with self._lock:
            self._advance(time.monotonic())
            return int(round(self._counts))

    @property
    def position_mm(self) -> float:
        return self.position_counts / self.counts_per_mm

    @property
    def is_moving(self) -> bool:
        with self._lock:
            self._advance(time.monotonic())
            return self._move is not None

    def expected_move_s(self, distance_mm: float, home: bool = False) -> float:
        """Duration of a move of ``distance_mm`` under this fake's motion model, s."""
        v = self.home_velocity_mm_s if home else self.velocity_mm_s
        return move_duration_s(distance_mm, v, None if home else self.acceleration_mm_s2)

    def inject_error(self, code: int = 42, notes: str = "simulated fault",
                     rich: bool = True) -> None:
        """Send a spontaneous HW_RICHRESPONSE (or, ``rich=False``, HW_RESPONSE)."""
        if rich:
            data = struct.pack("<HH64s", 0, code, notes.encode()[:64])
            self._send(pack_long(MsgId.HW_RICHRESPONSE, HOST, USB, data))
        else:
            self._send(pack_short(MsgId.HW_RESPONSE, 0, 0, HOST, USB))

    def messages(self, direction: str = "rx", msgid: int | None = None) -> list[bytes]:
        """Transcript entries in one direction, optionally only one message id."""
        out = []
        for d, b in list(self.transcript):
            if d != direction:
                continue
            if msgid is None or (len(b) >= 2 and struct.unpack_from("<H", b)[0] == msgid):
                out.append(b)
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        self._close_fds()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ internals
    def _close_fds(self):
        with self._lock:
            if self._closed_fds:
                return
            self._closed_fds = True
            for fd in (self._master, self._slave):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _limits_counts(self) -> tuple[float, float]:
        return (round(self.min_mm * self.counts_per_mm), round(self.max_mm * self.counts_per_mm))

    def _advance(self, now: float) -> list[bytes]:
        """Update the position to ``now``; returns end-of-move messages to send."""
        out = []
        m = self._move
        if m is None:
            return out
        pos, _ = m.state(now)
        self._counts = pos
        if now - m.t0 >= m.duration_s:
            self._counts = m.target_counts
            self._move = None
            if m.kind == "home":
                self._counts = 0.0
                self.homed = True
                out.append(pack_short(MsgId.MOT_MOVE_HOMED, 1, 0, HOST, self._src))
                log.debug("fake %s: homed", self.serial)
            else:
                out.append(pack_long(MsgId.MOT_MOVE_COMPLETED, HOST, self._src,
                                     self._status_data()))
                log.debug("fake %s: move completed at %d counts", self.serial, self._counts)
        return out

    def _status_data(self, now: float | None = None) -> bytes:
        velocity_counts = 0.0
        direction = 0
        if self._move is not None:
            _, velocity_counts = self._move.state(time.monotonic() if now is None else now)
            direction = 1 if self._move.target_counts > self._move.start_counts else -1
        lo, hi = self._limits_counts()
        bits = status_bits(enabled=self.enabled, homed=self.homed,
                           homing=self._move is not None and self._move.kind == "home",
                           direction=direction, forward_limit=self._counts >= hi,
                           reverse_limit=self._counts <= lo)
        # Velocity word: mm/s * 2.048, the scaling the client library's author observed.
        velocity_raw = round(velocity_counts / self.counts_per_mm * 2.048)
        return dcstatus_data(1, int(round(self._counts)), velocity_raw, bits)

    def _start_move(self, target_counts: float, kind: str = "move") -> None:
        now = time.monotonic()
        self._advance(now)
        lo, hi = self._limits_counts()
        if not self.enabled:
            log.warning("fake %s: channel disabled, move ignored", self.serial)
            return
        clipped = min(max(target_counts, lo), hi)
        if clipped != target_counts:
            log.warning("fake %s: target %d counts outside travel, clipped to %d",
                        self.serial, target_counts, clipped)
        if kind == "home":
            v, a = self.home_velocity_mm_s * self.counts_per_mm, None
        else:
            v = self.velocity_mm_s * self.counts_per_mm
            a = (None if self.acceleration_mm_s2 is None
                 else self.acceleration_mm_s2 * self.counts_per_mm)
        self._move = _Move(self._counts, float(clipped), now, v, a, kind)
        if kind == "home":
            self.homed = False

    def _send(self, data: bytes, record: bool = True) -> None:
        with self._lock:
            if self._closed_fds:
                return
            try:
                os.write(self._master, data)
            except BlockingIOError:
                log.warning("fake %s: host not reading, %d bytes dropped", self.serial,
                            len(data))
                return
            except OSError as e:
                log.debug("fake %s: write failed: %s", self.serial, e)
                return
            if record:
                self.transcript.append(("tx", data))

    def _reply(self, data: bytes) -> None:
        fault = self._fault
        if fault in ("silent", "disconnect"):
            return
        if fault == "garbage":
            junk = bytes(self._rng.randrange(256) for _ in range(self._rng.randint(3, 40)))
            self._send(junk)
            return
        self._send(data)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._closed_fds:
                    return
                m = self._move
                now = time.monotonic()
                wait = 0.02
                if m is not None:
                    wait = min(wait, max(0.0, m.t0 + m.duration_s - now))
                if self._auto_updates:
                    wait = min(wait, max(0.0, self._next_update - now))
            try:
                ready, _, _ = select.select([self._master], [], [], wait)
            except (OSError, ValueError):
                return
            chunk = b""
            with self._lock:
                if self._closed_fds:  # closed while we waited: never touch a reused fd
                    return
                if ready:
                    try:
                        chunk = os.read(self._master, 4096)
                    except BlockingIOError:
                        chunk = b""
                    except OSError:
                        chunk = b""  # EIO: no client has the slave open; keep waiting
                now = time.monotonic()
                for msg in self._advance(now):
                    self._reply(msg)
                if chunk:
                    dropped = self._parser.dropped
                    for frame in self._parser.feed(chunk):
                        self.transcript.append(("rx", frame.raw))
                        self.received_counts[frame.name] += 1
                        self._handle(frame, now)
                    if self._parser.dropped != dropped:
                        log.warning("fake %s: %d unparseable bytes dropped", self.serial,
                                    self._parser.dropped - dropped)
                if self._auto_updates and now >= self._next_update:
                    self._next_update = now + self.update_interval_s
                    self._unacked += 1
                    if self._unacked > self.ack_limit:
                        log.warning("fake %s: no MOT_ACK_DCSTATUSUPDATE for %d updates, "
                                    "stopping update messages", self.serial, self.ack_limit)
                        self._auto_updates = False
                    else:
                        self._reply(pack_long(MsgId.MOT_GET_DCSTATUSUPDATE, HOST, self._src,
                                              self._status_data(now)))

    def _handle(self, f: Frame, now: float) -> None:
        log.debug("fake %s <- %s %s", self.serial, f.name, f.raw.hex())
        if f.dest in (USB,) + BAYS:
            self._src = f.dest
        src = self._src
        i = MsgId
        cpm = self.counts_per_mm
        if f.msgid == i.HW_REQ_INFO:
            self._reply(pack_long(i.HW_GET_INFO, HOST, src, self._info_data()))
        elif f.msgid in (i.MOT_REQ_DCSTATUSUPDATE, i.MOT_REQ_STATUSUPDATE, i.MOT_REQ_STATUSBITS):
            data = self._status_data(now)
            if f.msgid == i.MOT_REQ_DCSTATUSUPDATE:
                self._reply(pack_long(i.MOT_GET_DCSTATUSUPDATE, HOST, src, data))
            elif f.msgid == i.MOT_REQ_STATUSUPDATE:
                chan, pos, _, _, bits = struct.unpack("<HlhHL", data)
                self._reply(pack_long(i.MOT_GET_STATUSUPDATE, HOST, src,
                                      struct.pack("<HllL", chan, pos, pos, bits)))
            else:
                bits = struct.unpack_from("<L", data, 10)[0]
                self._reply(pack_long(i.MOT_GET_STATUSBITS, HOST, src,
                                      struct.pack("<HL", 1, bits)))
        elif f.msgid == i.MOT_ACK_DCSTATUSUPDATE:
            self._unacked = 0
        elif f.msgid == i.HW_START_UPDATEMSGS:
            self._auto_updates, self._unacked, self._next_update = True, 0, now
        elif f.msgid == i.HW_STOP_UPDATEMSGS:
            self._auto_updates = False
        elif f.msgid == i.HW_DISCONNECT:
            log.info("fake %s: host disconnected", self.serial)
        elif f.msgid == i.MOD_IDENTIFY:
            self.identify_count += 1
        elif f.msgid == i.MOD_SET_CHANENABLESTATE:
            self.enabled = f.param2 == 1
            if not self.enabled:
                self._move = None
        elif f.msgid == i.MOD_REQ_CHANENABLESTATE:
            self._reply(pack_short(i.MOD_GET_CHANENABLESTATE, f.chan, 1 if self.enabled else 2,
                                   HOST, src))
        elif f.msgid == i.MOT_SET_VELPARAMS and len(f.data) >= 14:
            _, _, acc, vmax = struct.unpack_from("<H3l", f.data)
            if vmax > 0:
                self.velocity_mm_s = velocity_from_apt(vmax) / cpm
            if acc > 0:
                self.acceleration_mm_s2 = acceleration_from_apt(acc) / cpm
        elif f.msgid == i.MOT_REQ_VELPARAMS:
            self._reply(pack_long(i.MOT_GET_VELPARAMS, HOST, src, self._velparams_data()))
        elif f.msgid == i.MOT_SET_JOGPARAMS and len(f.data) >= 22:
            self.jog_step_counts = struct.unpack_from("<HH4lH", f.data)[2]
        elif f.msgid == i.MOT_REQ_JOGPARAMS:
            v, a = self._velparams_apt()
            data = struct.pack("<HH4lH", f.chan, 2, self.jog_step_counts, 0, a, v, 2)
            self._reply(pack_long(i.MOT_GET_JOGPARAMS, HOST, src, data))
        elif f.msgid == i.MOT_SET_GENMOVEPARAMS and len(f.data) >= 6:
            self.backlash_counts = struct.unpack_from("<Hl", f.data)[1]
        elif f.msgid == i.MOT_REQ_GENMOVEPARAMS:
            self._reply(pack_long(i.MOT_GET_GENMOVEPARAMS, HOST, src,
                                  struct.pack("<Hl", f.chan, self.backlash_counts)))
        elif f.msgid == i.MOT_SET_HOMEPARAMS and len(f.data) >= 14:
            _, _, _, hv, offset = struct.unpack_from("<3Hll", f.data)
            if hv > 0:
                self.home_velocity_mm_s = velocity_from_apt(hv) / cpm
            self.home_offset_counts = offset
        elif f.msgid == i.MOT_REQ_HOMEPARAMS:
            hv = velocity_to_apt(self.home_velocity_mm_s * cpm)
            data = struct.pack("<3Hll", f.chan, 2, 1, hv, self.home_offset_counts)
            self._reply(pack_long(i.MOT_GET_HOMEPARAMS, HOST, src, data))
        elif f.msgid == i.MOT_REQ_DCPIDPARAMS:
            data = struct.pack("<H4LH", f.chan, 435, 195, 993, 195, 15)
            self._reply(pack_long(i.MOT_GET_DCPIDPARAMS, HOST, src, data))
        elif f.msgid == i.MOT_REQ_AVMODES:
            self._reply(pack_long(i.MOT_GET_AVMODES, HOST, src, struct.pack("<HH", f.chan, 9)))
        elif f.msgid == i.MOT_SET_MOVERELPARAMS and len(f.data) >= 6:
            self.pending_rel_counts = struct.unpack_from("<Hl", f.data)[1]
        elif f.msgid == i.MOT_SET_MOVEABSPARAMS and len(f.data) >= 6:
            self.pending_abs_counts = struct.unpack_from("<Hl", f.data)[1]
        elif f.msgid == i.MOT_MOVE_ABSOLUTE:
            target = (struct.unpack_from("<Hl", f.data)[1] if len(f.data) >= 6
                      else self.pending_abs_counts)
            self._start_move(target)
        elif f.msgid == i.MOT_MOVE_RELATIVE:
            dist = (struct.unpack_from("<Hl", f.data)[1] if len(f.data) >= 6
                    else self.pending_rel_counts)
            base = self._move.target_counts if self._move is not None else self._counts
            self._start_move(round(base) + dist)
        elif f.msgid == i.MOT_MOVE_JOG:
            sign = 1 if f.param2 == 1 else -1
            self._start_move(round(self._counts) + sign * self.jog_step_counts)
        elif f.msgid == i.MOT_MOVE_VELOCITY:
            lo, hi = self._limits_counts()
            self._start_move(hi if f.param2 == 1 else lo)
        elif f.msgid == i.MOT_MOVE_HOME:
            self._start_move(0.0, kind="home")
        elif f.msgid == i.MOT_MOVE_STOP:
            # Both stop modes halt at once in this fake (no profiled deceleration).
            self._advance(now)
            was_moving = self._move is not None
            self._move = None
            self._counts = float(round(self._counts))
            if was_moving:
                log.debug("fake %s: stopped at %d counts", self.serial, self._counts)
            self._reply(pack_long(i.MOT_MOVE_STOPPED, HOST, src, self._status_data(now)))
        else:
            log.debug("fake %s: ignoring %s", self.serial, f.name)
        if self._move is not None and self._move.duration_s == 0.0:
            for msg in self._advance(now):
                self._reply(msg)

    def _velparams_apt(self) -> tuple[int, int]:
        cpm = self.counts_per_mm
        v = velocity_to_apt(self.velocity_mm_s * cpm)
        a_mm = self.acceleration_mm_s2 if self.acceleration_mm_s2 is not None else 1e3
        return v, acceleration_to_apt(a_mm * cpm)

    def _velparams_data(self) -> bytes:
        v, a = self._velparams_apt()
        return struct.pack("<H3l", 1, 0, a, v)

    def _info_data(self) -> bytes:
        """84-byte HW_GET_INFO block: serial, model, type, firmware, notes, empty, hw version,
        mod state, channel count."""
        try:
            serial_int = int(self.serial)
        except ValueError:
            serial_int = 0
        return struct.pack("<l8sH4B48s12sHHH", serial_int, self.model.name.encode(),
                           self.model.hw_type, 3, 0, 2, 0, self.model.notes.encode(), b"",
                           1, 0, 1)
