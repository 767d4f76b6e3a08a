"""Export frames of a capture session as PNG files plus an index (``index.json``).

The reference branch holds identifiable images; it is exported only when asked for, and a
privacy-only session has none to export.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from captures.store import BRANCHES, open_session, to_json

__all__ = ["export_frames", "frame_indices", "parse_frames"]

log = logging.getLogger(__name__)


def parse_frames(text: str | None):
    """``"0:10"``, ``"::5"`` -> slice; ``"3"`` or ``"1,4,7"`` -> list of ints; None -> None."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [int(p) if p.strip() else None for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError
            return slice(*parts)
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"bad frame selection {text!r}: use START:STOP[:STEP] or "
                         f"I,J,K") from None


def frame_indices(frames, n: int) -> list[int]:
    """The frame indices chosen by ``frames`` (None: all; a slice; ints, negative from the
    end) in a session of ``n`` frames; out-of-range indices are refused."""
    if frames is None:
        return list(range(n))
    if isinstance(frames, str):
        frames = parse_frames(frames)
    if isinstance(frames, slice):
        return list(range(*frames.indices(n)))
    if isinstance(frames, int):
        frames = [frames]
    out = []
    for i in frames:
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise ValueError(f"frame {i} out of range: the session has {n} frames")
        out.append(j)
    return out


def export_frames(session_path, out_dir, branch: str = "privacy", frames=None) -> dict:
    """Write the chosen frames of ``branch`` as ``out_dir/{branch}-NNNNNN.png`` (NNNNNN the
    frame index) and ``out_dir/index.json``; returns the index (session, branch, metadata,
    one record per frame with its file, times in seconds and info)."""
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {', '.join(BRANCHES)}, got {branch!r}")
    out = Path(out_dir)
    with open_session(session_path) as s:
        stack = s.images(branch)
        idx = frame_indices(frames, len(s))
        out.mkdir(parents=True, exist_ok=True)
        times = s.times
        records = []
        for i in idx:
            name = f"{branch}-{i:06d}.png"
            Image.fromarray(stack[i]).save(out / name)
            info = s.frame_info(i)
            records.append({
                "frame": i, "file": name,
                "trigger_time_s": float(times[f"{branch}_trigger_time_s"][i]),
                "arrival_time_s": float(times[f"{branch}_arrival_time_s"][i]),
                "skew_s": float(times["skew_s"][i]),
                "camera": info.get(branch, {}).get("camera"),
                "info": info,
            })
        index = {"session": str(Path(session_path).resolve()), "branch": branch,
                 "session_frames": len(s), "complete": s.complete,
                 "metadata": s.metadata, "frames": records}
    (out / "index.json").write_text(to_json(index, indent=1))
    log.info("exported %d %s frame(s) of %s to %s", len(records), branch, session_path, out)
    return index
