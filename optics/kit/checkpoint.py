"""Checkpoints: tensors and plain Python only, loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch

from optics.kit.files import atomic_path

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint"]


def save_checkpoint(state: dict, path) -> Path:
    """Write atomically (temp file + rename), so an interrupted save never leaves a torn
    checkpoint behind."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no checkpoint", str(path))
    return torch.load(path, map_location=map_location, weights_only=True)


def latest_checkpoint(folder) -> Path | None:
    """``ckpt_<step>.pt`` with the highest step in ``folder``, or None."""
    folder = Path(folder)
    found = sorted(folder.glob("ckpt_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return found[-1] if found else None
