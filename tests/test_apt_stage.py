"""AptStage (the real thorlabs_apt_device client) against FakeAptDevice on a pseudo-terminal.

Expected bytes are written out by hand from the protocol table (little-endian):
short message ``<H msgid><B p1><B p2><B dest><B src>``, long message
``<H msgid><H len><B dest|0x80><B src>`` + data; host 0x01, USB controller 0x50.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

import pytest
import serial
from thorlabs_apt_device import protocol as apt

from hardware.apt_stage import APT_CONTROLLERS, AptStage
from hardware.devices import DeviceError, DeviceLimitError, DeviceTimeout
from hardware.sim.apt_device import (
    FakeAptDevice,
    FrameParser,
    move_duration_s,
    pack_short,
    trapezoid_distance,
)

CPM = 34554.96  # counts per mm, KDC101 + Z8
log = logging.getLogger(__name__)


def guard(timeout_s: float):
    """Run the test body in a thread; fail (instead of hanging) if it is not done in time."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            box = {}

            def body():
                try:
                    box["result"] = fn(*args, **kwargs)
                except BaseException as e:  # re-raised in the test thread
                    box["error"] = e

            t = threading.Thread(target=body, daemon=True)
            t.start()
            t.join(timeout_s)
            if t.is_alive():
                pytest.fail(f"{fn.__name__} did not finish within {timeout_s} s (hang)")
            if "error" in box:
                raise box["error"]
            return box.get("result")

        return wrapper

    return deco


def make_fake(**kw) -> FakeAptDevice:
    opts = dict(velocity_mm_s=20.0, acceleration_mm_s2=None, start_mm=1.0)
    opts.update(kw)
    return FakeAptDevice(**opts)


@pytest.fixture
def fake():
    f = make_fake()
    yield f
    f.close()


@pytest.fixture
def stage(fake):
    s = AptStage(port=fake.port, status_timeout_s=0.6)
    yield s
    s.close()


def wait_for(pred, timeout_s=2.0):
    t_end = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > t_end:
            return False
        time.sleep(0.01)
    return True


# ------------------------------------------------------------------ transcripts (encoding)
def test_library_move_absolute_encoding():
    # 0x0453, len 6, dest 0x50|0x80, src 0x01, chan 1, position -17277 = 0xFFFFBC83
    got = apt.mot_move_absolute(dest=0x50, source=0x01, chan_ident=1, position=-17277)
    assert got == bytes([0x53, 0x04, 0x06, 0x00, 0xD0, 0x01, 0x01, 0x00,
                         0x83, 0xBC, 0xFF, 0xFF])


@guard(15)
def test_client_sends_exact_move_bytes(fake, stage):
    stage.move_to(1.0)  # round(1.0 * 34554.96) = 34555 = 0x000086FB
    assert fake.messages("rx", 0x0453)[-1] == bytes.fromhex("53040600d0010100fb860000")
    stage.move_by(0.5)  # round(0.5 * 34554.96) = 17277 = 0x0000437D
    assert fake.messages("rx", 0x0448)[-1] == bytes.fromhex("48040600d00101007d430000")
    # status polling: MOT_REQ_DCSTATUSUPDATE, chan 1, to USB from host
    assert fake.messages("rx", 0x0490)[0] == bytes.fromhex("900401005001")
    # at open: channel enabled (0x0210, chan 1, state 1) and HW_REQ_INFO
    assert bytes.fromhex("100201015001") in fake.messages("rx", 0x0210)
    assert fake.messages("rx", 0x0005)[0] == bytes.fromhex("050000005001")


@guard(15)
def test_fake_sends_exact_status_and_completion_bytes():
    with make_fake() as f, serial.Serial(f.port, 115200, timeout=2.0) as port:
        port.write(bytes.fromhex("900401005001"))  # MOT_REQ_DCSTATUSUPDATE
        # 0x0491, len 14, dest 0x81, src 0x50 | chan 1 | pos 34555 | vel 0 | 0 |
        # bits CONNECTED 0x100 | ENABLED 0x80000000
        assert port.read(20) == bytes.fromhex("91040e008150" "0100" "fb860000" "0000" "0000"
                                              "00010080")
        # MOT_MOVE_ABSOLUTE to 69110 = 0x00010DF6 counts, then MOT_MOVE_COMPLETED at it
        port.write(bytes.fromhex("53040600d0010100f60d0100"))
        assert port.read(20) == bytes.fromhex("64040e008150" "0100" "f60d0100" "0000" "0000"
                                              "00010080")
        # MOT_MOVE_HOME -> MOT_MOVE_HOMED (short: chan 1, dest host, src USB)
        port.write(bytes.fromhex("430401005001"))
        assert port.read(6) == bytes.fromhex("440401000150")
        # homed at 0 counts: HOMED 0x400 and the reverse limit switch 0x2 are set
        port.write(bytes.fromhex("900401005001"))
        assert port.read(20) == bytes.fromhex("91040e008150" "0100" "00000000" "0000" "0000"
                                              "02050080")
        # HW_REQ_INFO -> 90-byte HW_GET_INFO: serial 27000001 = 0x019BFCC1, model "KDC101"
        port.write(bytes.fromhex("050000005001"))
        info = port.read(90)
        assert info[:6] == bytes.fromhex("06005400" "8150")
        assert info[6:10] == bytes.fromhex("c1fc9b01")
        assert info[10:18] == b"KDC101\0\0"
    assert f.messages("tx", 0x0491)[0][:6] == bytes.fromhex("91040e008150")


def test_frame_parser_resynchronises_after_noise():
    p = FrameParser()
    frames = p.feed(b"\xff\x00\x13" + bytes.fromhex("53040600d0010100fb86"))
    assert frames == []  # noise dropped, long message still incomplete
    frames = p.feed(bytes.fromhex("0000") + pack_short(0x0443, 1, 0, 0x50, 0x01))
    assert [f.msgid for f in frames] == [0x0453, 0x0443]
    assert frames[0].data == bytes.fromhex("0100fb860000") and frames[0].chan == 1
    assert p.dropped == 3


def test_motion_model():
    # trapezoid: 2 mm at 4 mm/s, 20 mm/s^2 -> 2/4 + 4/20 = 0.7 s
    assert move_duration_s(2.0, 4.0, 20.0) == pytest.approx(0.7)
    # triangle: 0.1 mm, 4 mm/s, 20 mm/s^2 never reaches 4 mm/s: 2*sqrt(0.1/20)
    assert move_duration_s(0.1, 4.0, 20.0) == pytest.approx(2 * (0.1 / 20) ** 0.5)
    assert move_duration_s(-3.0, 2.0, None) == pytest.approx(1.5)
    assert trapezoid_distance(2.0, 4.0, 20.0, 0.35) == pytest.approx((1.0, 4.0))
    assert trapezoid_distance(2.0, 4.0, 20.0, 0.7) == (2.0, 0.0)
    for t in (0.05, 0.2, 0.5, 0.65):  # continuous and monotonic
        assert trapezoid_distance(2.0, 4.0, 20.0, t)[0] < trapezoid_distance(2.0, 4.0, 20.0,
                                                                             t + 1e-3)[0]


# ------------------------------------------------------------------ real client on the fake
@pytest.mark.parametrize("controller", sorted(APT_CONTROLLERS))
@guard(20)
def test_open_identify_home_and_move(controller):
    c = APT_CONTROLLERS[controller]
    sn = c.serial_prefix + "000001"
    with make_fake(model=controller, serial=sn) as f, \
            AptStage(port=f.port, device=controller, status_timeout_s=0.6) as s:
        assert s.serial == sn and s.info["model"] == controller
        assert sn in s.name and f.port in s.name
        assert s.position_mm == pytest.approx(1.0, abs=1 / CPM)
        s.identify()
        assert wait_for(lambda: f.identify_count == 1)
        s.home(timeout_s=5)
        assert s.homed and s.position_mm == 0.0 and f.position_counts == 0
        assert s.move_to(2.5, timeout_s=5) == pytest.approx(2.5, abs=1 / CPM)
        assert s.move_by(-0.75, timeout_s=5) == pytest.approx(1.75, abs=1 / CPM)
        assert abs(f.position_counts - round(1.75 * CPM)) <= 1
        assert abs(s.position_mm - f.position_mm) <= 1 / CPM


@guard(15)
def test_move_takes_the_model_time():
    with make_fake(velocity_mm_s=4.0, acceleration_mm_s2=20.0, start_mm=0.5) as f, \
            AptStage(port=f.port, status_timeout_s=0.6) as s:
        expected = f.expected_move_s(2.0)
        assert expected == pytest.approx(0.7)
        t0 = time.monotonic()
        pos = s.move_to(2.5, timeout_s=5)
        took = time.monotonic() - t0
        log.info("2 mm move: model %.3f s, measured %.3f s", expected, took)
        assert pos == pytest.approx(2.5, abs=1 / CPM)
        # the client reads every ~0.1 s; allow generous slack, never faster than the model
        assert expected - 0.05 <= took <= expected + 0.8


@guard(15)
def test_stop_interrupts_a_move():
    with make_fake(velocity_mm_s=2.0, acceleration_mm_s2=None, start_mm=0.0) as f, \
            AptStage(port=f.port, status_timeout_s=0.6) as s:
        box = {}
        mover = threading.Thread(target=lambda: box.setdefault("pos", s.move_to(10.0, 10)))
        mover.start()
        assert wait_for(lambda: f.is_moving)
        time.sleep(0.3)
        stopped_at = s.stop()
        mover.join(5)
        assert not mover.is_alive() and not f.is_moving
        assert 0.2 < stopped_at < 3.0
        assert box["pos"] == pytest.approx(stopped_at, abs=1 / CPM)
        assert abs(f.position_counts - round(stopped_at * CPM)) <= 1


@guard(10)
def test_travel_limits_refuse_before_sending(fake):
    with AptStage(port=fake.port, limits_mm=(0.0, 5.0), status_timeout_s=0.6) as s:
        with pytest.raises(DeviceLimitError, match="outside travel"):
            s.move_to(6.0)
        with pytest.raises(DeviceLimitError):
            s.move_by(-2.0)
    assert fake.messages("rx", 0x0453) == [] and fake.messages("rx", 0x0448) == []


@guard(10)
def test_home_on_open(fake):
    with AptStage(port=fake.port, home_on_open=True, home_timeout_s=5,
                  status_timeout_s=0.6) as s:
        assert s.homed and s.position_mm == 0.0
    assert fake.messages("rx", 0x0443) == [bytes.fromhex("430401005001")]


@guard(10)
def test_close_is_idempotent_and_final(fake):
    s = AptStage(port=fake.port, status_timeout_s=0.6)
    s.close()
    s.close()
    with pytest.raises(DeviceError, match="closed"):
        s.move_to(2.0)


def test_unknown_controller_and_missing_device():
    with pytest.raises(ValueError, match="KDC101"):
        AptStage(port="/dev/null", device="XYZ999")
    with pytest.raises(DeviceError, match="27999999"):
        AptStage(port=None, serial="27999999")


# ------------------------------------------------------------------ faults
@guard(15)
def test_silent_stage_times_out_with_a_clear_message(fake, stage):
    fake.fault = "silent"
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout) as e:
        stage.move_to(3.0, timeout_s=20)
    took = time.monotonic() - t0
    msg = str(e.value)
    assert "27000001" in msg and fake.port in msg and "stopped answering" in msg
    assert "\n" not in msg
    assert took < 0.6 + 1.5  # about status_timeout_s, not the 20 s move timeout
    with pytest.raises(DeviceTimeout):
        _ = stage.position_mm


@guard(10)
def test_silent_at_open_times_out():
    with make_fake() as f:
        f.fault = "silent"
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout, match="no status at open"):
            AptStage(port=f.port, status_timeout_s=0.5)
        assert time.monotonic() - t0 < 3.0


@pytest.mark.filterwarnings("ignore::UserWarning")
@guard(15)
def test_garbage_raises_cleanly_and_client_recovers(fake, stage):
    fake.fault = "garbage"
    t0 = time.monotonic()
    with pytest.raises(DeviceError):
        stage.move_to(3.0, timeout_s=5)
    assert time.monotonic() - t0 < 5.5
    fake.fault = None
    assert wait_for(lambda: not fake.is_moving, 3)
    assert wait_for(lambda: _fresh(stage), 3)
    assert stage.move_to(1.5, timeout_s=5) == pytest.approx(1.5, abs=1 / CPM)


def _fresh(stage) -> bool:
    try:
        _ = stage.position_mm
    except DeviceTimeout:
        return False
    return True


@guard(15)
def test_disconnect_raises_and_close_does_not_hang(fake, stage):
    fake.fault = "disconnect"
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as e:
        stage.move_to(3.0, timeout_s=20)
    assert time.monotonic() - t0 < 3.0
    assert fake.port in str(e.value)
    t0 = time.monotonic()
    stage.close()
    assert time.monotonic() - t0 < 3.0


@pytest.mark.filterwarnings("ignore:The .warn. method:DeprecationWarning")
@pytest.mark.parametrize("rich", [True, False])
@guard(10)
def test_device_error_reply_becomes_device_error(fake, stage, rich):
    fake.inject_error(code=7, notes="overcurrent", rich=rich)
    with pytest.raises(DeviceError, match="error"):
        stage.move_to(2.0, timeout_s=5)
