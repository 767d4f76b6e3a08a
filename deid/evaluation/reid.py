"""Re-identification: nearest-neighbour identification accuracy in an embedding space.

The attack model is the one of Lopez et al. (privacy-preserving optics, 2024) and of most
de-identification work: an adversary holds a gallery of labelled face embeddings and names
each probe after its nearest gallery embedding (Euclidean distance). Top-1 accuracy is the
fraction of probes named correctly; chance is about ``1 / n_identities``.

Two galleries are scored for a privacy camera ``y = camera(x)``:

- **clean**: probes ``camera(x_i)`` against clean embeddings ``x_j`` (the adversary has
  ordinary photos of the people);
- **matched**: probes ``camera(x_i)`` against ``camera(x_j)`` (the adversary photographed the
  people with the same privacy camera, so the domains match). This is the stronger attack.

Both are leave-one-out over images: gallery image ``j = i`` (the same scene as the probe) is
excluded, so every probe is matched against the *other* images only. A probe whose identity
has no other image in the gallery can never be named correctly and counts as a miss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from deid.judges.dlib import SAME_PERSON_THRESHOLD, distance, pairwise_distances

__all__ = ["nearest_neighbours", "reid_hits", "reid_top1", "reid_report",
           "identity_distance_stats"]

log = logging.getLogger(__name__)


def _as_np(e) -> np.ndarray:
    if isinstance(e, torch.Tensor):
        e = e.detach().cpu().numpy()
    e = np.asarray(e, np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {e.shape}")
    return e


def nearest_neighbours(probe_emb, gallery_emb, *, leave_one_out: bool = False,
                       probe_index=None, gallery_index=None) -> np.ndarray:
    """Index into the gallery of each probe's nearest neighbour (Euclidean), ``(N,)``.

    With ``leave_one_out``, gallery entries showing the probe's own image are excluded: by
    default probe ``i`` and gallery ``i`` are the same image (equal lengths required);
    otherwise ``probe_index`` and ``gallery_index`` give an image id per row, and gallery
    rows with the probe's id are excluded. Ties go to the lowest gallery index; a probe with
    no eligible gallery entry gets ``-1``.
    """
    p, g = _as_np(probe_emb), _as_np(gallery_emb)
    d = pairwise_distances(p, g)
    if leave_one_out:
        if probe_index is None and gallery_index is None:
            if len(p) != len(g):
                raise ValueError("leave_one_out without index arrays needs probe and gallery "
                                 f"of equal length (the same images), got {len(p)} and {len(g)}")
            probe_index = gallery_index = np.arange(len(p))
        elif probe_index is None or gallery_index is None:
            raise ValueError("pass both probe_index and gallery_index, or neither")
        pi, gi = np.asarray(probe_index), np.asarray(gallery_index)
        if len(pi) != len(p) or len(gi) != len(g):
            raise ValueError("index arrays must have one entry per embedding row")
        d = np.where(pi[:, None] == gi[None, :], np.inf, d)
    nn = d.argmin(axis=1) if d.shape[1] else np.full(len(p), -1)
    if d.shape[1]:
        nn = np.where(np.isfinite(d[np.arange(len(p)), nn]), nn, -1)
    return nn


def reid_hits(probe_emb, probe_ids, gallery_emb, gallery_ids, leave_one_out: bool = False,
              *, probe_index=None, gallery_index=None) -> np.ndarray:
    """``(N,)`` bool: whether each probe's nearest gallery neighbour has its identity (the
    per-probe outcomes behind :func:`reid_top1`, for bootstrap intervals)."""
    probe_ids, gallery_ids = np.asarray(probe_ids), np.asarray(gallery_ids)
    nn = nearest_neighbours(probe_emb, gallery_emb, leave_one_out=leave_one_out,
                            probe_index=probe_index, gallery_index=gallery_index)
    if len(nn) != len(probe_ids) or _as_np(gallery_emb).shape[0] != len(gallery_ids):
        raise ValueError("one identity label per embedding row is required")
    if len(nn) == 0:
        raise ValueError("no probes")
    return (nn >= 0) & (gallery_ids[np.maximum(nn, 0)] == probe_ids)


def reid_top1(probe_emb, probe_ids, gallery_emb, gallery_ids, leave_one_out: bool = False,
              *, probe_index=None, gallery_index=None) -> float:
    """Top-1 nearest-neighbour identification accuracy of the probes against the gallery.

    ``*_ids`` are identity labels (any comparable values). See :func:`nearest_neighbours`
    for ``leave_one_out`` and the index arrays.
    """
    return float(reid_hits(probe_emb, probe_ids, gallery_emb, gallery_ids, leave_one_out,
                           probe_index=probe_index, gallery_index=gallery_index).mean())


def identity_distance_stats(emb, ids, threshold: float = SAME_PERSON_THRESHOLD) -> dict:
    """Distances between all pairs of distinct images: same-identity and
    different-identity mean/min/max, and the fraction of pairs a ``threshold`` classifies
    correctly (same below it, different at or above it)."""
    e, ids = _as_np(emb), np.asarray(ids)
    d = pairwise_distances(e)
    iu = np.triu_indices(len(e), k=1)
    same = (ids[:, None] == ids[None, :])[iu]
    dv = d[iu]
    s, o = dv[same], dv[~same]
    out = {"n_images": int(len(e)), "n_identities": int(len(np.unique(ids))),
           "threshold": float(threshold),
           "pair_accuracy": float(((s < threshold).sum() + (o >= threshold).sum()) / len(dv))}
    for name, v in (("same", s), ("different", o)):
        out[f"{name}_mean"] = float(v.mean()) if len(v) else float("nan")
        out[f"{name}_min"] = float(v.min()) if len(v) else float("nan")
        out[f"{name}_max"] = float(v.max()) if len(v) else float("nan")
    return out


def _batched(fn: Callable, x: torch.Tensor, batch_size: int | None):
    if batch_size is None or batch_size >= len(x):
        return fn(x)
    parts = [fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return np.concatenate([np.asarray(p) for p in parts])


def reid_report(embed_fn: Callable, clean_images: torch.Tensor, ids,
                camera_fn: Callable[[torch.Tensor], torch.Tensor],
                batch_size: int | None = None) -> dict:
    """Re-identification of a privacy camera on a labelled set of clean face crops.

    ``embed_fn`` maps ``(N, 3, H, W)`` images in ``[0, 1]`` to ``(N, D)`` embeddings (e.g. a
    :class:`~deid.judges.dlib.DlibFaceEmbedder`; it must accept the camera's output
    size too); ``camera_fn`` maps clean images to camera images (run under ``no_grad``, in
    chunks of ``batch_size`` if given). Returns a dict with:

    - ``top1_clean_baseline``: clean probes vs the clean gallery (the attack's ceiling),
    - ``top1_clean_gallery``: ``camera(x_i)`` vs clean ``x_j``,
    - ``top1_matched_gallery``: ``camera(x_i)`` vs ``camera(x_j)``,
    - ``chance``: ``1 / n_identities``,
    - ``mean_distance_to_clean``: mean ``||e(camera(x_i)) - e(x_i)||``,
    - ``n_images``, ``n_identities``,

    all leave-one-out over images (gallery image ``i`` is never a candidate for probe ``i``).
    """
    ids = np.asarray(ids)
    if len(ids) != len(clean_images):
        raise ValueError(f"{len(clean_images)} images but {len(ids)} identity labels")
    with torch.no_grad():
        cam = _batched(camera_fn, clean_images, batch_size)
    e_clean = _as_np(embed_fn(clean_images))
    e_cam = _as_np(embed_fn(cam))
    n_ids = len(np.unique(ids))
    report = {
        "n_images": int(len(ids)),
        "n_identities": int(n_ids),
        "chance": 1.0 / n_ids,
        "top1_clean_baseline": reid_top1(e_clean, ids, e_clean, ids, leave_one_out=True),
        "top1_clean_gallery": reid_top1(e_cam, ids, e_clean, ids, leave_one_out=True),
        "top1_matched_gallery": reid_top1(e_cam, ids, e_cam, ids, leave_one_out=True),
        "mean_distance_to_clean": float(distance(e_cam, e_clean).mean()),
    }
    log.info("re-id: %s", report)
    return report
