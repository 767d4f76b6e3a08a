"""Capture sessions: HDF5 round trip, privacy-only files, SIGKILL recovery, resume, export,
the paired dataset (geometry checked against a known homography) and the CLI commands."""

from __future__ import annotations

import inspect
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from calibration.homography import load_homography, to_opencv_frame, warp_points
from captures.dataset import build_paired_dataset, parse_split, split_counts
from captures.export import export_frames
from captures.store import CaptureWriter, DamagedFrameError, list_sessions, open_session
from hardware.devices import Frame, PairedFrame

REPO = Path(__file__).resolve().parents[1]

# Frame content is a function of the frame index, so every frame read back can be checked
# exactly. The child process of the kill test runs the same functions (their source).

def frame_image(i, side):
    img = np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8)
    img[0, 0] = (i % 256, (i // 256) % 256, 7)
    return img


def paired_frame(i, side, reference=True):
    img = frame_image(i, side)
    ref = Frame(255 - img, "REF-1", 100.0 + i, 100.5 + i, f"r{i}.jpg") if reference else None
    return PairedFrame(Frame(img, "PRIV-1", 100.0 + i, 100.25 + i, f"p{i}.jpg",
                             {"iso": 100, "i": i}), ref, 0.001 * i)


def mirror(i):
    return np.full(40, 0.5 * i), np.linspace(-1, 1, 12) * (i % 7) / 7


CHILD_SRC = "\n".join([
    "import sys",
    "import numpy as np",
    "from hardware.devices import Frame, PairedFrame",
    "from captures.store import CaptureWriter",
    *(inspect.getsource(f) for f in (frame_image, paired_frame, mirror)),
    """
path, side, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
w = CaptureWriter(path, {"rig": "kill-test"}, privacy_only=False, resume=resume)
print("open", len(w), flush=True)
i = len(w)
while True:
    v, a = mirror(i)
    w.append(paired_frame(i, side), mirror_voltages_v=v, mirror_amplitudes=a,
             extra={"i": i, "pad": "x" * (i % 37)})
    i += 1
    print(i, flush=True)
"""])


def check_frames(session, start=0):
    """Every valid frame equals what was written for its index (a frame the reader lists as
    damaged must raise instead)."""
    for i in range(start, len(session)):
        if i in getattr(session, "damaged", ()):
            with pytest.raises(DamagedFrameError):
                session.frame(i)
            continue
        fr = session.frame(i)
        side = fr["privacy"].shape[0]
        img = frame_image(i, side)
        np.testing.assert_array_equal(fr["privacy"], img)
        if not session.privacy_only:
            np.testing.assert_array_equal(fr["reference"], 255 - img)
            assert fr["reference_arrival_time_s"] == 100.5 + i
        assert fr["privacy_trigger_time_s"] == 100.0 + i
        assert fr["privacy_arrival_time_s"] == 100.25 + i
        assert fr["skew_s"] == pytest.approx(0.001 * i)
        assert fr["info"]["privacy"]["settings"]["i"] == i
        if fr["mirror_voltages_v"] is not None:
            v, a = mirror(i)
            np.testing.assert_array_equal(fr["mirror_voltages_v"], v)
            np.testing.assert_array_equal(fr["mirror_amplitudes"], a)


# ----------------------------------------------------------------------------- store

def test_round_trip(tmp_path):
    path = tmp_path / "s1.h5"
    meta = {"rig": {"mirror": "DMP40"}, "camera_settings": {"iso": 100},
            "calibration": "cal-2024.h5", "array": np.arange(3)}
    with CaptureWriter(path, meta, privacy_only=False, frame_shape=(32, 32, 3)) as w:
        for i in range(6):
            v, a = mirror(i)
            assert w.append(paired_frame(i, 32), mirror_voltages_v=v if i >= 2 else None,
                            mirror_amplitudes=a if i >= 2 else None, extra={"i": i}) == i
    with open_session(path) as s:
        assert len(s) == 6 and s.complete and not s.privacy_only
        assert s.metadata["rig"] == {"mirror": "DMP40"} and s.metadata["array"] == [0, 1, 2]
        assert s.metadata["privlens_version"] and s.metadata["start_time_s"] > 0
        check_frames(s)
        assert s.frame(0)["mirror_voltages_v"] is None  # not given for frames 0 and 1
        assert s.frame(1)["info"]["extra"] == {"i": 1}
        np.testing.assert_array_equal(s.times["privacy_trigger_time_s"], 100.0 + np.arange(6))
        np.testing.assert_allclose(s.times["skew_s"], 0.001 * np.arange(6))
        assert np.asarray(s.privacy_images()).shape == (6, 32, 32, 3)
        np.testing.assert_array_equal(s.reference_images()[-1], 255 - frame_image(5, 32))
        assert s.privacy_images()[1:5:2].shape == (2, 32, 32, 3)
        with pytest.raises(IndexError):
            s.frame(6)
    with h5py.File(path, "r") as f:  # chunk = one frame
        assert f["privacy/images"].chunks == (1, 32, 32, 3)
        assert f["mirror/voltages_v"].shape == (6, 40)
    with pytest.raises(FileExistsError):
        CaptureWriter(path, meta, privacy_only=False)
    with pytest.raises(ValueError, match="shape"), CaptureWriter(
            tmp_path / "s2.h5", {}, privacy_only=True, frame_shape=(16, 16, 3)) as w:
        w.append(paired_frame(0, 32))


def test_privacy_only_writes_no_reference(tmp_path):
    path = tmp_path / "private.h5"
    with CaptureWriter(path, {"rig": "sim"}, privacy_only=True) as w:
        for i in range(4):
            w.append(paired_frame(i, 24, reference=True))  # reference given, must be dropped
    refs = [255 - frame_image(i, 24) for i in range(4)]
    seen = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            seen.append(name)
            assert "reference" not in name
            if isinstance(obj, h5py.Dataset):
                data = obj[()].tobytes()
                for r in refs:  # no reference image, not even one row of it
                    assert r[5].tobytes() not in data
                assert b"REF-1" not in data and b"r0.jpg" not in data
        f.visititems(visit)
    assert "privacy/images" in seen
    raw = path.read_bytes()
    assert refs[1].tobytes()[:64] not in raw and b"REF-1" not in raw
    with open_session(path) as s:
        assert s.privacy_only and len(s) == 4
        check_frames(s)
        with pytest.raises(ValueError, match="privacy-only"):
            s.reference_images()


def test_resume(tmp_path):
    path = tmp_path / "r.h5"
    with CaptureWriter(path, {"part": 1}, privacy_only=False) as w:
        for i in range(3):
            w.append(paired_frame(i, 16))
    with pytest.raises(ValueError, match="privacy_only"):
        CaptureWriter(path, {}, privacy_only=True, resume=True)
    with CaptureWriter(path, {"part": 2}, privacy_only=False, resume=True) as w:
        assert len(w) == 3
        for i in range(3, 5):
            assert w.append(paired_frame(i, 16)) == i
    with open_session(path) as s:
        assert len(s) == 5 and s.complete
        assert s.metadata["part"] == 1 and s.resumes[0]["metadata"] == {"part": 2}
        check_frames(s)


def test_resume_discards_half_written_frame(tmp_path):
    """A frame grown into the datasets but never committed is ignored, then overwritten."""
    path = tmp_path / "half.h5"
    w = CaptureWriter(path, {}, privacy_only=False)
    for i in range(3):
        w.append(paired_frame(i, 16))
    f = w._f  # simulate a kill in the middle of append(): rows grown, counter not set
    for name in ("privacy/images", "reference/images", "privacy/trigger_time_s"):
        f[name].resize(4, axis=0)
    f.flush()
    f.close()
    with open_session(path) as s:
        assert len(s) == 3 and s.committed == 3 and not s.complete
        check_frames(s)
    with CaptureWriter(path, {}, privacy_only=False, resume=True) as w:
        w.append(paired_frame(3, 16))
    with open_session(path) as s:
        assert len(s) == 4
        check_frames(s)


def test_damaged_frames_are_found_by_their_crc(tmp_path):
    """Bytes changed behind HDF5's back (as a torn write leaves them): the reader of an
    unfinished session trims a damaged last frame, lists a damaged middle one, and reading it
    raises; a resumed writer copies the intact frames and goes on."""
    path = tmp_path / "torn.h5"
    w = CaptureWriter(path, {}, privacy_only=False)
    for i in range(6):
        w.append(paired_frame(i, 16))
    w._f.close()  # not a clean close
    with h5py.File(path, "r+") as f:
        f["privacy/images"][2, 0, 0, 1] ^= 1
        f["reference/images"][5, 3, 3, 0] ^= 1
    with open_session(path) as s:
        assert len(s) == 5 and s.damaged == [2, 5]
        check_frames(s)
        with pytest.raises(DamagedFrameError, match="frame 2"):
            np.asarray(s.privacy_images())
        np.testing.assert_array_equal(s.reference_images()[0:5], np.stack(
            [255 - frame_image(i, 16) for i in range(5)]))
    with CaptureWriter(path, {}, privacy_only=False, resume=True) as w:
        w.append(paired_frame(5, 16))
    with open_session(path) as s:
        assert len(s) == 6 and s.complete and s.damaged == []  # complete: tail not checked
        with pytest.raises(DamagedFrameError):
            s.frame(2)
        check_frames(s, start=3)


# ----------------------------------------------------------------------------- SIGKILL

def _run_and_kill(path: Path, side: int, resume: bool, when: tuple[str, float]) -> int:
    """Start a child appending frames, SIGKILL it at ``when``; the last count it printed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-c", CHILD_SRC, str(path), str(side),
                          "1" if resume else "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd=REPO, text=True)
    try:
        kind, value = when
        if kind == "time":
            time.sleep(value)
        else:  # wait for `value` commits, then a random sub-frame delay
            target, jitter = value
            while True:
                line = p.stdout.readline()
                if not line:
                    raise AssertionError(f"child ended: {p.stderr.read()[-2000:]}")
                if line.split()[0].isdigit() and int(line) >= target:
                    break
            time.sleep(jitter)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        rest, err = p.stdout.read(), p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL, f"child ended by itself: {err[-2000:]}"
    counts = [int(s) for s in rest.splitlines() if s.strip().isdigit()]
    last = counts[-1] if counts else (target if kind == "count" else 0)
    if kind == "count":
        last = max(last, target)
    return last


def test_sigkill_recovery(tmp_path):
    rng = random.Random(1234)
    plan = [("time", t) for t in (0.0, 0.03, 0.12, 0.25, 0.4)]  # early: import, creation
    plan += [("time", rng.uniform(0.3, 0.8)) for _ in range(3)]
    plan += [("count", (k, rng.uniform(0, 0.004))) for k in (1, 2, 3, 5, 8, 13, 21, 30)]
    results = []
    for j, when in enumerate(plan):
        path = tmp_path / f"kill{j:02d}.h5"
        side = (64, 256)[j % 2]
        last = _run_and_kill(path, side, False, when)
        if not path.exists():
            assert last == 0, "frames were reported committed but the file is missing"
            results.append((when[0], last, None))
            continue
        with open_session(path) as s:
            # a torn index write can take one committed frame (see captures.store); it is
            # then listed as damaged, never read back wrong
            assert len(s.damaged) <= 1, s.damaged
            assert last <= len(s) + len(s.damaged) and len(s) <= last + 1, (when, last, len(s))
            assert not s.complete
            check_frames(s)
            results.append((when[0], last, len(s)))
    # kills in a chain of resumed writers on one file
    chain = tmp_path / "chain.h5"
    total = 0
    for k in range(4):
        last = _run_and_kill(chain, 128, chain.exists(), ("count", (total + 3 + 2 * k,
                                                                    rng.uniform(0, 0.004))))
        with open_session(chain) as s:
            assert len(s.damaged) <= 1, s.damaged
            assert last <= len(s) + len(s.damaged) and len(s) <= last + 1
            check_frames(s)
            total = len(s)
        results.append(("chain", last, total))
    with CaptureWriter(chain, {}, privacy_only=False, resume=True) as w:
        w.append(paired_frame(total, 128))
    with open_session(chain) as s:
        assert len(s) == total + 1 and s.complete and len(s.resumes) == 4
        check_frames(s)
        assert not s.damaged
    kills = len(results)
    opened = sum(r[2] is not None for r in results)
    print(f"\n{kills} kills, {opened} files reopened, frames recovered "
          f"{[r[2] for r in results]} (committed counts printed {[r[1] for r in results]})")
    assert kills >= 12 and opened >= 10


# ----------------------------------------------------------------------------- listing, export

def test_list_and_export(tmp_path):
    with CaptureWriter(tmp_path / "a.h5", {}, privacy_only=False) as w:
        for i in range(3):
            w.append(paired_frame(i, 16))
    w = CaptureWriter(tmp_path / "sub" / "b.h5", {}, privacy_only=True)
    w.append(paired_frame(0, 16))
    w._f.close()  # not closed cleanly: incomplete
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    rows = list_sessions(tmp_path)
    assert [r["name"] for r in rows] == ["a", "b"]
    assert rows[0]["frames"] == 3 and rows[0]["complete"] and not rows[0]["privacy_only"]
    assert rows[1]["frames"] == 1 and not rows[1]["complete"] and rows[1]["privacy_only"]
    assert rows[0]["size_bytes"] > 0 and rows[0]["start_time"].startswith("20")

    index = export_frames(tmp_path / "a.h5", tmp_path / "out", branch="reference",
                          frames=slice(1, 3))
    assert [r["frame"] for r in index["frames"]] == [1, 2]
    img = np.asarray(Image.open(tmp_path / "out" / "reference-000002.png"))
    np.testing.assert_array_equal(img, 255 - frame_image(2, 16))
    saved = json.loads((tmp_path / "out" / "index.json").read_text())
    assert saved["frames"][0]["trigger_time_s"] == 101.0
    with pytest.raises(ValueError, match="out of range"):
        export_frames(tmp_path / "a.h5", tmp_path / "out2", frames=[5])
    with pytest.raises(ValueError, match="privacy-only"):
        export_frames(tmp_path / "sub" / "b.h5", tmp_path / "out3", branch="reference")


# ----------------------------------------------------------------------------- dataset

#: A known registration: reference pixels -> privacy pixels (scale, rotation, shift, a
#: little perspective), in privlens' pixel frame.
def _known_homography() -> np.ndarray:
    a, s = np.deg2rad(5.0), 0.9
    h = np.array([[s * np.cos(a), -s * np.sin(a), 20.0],
                  [s * np.sin(a), s * np.cos(a), -6.0],
                  [2e-5, -1e-5, 1.0]])
    return h


def _face_images(n: int) -> list[np.ndarray]:
    from deid.faces.corpus import corpus_dir

    root = corpus_dir()
    if (root / "manifest.json").is_file():
        records = json.loads((root / "manifest.json").read_text())
        return [np.asarray(Image.open(root / r["file"]).convert("RGB"))
                for r in records[:n]]
    from skimage.data import astronaut

    face = np.asarray(Image.fromarray(astronaut()[0:300, 90:390]).resize((256, 256)))
    return [np.roll(face, 3 * k, axis=1) for k in range(n)]


@pytest.fixture(scope="module")
def paired_session(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("paired")
    h = _known_homography()
    faces = _face_images(8)
    path = root / "paired.h5"
    rng = np.random.default_rng(5)
    with CaptureWriter(path, {"rig": "synthetic"}, privacy_only=False) as w:
        for i in range(10):
            ref = np.full((360, 400, 3), 110, np.uint8)
            if i < 8:  # the last two frames have no face
                y, x = rng.integers(10, 90), rng.integers(10, 130)
                ref[y:y + 256, x:x + 256] = faces[i]
            priv = cv2.warpPerspective(ref, to_opencv_frame(h), (380, 340),
                                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            priv = cv2.GaussianBlur(priv, (0, 0), 2.0)
            w.append(PairedFrame(Frame(priv, "P", i, i), Frame(ref, "R", i, i), 0.0))
    cal = root / "calibration.h5"
    with h5py.File(cal, "w") as f:
        f["registration/homography"] = h
    return path, cal, h


def _corr(a, b) -> float:
    a = np.asarray(a, float).ravel()
    b = np.asarray(b, float).ravel()
    return float(np.corrcoef(a - a.mean(), b - b.mean())[0, 1])


def test_paired_dataset_alignment_and_split(paired_session, tmp_path):
    import cv2

    path, cal, h = paired_session
    h_loaded = load_homography(cal)
    np.testing.assert_array_equal(h_loaded, h)
    s1 = build_paired_dataset([path], h_loaded, tmp_path / "d1", size=64, split=(0.75, 0.25),
                              seed=3)
    assert s1["frames"] == 10 and s1["frames_without_face"] == 2
    assert s1["pairs"] == s1["faces"] == 8 and s1["splits"] == {"train": 6, "test": 2}
    man = json.loads((tmp_path / "d1" / "manifest.json").read_text())
    assert len(man["records"]) == 8
    corr_ok, corr_wrong = [], []
    for r in man["records"]:
        priv = np.asarray(Image.open(tmp_path / "d1" / r["privacy"]))
        ref = np.asarray(Image.open(tmp_path / "d1" / r["reference"]))
        assert priv.shape == ref.shape == (64, 64, 3)
        blurred = cv2.GaussianBlur(ref, (0, 0), 2.0 * 0.9 * 64 / (r["crop_box"][2] -
                                                                r["crop_box"][0]))
        corr_ok.append(_corr(priv, blurred))
    # control: the same crops taken with the wrong (identity) registration do not align
    wrong = build_paired_dataset([path], np.eye(3), tmp_path / "d0", size=64,
                                 split=(0.75, 0.25), seed=3)
    assert wrong["pairs"] == 8
    for r in json.loads((tmp_path / "d0" / "manifest.json").read_text())["records"]:
        priv = np.asarray(Image.open(tmp_path / "d0" / r["privacy"]))
        ref = np.asarray(Image.open(tmp_path / "d0" / r["reference"]))
        corr_wrong.append(_corr(priv, ref))
    print(f"\ncorrelation aligned {np.round(corr_ok, 3)}, identity {np.round(corr_wrong, 3)}")
    assert min(corr_ok) > 0.95
    assert np.mean(corr_wrong) < np.mean(corr_ok) - 0.1

    # the face box's centre lands where the homography sends it
    r = man["records"][0]
    x0, y0, x1, y1 = r["crop_box"]
    centre = warp_points(h, [[(x0 + x1) / 2, (y0 + y1) / 2]])[0]
    quad = np.array(r["privacy_quad"])
    np.testing.assert_allclose(quad.mean(0), centre, atol=2.0)

    # reproducible from the seed; another seed draws another split
    s2 = build_paired_dataset([path], h, tmp_path / "d2", size=64, split=(0.75, 0.25), seed=3)
    man2 = json.loads((tmp_path / "d2" / "manifest.json").read_text())
    key = [(r["frame"], r["split"], r["index"]) for r in man["records"]]
    assert key == [(r["frame"], r["split"], r["index"]) for r in man2["records"]]
    for r in man["records"]:
        assert (tmp_path / "d1" / r["privacy"]).read_bytes() == \
            (tmp_path / "d2" / r["privacy"]).read_bytes()
    assert s2["splits"] == s1["splits"]
    s3 = build_paired_dataset([path], h, tmp_path / "d3", size=32, split=(5, 2), seed=4)
    man3 = json.loads((tmp_path / "d3" / "manifest.json").read_text())
    assert s3["splits"] == {"train": 5, "test": 2} and s3["unused_faces"] == 1
    assert sorted(r["frame"] for r in man3["records"] if r["split"] == "test") != \
        sorted(r["frame"] for r in man["records"] if r["split"] == "test")
    assert len(list((tmp_path / "d3" / "train" / "privacy").glob("*.png"))) == 5
    assert Image.open(tmp_path / "d3" / "test" / "reference" / "000001.png").size == (32, 32)
    with pytest.raises(FileExistsError):
        build_paired_dataset([path], h, tmp_path / "d3", split=(5, 2))
    with pytest.raises(ValueError, match="only 8"):
        build_paired_dataset([path], h, tmp_path / "d4", split=(3000, 700))


def test_split_parsing():
    assert parse_split("0.8,0.2") == ("fraction", (0.8, 0.2))
    assert parse_split((3000, 700)) == ("count", (3000.0, 700.0))
    assert split_counts((0.8, 0.2), 11) == {"train": 9, "test": 2}
    assert split_counts((0.7, 0.1, 0.2), 10) == {"train": 7, "val": 1, "test": 2}
    for bad in ("0.9,0.5", "10.5,2", "a,b", (), (-1, 2)):
        with pytest.raises(ValueError):
            parse_split(bad)


def test_load_homography_errors(tmp_path):
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["registration/homography"] = np.zeros((3, 3))
        f["other"] = 1
    with pytest.raises(ValueError, match="singular"):
        load_homography(tmp_path / "c.h5")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="registration/homography"):
        load_homography(tmp_path / "d.h5")


# ----------------------------------------------------------------------------- CLI

def _rig(argv) -> int:
    from hardware.cli.capture import register
    from optics.kit.cli import build_parser, run_cli

    parser, sub = build_parser("rig", "test")
    register(sub)
    return run_cli(parser, [str(a) for a in argv])


def test_cli(paired_session, tmp_path, capsys):
    path, cal, _ = paired_session
    assert _rig(["sessions", path.parent]) == 0
    out = capsys.readouterr().out
    assert "paired" in out and "privacy+reference" in out and "10" in out

    assert _rig(["export", path, "--out", tmp_path / "exp", "--frames", "0:10:4"]) == 0
    assert "exported 3 privacy frame(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == [
        "index.json", "privacy-000000.png", "privacy-000004.png", "privacy-000008.png"]

    assert _rig(["dataset", path, "--calibration", cal, "--out", tmp_path / "ds",
                 "--size", "48", "--split", "5,3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "8 pairs (train 5, test 3)" in out and "2 frame(s) without a face" in out

    # user errors: one line on stderr, exit status 2
    assert _rig(["export", path, "--out", tmp_path / "e", "--frames", "x:y"]) == 2
    assert _rig(["dataset", path, "--calibration", tmp_path / "missing.h5",
                 "--out", tmp_path / "ds2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "rig: error: bad frame selection" in err
    assert _rig(["sessions", tmp_path / "nowhere"]) == 2
    with pytest.raises(SystemExit):
        _rig(["dataset", path, "--calibration", cal, "--out", tmp_path / "x", "--split",
              "0.9,0.5"])


def _child_holding(path: Path, src: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-c", CHILD_SRC.split("\npath, side")[0] + src,
                          str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, cwd=REPO, text=True)
    line = p.stdout.readline()
    assert line.strip() == "ready", p.stderr.read()
    return p


def _kill(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    p.stdout.close()
    p.stderr.close()


def test_reader_fallbacks(tmp_path):
    """A session locked by a live writer, and one left marked open by a killed SWMR writer,
    both open for reading."""
    path = tmp_path / "live.h5"
    p = _child_holding(path, """
import time
w = CaptureWriter(sys.argv[1], {}, privacy_only=False)
for i in range(3):
    w.append(paired_frame(i, 16))
print("ready", flush=True)
time.sleep(60)
""")
    try:
        with open_session(path) as s:
            assert len(s) == 3 and s.open_mode in ("plain", "unlocked")
            check_frames(s)
    finally:
        _kill(p)

    path = tmp_path / "swmr.h5"
    p = _child_holding(path, """
import time, h5py
plain = sys.argv[1] + ".plain"
with CaptureWriter(plain, {}, privacy_only=True) as w:
    for i in range(2):
        w.append(paired_frame(i, 16))
f = h5py.File(sys.argv[1], "w", libver="latest")  # the same session, SWMR-capable
with h5py.File(plain, "r") as src:
    for name in src:
        src.copy(src[name], f, name=name)
    f.attrs.update(src.attrs)
f.swmr_mode = True
f.flush()
print("ready", flush=True)
time.sleep(60)
""")
    _kill(p)
    with pytest.raises(OSError):
        h5py.File(path, "r").close()
    with open_session(path) as s:
        assert len(s) == 2 and s.open_mode == "swmr" and s.complete
        check_frames(s)


@pytest.mark.skipif(not os.environ.get("PRIVLENS_STRESS"),
                    reason="stress run: set PRIVLENS_STRESS=N (chains of 4 kills each)")
def test_sigkill_stress(tmp_path):
    """``PRIVLENS_STRESS=400 pytest tests/test_captures.py -k stress -s``: N chains of four
    killed and resumed writers on one file; counts frames read back wrong (must be none) and
    frames reported damaged (a torn index write; see captures.store)."""
    rng = random.Random(int(os.environ.get("PRIVLENS_STRESS_SEED", "5")))
    chains, damaged = int(os.environ["PRIVLENS_STRESS"]), 0
    for c in range(chains):
        path = tmp_path / f"chain{c}.h5"
        total = 0
        for k in range(4):
            last = _run_and_kill(path, 128, path.exists(),
                                 ("count", (total + 3 + 2 * k, rng.uniform(0, 0.004))))
            with open_session(path) as s:
                damaged += len(s.damaged)
                assert last <= len(s) + len(s.damaged) and len(s) <= last + 1
                check_frames(s)
                total = len(s)
        path.unlink()
    print(f"\n{chains} chains ({4 * chains} kills): 0 frames read wrong, {damaged} reported "
          f"damaged")
