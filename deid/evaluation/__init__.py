"""Measured privacy and utility, on tensors, independent of any dataset format.

- :mod:`.quality`: PSNR and SSIM of ``(B, C, H, W)`` images (utility);
- :mod:`.identity`: dlib ResNet face descriptors of face crops, the "FR" metric (privacy);
- :mod:`.reid`: nearest-neighbour re-identification against clean and matched galleries.

The differentiable copy of the identity network, for training losses, is
:mod:`deid.identity_net`. Protocol and measured numbers: ``docs/identity.md``.
"""

from .identity import DlibFaceEmbedder, distance, pairwise_distances
from .quality import match_size, psnr, ssim
from .reid import identity_distance_stats, nearest_neighbours, reid_report, reid_top1

__all__ = [
    "psnr",
    "ssim",
    "match_size",
    "DlibFaceEmbedder",
    "distance",
    "pairwise_distances",
    "reid_top1",
    "reid_report",
    "nearest_neighbours",
    "identity_distance_stats",
]
