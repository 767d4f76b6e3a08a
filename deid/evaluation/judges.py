"""The identity judges every report uses, and each judge's own distance.

dlib's ResNet (the ``face_recognition`` "FR" metric) comes first; it is also the network the
differentiable twin copies, so a camera trained against the twin can overfit it. Judges that
no training code may import (held out by an import contract) are added beside it.
"""

from __future__ import annotations

import numpy as np

from deid.judges.dlib import DlibFaceEmbedder
from deid.judges.dlib import distance as dlib_distance

__all__ = ["default_judges", "judge_distance"]


def default_judges() -> dict:
    """``{name: images -> (N, D) embeddings}``: the identity judges of every report."""
    dlib = DlibFaceEmbedder()
    return {"dlib": dlib.embed}


def judge_distance(name: str, a, b) -> np.ndarray:
    """Per-row distance of two embedding sets in a judge's own metric: Euclidean for dlib
    (0.6 is its same-person threshold), cosine distance ``1 - cos`` for the others."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if name == "dlib":
        return np.asarray(dlib_distance(a, b), float)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1 - (a * b).sum(axis=1)
