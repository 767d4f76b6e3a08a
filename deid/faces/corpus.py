"""The demo face corpus (built by :mod:`deid.faces.corpus_builder`) as tensors: its splits
loaded once into memory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from deid.faces.dataset import FaceFolder
from deid.faces.manifest import corpus_dir

__all__ = ["default_corpus", "load_split", "FaceSets", "load_face_sets"]


def default_corpus() -> Path:
    """``$PRIVLENS_HOME/demo-faces`` (default ``~/.cache/privlens/demo-faces``)."""
    return corpus_dir()


def load_split(root, split, size: int, landmark_key: str | None = "dlib68"):
    """Images ``(N, 3, S, S)`` in [0, 1], landmarks ``(N, 68, 2)`` pixels (or None) and
    identities (list, or None) of one split of the demo corpus (or of a plain folder when
    ``split`` is None and ``root`` has no manifest)."""
    root = Path(root) if root else default_corpus()
    if not root.exists():
        raise FileNotFoundError(2, "no face corpus (run `deid fetch-demo-data` first)", str(root))
    if (root / "manifest.json").exists() or (root / "demo-faces" / "manifest.json").exists():
        ds = FaceFolder.from_manifest(root, split=split, size=size,
                                      landmark_key=landmark_key or "dlib68",
                                      landmarks="auto" if landmark_key else None)
    else:
        ds = FaceFolder(root, size=size, landmarks="auto" if landmark_key else None,
                        landmark_key=landmark_key or "dlib68")
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items])
    landmarks = torch.stack([it["landmarks"] for it in items]) if "landmarks" in items[0] \
        else None
    ids = [it.get("identity") for it in items] if "identity" in items[0] else None
    return images, landmarks, ids


@dataclasses.dataclass
class FaceSets:
    """The splits an attack study uses, as ``(N, 3, S, S)`` tensors in [0, 1]."""

    train: torch.Tensor  # attacker's training faces (inversion, priors)
    test: torch.Tensor  # held-out faces to reconstruct
    johns: torch.Tensor  # identity-labelled faces for re-identification
    johns_ids: list


def load_face_sets(size: int, root=None, max_test: int | None = None) -> FaceSets:
    """The demo corpus's train, test and johns splits at ``size`` (``root``: default
    :func:`default_corpus`; :func:`deid.faces.corpus_builder.ensure_demo_corpus` builds it)."""
    root = Path(root) if root else default_corpus()
    train, _, _ = load_split(root, "train", size, landmark_key=None)
    test, _, _ = load_split(root, "test", size, landmark_key=None)
    johns, _, ids = load_split(root, "johns", size, landmark_key=None)
    if max_test:
        test = test[:max_test]
    return FaceSets(train, test, johns, ids)
