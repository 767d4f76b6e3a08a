"""``rig capture | sessions | export | dataset``: record frame pairs, and use recorded ones.

``register(sub)`` adds them to an argparse sub-command collection (built by
:func:`optics.kit.cli.build_parser`); each command is a thin ``cmd_*(args)`` that calls the
library and prints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from calibration.homography import load_homography
from captures.dataset import build_paired_dataset, parse_split
from captures.export import export_frames, parse_frames
from captures.record import mirror_metadata, record_session
from captures.store import list_sessions
from hardware.cli.common import add_mirror_source, add_rig_args, mirror_amplitudes, open_rig
from optics.kit.cli import add_common
from optics.kit.config import to_dict
from optics.kit.paths import confined_path

__all__ = ["register", "cmd_capture", "cmd_sessions", "cmd_export", "cmd_dataset",
           "format_sessions"]


def cmd_capture(args) -> int:
    if args.with_reference and args.privacy_only:
        raise ValueError("--with-reference and --privacy-only exclude each other")
    args.privacy_only = not args.with_reference  # identifiable frames only when asked for
    path = confined_path(Path(args.out), args.session, ".h5", what="session")
    amps, cal, source = mirror_amplitudes(args)
    with open_rig(args) as rig:
        rig.mirror.set_zernike(amps, clip=args.clip)
        rig.show(args.scene)
        meta = {"session": args.session, "scene": args.scene, "mirror_source": source,
                "rig_config": to_dict(rig.config),
                "mirror": mirror_metadata(rig, cal, args.device_file),
                "simulated": rig.simulated, "privacy_only": args.privacy_only}
        if args.calibration:
            meta["calibration_file"] = str(args.calibration)
        stats = record_session(rig, path, args.frames, privacy_only=args.privacy_only,
                               metadata=meta, interval_s=args.interval_s, resume=args.resume,
                               progress=not args.no_progress)
        rig.mirror.relax()
    print(f"{stats.path}: {stats.frames} pair(s) in {stats.seconds:.1f} s "
          f"({stats.rate_hz:.2f} pairs/s), max trigger skew {stats.max_abs_skew_s * 1e3:.2f} ms"
          f"{'; reference branch not written' if args.privacy_only else ''}")
    if args.json:
        print(json.dumps({"path": str(stats.path), "frames": stats.frames,
                          "seconds": stats.seconds, "rate_hz": stats.rate_hz,
                          "max_abs_skew_s": stats.max_abs_skew_s}))
    return 0


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
    """Add ``capture``, ``sessions``, ``export`` and ``dataset`` to ``sub``."""
    p = add_rig_args(sub.add_parser(
        "capture", help="record synchronised frame pairs to HDF5",
        description="Records --frames pairs into OUT/SESSION.h5, each frame flushed as it "
                    "arrives (a killed capture keeps every completed frame). Only the privacy "
                    "branch is written unless --with-reference asks for the reference "
                    "(identifiable) frames, which `rig dataset` pairs with it.",
        epilog="examples:\n  rig capture --sim --session s1 --frames 20 --out runs/captures\n"
               "  rig capture --sim --session pairs --frames 20 --out runs/captures "
               "--with-reference", formatter_class=argparse.RawDescriptionHelpFormatter))
    p.add_argument("--session", required=True, metavar="NAME")
    p.add_argument("--frames", type=int, required=True, metavar="N")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--with-reference", action="store_true",
                   help="also write the ground-truth (identifiable) branch, e.g. for a paired "
                        "dataset (default: privacy frames only)")
    p.add_argument("--privacy-only", action="store_true",
                   help="write the privacy branch only (the default; kept for scripts)")
    p.add_argument("--scene", default="faces",
                   help="simulation scene: faces, checkerboard, pinhole, dark, folder:PATH")
    p.add_argument("--interval-s", type=float, default=0.0, help="pause between pairs")
    p.add_argument("--resume", action="store_true", help="append to an existing session")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="also print the stats as JSON")
    add_mirror_source(p)
    p.set_defaults(func=cmd_capture)

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
