"""68-point face landmark files, face boxes, and the crop geometry that moves them.

The 68-point scheme is the iBUG 300-W markup (Sagonas et al., "300 Faces in-the-Wild
Challenge", ICCV Workshops 2013); its named groups are in :mod:`deid.faces.landmark_groups` and the
NME in :func:`deid.faces.heatmaps.nme`. dlib's ``shape_predictor_68_face_landmarks.dat`` predicts
the same scheme.

Coordinates follow privlens' face convention (:mod:`deid.faces.heatmaps`): ``(x, y)`` in **pixels**,
pixel ``i`` covers ``[i, i + 1)`` and its centre is at ``i + 0.5``; a ``w x h`` image spans
``[0, w] x [0, h]``. Points and boxes ``[x0, y0, x1, y1]`` share this one frame. Readers
convert at the boundary:

- dlib (predictor output and its XML files) gives integer pixel indices: ``+ 0.5``; a dlib
  rectangle ``(left, top, right, bottom)`` has inclusive pixel indices, i.e. the box
  ``[left, top, right + 1, bottom + 1]``;
- iBUG ``.pts`` files are 1-based (pixel centres at 1, 2, ...): ``- 0.5``;
- menpo ``.ljson`` files are 0-based ``(y, x)``: swapped, ``+ 0.5``.

``crop_and_resize`` and ``points_to_crop`` / ``points_from_crop`` are a matched pair: the same
crop box moves an image and its points into the same frame (a pure scale and shift), so a
landmark stays on the pixel it marks (tested with synthetic dots in
``tests/test_face_data.py``).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

__all__ = [
    "N_POINTS", "read_pts", "read_ljson", "read_dlib_xml", "xml_comment",
    "square_box", "center_square_box", "clip_box", "outside_fraction", "iou", "box_from_points",
    "crop_and_resize", "points_to_crop", "points_from_crop",
]

N_POINTS = 68
#: Offset from an integer pixel index (dlib, 0-based files) to its centre.
PIXEL_CENTRE = 0.5


# --------------------------------------------------------------------------- file formats

def read_pts(text: str) -> np.ndarray:
    """Points of an iBUG ``.pts`` file (version 1) as ``(n, 2)`` float64 ``(x, y)``.

    ``.pts`` files are 1-based (Matlab): the centre of the first pixel is 1, so 0.5 is
    subtracted (menpo's importer subtracts 1 for its 0-based pixel indices).
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    try:
        n = int(next(ln for ln in lines if ln.startswith("n_points")).split(":")[1])
        start = lines.index("{") + 1
        end = lines.index("}", start)
    except (StopIteration, ValueError, IndexError) as e:
        raise ValueError("not a version-1 .pts file (no n_points or no { } block)") from e
    pts = np.array([[float(v) for v in ln.split()[:2]] for ln in lines[start:end]])
    if pts.shape != (n, 2):
        raise ValueError(f".pts file says n_points={n} but has {len(pts)} points")
    return pts - 1.0 + PIXEL_CENTRE


def read_ljson(text: str, group: str = "LJSON") -> np.ndarray:
    """Points of a menpo ``.ljson`` landmark file as ``(n, 2)`` ``(x, y)``.

    menpo stores image points as ``(y, x)`` pixel indices, 0-based; they are swapped and
    moved to pixel centres here.
    """
    data = json.loads(text)
    try:
        pts = np.array(data["groups"][group]["landmarks"]["points"], dtype=float)
    except KeyError as e:
        raise ValueError(f"ljson file has no landmark group {group!r}") from e
    return pts[:, ::-1] + PIXEL_CENTRE


def read_dlib_xml(text: str) -> dict[str, list[dict]]:
    """Faces of a dlib/imglab dataset XML, by image file name.

    Each face is ``{"box": [x0, y0, x1, y1], "points": (68, 2) array or None, "ignore":
    bool}``, in the pixel-centre convention. Points are whatever the file holds: dlib's
    example files say in their ``<comment>`` that their points come from dlib's own
    predictor, not from people.
    """
    root = ET.fromstring(text)
    out: dict[str, list[dict]] = {}
    for image in root.iter("image"):
        faces = []
        for box in image.findall("box"):
            left, top = float(box.get("left")), float(box.get("top"))
            w, h = float(box.get("width")), float(box.get("height"))
            parts = box.findall("part")
            points = None
            if parts:
                order = sorted(parts, key=lambda p: int(p.get("name")))
                points = np.array([[float(p.get("x")), float(p.get("y"))] for p in order])
                points += PIXEL_CENTRE
            faces.append({"box": [left, top, left + w, top + h], "points": points,
                          "ignore": box.get("ignore") == "1"})
        out[image.get("file")] = faces
    return out


def xml_comment(text: str) -> str:
    """The ``<comment>`` of a dlib dataset XML (one line), or ``""``."""
    node = ET.fromstring(text).find("comment")
    return " ".join((node.text or "").split()) if node is not None else ""


# --------------------------------------------------------------------------- boxes

def square_box(box, scale: float = 1.0) -> np.ndarray:
    """Square box ``scale`` times the longer side of ``box``, about the same centre."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = scale * max(x1 - x0, y1 - y0) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def center_square_box(width: int, height: int) -> np.ndarray:
    """The largest centred square of a ``width x height`` image."""
    m = min(width, height)
    return np.array([(width - m) / 2, (height - m) / 2, (width + m) / 2, (height + m) / 2])


def clip_box(box, width: int, height: int) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([min(max(x0, 0), width), min(max(y0, 0), height),
                     min(max(x1, 0), width), min(max(y1, 0), height)])


def outside_fraction(box, width: int, height: int) -> float:
    """Fraction of the area of ``box`` (x0, y0, x1, y1, pixels) that lies outside a
    ``width x height`` image (0: wholly inside)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    inside = clip_box(box, width, height)
    return float(1 - (inside[2] - inside[0]) * (inside[3] - inside[1]) / ((x1 - x0) * (y1 - y0)))


def iou(a, b) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_from_points(points) -> np.ndarray:
    """Box of the pixels that hold the points: their extent plus half a pixel all round."""
    p = np.asarray(points, float)
    return np.array([p[:, 0].min() - 0.5, p[:, 1].min() - 0.5,
                     p[:, 0].max() + 0.5, p[:, 1].max() + 0.5])


# --------------------------------------------------------------------------- crop geometry

def crop_and_resize(image, crop_box, size: int, pad: str = "edge") -> Image.Image:
    """Crop ``crop_box`` (pixels, may leave the image) and resize it to ``size x size``.

    Parts outside the image are filled by ``numpy.pad`` mode ``pad`` ("edge", "reflect",
    "constant"). Resampling is Lanczos with PIL's antialiasing support scaling, so shrinking
    does not alias. Returns an RGB PIL image.
    """
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    img = img.convert("RGB")
    x0, y0, x1, y1 = (float(v) for v in crop_box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty crop box {list(crop_box)}")
    w, h = img.size
    p = max(0, math.ceil(-x0), math.ceil(-y0), math.ceil(x1 - w), math.ceil(y1 - h))
    if p:
        a = np.asarray(img)
        if pad == "reflect" and p >= min(w, h):
            pad = "symmetric"
        a = np.pad(a, ((p, p), (p, p), (0, 0)), mode=pad)
        img = Image.fromarray(a)
    return img.resize((size, size), Image.Resampling.LANCZOS,
                      box=(x0 + p, y0 + p, x1 + p, y1 + p))


def points_to_crop(points, crop_box, size: int) -> np.ndarray:
    """Map points from the source frame into the ``size x size`` crop of ``crop_box``."""
    p = np.asarray(points, dtype=np.float64)
    x0, y0, x1, y1 = (float(v) for v in crop_box)
    out = np.empty_like(p)
    out[..., 0] = (p[..., 0] - x0) * (size / (x1 - x0))
    out[..., 1] = (p[..., 1] - y0) * (size / (y1 - y0))
    return out


def points_from_crop(points, crop_box, size: int) -> np.ndarray:
    """Inverse of :func:`points_to_crop`."""
    p = np.asarray(points, dtype=np.float64)
    x0, y0, x1, y1 = (float(v) for v in crop_box)
    out = np.empty_like(p)
    out[..., 0] = p[..., 0] * ((x1 - x0) / size) + x0
    out[..., 1] = p[..., 1] * ((y1 - y0) / size) + y0
    return out
