"""Geometric jitter of face crops: a horizontal flip, a rotation, a scale and a shift, with
the 68 landmarks carried along. One family serves two purposes:

- **evaluation**: a deterministic, seeded jitter of every test face
  (:func:`jitter_dataset`), so a landmark regressor must read geometry to beat a constant
  (the mean shape of centred, upright crops is a strong predictor otherwise);
- **training**: the same transforms drawn per step (:func:`jitter`, one generator per sample,
  as :mod:`optics.kit.schedule` gives them), so training sees what evaluation will.

Conventions: images ``(N, C, S, S)`` in [0, 1]; landmarks ``(N, 68, 2)`` as ``(x, y)`` in
**pixels** with pixel ``i`` covering ``[i, i + 1)`` (:mod:`deid.faces.landmarks`), which is
also ``grid_sample``'s ``align_corners=False`` convention. The flip uses the 68-point
left/right permutation (:func:`deid.faces.landmark_groups.hflip_landmarks`). Outside the
source the image is extended by its border pixels (no black corners that would give the
rotation away).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deid.faces.landmark_groups import hflip_landmarks
from optics.kit.schedule import sample_generator

__all__ = ["Jitter", "EVAL_JITTER", "draw_params", "jitter", "jitter_dataset",
           "pixel_affines", "move_chip_affines"]

#: Step index reserved for the evaluation jitter in :func:`optics.kit.schedule.sample_generator`
#: (training steps are >= 0, figures use -1).
EVAL_STEP = -2


@dataclass(frozen=True)
class Jitter:
    """Ranges of the geometric jitter (uniform in each range).

    Fields:
        max_rotation_deg: rotation in [-r, r] degrees about the crop centre.
        max_scale: scale factor in [1 - s, 1 + s].
        max_shift: shift in [-t, t] of the face size, along x and y independently.
        flip_probability: probability of a horizontal flip (with the landmark permutation).
        face_fraction: the face's share of the crop side (the demo corpus crops the face box
            with a 1.6 margin, so 1 / 1.6), to turn ``max_shift`` into pixels.
    """

    max_rotation_deg: float = 20.0
    max_scale: float = 0.15
    max_shift: float = 0.10
    flip_probability: float = 0.5
    face_fraction: float = 1 / 1.6

    def __post_init__(self):
        if min(self.max_rotation_deg, self.max_scale, self.max_shift) < 0 or \
                not 0 <= self.flip_probability <= 1 or self.max_scale >= 1:
            raise ValueError(f"jitter ranges must be >= 0 (scale < 1, flip in [0, 1]): {self}")


#: The evaluation jitter of issue 12: rotation 20 deg, scale 15%, shift 10% of the face, flips.
EVAL_JITTER = Jitter()


def draw_params(generators, cfg: Jitter) -> torch.Tensor:
    """``(N, 5)`` float64 parameters ``(flip, angle_rad, scale, shift_x, shift_y)`` (shifts in
    fractions of the crop side), one row per generator (4 uniforms each, in that order)."""
    rows = []
    for g in generators:
        u = torch.rand(4, generator=g, dtype=torch.float64)
        v = torch.rand(2, generator=g, dtype=torch.float64)
        rows.append([float(u[0] < cfg.flip_probability),
                     math.radians((2 * u[1].item() - 1) * cfg.max_rotation_deg),
                     1 + (2 * u[2].item() - 1) * cfg.max_scale,
                     (2 * v[0].item() - 1) * cfg.max_shift * cfg.face_fraction,
                     (2 * v[1].item() - 1) * cfg.max_shift * cfg.face_fraction])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)


def _theta(params: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 3)`` affine of ``affine_grid``: output normalised coordinates to input ones.
    The face is rotated by ``angle`` (counter-clockwise on screen), scaled by ``scale`` and
    moved by ``shift`` (crop sides; normalised coordinates span 2 per side)."""
    angle, scale = params[:, 1], params[:, 2]
    tx, ty = params[:, 3] * 2, params[:, 4] * 2
    c, s = torch.cos(angle) / scale, torch.sin(angle) / scale
    # inverse of: p_out = scale R(-angle) p_in + t   (y points down on screen)
    return torch.stack([torch.stack([c, -s, -(c * tx - s * ty)], -1),
                        torch.stack([s, c, -(s * tx + c * ty)], -1)], 1)


def pixel_affines(params: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 2, 3)`` float64: where a point of the source crop lands in the jittered one, in
    continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``), flip included."""
    theta = _theta(params)
    a_inv = torch.linalg.inv(theta[:, :, :2])
    t = theta[:, :, 2]
    # continuous pixel c -> normalised p = 2 c / S - 1 -> q = A^-1 (p - t) -> c' = (q + 1) S / 2,
    # so c' = A^-1 c + (1 - A^-1 (1 + t)) S / 2
    off = (1 - (a_inv @ (1 + t)[..., None])[..., 0]) * size / 2
    out = torch.cat([a_inv, off[..., None]], dim=-1)
    flip = params[:, 0] > 0.5
    if flip.any():  # the flip x -> S - x comes first
        f = torch.tensor([[-1.0, 0.0, float(size)], [0.0, 1.0, 0.0]], dtype=out.dtype)
        flipped = out[:, :, :2] @ f[:, :2]
        flipped_off = (out[:, :, :2] @ f[:, 2:])[..., 0] + out[:, :, 2]
        out = torch.where(flip.view(-1, 1, 1), torch.cat([flipped, flipped_off[..., None]], -1),
                          out)
    return out


def move_chip_affines(affines: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """Chip affines (chip pixel -> image pixel, pixel centres on integers, as dlib's
    alignment gives them) of the jittered images: they cut the same chips as ``affines`` cut
    from the source crops."""
    j = pixel_affines(params, size).to(affines.dtype)
    lin = j[:, :, :2] @ affines[:, :, :2]
    # integer-centre u -> continuous u + 0.5 -> J -> continuous -> u' - 0.5
    off = (j[:, :, :2] @ (affines[:, :, 2:] + 0.5))[..., 0] + j[:, :, 2] - 0.5
    return torch.cat([lin, off[..., None]], dim=-1)


def jitter(images: torch.Tensor, landmarks: torch.Tensor | None, params: torch.Tensor):
    """Apply :func:`draw_params` rows to ``images (N, C, S, S)`` and ``landmarks (N, 68, 2)``
    (or None). Returns ``(images, landmarks)``; differentiable in the images."""
    n, _, h, w = images.shape
    if h != w:
        raise ValueError(f"jitter expects square crops, got {h}x{w}")
    if len(params) != n:
        raise ValueError(f"{n} images but {len(params)} parameter rows")
    flip = params[:, 0] > 0.5
    if flip.any():
        images = torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
        if landmarks is not None:
            landmarks = torch.where(flip.view(-1, 1, 1).to(landmarks.device),
                                    hflip_landmarks(landmarks, w), landmarks)
    theta = _theta(params)
    grid = F.affine_grid(theta.to(images.dtype).to(images.device), list(images.shape),
                         align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    if landmarks is None:
        return out, None
    # a landmark at input normalised p goes to output q with theta [q; 1] = p
    p = landmarks.double() / w * 2 - 1
    a, t = theta[:, :, :2], theta[:, :, 2]
    q = torch.linalg.solve(a, (p - t[:, None, :]).transpose(1, 2)).transpose(1, 2)
    return out, ((q + 1) / 2 * w).to(landmarks.dtype)


def jitter_dataset(images: torch.Tensor, landmarks: torch.Tensor | None = None,
                   seed: int = 0, cfg: Jitter = EVAL_JITTER):
    """The deterministic evaluation jitter: image ``i`` gets the parameters drawn from
    ``sample_generator(seed, EVAL_STEP, i)``, whatever the batch it comes in. Returns
    ``(images, landmarks, params)``."""
    params = draw_params([sample_generator(seed, EVAL_STEP, i) for i in range(len(images))],
                         cfg)
    out, lmk = jitter(images, landmarks, params)
    return out, lmk, params
