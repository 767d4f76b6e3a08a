"""Face data for training, loaded once into memory as tensors."""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["default_corpus", "load_split"]


def default_corpus() -> Path:
    """``$PRIVLENS_HOME/demo-faces`` (default ``~/.cache/privlens/demo-faces``)."""
    home = os.environ.get("PRIVLENS_HOME") or Path.home() / ".cache" / "privlens"
    return Path(home) / "demo-faces"


def load_split(root, split, size: int, landmark_key: str | None = "dlib68"):
    """Images ``(N, 3, S, S)`` in [0, 1], landmarks ``(N, 68, 2)`` pixels (or None) and
    identities (list, or None) of one split of the demo corpus (or of a plain folder when
    ``split`` is None and ``root`` has no manifest)."""
    from deid.data.dataset import FaceFolder

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
