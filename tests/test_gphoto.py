"""GPhotoCamera against libgphoto2's vusb virtual camera, one worker process per camera.

Each camera gets its own VCAMERADIR (hardware.sim.vcamera.VirtualCameraDir); frames written
there come back through trigger -> FILE_ADDED -> download -> JPEG decode.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest

from hardware.devices import CameraPair, DeviceError, DeviceTimeout
from hardware.gphoto import VUSB_CAPTURES_PER_SESSION, VUSB_SERIAL, GPhotoCamera
from hardware.sim.vcamera import VirtualCameraDir, encode_jpeg_to_capacity

pytest.importorskip("gphoto2")

W, H = 96, 64
MAE_JPEG = 4.0  # mean abs error, grey levels, allowed for a JPEG round trip of a test pattern


def pattern(k: int, w: int = W, h: int = H) -> np.ndarray:
    """A smooth RGB test pattern, clearly different for each k."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    phase = 0.9 * k
    r = 127 + 100 * np.sin(xx / w * 2 * np.pi + phase)
    g = 127 + 100 * np.cos(yy / h * 2 * np.pi - phase)
    b = (xx + yy) / (w + h) * 255 * (k % 2) + 60 * (1 - k % 2)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def mae(a, b) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.fixture(scope="module")
def vdirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vcam")
    return VirtualCameraDir(root / "privacy", W, H), VirtualCameraDir(root / "reference", W, H)


@pytest.fixture(scope="module")
def pair(vdirs):
    """Two virtual cameras in two workers: privacy warns on missing settings, reference
    refuses them."""
    vp, vr = vdirs
    cp = GPhotoCamera(vp.serial, env=vp.env, missing_settings="warn")
    try:
        cr = GPhotoCamera(vr.serial, env=vr.env, missing_settings="error")
    except BaseException:
        cp.close()
        raise
    with CameraPair(cp, cr) as p:
        yield p


# --- the simulator ---------------------------------------------------------------------------

def test_vcamera_dir_writes_in_place(tmp_path):
    vd = VirtualCameraDir(tmp_path / "v", W, H, capacity_bytes=20000)
    assert vd.env == {"VCAMERADIR": str(tmp_path / "v")}
    assert vd.serial == VUSB_SERIAL
    inode = vd.file.stat().st_ino
    for k in range(3):
        quality = vd.write_frame(pattern(k))
        st = vd.file.stat()
        assert (st.st_ino, st.st_size) == (inode, 20000)
        assert quality == vd.last_quality
    from PIL import Image

    with Image.open(vd.file) as img:  # zero padding after EOI does not bother a decoder
        assert mae(np.asarray(img.convert("RGB")), pattern(2)) < MAE_JPEG
    with pytest.raises(ValueError, match="expected"):
        vd.write_frame(np.zeros((H + 1, W, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        vd.write_frame(np.zeros((H, W, 3), np.float32))


def test_vcamera_lowers_quality_to_fit(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    full, q_full = encode_jpeg_to_capacity(noise, 10**6)
    small, q_small = encode_jpeg_to_capacity(noise, len(full) // 2)
    assert q_full == 95 and q_small < q_full and len(small) <= len(full) // 2
    with pytest.raises(ValueError, match="capacity"):
        encode_jpeg_to_capacity(noise, 500)
    vd = VirtualCameraDir(tmp_path / "v", W, H, capacity_bytes=len(full) // 2)
    assert vd.write_frame(noise) == q_small
    assert vd.file.stat().st_size == len(full) // 2


def test_vcamera_refuses_a_second_jpeg(tmp_path):
    (tmp_path / "other.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="other JPEGs"):
        VirtualCameraDir(tmp_path, W, H)


# --- capture ---------------------------------------------------------------------------------

def test_pair_capture_matches_written_frames(pair, vdirs):
    vp, vr = vdirs
    vp.write_frame(pattern(1))
    vr.write_frame(pattern(2))
    t0 = time.time()
    got = pair.capture(timeout_s=5)
    fp, fr = got.privacy, got.reference
    assert fp.image.shape == fr.image.shape == (H, W, 3) and fp.image.dtype == np.uint8
    assert mae(fp.image, pattern(1)) < MAE_JPEG
    assert mae(fr.image, pattern(2)) < MAE_JPEG
    assert mae(fp.image, fr.image) > 10 * MAE_JPEG  # each camera serves its own directory
    assert fp.camera == fr.camera == VUSB_SERIAL
    assert fp.filename.upper().endswith(".JPG")
    # trigger before arrival, privacy fired first, skew recorded and small
    assert t0 <= fp.trigger_time_s <= fp.arrival_time_s <= time.time()
    assert fr.trigger_time_s <= fr.arrival_time_s
    assert fp.trigger_time_s <= fr.trigger_time_s
    assert got.skew_s == pytest.approx(fr.trigger_time_s - fp.trigger_time_s)
    assert 0 <= got.skew_s < 0.25
    assert 0 <= fp.latency_s < 2.0


def test_successive_frames_are_seen(pair, vdirs):
    """Write frame k, capture, get frame k; more captures than one vusb session allows."""
    vp, _ = vdirs
    cam = pair.privacy
    frames = [pattern(k) for k in range(6)]
    n = VUSB_CAPTURES_PER_SESSION + 6
    for i in range(n):
        k = i % len(frames)
        vp.write_frame(frames[k])
        image = cam.capture(timeout_s=5).image
        errors = [mae(image, f) for f in frames]
        assert int(np.argmin(errors)) == k and errors[k] < MAE_JPEG, (i, errors)


def test_burst_of_two_triggers(pair, vdirs):
    cam = pair.reference
    t1, t2 = cam.trigger(), cam.trigger()
    f1, f2 = cam.wait_frame(5), cam.wait_frame(5)
    assert (f1.trigger_time_s, f2.trigger_time_s) == (t1, t2)
    assert f1.filename != f2.filename


def test_stale_file_is_not_taken_for_the_next_frame(pair, vdirs):
    cam = pair.reference
    cam.trigger()
    with pytest.raises(DeviceTimeout):
        cam.wait_frame(timeout_s=0)  # gives up before looking; that file is now stale
    t = cam.trigger()
    frame = cam.wait_frame(5)
    assert frame.trigger_time_s == t


# --- configuration ---------------------------------------------------------------------------

def test_configure_missing_settings_warn(pair, caplog):
    cam = pair.privacy
    with caplog.at_level("WARNING", logger="hardware.gphoto"):
        got = cam.configure({"iso": "100", "imageformat": "Large Fine JPEG",
                             "shutterspeed": "0.0200s", "capturetarget": "Internal RAM"})
    assert got == {"iso": None, "imageformat": None, "shutterspeed": "0.0200s",
                   "capturetarget": "Internal RAM"}
    assert "'iso'" in caplog.text and "'imageformat'" in caplog.text
    assert cam.configure({"shutterspeed": "0.0050s"}) == {"shutterspeed": "0.0050s"}
    assert cam.capture(5).settings["shutterspeed"] == "0.0050s"


def test_configure_missing_settings_error_applies_nothing(pair):
    cam = pair.reference
    assert cam.configure({"shutterspeed": "0.1000s"}) == {"shutterspeed": "0.1000s"}
    with pytest.raises(DeviceError, match="iso"):
        cam.configure({"shutterspeed": "1.0000s", "iso": "100"})
    assert cam.configure({"f-number": "f/4"}) == {"f-number": "f/4"}
    with pytest.raises(DeviceError, match="choices"):
        cam.configure({"shutterspeed": "1/8000"})
    # the refused calls changed nothing
    assert cam.configure({"capturetarget": "Internal RAM"}) == {"capturetarget": "Internal RAM"}
    assert cam.read_settings(["shutterspeed", "f-number", "iso"]) == {
        "shutterspeed": "0.1000s", "f-number": "f/4", "iso": None}


# --- failures --------------------------------------------------------------------------------

def test_killed_worker_raises_promptly_and_spares_the_other(tmp_path):
    va = VirtualCameraDir(tmp_path / "a", W, H)
    vb = VirtualCameraDir(tmp_path / "b", W, H)
    ca = GPhotoCamera(va.serial, env=va.env, settings={"capturetarget": "Internal RAM"})
    cb = GPhotoCamera(vb.serial, env=vb.env)
    try:
        assert ca.settings == {"capturetarget": "Internal RAM"}
        ca.capture(5)
        os.kill(ca.worker_pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="went away"):
            ca.capture(timeout_s=30)
        assert time.monotonic() - t0 < 3.0
        assert not ca.alive
        with pytest.raises(DeviceError):
            ca.trigger()
        vb.write_frame(pattern(3))
        assert mae(cb.capture(5).image, pattern(3)) < MAE_JPEG
    finally:
        ca.close()
        ca.close()  # idempotent
        cb.close()
    assert not cb.alive
    with pytest.raises(DeviceError, match="closed"):
        cb.trigger()


def test_worker_killed_while_waiting(tmp_path):
    va = VirtualCameraDir(tmp_path / "a", W, H)
    with GPhotoCamera(va.serial, env=va.env) as cam:
        killer = threading.Timer(0.3, os.kill, (cam.worker_pid, signal.SIGKILL))
        t0 = time.monotonic()
        killer.start()
        with pytest.raises(DeviceError, match="went away"):
            cam.wait_frame(timeout_s=30)  # no trigger: the worker is waiting when it dies
        assert 0.25 < time.monotonic() - t0 < 3.0


def test_wait_without_trigger_times_out(pair):
    cam = pair.privacy
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match="within"):
        cam.wait_frame(timeout_s=0.3)
    assert 0.25 < time.monotonic() - t0 < 3.0
    assert cam.capture(5).image.shape == (H, W, 3)  # still usable


def test_unknown_serial_is_refused_at_open(tmp_path):
    va = VirtualCameraDir(tmp_path / "a", W, H)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match=r"no camera with serial 'NOPE123'.*'0\.1'"):
        GPhotoCamera("NOPE123", env=va.env, start_timeout_s=5)
    assert time.monotonic() - t0 < 5.0


def test_bad_missing_settings_mode():
    with pytest.raises(ValueError, match="missing_settings"):
        GPhotoCamera(VUSB_SERIAL, missing_settings="ignore")
