"""Capture-session commands for the ``rig`` tool: ``sessions``, ``export``, ``dataset``.

``register(sub)`` adds them to an argparse sub-command collection (built by
:func:`optics.clikit.build_parser`); each command is a thin ``cmd_*(args)`` that calls the
library and prints.
"""

from __future__ import annotations

import argparse

from optics.clikit import add_common

from .dataset import build_paired_dataset, load_homography, parse_split
from .export import export_frames, parse_frames
from .store import list_sessions

__all__ = ["register", "cmd_sessions", "cmd_export", "cmd_dataset", "format_sessions"]


def _size(n_bytes) -> str:
    if n_bytes is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return ""


def format_sessions(rows: list[dict]) -> list[str]:
    """The session table, one line per session (and a header)."""
    head = ("name", "frames", "complete", "branches", "start (UTC)", "size")
    lines = [head]
    for r in rows:
        if r.get("error"):
            lines.append((r["name"], "?", "no", "?", "unreadable: " + r["error"][:60],
                          _size(r["size_bytes"])))
            continue
        lines.append((r["name"], str(r["frames"]), "yes" if r["complete"] else "no",
                      "privacy" if r["privacy_only"] else "privacy+reference",
                      (r["start_time"] or "-").replace("+00:00", ""), _size(r["size_bytes"])))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in lines]


def cmd_sessions(args) -> int:
    rows = list_sessions(args.dir)
    if not rows:
        print(f"no capture sessions in {args.dir}")
        return 0
    for line in format_sessions(rows):
        print(line)
    return 0


def cmd_export(args) -> int:
    index = export_frames(args.session, args.out, branch=args.branch,
                          frames=parse_frames(args.frames))
    print(f"exported {len(index['frames'])} {args.branch} frame(s) of {args.session} "
          f"to {args.out} (index.json)")
    return 0


def _split_arg(text: str):
    try:
        parse_split(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def cmd_dataset(args) -> int:
    h = load_homography(args.calibration)
    s = build_paired_dataset(args.sessions, h, args.out, size=args.size, margin=args.margin,
                             split=args.split, seed=args.seed, overwrite=args.overwrite)
    splits = ", ".join(f"{k} {v}" for k, v in s["splits"].items())
    print(f"paired dataset in {s['out_dir']}: {s['pairs']} pairs ({splits}) from "
          f"{s['frames']} frames; {s['frames_without_face']} frame(s) without a face skipped")
    if s["unused_faces"]:
        print(f"{s['unused_faces']} face(s) left out by the split counts")
    return 0


def _offline(p):
    """These commands read files only; ``--sim`` is accepted so every ``rig`` command takes it."""
    add_common(p)
    p.add_argument("--sim", action="store_true", help="accepted for uniformity (no devices "
                                                      "are used by this command)")
    return p


def register(sub) -> None:
    """Add ``sessions``, ``export`` and ``dataset`` to the sub-command collection ``sub``."""
    p = _offline(sub.add_parser("sessions", help="list the capture sessions in a folder"))
    p.add_argument("dir", metavar="DIR", help="folder of session files (searched recursively)")
    p.set_defaults(func=cmd_sessions)

    p = _offline(sub.add_parser("export", help="write frames of a session as PNG files"))
    p.add_argument("session", metavar="SESSION", help="capture session file (.h5)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--branch", choices=("privacy", "reference"), default="privacy",
                   help="which camera (default privacy; reference images are identifiable)")
    p.add_argument("--frames", default=None, metavar="SEL",
                   help="START:STOP[:STEP] or I,J,K (default: all)")
    p.set_defaults(func=cmd_export)

    p = _offline(sub.add_parser(
        "dataset", help="build the paired (privacy, reference) face-crop dataset"))
    p.add_argument("sessions", nargs="+", metavar="SESSION", help="capture session files")
    p.add_argument("--calibration", required=True, metavar="FILE",
                   help="calibration HDF5 holding registration/homography")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--size", type=int, default=128, help="crop side, pixels (default 128)")
    p.add_argument("--margin", type=float, default=0.3,
                   help="margin on each side of the face box, fraction of its side (0.3)")
    p.add_argument("--split", type=_split_arg, default="0.8,0.2",
                   help="fractions (0.8,0.2) or counts (3000,700); 2 parts train/test, "
                        "3 train/val/test")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_dataset)
