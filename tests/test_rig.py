"""The simulated bench end to end: the rig CLI, capture sessions (privacy-only, killed,
camera lost), the paired dataset, and mirror safety through the whole stack."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from captures.store import open_session
from hardware.cli.rig import main as rig_main
from hardware.config import RigConfig, SimConfig
from hardware.devices import DeviceError, DeviceLimitError

RIG = [sys.executable, "-c", "import sys; from hardware.cli.rig import main; sys.exit(main())"]
SMALL = ["--set", "sim.image_size_px=128"]


@pytest.fixture(scope="module")
def rig():
    from hardware.rig import Rig

    with Rig(RigConfig(sim=SimConfig(image_size_px=128))) as r:
        yield r


def test_sim_rig_frames_follow_the_mirror(rig):
    """The privacy frame is rendered from the mirror's current surface; the reference
    branch does not see the mirror."""
    rig.show("checkerboard")
    rig.mirror.relax()
    flat = rig.capture()
    rig.mirror.set_zernike(np.r_[0, 0.8, np.zeros(10)])  # Z5, defocus
    blurred = rig.capture()
    rig.mirror.relax()

    def sharpness(img):
        g = img[..., 1].astype(float)
        return np.abs(np.diff(g, axis=1)).mean()

    assert sharpness(blurred.privacy.image) < 0.6 * sharpness(flat.privacy.image)
    assert abs(sharpness(blurred.reference.image) - sharpness(flat.reference.image)) < 0.05 * \
        sharpness(flat.reference.image)
    assert flat.privacy.trigger_time_s <= flat.privacy.arrival_time_s
    assert abs(flat.skew_s) < 0.5


def test_no_out_of_range_voltage_reaches_the_fake_library(rig):
    """Amplitudes that are each in range but together exceed the voltage limits are refused
    before the library sees them; the fake counts refused requests and must count none."""
    before = rig.mirror_control.state()
    with pytest.raises(DeviceLimitError):
        rig.mirror.set_zernike(np.full(12, 1.0))
    with pytest.raises(DeviceLimitError):
        rig.mirror.set_zernike(np.r_[1.5, np.zeros(11)])
    v = rig.mirror.set_zernike(np.full(12, 1.0), clip=True)
    assert v.min() >= rig.mirror.voltage_min_v and v.max() <= rig.mirror.voltage_max_v
    after = rig.mirror_control.state()
    assert after.rejected_voltage_requests == before.rejected_voltage_requests
    assert after.rejected_amplitude_requests == before.rejected_amplitude_requests
    rig.mirror.relax()


def test_rig_info_and_config_round_trip(tmp_path, capsys):
    assert rig_main(["config", "--sim", "--out", str(tmp_path / "rig.yaml")] + SMALL) == 0
    text = (tmp_path / "rig.yaml").read_text()
    assert "image_size_px: 128" in text and "backend: sim" in text
    assert rig_main(["info", "--config", str(tmp_path / "rig.yaml")]) == 0
    out = capsys.readouterr().out
    assert "40 segments" in out and "KDC101" in out and "diversity" in out


def test_rig_bad_input_is_one_line(tmp_path, capsys):
    assert rig_main(["capture", "--sim", "--session", "x", "--frames", "0",
                     "--out", str(tmp_path)] + SMALL) == 2
    assert rig_main(["info", "--set", "mirror.backend=laser"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("rig: error:") for e in err)


@pytest.mark.parametrize("session", ["../escape", "a/b", "a\\b", "..", ".", "", "bad\nname",
                                     "bad\x00name", "ABSOLUTE"])
def test_capture_refuses_session_names_that_leave_out(tmp_path, capsys, session):
    """A session name is one file name inside --out: separators, '..', absolute paths, empty
    names and control characters are refused in one line, and nothing is written."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    if session == "ABSOLUTE":
        session = str(outside / "abs")
    before = {p for p in tmp_path.rglob("*")}
    assert rig_main(["capture", "--sim", "--session", session, "--frames", "1",
                     "--out", str(out)] + SMALL) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rig: error: session name"), err
    assert {p for p in tmp_path.rglob("*")} == before  # nothing written, inside or out
    assert not (tmp_path / "escape.h5").exists()


def test_capture_session_and_paired_dataset(tmp_path, capsys):
    out = tmp_path / "caps"
    assert rig_main(["capture", "--sim", "--session", "demo", "--frames", "6", "--out",
                     str(out), "--prototype", "--no-progress", "--json",
                     "--with-reference"] + SMALL) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["frames"] == 6 and stats["rate_hz"] > 0
    s = open_session(out / "demo.h5")
    assert len(s) == 6 and s.complete and not s.privacy_only
    meta = s.metadata
    assert meta["mirror_source"] == "paper prototype preset"
    np.testing.assert_allclose(meta["mirror"]["amplitudes"][0], -0.83)
    amps = s.frame(0)["mirror_amplitudes"]
    np.testing.assert_allclose(amps[0], -0.83)
    # the privacy branch is blurred by the prototype mirror, the reference is sharp
    p, r = np.asarray(s.privacy_images()[0], float), np.asarray(s.reference_images()[0], float)
    assert np.abs(np.diff(p[..., 1], axis=1)).mean() < 0.7 * np.abs(np.diff(r[..., 1],
                                                                             axis=1)).mean()

    # a registration-only calibration gives the homography the dataset needs
    cal = tmp_path / "cal"
    assert rig_main(["calibrate", "--sim", "--out", str(cal), "--steps",
                     "dark,flat,registration"] + SMALL) == 0
    assert rig_main(["sessions", str(out)]) == 0
    assert "demo" in capsys.readouterr().out
    ds = tmp_path / "ds"
    assert rig_main(["dataset", str(out / "demo.h5"), "--calibration",
                     str(cal / "calibration.h5"), "--out", str(ds), "--size", "64",
                     "--split", "0.5,0.5"]) == 0
    manifest = json.loads((ds / "manifest.json").read_text())
    n = len(list(ds.glob("*/privacy/*.png")))
    assert n >= 4 and n == len(list(ds.glob("*/reference/*.png")))
    assert manifest


@pytest.mark.parametrize("flags", [[], ["--privacy-only"]])
def test_privacy_only_writes_no_reference_pixels(tmp_path, flags):
    """Identifiable (reference) frames are written only when asked for (--with-reference)."""
    assert rig_main(["capture", "--sim", "--session", "p", "--frames", "3", "--out",
                     str(tmp_path), "--no-progress"] + flags + SMALL) == 0
    import h5py

    with h5py.File(tmp_path / "p.h5", "r") as f:
        names = []
        f.visit(names.append)
    assert not any(n.startswith("reference") for n in names), names
    s = open_session(tmp_path / "p.h5")
    assert len(s) == 3 and s.privacy_only
    with pytest.raises(ValueError):
        s.reference_images()


def test_with_reference_and_privacy_only_exclude_each_other(tmp_path, capsys):
    assert rig_main(["capture", "--sim", "--session", "p", "--frames", "1", "--out",
                     str(tmp_path / "o"), "--privacy-only", "--with-reference"] + SMALL) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exclude each other" in err[0], err
    assert not (tmp_path / "o").exists()


def test_camera_lost_mid_capture_keeps_frames(tmp_path):
    from captures.record import record_session
    from hardware.rig import Rig

    with Rig(RigConfig(sim=SimConfig(image_size_px=64), stage=__import__(
            "hardware.config", fromlist=["StageConfig"]).StageConfig(backend="none"))) as rig:
        rig.show("checkerboard")
        real_capture = rig.capture
        calls = {"n": 0}

        def capture(privacy_only=False):
            calls["n"] += 1
            if calls["n"] == 5:  # the reference camera is unplugged before the 5th pair
                os.kill(rig.cameras.reference.worker_pid, signal.SIGKILL)
                time.sleep(0.2)
            return real_capture(privacy_only)

        rig.capture = capture
        with pytest.raises(DeviceError, match="went away"):
            record_session(rig, tmp_path / "lost.h5", 10, privacy_only=False, progress=False)
    s = open_session(tmp_path / "lost.h5")
    assert len(s) == 4 and not s.complete


@pytest.mark.slow
def test_sigkill_mid_capture_keeps_every_completed_frame(tmp_path):
    """The real `rig capture` process (with its camera workers) killed with SIGKILL at
    several moments: the file always opens with every committed frame intact."""
    for k, wait_frames in enumerate((1, 4, 9)):
        path = tmp_path / f"k{k}.h5"
        proc = subprocess.Popen(
            RIG + ["capture", "--sim", "--session", f"k{k}", "--frames", "400", "--out",
                   str(tmp_path), "--no-progress", "--interval-s", "0.01",
                   "--set", "sim.image_size_px=64", "--set", "stage.backend=none"],
            cwd=Path(__file__).resolve().parents[1], start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_end = time.time() + 60
        try:
            while time.time() < t_end:
                if path.exists():
                    try:
                        if len(open_session(path)) >= wait_frames:
                            break
                    except (OSError, ValueError):
                        pass
                time.sleep(0.05 + 0.03 * k)
            else:
                pytest.fail("capture did not start")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        s = open_session(path)
        assert wait_frames <= len(s) < 400 and not s.complete
        imgs = np.asarray(s.privacy_images()[: len(s)])
        assert imgs.shape[0] == len(s) and imgs.reshape(len(s), -1).std(axis=1).min() > 0
        arrival = s.times["privacy_arrival_time_s"]
        assert len(arrival) == len(s) and np.all(np.diff(arrival) > 0)


def test_export_dm_cli(tmp_path, capsys):
    from calibration.device_map import DeviceCalibration
    from hardware.sim.fake_tldfm import DEFAULT_HIDDEN
    from optics.cli.main import main as optics_main

    cal = DeviceCalibration(DEFAULT_HIDDEN.matrix()).save(tmp_path / "map.json")
    coeffs = tmp_path / "c.json"
    coeffs.write_text(json.dumps({"convention": "noll", "units": "um_opd",
                                  "coefficients": {"4": 0.5, "7": -0.2, "11": 2.0}}))
    out = tmp_path / "mask.dm.json"
    assert optics_main(["export-dm", str(coeffs), "--calibration", str(cal), "--out",
                        str(out)]) == 2
    assert "Z13" in capsys.readouterr().err  # spherical would need 2.1 device units
    assert optics_main(["export-dm", str(coeffs), "--calibration", str(cal), "--out",
                        str(out), "--clip"]) == 0
    data = json.loads(out.read_text())
    assert data["amplitudes"]["Z13"] == 1.0 and data["clipped"]
    assert data["residual_rms_um"] == pytest.approx(2.0 - 0.95, abs=1e-6)
