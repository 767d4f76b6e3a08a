"""Registration of the two bench cameras from a checkerboard (OpenCV).

Both cameras see the same checkerboard with the mirror flat. Inner corners are found in each
frame and refined to sub-pixel accuracy; the homography ``H`` maps *reference-camera* pixels
(x, y) to *privacy-camera* pixels, ``p ~ H r`` in homogeneous coordinates. Its quality is
the RMS reprojection error in privacy-camera pixels.

Corner positions and :func:`register_pair`'s homography are in OpenCV's pixel frame (pixel
centres on integers). ``rig calibrate`` stores the homography in privlens' frame (pixel ``i``
covers ``[i, i + 1)``, centre ``i + 0.5``; :mod:`deid.faces.landmarks`, :mod:`captures.dataset`),
converted by :func:`calibration.homography.to_pixel_frame`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from calibration.homography import warp_points

__all__ = ["Registration", "find_corners", "register_pair"]


def _gray_u8(frame) -> np.ndarray:
    a = np.asarray(frame)
    if a.ndim == 3:
        a = a.astype(np.float64).mean(axis=-1)
    if a.dtype != np.uint8:
        a = np.clip(a if a.max() > 1.5 else a * 255.0, 0, 255)
    return a.astype(np.uint8)


def find_corners(frame, pattern=(7, 7)) -> np.ndarray:
    """(K, 2) inner-corner positions (x, y), pixels, in OpenCV's order; raises ValueError
    if the board is not found."""
    import cv2

    gray = _gray_u8(frame)
    ok, corners = cv2.findChessboardCorners(
        gray, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
    if not ok:
        raise ValueError(f"no {pattern[0]}x{pattern[1]} checkerboard found in the frame")
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
    corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), crit)
    return corners.reshape(-1, 2).astype(np.float64)


@dataclasses.dataclass
class Registration:
    homography: np.ndarray  # (3, 3) reference px -> privacy px
    rms_error_px: float
    max_error_px: float
    reference_corners: np.ndarray
    privacy_corners: np.ndarray


def register_pair(reference_frame, privacy_frame, pattern=(7, 7)) -> Registration:
    """Homography from the reference camera to the privacy camera, with its error."""
    import cv2

    r = find_corners(reference_frame, pattern)
    p = find_corners(privacy_frame, pattern)
    # the corner order can start from opposite corners in the two views; align it
    if np.linalg.norm(r[0] - r[-1]) > 0 and np.dot(r[-1] - r[0], p[-1] - p[0]) < 0:
        p = p[::-1].copy()
    h, _ = cv2.findHomography(r, p, 0)
    if h is None:
        raise ValueError("homography fit failed (degenerate corners)")
    err = np.linalg.norm(warp_points(h, r) - p, axis=1)
    return Registration(h / h[2, 2], float(np.sqrt(np.mean(err**2))), float(err.max()), r, p)
