"""The paired fine-tuning dataset: face crops of the reference branch and the privacy-camera
region that sees the same square of the scene.

For each frame of each session, faces are found on the REFERENCE image with dlib's HOG
detector (:class:`deid.faces.detect.FaceDetector`). Each box becomes a square crop, ``margin``
times the box's longer side added on every side. The reference crop is that square resampled
to ``size x size``; the privacy crop is the same square carried into the privacy image by the
registration homography (reference pixels -> privacy pixels, from ``rig calibrate``) and
resampled the same way, so the two crops are pixel-aligned (Hartley & Zisserman, *Multiple
View Geometry*, 2nd ed., sec. 2.3 and 4.1: a plane seen by two cameras maps by a homography).

Coordinates are privlens' pixel frame (:mod:`deid.faces.landmarks`): pixel ``i`` covers
``[i, i + 1)``, centre ``i + 0.5``; the homography is taken in that frame. OpenCV puts pixel
centres on integers; :func:`calibration.homography.to_opencv_frame` converts at the
boundary. Resampling: each crop is first warped (bilinear) onto a grid at least as fine as
the source pixels, then reduced to
``size`` by pixel-area averaging (``cv2.INTER_AREA``), so large faces do not alias.

Output::

    out/{split}/privacy/NNNNNN.png      privacy-camera crop
    out/{split}/reference/NNNNNN.png    reference (ground truth) crop, same NNNNNN
    out/manifest.json                   parameters, summary, one record per pair

Splits are drawn from ``seed``: fractions (``(0.8, 0.2)``) or counts (``(3000, 700)`` as in
the paper); two parts are ``train``/``test``, three ``train``/``val``/``test``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np

from calibration.homography import check_homography, to_opencv_frame, warp_points
from captures.store import open_session, to_json
from deid.faces.detect import FaceDetector
from deid.faces.landmarks import outside_fraction

__all__ = ["build_paired_dataset", "split_counts", "parse_split", "crop_square", "warp_crop",
           "SPLIT_NAMES"]

log = logging.getLogger(__name__)

SPLIT_NAMES = {1: ("train",), 2: ("train", "test"), 3: ("train", "val", "test")}
DATASET_FORMAT = "privlens.paired-dataset/1"



# ------------------------------------------------------------------------ geometry

def crop_square(box, margin: float) -> np.ndarray:
    """Square about the centre of ``box`` ``[x0, y0, x1, y1]`` (pixels), its side the box's
    longer side times ``1 + 2 * margin`` (``margin`` of it added on each side)."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * (1 + 2 * margin) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def _crop_to_source(crop_box, n: int) -> np.ndarray:
    """Transform from an ``n x n`` crop grid to the source frame of ``crop_box``."""
    x0, y0, x1, y1 = (float(v) for v in crop_box)
    return np.array([[(x1 - x0) / n, 0.0, x0], [0.0, (y1 - y0) / n, y0], [0.0, 0.0, 1.0]])


def warp_crop(image: np.ndarray, crop_to_source, extent_px: float, size: int) -> np.ndarray:
    """Resample ``image`` onto a ``size x size`` crop. ``crop_to_source``: 3x3 transform from
    crop coordinates scaled to [0, 1] to image pixels. ``extent_px``: the crop's longest side
    in image pixels; it sets the intermediate grid, ``max(size, ceil(extent_px))``, so the
    reduction to ``size`` averages instead of aliasing."""
    import cv2

    n = max(int(size), int(math.ceil(extent_px)))
    t = np.asarray(crop_to_source, np.float64) @ np.diag([1.0 / n, 1.0 / n, 1.0])
    out = cv2.warpPerspective(np.ascontiguousarray(image), to_opencv_frame(t), (n, n),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
    if n != size:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _longest_side(quad: np.ndarray) -> float:
    return float(max(np.linalg.norm(quad[i] - quad[(i + 1) % 4]) for i in range(4)))


# ------------------------------------------------------------------------ splits

def parse_split(split) -> tuple[str, tuple[float, ...]]:
    """``("fraction" | "count", values)`` of ``"0.8,0.2"``, ``(3000, 700)``, ...: values all
    at most 1 are fractions (summing to at most 1), otherwise whole counts."""
    if isinstance(split, str):
        try:
            split = [float(v) for v in split.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"bad split {split!r}: use fractions (0.8,0.2) or counts "
                             f"(3000,700)") from None
    vals = tuple(float(v) for v in split)
    if not 1 <= len(vals) <= 3 or any(v < 0 or not math.isfinite(v) for v in vals):
        raise ValueError(f"split needs 1 to 3 non-negative values, got {list(vals)}")
    if all(v <= 1 for v in vals):
        if sum(vals) > 1 + 1e-9:
            raise ValueError(f"split fractions sum to {sum(vals):g} > 1")
        return "fraction", vals
    if any(v != int(v) for v in vals):
        raise ValueError(f"split counts must be whole numbers, got {list(vals)}")
    return "count", vals


def split_counts(split, n: int) -> dict[str, int]:
    """Pairs per split name for ``n`` pairs (pairs left over are unused)."""
    mode, vals = parse_split(split)
    names = SPLIT_NAMES[len(vals)]
    if mode == "count":
        counts = [int(v) for v in vals]
        if sum(counts) > n:
            raise ValueError(f"split asks for {sum(counts)} pairs ({', '.join(map(str, counts))})"
                             f" but only {n} were found")
    else:
        bounds = np.round(np.cumsum((0.0, *vals)) * n).astype(int)
        counts = list(np.diff(bounds))
    return dict(zip(names, (int(c) for c in counts), strict=True))


def _assign_splits(n: int, split, seed: int) -> tuple[list[str | None], dict[str, int]]:
    counts = split_counts(split, n)
    order = np.random.default_rng(seed).permutation(n)
    labels: list[str | None] = [None] * n
    k = 0
    for name, c in counts.items():
        for j in order[k:k + c]:
            labels[int(j)] = name
        k += c
    return labels, counts


# ------------------------------------------------------------------------ builder

def _detect(detector, image: np.ndarray, upsample, max_side: int | None):
    """Detections on ``image`` (downscaled to ``max_side`` first), boxes in full-size pixels."""
    import cv2

    h, w = image.shape[:2]
    scale = 1.0
    img = image
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        img = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    sx, sy = w / img.shape[1], h / img.shape[0]
    out = []
    for d in detector(img, upsample=upsample):
        x0, y0, x1, y1 = d.box
        out.append(((x0 * sx, y0 * sy, x1 * sx, y1 * sy), d.score))
    return out


def build_paired_dataset(session_paths, homography, out_dir, size: int = 128,
                         margin: float = 0.3, split=(0.8, 0.2), seed: int = 0, *,
                         upsample=(0, 1), min_score: float = 0.0,
                         detect_max_side: int | None = 1280, overwrite: bool = False,
                         detector=None) -> dict:
    """Build the paired dataset from capture sessions (which must hold the reference branch).

    ``homography``: (3, 3), reference pixels -> privacy pixels. ``size``: crop side, pixels.
    ``margin``: added on each side of the face box, as a fraction of its longer side.
    ``split``: fractions or counts (see :func:`parse_split`), drawn reproducibly from ``seed``.
    ``upsample``, ``min_score``: detector settings; detection runs on the reference image
    shrunk to ``detect_max_side`` pixels (None: full size). Frames without a face are
    skipped and counted. The dataset is built in a temporary folder and moved to ``out_dir``
    (an existing non-empty ``out_dir`` is refused unless ``overwrite``).

    Returns the summary written to ``manifest.json``.
    """
    h = check_homography(homography)
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    paths = [Path(p) for p in ([session_paths] if isinstance(session_paths, (str, Path))
                               else session_paths)]
    if not paths:
        raise ValueError("no capture sessions given")
    parse_split(split)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"output folder exists and is not empty (use overwrite): {out}")
    if detector is None:
        detector = FaceDetector(min_score=min_score)

    # pass 1: faces on the reference branch
    faces, n_frames, no_face = [], 0, 0
    for si, p in enumerate(paths):
        with open_session(p) as s:
            refs = s.reference_images()
            for i in range(len(s)):
                dets = _detect(detector, refs[i], upsample, detect_max_side)
                n_frames += 1
                if not dets:
                    no_face += 1
                for k, (box, score) in enumerate(dets):
                    faces.append({"session_index": si, "frame": i, "face": k,
                                  "box": [round(v, 3) for v in box], "score": round(score, 4)})
            log.info("%s: %d frames, %d faces so far", p.name, len(s), len(faces))
    if not faces:
        raise ValueError(f"no faces found on the reference branch of {n_frames} frame(s)")
    labels, counts = _assign_splits(len(faces), split, seed)

    # pass 2: crops, written into a temporary folder
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for name in counts:
        for b in ("privacy", "reference"):
            (tmp / name / b).mkdir(parents=True)
    next_index = dict.fromkeys(counts, 0)
    records = []
    try:
        from PIL import Image

        sessions = {}
        for face, label in zip(faces, labels, strict=True):
            if label is None:
                continue
            si = face["session_index"]
            if si not in sessions:
                for s in sessions.values():
                    s.close()
                sessions = {si: open_session(paths[si])}
            s = sessions[si]
            ref = s.reference_images()[face["frame"]]
            priv = s.privacy_images()[face["frame"]]
            sq = crop_square(face["box"], margin)
            corners = np.array([[sq[0], sq[1]], [sq[2], sq[1]], [sq[2], sq[3]], [sq[0], sq[3]]])
            quad = warp_points(h, corners)
            unit = _crop_to_source(sq, 1)
            ref_crop = warp_crop(ref, unit, sq[2] - sq[0], size)
            priv_crop = warp_crop(priv, h @ unit, _longest_side(quad), size)
            j = next_index[label]
            next_index[label] += 1
            rel = {b: f"{label}/{b}/{j:06d}.png" for b in ("privacy", "reference")}
            Image.fromarray(priv_crop).save(tmp / rel["privacy"])
            Image.fromarray(ref_crop).save(tmp / rel["reference"])
            rh, rw = ref.shape[:2]
            ph, pw = priv.shape[:2]
            qb = (*quad.min(0), *quad.max(0))
            records.append({
                "split": label, "index": j, **rel,
                "session": str(paths[si]), "session_name": paths[si].stem,
                "frame": face["frame"], "face": face["face"], "box": face["box"],
                "score": face["score"], "crop_box": [round(float(v), 3) for v in sq],
                "privacy_quad": np.round(quad, 3).tolist(),
                "reference_outside": round(outside_fraction(sq, rw, rh), 4),
                "privacy_outside": round(outside_fraction(qb, pw, ph), 4),
            })
        for s in sessions.values():
            s.close()
        summary = {
            "format": DATASET_FORMAT, "sessions": [str(p) for p in paths],
            "homography_reference_to_privacy": h.tolist(), "size": size, "margin": margin,
            "split": list(parse_split(split)[1]), "seed": int(seed),
            "detector": {"upsample": list(upsample) if isinstance(upsample, (list, tuple))
                         else [int(upsample)], "min_score": min_score,
                         "detect_max_side": detect_max_side},
            "frames": n_frames, "frames_without_face": no_face, "faces": len(faces),
            "pairs": len(records), "unused_faces": len(faces) - len(records),
            "splits": counts,
        }
        (tmp / "manifest.json").write_text(to_json({**summary, "records": records},
                                                   indent=1))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("paired dataset %s: %d pairs (%s) from %d frames, %d without a face", out,
             len(records), ", ".join(f"{k} {v}" for k, v in counts.items()), n_frames, no_face)
    return {**summary, "out_dir": str(out)}
