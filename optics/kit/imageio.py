"""Reading and writing images as ``(C, H, W)`` float tensors in [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["load_image", "save_image", "example_face"]


def load_image(path, size: int | None = None) -> torch.Tensor:
    """RGB image as ``(3, H, W)`` float32 in [0, 1]; with ``size``, centre-cropped to a
    square and resized to ``size x size``."""
    path = Path(path)
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise FileNotFoundError(2, "no such image", str(path)) from None
    except (UnidentifiedImageError, OSError):
        raise ValueError(f"cannot read image {path}: not a supported image file") from None
    img = img.convert("RGB")
    if size is not None:
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def save_image(x: torch.Tensor, path) -> Path:
    """Write ``(C, H, W)`` (values clipped to [0, 1]) as an 8-bit PNG/JPEG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = x.detach().float().clamp(0, 1).mul(255).round().byte().cpu()
    arr = arr.permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(path)
    return path


def example_face(size: int = 256) -> torch.Tensor:
    """The astronaut portrait shipped with scikit-image (NASA, public domain), cropped to the
    face: ``(3, size, size)`` in [0, 1]. Needs no network."""
    from skimage import data

    img = Image.fromarray(data.astronaut()[20:260, 100:340])
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
