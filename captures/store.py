"""Capture sessions in HDF5: one file per session, written frame by frame, readable after a crash.

Layout of a session file (``N`` frames; every per-frame dataset is chunked and resizable along
its first axis)::

    /                           attrs: format, format_version, privacy_only, complete,
                                       frames_committed, metadata (JSON), start_time_s,
                                       end_time_s, resumes (JSON list)
    /privacy/images             (N, H, W, 3) uint8, one chunk per frame
    /privacy/trigger_time_s     (N,) float64, host time.time() seconds
    /privacy/arrival_time_s     (N,) float64
    /reference/...              same three, ONLY when the session is not privacy-only
    /frames/skew_s              (N,) float64, reference - privacy trigger time
    /frames/crc32               (N, B) uint32: CRC-32 of each branch's image bytes (privacy,
                                then reference), checked whenever an image is read
    /frames/info_span           (N, 2) int64: [start, stop) of frame i's JSON record in
    /frames/info_json           (bytes,) uint8: the UTF-8 JSON records (cameras, file names,
                                settings, extra), one after another
    /mirror/voltages_v          (N, n_segments) float64, NaN where not given (if ever given)
    /mirror/amplitudes          (N, 12) float64 device units, NaN where not given (if ever given)

Crash safety (see ``hardware-facts.md``, "Crash-safe HDF5"): the writer uses plain (non-SWMR)
HDF5. :meth:`CaptureWriter.append` grows and fills every per-frame dataset first and flushes,
then sets the ``frames_committed`` attribute and flushes again (HDF5 orders nothing within one
flush). A reader trusts ``min(frames_committed, dataset lengths)`` frames whose last rows read
back, so a frame half-written when the process died is ignored. Resuming a session that was
not closed cleanly first copies its valid frames into a fresh file (renamed into place), so
nothing is appended to structures a killed writer left half-written. A new file is
built under a temporary name and renamed into place, so a kill during creation leaves either no
session or a valid empty one.

Nothing per-frame is a variable-length HDF5 type: those live in the file's global heap, and
when this module was tested with variable-length JSON strings, a writer resumed after a SIGKILL
failed at its next string write ("bad heap index"). JSON attributes are fixed-length byte strings
(stored in the object header) for the same reason. Privacy-only sessions never create a
reference dataset: no identifiable pixel reaches the disk.

A SIGKILL can also tear a metadata write (Linux stops a write between pages on a fatal signal):
in 1 of about 330 killed-and-resumed test sessions the chunk index entry of the last committed
frame was overwritten by the half-written entry of the next one. The per-frame CRC turns such
damage into an error instead of wrong pixels: a reader of a session not closed cleanly drops a
damaged last frame and lists damaged frames among the last ``TAIL_CHECK`` in ``damaged``; reading
any damaged frame raises :class:`DamagedFrameError`.

Readers open plainly, then as a SWMR reader (files a SWMR writer left marked open), then
without HDF5 file locking (a session still being written by another process).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import time
import zlib
from pathlib import Path

import h5py
import numpy as np

__all__ = ["FORMAT", "FORMAT_VERSION", "CaptureWriter", "CaptureSession", "FrameStack",
           "DamagedFrameError", "open_session", "list_sessions", "to_json"]

log = logging.getLogger(__name__)

FORMAT = "privlens.capture"
FORMAT_VERSION = 1
BRANCHES = ("privacy", "reference")
COUNTER = "frames_committed"
TABLE_CHUNK = 256  # rows per chunk of the small per-frame tables
BLOB_CHUNK = 1 << 16  # bytes per chunk of the per-frame JSON records
TAIL_CHECK = 64  # frames whose CRC a reader checks on opening a session not closed cleanly


class DamagedFrameError(ValueError):
    """A frame's image bytes do not match the CRC written with them."""


def _crc(image: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(image).tobytes()) & 0xFFFFFFFF
MAX_ATTR_BYTES = 60_000  # HDF5 keeps attributes in the object header (64 kB limit)


def _privlens_version() -> str:
    try:
        from importlib.metadata import version

        return version("privlens")
    except Exception:  # noqa: BLE001 - not installed (source checkout)
        return "unknown"


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    return repr(o)


def to_json(obj, indent: int | None = None) -> str:
    """JSON text of ``obj``; numpy values, paths and dataclasses are converted."""
    return json.dumps(obj, default=_json_default, sort_keys=True, indent=indent)


def _attr_json(obj) -> np.bytes_:
    """JSON as a fixed-length byte string attribute (no global heap)."""
    raw = to_json(obj).encode()
    if len(raw) > MAX_ATTR_BYTES:
        raise ValueError(f"session metadata is {len(raw)} bytes of JSON, over "
                         f"{MAX_ATTR_BYTES}: store large items (calibration arrays) in their "
                         f"own files and reference them by path and hash")
    return np.bytes_(raw)


def _iso(t_s: float) -> str:
    return _dt.datetime.fromtimestamp(t_s, tz=_dt.timezone.utc).isoformat(timespec="seconds")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CaptureWriter:
    """Writes one capture session to ``path`` (HDF5), one :class:`PairedFrame` at a time.

    ``metadata``: session facts (rig config, camera settings, calibration in force, ...),
    stored as JSON with ``start_time_s`` and ``privlens_version`` added. ``privacy_only``:
    reference frames are dropped before anything is written. ``frame_shape``: the privacy
    image shape, e.g. ``(H, W, 3)``; by default the first frame's (the reference shape always
    comes from the first reference frame).

    An existing ``path`` is refused unless ``resume=True``; then frames are appended after the
    committed ones (a half-written frame of a crashed writer is discarded). ``fsync=True``
    also forces every frame to the disk (survives power loss, costs latency).
    """

    def __init__(self, path, metadata: dict | None = None, privacy_only: bool = True,
                 frame_shape=None, *, resume: bool = False, fsync: bool = False):
        self.path = Path(path)
        self.privacy_only = bool(privacy_only)
        self.fsync = bool(fsync)
        self._dropped_reference = False
        if self.path.exists():
            if not resume:
                raise FileExistsError(f"capture session exists (resume it, or choose another "
                                      f"name): {self.path}")
            self._rebuild_if_unclean()
            self._f = h5py.File(self.path, "r+")
            self._resume(metadata or {})
        else:
            self._create(metadata or {}, frame_shape)
            self._f = h5py.File(self.path, "r+")
        self.n_frames = int(self._f.attrs[COUNTER])
        if frame_shape is not None and "privacy/images" in self._f:
            have = self._f["privacy/images"].shape[1:]
            if tuple(have) != tuple(frame_shape):
                self._f.close()
                raise ValueError(f"frame_shape {tuple(frame_shape)} does not match the "
                                 f"session's privacy images {tuple(have)}")

    # ------------------------------------------------------------------ creation / resume

    def _create(self, metadata: dict, frame_shape) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        t0 = time.time()
        meta = dict(metadata)
        meta.setdefault("start_time_s", t0)
        meta.setdefault("start_time", _iso(t0))
        meta.setdefault("privlens_version", _privlens_version())
        meta.setdefault("h5py_version", h5py.version.version)
        meta.setdefault("hdf5_version", h5py.version.hdf5_version)
        with h5py.File(tmp, "w") as f:
            a = f.attrs
            a["format"] = FORMAT
            a["format_version"] = FORMAT_VERSION
            a["privacy_only"] = self.privacy_only
            a["complete"] = False
            a[COUNTER] = np.int64(0)
            a["start_time_s"] = float(meta["start_time_s"])
            a["end_time_s"] = np.nan
            a["metadata"] = _attr_json(meta)
            a["resumes"] = _attr_json([])
            branches = ("privacy",) if self.privacy_only else BRANCHES
            for b in branches:
                g = f.create_group(b)
                for name in ("trigger_time_s", "arrival_time_s"):
                    _table(g, name, np.float64)
            g = f.create_group("frames")
            _table(g, "skew_s", np.float64)
            g.create_dataset("crc32", shape=(0, len(branches)), maxshape=(None, len(branches)),
                             dtype=np.uint32, chunks=(TABLE_CHUNK, len(branches)))
            g.create_dataset("info_span", shape=(0, 2), maxshape=(None, 2), dtype=np.int64,
                             chunks=(TABLE_CHUNK, 2))
            g.create_dataset("info_json", shape=(0,), maxshape=(None,), dtype=np.uint8,
                             chunks=(BLOB_CHUNK,))
            if frame_shape is not None:
                _image_dataset(f["privacy"], tuple(int(s) for s in frame_shape))
        os.replace(tmp, self.path)
        if self.fsync:
            _fsync(self.path)
        log.info("new capture session %s (privacy_only=%s)", self.path, self.privacy_only)

    def _rebuild_if_unclean(self) -> None:
        """A session not closed cleanly is copied, its valid frames only, into a fresh file
        renamed into place before anything is appended. A killed writer can leave HDF5
        structures past its last commit half-written (chunk indexes, the end of allocation);
        a writer that appended to them in place lost a committed frame in 1 of about 300
        killed-and-resumed test sessions (its chunk missing from the index, read as zeros).
        Costs one read and write of the session."""
        with open_session(self.path) as s:
            if s.complete:
                return
            src, n = s._f, len(s)
            tmp = self.path.with_name(f".{self.path.name}.resume-{os.getpid()}")
            try:
                with h5py.File(tmp, "w") as dst:
                    for k, v in src.attrs.items():
                        dst.attrs[k] = v
                    dst.attrs[COUNTER] = np.int64(n)
                    spans = src["frames/info_span"]
                    end = int(spans[n - 1, 1]) if n else 0
                    for ds in [*_frame_datasets(src), src["frames/info_json"]]:
                        rows = end if ds.name == "/frames/info_json" else n
                        if ds.shape[0] != rows:
                            log.warning("%s: discarding %d uncommitted row(s) of %s",
                                        self.path, ds.shape[0] - rows, ds.name)
                        out = dst.require_group(ds.parent.name).create_dataset(
                            ds.name.rsplit("/", 1)[1], shape=(rows, *ds.shape[1:]),
                            maxshape=ds.maxshape, chunks=ds.chunks, dtype=ds.dtype,
                            fillvalue=ds.fillvalue)
                        step = max(1, (1 << 26) // max(1, ds.dtype.itemsize
                                                       * int(np.prod(ds.shape[1:]))))
                        for a in range(0, rows, step):
                            out[a:a + step] = ds[a:min(rows, a + step)]
                    for b in BRANCHES:  # a branch group may exist before its first dataset
                        if b in src:
                            dst.require_group(b)
                os.replace(tmp, self.path)
            finally:
                tmp.unlink(missing_ok=True)
        if self.fsync:
            _fsync(self.path)
        log.info("resume: rebuilt %s from its %d valid frame(s)", self.path, n)

    def _resume(self, metadata: dict) -> None:
        f = self._f
        if f.attrs.get("format") != FORMAT:
            f.close()
            raise ValueError(f"not a privlens capture session: {self.path}")
        have = bool(f.attrs["privacy_only"])
        if have != self.privacy_only:
            f.close()
            raise ValueError(f"session {self.path} has privacy_only={have}; cannot resume "
                             f"it with privacy_only={self.privacy_only}")
        n = int(f.attrs[COUNTER])
        for ds in _frame_datasets(f):
            if ds.shape[0] != n:
                log.warning("%s: discarding %d uncommitted row(s) of %s", self.path,
                            ds.shape[0] - n, ds.name)
                ds.resize(n, axis=0)
        blob = f["frames/info_json"]
        end = int(f["frames/info_span"][n - 1, 1]) if n else 0
        if blob.shape[0] != end:
            blob.resize(end, axis=0)
        resumes = json.loads(f.attrs["resumes"])
        resumes.append({"time_s": time.time(), "frames": n, "metadata": metadata})
        f.attrs["resumes"] = _attr_json(resumes)
        f.attrs["complete"] = False
        f.flush()
        log.info("resuming capture session %s at frame %d", self.path, n)

    # ------------------------------------------------------------------ writing

    def append(self, paired, mirror_voltages_v=None, mirror_amplitudes=None,
               extra: dict | None = None) -> int:
        """Write one :class:`~hardware.devices.PairedFrame` (and the mirror state it was taken
        with: segment voltages in **volts**, mode amplitudes in device units) and commit it.
        Returns the frame's index."""
        f = self._f
        if not f:
            raise ValueError(f"capture session {self.path} is closed")
        n = self.n_frames
        rows = {"privacy": paired.privacy}
        ref = paired.reference
        if ref is not None and self.privacy_only:
            if not self._dropped_reference:
                log.info("privacy-only session: reference frames are dropped, not written")
                self._dropped_reference = True
            ref = None
        if not self.privacy_only:
            if ref is None:
                raise ValueError("this session records the reference branch, but the frame "
                                 "has no reference image")
            rows["reference"] = ref
        images = {b: _checked_image(fr.image, b) for b, fr in rows.items()}
        for b, img in images.items():
            if "images" not in f[b]:
                _image_dataset(f[b], img.shape)
            if f[b]["images"].shape[1:] != img.shape:
                raise ValueError(f"{b} image shape {img.shape} differs from the session's "
                                 f"{f[b]['images'].shape[1:]}")
        mirror = {}
        if mirror_voltages_v is not None:
            mirror["voltages_v"] = np.asarray(mirror_voltages_v, np.float64).reshape(-1)
        if mirror_amplitudes is not None:
            mirror["amplitudes"] = np.asarray(mirror_amplitudes, np.float64).reshape(-1)
        for name, v in mirror.items():
            if "mirror" not in f or name not in f["mirror"]:
                g = f.require_group("mirror")
                g.create_dataset(name, shape=(n, v.size), maxshape=(None, v.size),
                                 dtype=np.float64, chunks=(TABLE_CHUNK, v.size),
                                 fillvalue=np.nan)
            if f["mirror"][name].shape[1] != v.size:
                raise ValueError(f"mirror {name}: expected {f['mirror'][name].shape[1]} "
                                 f"values, got {v.size}")

        info = {b: {"camera": fr.camera, "filename": fr.filename, "settings": fr.settings}
                for b, fr in rows.items()}
        if extra:
            info["extra"] = extra
        # 1. grow every per-frame dataset and fill row n (largest first)
        for b, fr in rows.items():
            g = f[b]
            _put(g["images"], n, images[b])
            _put(g["trigger_time_s"], n, fr.trigger_time_s)
            _put(g["arrival_time_s"], n, fr.arrival_time_s)
        _put(f["frames/skew_s"], n, paired.skew_s)
        if "frames/crc32" in f:  # sessions written before the CRC have none
            _put(f["frames/crc32"], n, [_crc(images[b]) for b in rows])
        record = np.frombuffer(to_json(info).encode(), np.uint8)
        blob = f["frames/info_json"]
        start = int(f["frames/info_span"][n - 1, 1]) if n else 0
        blob.resize(start + record.size, axis=0)
        blob[start:start + record.size] = record
        _put(f["frames/info_span"], n, (start, start + record.size))
        if "mirror" in f:
            for name, ds in f["mirror"].items():
                _put(ds, n, mirror.get(name, np.full(ds.shape[1], np.nan)))
        # 2. flush the frame (data, chunk indexes and the file's end-of-allocation), 3. only
        # then the commit mark, flushed again: HDF5 may write dirty metadata in any order
        # within one flush, so with a single flush the mark could reach the disk before the
        # frame it counts (seen as "addr overflow" when a killed session was read)
        f.flush()
        f.attrs.modify(COUNTER, np.int64(n + 1))
        f.flush()
        if self.fsync:
            _fsync(self.path)
        self.n_frames = n + 1
        return n

    def __len__(self) -> int:
        return self.n_frames

    def close(self, complete: bool = True) -> None:
        """Close the file; ``complete=True`` marks the session as finished cleanly."""
        if not getattr(self, "_f", None) or not self._f:
            return
        if complete:
            self._f.attrs["end_time_s"] = time.time()
            self._f.attrs["complete"] = True
        self._f.close()
        log.info("capture session %s closed: %d frames", self.path, self.n_frames)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # an exception mid-session leaves the committed frames, not a "complete" mark
        self.close(complete=exc_type is None)


def _table(group, name: str, dtype):
    return group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                chunks=(TABLE_CHUNK,))


def _image_dataset(group, shape: tuple):
    return group.create_dataset("images", shape=(0, *shape), maxshape=(None, *shape),
                                dtype=np.uint8, chunks=(1, *shape))


def _checked_image(image, branch: str) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"{branch} image must be uint8 (H, W[, C]), got {img.dtype} "
                         f"{img.shape}")
    return img


def _put(ds, i: int, value) -> None:
    if ds.shape[0] <= i:
        ds.resize(i + 1, axis=0)
    ds[i] = value


def _frame_datasets(f) -> list:
    out = []
    for g in (*BRANCHES, "frames", "mirror"):
        if g in f:
            out.extend(ds for name, ds in f[g].items()
                       if isinstance(ds, h5py.Dataset) and name != "info_json")
    return out


# ---------------------------------------------------------------------------- reading

def _open_read(path: Path) -> tuple[h5py.File, str]:
    """``(file, how)``: plain read, else SWMR read, else plain read without file locking."""
    try:
        return h5py.File(path, "r"), "plain"
    except FileNotFoundError:
        raise
    except OSError as e:
        first = e
    try:
        return h5py.File(path, "r", libver="latest", swmr=True), "swmr"
    except OSError:
        pass
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError:
        raise OSError(f"cannot open capture session {path}: {first}") from first
    log.warning("%s is locked (being written?); reading it without file locking", path)
    return f, "unlocked"


class FrameStack:
    """Read-only, lazy view of the valid frames of one image dataset: ``len``, indexing by
    int, slice or index list, iteration; ``np.asarray(stack)`` reads everything."""

    def __init__(self, ds, n: int, check=None):
        self._ds = ds
        self._n = int(n)
        self._check = check  # check(i, row) raises DamagedFrameError

    def _row(self, i: int):
        row = self._ds[i]
        if self._check is not None:
            self._check(i, row)
        return row

    def _rows(self, start: int, stop: int):
        block = self._ds[start:stop]
        if self._check is not None:
            for k, row in enumerate(block):
                self._check(start + k, row)
        return block

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple:
        return (self._n, *self._ds.shape[1:])

    @property
    def dtype(self):
        return self._ds.dtype

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            i = int(key) + self._n if key < 0 else int(key)
            if not 0 <= i < self._n:
                raise IndexError(f"frame {key} out of range ({self._n} frames)")
            return self._row(i)
        if isinstance(key, slice):
            idx = range(*key.indices(self._n))
            if idx.step == 1:
                return self._rows(idx.start, max(idx.start, idx.stop))
            return np.stack([self._row(i) for i in idx]) if len(idx) else \
                np.empty((0, *self._ds.shape[1:]), self._ds.dtype)
        return np.stack([self[int(i)] for i in key])

    def __iter__(self):
        for i in range(self._n):
            yield self._row(i)

    def __array__(self, dtype=None, copy=None):
        a = self._rows(0, self._n)
        return a.astype(dtype) if dtype is not None else a


class CaptureSession:
    """A capture session opened for reading (see :func:`open_session`).

    ``len(session)`` counts the valid frames: ``min(frames_committed, dataset lengths)``.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._f, self.open_mode = _open_read(self.path)
        f = self._f
        try:
            if f.attrs.get("format") != FORMAT:
                raise ValueError(f"not a privlens capture session: {self.path}")
            self.committed = int(f.attrs[COUNTER])
            self.privacy_only = bool(f.attrs["privacy_only"])
            self.complete = bool(f.attrs["complete"])
            self.metadata = json.loads(f.attrs["metadata"])
            self.resumes = json.loads(f.attrs.get("resumes", "[]"))
            self._datasets = {ds.name.lstrip("/"): ds for ds in _frame_datasets(f)}
        except Exception:
            f.close()
            raise
        lengths = [ds.shape[0] for ds in self._datasets.values()]
        self._n = min([self.committed, *lengths])
        if "privacy/images" not in self._datasets:
            self._n = 0
        blob_len = f["frames/info_json"].shape[0]
        spans = self._datasets["frames/info_span"]
        while self._n and spans[self._n - 1, 1] > blob_len:
            self._n -= 1
        self.damaged: list[int] = []  # frames whose bytes fail their CRC (checked ones)
        while self._n and not (self._readable(self._n - 1) and
                               (self.complete or self._intact(self._n - 1))):
            self._n -= 1
            self.damaged.insert(0, self._n)
        if not self.complete:
            self.damaged[:0] = [i for i in range(max(0, self._n - TAIL_CHECK), self._n)
                                if not self._intact(i)]
            if self.damaged:
                log.warning("%s: frame(s) %s fail their CRC (damaged by the crash)",
                            self.path, self.damaged)
        if self._n < self.committed:
            log.warning("%s: %d committed frame(s), but only %d fully written", self.path,
                        self.committed, self._n)

    def _readable(self, i: int) -> bool:
        """Whether every row ``i`` (and its JSON record) reads back: a frame whose data never
        fully reached the disk fails with an HDF5 error (e.g. a chunk past the end of the
        file's allocation)."""
        try:
            for ds in self._datasets.values():
                ds[i]
            start, stop = self._datasets["frames/info_span"][i]
            self._f["frames/info_json"][int(start):int(stop)]
        except (OSError, ValueError, KeyError):
            log.warning("%s: frame %d does not read back; ignored", self.path, i)
            return False
        return True

    def _image_check(self, branch: str, i: int, row) -> None:
        crc = self._datasets.get("frames/crc32")
        if crc is None:
            return
        k = BRANCHES.index(branch)
        if _crc(row) != int(crc[i][k]):
            raise DamagedFrameError(f"{self.path}: frame {i} ({branch}) is damaged (its bytes "
                                    f"fail their CRC)")

    def _intact(self, i: int) -> bool:
        try:
            for b in BRANCHES:
                if f"{b}/images" in self._datasets:
                    self._image_check(b, i, self._datasets[f"{b}/images"][i])
        except DamagedFrameError:
            return False
        return True

    def __len__(self) -> int:
        return self._n

    @property
    def start_time_s(self) -> float:
        return float(self._f.attrs["start_time_s"])

    @property
    def end_time_s(self) -> float | None:
        t = float(self._f.attrs["end_time_s"])
        return None if np.isnan(t) else t

    def _column(self, name: str):
        ds = self._datasets.get(name)
        return None if ds is None else ds[:self._n]

    @property
    def times(self) -> dict[str, np.ndarray]:
        """Per-frame times in **seconds** (host clock): ``privacy_trigger_time_s``,
        ``privacy_arrival_time_s``, ``skew_s`` and, with a reference branch, ``reference_*``."""
        out = {}
        for b in BRANCHES:
            for name in ("trigger_time_s", "arrival_time_s"):
                col = self._column(f"{b}/{name}")
                if col is not None:
                    out[f"{b}_{name}"] = col
        out["skew_s"] = self._column("frames/skew_s")
        return out

    def _check(self, i: int) -> int:
        i = int(i) + self._n if i < 0 else int(i)
        if not 0 <= i < self._n:
            raise IndexError(f"frame {i} out of range: {self.path.name} has {self._n} frames")
        return i

    def frame(self, i: int) -> dict:
        """Frame ``i``: images (``privacy``, ``reference`` or None), times in seconds,
        ``skew_s``, ``mirror_voltages_v`` and ``mirror_amplitudes`` (None if not recorded),
        ``info`` (cameras, file names, settings, extra)."""
        i = self._check(i)
        d = self._datasets
        out = {"index": i, "privacy": d["privacy/images"][i], "reference": None}
        self._image_check("privacy", i, out["privacy"])
        for b in BRANCHES:
            if f"{b}/trigger_time_s" in d:
                out[f"{b}_trigger_time_s"] = float(d[f"{b}/trigger_time_s"][i])
                out[f"{b}_arrival_time_s"] = float(d[f"{b}/arrival_time_s"][i])
        if "reference/images" in d:
            out["reference"] = d["reference/images"][i]
            self._image_check("reference", i, out["reference"])
        out["skew_s"] = float(d["frames/skew_s"][i])
        for name, key in (("voltages_v", "mirror_voltages_v"), ("amplitudes",
                                                                "mirror_amplitudes")):
            ds = d.get(f"mirror/{name}")
            row = None if ds is None else ds[i]
            out[key] = None if row is None or np.all(np.isnan(row)) else row
        out["info"] = self.frame_info(i)
        return out

    def frame_info(self, i: int) -> dict:
        """The per-frame JSON record of frame ``i``: cameras, file names, settings, extra."""
        start, stop = (int(v) for v in self._datasets["frames/info_span"][self._check(i)])
        return json.loads(self._f["frames/info_json"][start:stop].tobytes())

    def privacy_images(self) -> FrameStack:
        if "privacy/images" not in self._datasets:
            return FrameStack(np.empty((0, 0, 0, 3), np.uint8), 0)
        return FrameStack(self._datasets["privacy/images"], self._n,
                          lambda i, row: self._image_check("privacy", i, row))

    def reference_images(self) -> FrameStack:
        if self.privacy_only:
            raise ValueError(f"{self.path.name} is a privacy-only session: it holds no "
                             f"reference images")
        if "reference/images" not in self._datasets:
            return FrameStack(np.empty((0, 0, 0, 3), np.uint8), 0)
        return FrameStack(self._datasets["reference/images"], self._n,
                          lambda i, row: self._image_check("reference", i, row))

    def images(self, branch: str) -> FrameStack:
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
        return self.privacy_images() if branch == "privacy" else self.reference_images()

    def summary(self) -> dict:
        return {"name": self.path.stem, "path": str(self.path), "frames": self._n,
                "complete": self.complete, "privacy_only": self.privacy_only,
                "start_time": _iso(self.start_time_s), "start_time_s": self.start_time_s,
                "size_bytes": self.path.stat().st_size, "open_mode": self.open_mode}

    def close(self) -> None:
        if self._f:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_session(path) -> CaptureSession:
    """Open a capture session for reading (also one left by a killed writer)."""
    return CaptureSession(path)


def list_sessions(root) -> list[dict]:
    """Summaries of the capture sessions (``*.h5``, ``*.hdf5``) under ``root`` (recursive),
    sorted by start time: name, path, frames, complete, privacy_only, start_time (ISO, UTC),
    start_time_s, size_bytes. Other HDF5 files are skipped; unreadable ones are listed with
    an ``error``. Hidden files (temporary files of a session being created) are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    paths = sorted(p for ext in ("*.h5", "*.hdf5") for p in root.rglob(ext)
                   if not p.name.startswith("."))
    out = []
    for p in paths:
        try:
            with open_session(p) as s:
                out.append(s.summary())
        except ValueError as e:  # another kind of HDF5 file
            log.debug("skipping %s: %s", p, e)
        except (OSError, KeyError) as e:
            out.append({"name": p.stem, "path": str(p), "frames": None, "complete": False,
                        "privacy_only": None, "start_time": None, "start_time_s": None,
                        "size_bytes": p.stat().st_size, "error": str(e)})
    return sorted(out, key=lambda s: (s["start_time_s"] is None, s["start_time_s"] or 0,
                                      s["name"]))
