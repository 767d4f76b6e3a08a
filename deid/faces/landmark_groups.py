"""The 68-point iBUG face landmark layout as named groups.

References
----------
- C. Sagonas et al., "300 Faces in-the-Wild Challenge: the first facial landmark localization
  challenge", ICCV Workshops 2013 (the iBUG 68-point mark-up, shown there 1-based).

Conventions (everything here is 0-based):

- ``right`` and ``left`` are the *subject's* sides, as in iBUG: in an un-mirrored frontal
  photograph the right eye (36-41) appears on the image's left.
- Contours run left to right in the image (jaw, brows, lower nose); the nose bridge runs top
  to bottom; each eye starts at its image-left corner and runs over the upper lid; the lips
  start at the image-left mouth corner and run clockwise on screen (over the top, back along
  the bottom).
- Landmark coordinates are ``(x, y)`` in pixels of an image of width ``W``, with the
  pixel-centre convention of :mod:`deid.faces.heatmaps`: pixel ``i`` covers ``[i, i + 1)``. A
  horizontal flip therefore maps ``x`` to ``W - x`` (pixel centre ``i + 0.5`` to
  ``W - 1 - i + 0.5``), and the point indices through :data:`FLIP_68`.

Use the names, never index ranges: ``indices("eyes")``, ``GROUPS["jaw"]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import MappingProxyType

import torch

__all__ = [
    "NUM_LANDMARKS_68",
    "GROUPS",
    "PARTS",
    "OUTER_EYE_CORNERS",
    "FLIP_68",
    "indices",
    "group_of",
    "hflip_landmarks",
    "schematic_face_68",
]

NUM_LANDMARKS_68 = 68


def _span(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


#: Name -> 0-based point indices, in iBUG order. Together the groups cover 0..67 once.
GROUPS = MappingProxyType({
    "jaw": _span(0, 16),
    "right_brow": _span(17, 21),
    "left_brow": _span(22, 26),
    "nose_bridge": _span(27, 30),
    "nose_lower": _span(31, 35),
    "right_eye": _span(36, 41),
    "left_eye": _span(42, 47),
    "outer_lips": _span(48, 59),
    "inner_lips": _span(60, 67),
})

#: Compound parts, each a tuple of group names.
PARTS = MappingProxyType({
    "brows": ("right_brow", "left_brow"),
    "eyes": ("right_eye", "left_eye"),
    "nose": ("nose_bridge", "nose_lower"),
    "mouth": ("outer_lips", "inner_lips"),
    # Everything inside the jaw line: what the generator's fine mask keeps.
    "inner_face": ("right_brow", "left_brow", "nose_bridge", "nose_lower",
                   "right_eye", "left_eye", "outer_lips", "inner_lips"),
    "face": tuple(GROUPS),
})

#: Outer corners of the right and left eye: the inter-ocular distance of 300-W and WFLW NME.
OUTER_EYE_CORNERS = (GROUPS["right_eye"][0], GROUPS["left_eye"][3])


def indices(*names: str) -> tuple[int, ...]:
    """Point indices of the named groups and parts, concatenated in the order given.

    >>> indices("eyes") == GROUPS["right_eye"] + GROUPS["left_eye"]
    True
    """
    out: list[int] = []
    for name in names:
        if name in GROUPS:
            out.extend(GROUPS[name])
        elif name in PARTS:
            out.extend(indices(*PARTS[name]))
        else:
            raise KeyError(f"unknown landmark group {name!r}; groups: {list(GROUPS)}, "
                           f"parts: {list(PARTS)}")
    return tuple(out)


def group_of(index: int) -> str:
    """Name of the group that point ``index`` (0-based) belongs to."""
    for name, idx in GROUPS.items():
        if index in idx:
            return name
    raise IndexError(f"landmark index {index} is outside 0..{NUM_LANDMARKS_68 - 1}")


# How each group maps under a horizontal flip: (image of the group, shift s). Point i of the
# group (position in the group, n points) goes to position (s - i) mod n of its image. Open
# contours drawn left to right reverse (s = n - 1); a closed contour reverses its direction
# about its image-left point, which lands on the image-right point (s = that position). None:
# the points lie on the vertical mid-line and stay put.
_MIRROR = {
    "jaw": ("jaw", 16),
    "right_brow": ("left_brow", 4),
    "left_brow": ("right_brow", 4),
    "nose_bridge": ("nose_bridge", None),
    "nose_lower": ("nose_lower", 4),
    "right_eye": ("left_eye", 3),    # image-left corner (pos 0) <-> image-right corner (pos 3)
    "left_eye": ("right_eye", 3),
    "outer_lips": ("outer_lips", 6),  # mouth corners at positions 0 and 6
    "inner_lips": ("inner_lips", 4),  # inner corners at positions 0 and 4
}


def _flip_permutation() -> tuple[int, ...]:
    perm = [-1] * NUM_LANDMARKS_68
    for name, (image, shift) in _MIRROR.items():
        src, dst = GROUPS[name], GROUPS[image]
        n = len(src)
        for i, p in enumerate(src):
            perm[p] = dst[i] if shift is None else dst[(shift - i) % n]
    if sorted(perm) != list(range(NUM_LANDMARKS_68)):
        raise AssertionError("the flip map is not a permutation")  # pragma: no cover
    return tuple(perm)


#: Horizontal-flip permutation: after flipping an image, point ``k`` of the flipped face is
#: point ``FLIP_68[k]`` of the original (mirrored). It is its own inverse.
FLIP_68 = _flip_permutation()


def hflip_landmarks(landmarks: torch.Tensor, image_width: float,
                    perm: Sequence[int] = FLIP_68) -> torch.Tensor:
    """Landmarks of the horizontally flipped image (``torch.flip(image, dims=[-1])``).

    ``landmarks``: ``(..., K, 2)`` as ``(x, y)`` in **pixels** of an image ``image_width``
    pixels wide (pixel-centre convention, so ``x -> image_width - x``). ``perm``: the
    ``K``-point flip permutation. NaN points stay NaN.
    """
    flipped = torch.stack([image_width - landmarks[..., 0], landmarks[..., 1]], dim=-1)
    return flipped[..., list(perm), :]


def _ellipse(cx: float, cy: float, ax: float, ay: float, angles_deg) -> list[tuple]:
    # y grows downwards, so a positive angle is above the centre.
    return [(cx + ax * math.cos(math.radians(a)), cy - ay * math.sin(math.radians(a)))
            for a in angles_deg]


def schematic_face_68(image_size: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """A schematic, exactly mirror-symmetric frontal face in the 68-point layout.

    Drawn from ellipses and arcs, not learned from data: for tests and demos (masks, flips,
    heatmaps), never as a mean shape. Returns ``(68, 2)`` ``(x, y)`` in **pixels** of a square
    image of side ``image_size`` (default 1: normalised coordinates); the face spans about
    x in [0.1, 0.9], y in [0.28, 0.9] of the image.
    """
    pts: list[tuple] = []
    # Jaw: lower half-ellipse from the image-left ear (y = 0.4) through the chin (0.9).
    pts += [(0.5 - 0.4 * math.cos(math.pi * i / 16), 0.4 + 0.5 * math.sin(math.pi * i / 16))
            for i in range(17)]
    # Brows: two arches, left to right.
    for x0 in (0.18, 0.58):
        pts += [(x0 + 0.06 * k, 0.32 - 0.04 * math.sin(math.pi * k / 4)) for k in range(5)]
    pts += [(0.5, 0.40 + 0.05 * k) for k in range(4)]                             # bridge
    pts += [(0.44 + 0.03 * k, 0.60 + 0.02 * (1 - abs(k - 2) / 2)) for k in range(5)]  # nostrils
    eye_angles = (180, 120, 60, 0, -60, -120)   # image-left corner, upper lid, other corner
    pts += _ellipse(0.32, 0.42, 0.07, 0.03, eye_angles)
    pts += _ellipse(0.68, 0.42, 0.07, 0.03, eye_angles)
    pts += _ellipse(0.5, 0.75, 0.15, 0.06, [180 - 30 * i for i in range(12)])
    pts += _ellipse(0.5, 0.75, 0.09, 0.025, [180 - 45 * i for i in range(8)])
    return torch.tensor(pts, dtype=dtype) * image_size
