"""PSF measurement from point-source frames: dark subtraction, centroid, crop, normalise.

Frames are (H, W) or (H, W, C) arrays in sensor units (uint8 or float). A stack of frames
taken at several phase-diversity positions is cropped around *one* common centre (the
centroid of the reference frame), so the relative shifts between the diversity planes,
which carry information, are kept.
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_float", "background", "centroid_px", "crop_centered", "measure_psf",
           "measure_psf_stack"]


def to_float(frame) -> np.ndarray:
    """Frame in [0, 1] float64 (uint8 / uint16 scaled by their range)."""
    a = np.asarray(frame)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float64) / 65535.0
    return a.astype(np.float64)


def background(frame: np.ndarray, dark: np.ndarray | None = None,
               border_px: int = 8) -> np.ndarray:
    """Subtract the dark frame (if given) and the mean of a border strip (stray light). The
    mean, not the median: on 8-bit frames with noise of a count or so the median is biased by
    up to half a count, which over a 64 x 64 crop outweighs a sharp PSF's whole signal."""
    f = to_float(frame)
    if dark is not None:
        f = f - to_float(dark)
    b = border_px
    strip = np.concatenate([f[:b].reshape(-1, *f.shape[2:]), f[-b:].reshape(-1, *f.shape[2:]),
                            f[:, :b].reshape(-1, *f.shape[2:]),
                            f[:, -b:].reshape(-1, *f.shape[2:])])
    return f - strip.mean(axis=0)


def centroid_px(image: np.ndarray, threshold: float = 0.05) -> tuple[float, float]:
    """(row, col) intensity centroid of the pixels above ``threshold`` x peak (pixels)."""
    img = image if image.ndim == 2 else image.sum(axis=-1)
    peak = float(img.max())
    if peak <= 0:
        raise ValueError("no light in the point-source frame (is the source on?)")
    w = np.where(img > threshold * peak, img, 0.0)
    rows, cols = np.indices(img.shape)
    s = w.sum()
    return float((rows * w).sum() / s), float((cols * w).sum() / s)


def crop_centered(image: np.ndarray, centre_rc, size: int) -> np.ndarray:
    """``size x size`` window whose centre pixel (index size // 2) is the rounded centre;
    zero-padded where the window leaves the frame."""
    r0 = int(round(centre_rc[0])) - size // 2
    c0 = int(round(centre_rc[1])) - size // 2
    out = np.zeros((size, size) + image.shape[2:], dtype=image.dtype)
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + size, image.shape[0]), min(c0 + size, image.shape[1])
    if re > rs and ce > cs:
        out[rs - r0:re - r0, cs - c0:ce - c0] = image[rs:re, cs:ce]
    return out


def measure_psf(frame, dark=None, size: int = 64, centre_rc=None):
    """Normalised PSF (size, size[, C]) from one point-source frame; returns (psf, centre).
    Negative values after background subtraction are kept (they average out noise)."""
    f = background(frame, dark)
    centre = centroid_px(f) if centre_rc is None else centre_rc
    crop = crop_centered(f, centre, size)
    total = crop.sum(axis=(0, 1))
    if np.any(total <= 0):
        raise ValueError("the cropped point-source frame holds no light")
    return crop / total, centre


def measure_psf_stack(frames, dark=None, size: int = 64, reference: int = 0):
    """PSFs of a diversity stack cropped around the centroid of ``frames[reference]``;
    returns ((D, size, size[, C]), centre)."""
    f_ref = background(frames[reference], dark)
    centre = centroid_px(f_ref)
    psfs = [measure_psf(fr, dark, size, centre)[0] for fr in frames]
    return np.stack(psfs), centre
