"""Homographies between the two bench cameras: applying them, converting between pixel
frames, and reading the one ``rig calibrate`` stores.

A homography ``H`` maps *reference-camera* pixels ``(x, y)`` to *privacy-camera* pixels,
``p ~ H r`` in homogeneous coordinates. privlens' pixel frame puts pixel ``i`` on
``[i, i + 1)`` (centre ``i + 0.5``; :mod:`deid.faces.landmarks`); OpenCV's puts centres on
integers. :func:`to_pixel_frame` and :func:`to_opencv_frame` convert, and are inverses.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

__all__ = ["HOMOGRAPHY_DATASET", "check_homography", "warp_points", "to_pixel_frame",
           "to_opencv_frame", "load_homography"]

#: Where ``rig calibrate`` stores the homography (privlens' frame) in calibration.h5.
HOMOGRAPHY_DATASET = "registration/homography"


def _translation(t: float) -> np.ndarray:
    return np.array([[1.0, 0.0, t], [0.0, 1.0, t], [0.0, 0.0, 1.0]])


def check_homography(h) -> np.ndarray:
    """``h`` as a (3, 3) float64 array; a one-line ``ValueError`` if it is not finite or is
    singular."""
    h = np.asarray(h, dtype=np.float64)
    if h.shape != (3, 3) or not np.all(np.isfinite(h)):
        raise ValueError(f"homography must be a finite 3x3 matrix, got shape {h.shape}")
    if abs(np.linalg.det(h)) < 1e-12 * max(1.0, np.abs(h).max() ** 3):
        raise ValueError("homography is singular")
    return h


def warp_points(h, points_xy) -> np.ndarray:
    """Apply a 3x3 homography to ``(K, 2)`` points ``(x, y)`` (any shape ending in 2 is
    flattened to ``(K, 2)``)."""
    p = np.asarray(points_xy, np.float64).reshape(-1, 2)
    q = np.c_[p, np.ones(len(p))] @ np.asarray(h, np.float64).T
    return q[:, :2] / q[:, 2:3]


def to_pixel_frame(h_opencv) -> np.ndarray:
    """A transform between OpenCV pixel frames rewritten for privlens' (centres at
    ``i + 0.5``): ``T(+0.5) H T(-0.5)``, normalised to ``H[2, 2] = 1``."""
    h = _translation(0.5) @ np.asarray(h_opencv, dtype=np.float64) @ _translation(-0.5)
    return h / h[2, 2]


def to_opencv_frame(t) -> np.ndarray:
    """A transform between privlens pixel frames rewritten for OpenCV's (centres at ``i``):
    ``T(-0.5) H T(+0.5)``; the inverse of :func:`to_pixel_frame` (up to scale)."""
    return _translation(-0.5) @ np.asarray(t, np.float64) @ _translation(0.5)


def load_homography(calibration_h5) -> np.ndarray:
    """The (3, 3) float64 homography :data:`HOMOGRAPHY_DATASET` of a calibration HDF5 file
    (privlens' pixel frame, reference -> privacy)."""
    path = Path(calibration_h5)
    if not path.is_file():
        raise FileNotFoundError(f"no such calibration file: {path}")
    with h5py.File(path, "r") as f:
        if HOMOGRAPHY_DATASET not in f:
            raise ValueError(f"{path} has no {HOMOGRAPHY_DATASET} dataset (is it a "
                             f"calibration file written by 'rig calibrate'?)")
        return check_homography(f[HOMOGRAPHY_DATASET][()])
