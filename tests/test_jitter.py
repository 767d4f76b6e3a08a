"""The geometric jitter of face crops (deid.faces.jitter): images and landmarks move together."""

from __future__ import annotations

import math

import pytest
import torch

from deid.faces.jitter import (
    EVAL_JITTER,
    Jitter,
    draw_params,
    jitter,
    jitter_dataset,
    move_chip_affines,
    pixel_affines,
)
from deid.faces.landmark_groups import schematic_face_68


def _blob_images(points: torch.Tensor, size: int, sigma: float = 1.2) -> torch.Tensor:
    """One Gaussian blob per image at ``points (N, 2)`` pixel coordinates (centre convention
    of the landmarks: pixel i covers [i, i + 1))."""
    c = torch.arange(size, dtype=torch.float64) + 0.5
    dx = c[None, None, :] - points[:, 0, None, None]
    dy = c[None, :, None] - points[:, 1, None, None]
    return torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))[:, None].expand(-1, 3, -1, -1)


def _centroid(img: torch.Tensor) -> torch.Tensor:
    w = img[:, 0]
    c = torch.arange(w.shape[-1], dtype=w.dtype) + 0.5
    m = w.sum(dim=(-2, -1))
    return torch.stack([(w.sum(-2) * c).sum(-1) / m, (w.sum(-1) * c).sum(-1) / m], -1)


def test_identity_parameters_change_nothing():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    lmk = torch.rand(2, 68, 2, dtype=torch.float64) * 32
    params = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]] * 2, dtype=torch.float64)
    y, l2 = jitter(x, lmk, params)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(l2, lmk)


def test_landmarks_follow_the_image():
    """A blob drawn at a point lands where the jittered landmark says (within 0.15 px)."""
    g = torch.Generator().manual_seed(0)
    size = 64
    pts = 20 + torch.rand(12, 2, generator=g, dtype=torch.float64) * 24
    params = draw_params([torch.Generator().manual_seed(k) for k in range(12)],
                         Jitter(max_rotation_deg=20, max_scale=0.15, max_shift=0.1,
                                flip_probability=0.5))
    assert (params[:, 0] > 0.5).any() and (params[:, 0] < 0.5).any()
    img = _blob_images(pts, size)
    lmk = pts[:, None, :].expand(-1, 68, -1).clone()
    y, moved = jitter(img, lmk, params)
    # a flipped image permutes landmarks, but every point here is the same blob
    torch.testing.assert_close(_centroid(y), moved[:, 0], atol=0.15, rtol=0)


def test_flip_uses_the_68_point_permutation():
    face = schematic_face_68(64.0, dtype=torch.float64)[None]  # mirror-symmetric layout
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    params = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    y, moved = jitter(x, face, params)
    torch.testing.assert_close(y, x.flip(-1))
    torch.testing.assert_close(moved, face)  # left eye lands where the left eye was


def test_evaluation_jitter_is_deterministic_per_face_and_in_range():
    x = torch.rand(6, 3, 32, 32)
    a, _, pa = jitter_dataset(x, seed=3)
    b, _, pb = jitter_dataset(x[:4], seed=3)
    torch.testing.assert_close(a[:4], b)
    assert torch.equal(pa[:4], pb)
    c, _, pc = jitter_dataset(x, seed=4)
    assert not torch.equal(pa, pc)
    many = draw_params([torch.Generator().manual_seed(k) for k in range(400)], EVAL_JITTER)
    assert many[:, 1].abs().max() <= math.radians(20) + 1e-12
    assert ((many[:, 2] - 1).abs() <= 0.15 + 1e-12).all()
    assert (many[:, 3:].abs() <= 0.1 / 1.6 + 1e-12).all()
    assert 0.4 < many[:, 0].mean() < 0.6


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="jitter ranges"):
        Jitter(max_scale=1.2)
    with pytest.raises(ValueError, match="square"):
        jitter(torch.rand(1, 3, 8, 9), None, torch.zeros(1, 5))


def test_pixel_affines_move_points_as_the_landmarks_move():
    params = draw_params([torch.Generator().manual_seed(k) for k in range(16)], EVAL_JITTER)
    pts = torch.rand(16, 1, 2, dtype=torch.float64) * 64
    _, moved = jitter(torch.rand(16, 3, 64, 64, dtype=torch.float64),
                      pts.expand(-1, 68, -1).clone(), params)
    a = pixel_affines(params, 64)
    mapped = (a[:, :, :2] @ pts.transpose(1, 2))[..., 0] + a[:, :, 2]
    torch.testing.assert_close(mapped, moved[:, 0], atol=1e-9, rtol=0)


def test_moved_chip_affines_cut_the_same_chip():
    """The identity twin aligns faces with dlib's chip affines of the clean crop; after the
    jitter, the moved affines must cut the same chip out of the jittered crop."""
    from deid.judges.identity_net import warp_to_chips

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(4, 3, 16, 16, generator=g), size=96,
                                        mode="bilinear", align_corners=False)
    ang = torch.tensor([0.1, -0.2, 0.05, 0.0])
    s = torch.tensor([0.35, 0.4, 0.3, 0.38])
    affines = torch.stack([torch.stack([
        torch.stack([s * torch.cos(ang), -s * torch.sin(ang), torch.full((4,), 22.0)], -1)[k],
        torch.stack([s * torch.sin(ang), s * torch.cos(ang), torch.full((4,), 20.0)], -1)[k]])
        for k in range(4)])
    params = torch.tensor([[0.0, 0.2, 1.1, 0.03, -0.02], [1.0, -0.3, 0.9, 0.0, 0.04],
                           [1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.05, 0.05]],
                          dtype=torch.float64)
    jx, _ = jitter(x, None, params)
    before = warp_to_chips(x, affines)
    after = warp_to_chips(jx, move_chip_affines(affines, params, 96))
    # both are resamplings of one smooth image; they differ by interpolation only
    inner = (slice(None), slice(None), slice(20, -20), slice(20, -20))
    assert (after - before)[inner].abs().mean() < 0.01
