"""Recording a capture session from the rig: synchronised pairs appended to HDF5, frame by
frame, each committed and flushed before the next trigger (see :mod:`captures.store`)."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from captures.store import CaptureWriter
from optics.kit.progress import progress_bar

__all__ = ["RecordStats", "record_session"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RecordStats:
    path: Path
    frames: int  # frames written in this run
    total_frames: int  # frames in the session file
    seconds: float
    max_abs_skew_s: float
    complete: bool

    @property
    def rate_hz(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def record_session(rig, path, frames: int, privacy_only: bool = True,
                   metadata: dict | None = None, interval_s: float = 0.0,
                   resume: bool = False, progress: bool = True) -> RecordStats:
    """Capture ``frames`` pairs from ``rig`` into ``path``. Reference (identifiable) frames
    are written only when asked for (``privacy_only=False``). A device error or Ctrl-C stops
    the run; every frame already taken stays in the file, which is then marked incomplete."""
    if frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    meta = dict(metadata or {})
    meta.setdefault("camera_settings", {
        "privacy": dict(getattr(rig.cameras.privacy, "settings", {}) or {}),
        "reference": dict(getattr(rig.cameras.reference, "settings", {}) or {}),
    })
    t0 = time.time()
    max_skew = 0.0
    done = 0
    complete = False
    with CaptureWriter(path, meta, privacy_only=privacy_only, resume=resume) as writer:
        try:
            for _ in progress_bar(range(frames), desc=f"capture {Path(path).stem}", unit="pair",
                          disable=not progress):
                pair = rig.capture(privacy_only=privacy_only)
                state = rig.mirror_state()
                writer.append(pair, mirror_voltages_v=state["voltages_v"],
                              mirror_amplitudes=state["amplitudes"])
                done += 1
                max_skew = max(max_skew, abs(pair.skew_s))
                if interval_s > 0:
                    time.sleep(interval_s)
            complete = True
        finally:
            if not complete:
                log.error("capture stopped after %d frame(s); they are kept in %s", done, path)
                writer.close(complete=False)
        total = len(writer)
    return RecordStats(Path(path), done, total, time.time() - t0, float(max_skew),
                       complete)


def mirror_metadata(rig, calibration=None, device_file=None) -> dict:
    """What the mirror is doing, for the session's metadata."""
    out = {"amplitudes": np.asarray(rig.mirror.amplitudes).tolist(),
           "voltages_v": np.asarray(rig.mirror.get_voltages()).tolist()}
    if calibration is not None:
        out["calibration"] = calibration.to_dict()
    if device_file:
        out["device_file"] = str(device_file)
    return out
