"""Landmark heatmaps: targets, decoding, face masks, the adaptive wing loss and NME.

References
----------
- X. Wang, L. Bo, L. Fuxin, "Adaptive Wing Loss for Robust Face Alignment via Heatmap
  Regression", ICCV 2019 (the loss and its foreground weight map, Sec. 3-4).
- A. Bulat, G. Tzimiropoulos, "How far are we from solving the 2D & 3D face alignment
  problem?", ICCV 2017 (FAN, heatmap targets).
- Y. Choi et al., "StarGAN v2: Diverse Image Synthesis for Multiple Domains", CVPR 2020
  (heatmap masks on the generator's high-pass skips, Sec. 3 and App.).
- A. Nibali et al., "Numerical Coordinate Regression with Convolutional Neural Networks",
  2018 (soft-argmax / DSNT decoding).
- F. Zhang et al., "Distribution-Aware Coordinate Representation for Human Pose Estimation",
  CVPR 2020 (sub-pixel peaks from a Taylor expansion of the log-heatmap).

Coordinate convention (used everywhere in privlens' face code):

- A point is ``(x, y)``: ``x`` along the width (columns), ``y`` along the height (rows), in
  **pixels** of the image or the heatmap it refers to.
- Pixel ``i`` covers ``[i, i + 1)``; its centre is at ``i + 0.5``. The image spans
  ``[0, S]``. This is the convention of ``F.interpolate(..., align_corners=False)`` and
  ``F.grid_sample(..., align_corners=False)``.
- Hence an image of side ``S`` and its heatmap of side ``H`` relate by a pure scale:
  ``u_heatmap = u_image * H / S``, no offset. With ``S = 4 H`` the centre of heatmap pixel
  ``j`` (``j + 0.5``) is image coordinate ``4 j + 2``, the centre of the 4x4 block it pools.

Missing landmarks are NaN throughout: they give zero heatmaps, and are skipped by :func:`nme`.
All functions are differentiable torch code and keep the input's device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from deid.faces.landmark_groups import GROUPS, NUM_LANDMARKS_68, OUTER_EYE_CORNERS, indices

__all__ = [
    "gaussian_heatmaps",
    "soft_argmax",
    "taylor_peak",
    "heatmaps_to_landmarks",
    "face_masks",
    "gaussian_blur",
    "FINE_MASK_POINTS",
    "COARSE_MASK_POINTS",
    "adaptive_wing_loss",
    "awing_weight_map",
    "nme",
]

#: 68-point channels summed into the fine mask: brows, eyes, nose and mouth.
FINE_MASK_POINTS = indices("inner_face")
#: 68-point channels summed into the coarse mask: every point, jaw line included.
COARSE_MASK_POINTS = indices("face")


def _pixel_centres(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(n, dtype=like.dtype, device=like.device) + 0.5


# --------------------------------------------------------------------------------------------
# Targets and decoding
# --------------------------------------------------------------------------------------------

def gaussian_heatmaps(landmarks: torch.Tensor, image_size: int, heatmap_size: int,
                      sigma_px: float = 1.0) -> torch.Tensor:
    """Gaussian heatmap targets, one channel per landmark.

    Parameters
    ----------
    landmarks : ``(B, K, 2)`` floating tensor, ``(x, y)`` in **image pixels** of a square image
        of side ``image_size`` (pixel-centre convention, see the module docstring). NaN
        (either coordinate) marks a missing point.
    image_size : side ``S`` of that image in pixels.
    heatmap_size : side ``H`` of the heatmaps in pixels.
    sigma_px : standard deviation of the Gaussian in **heatmap pixels**.

    Returns
    -------
    ``(B, K, H, H)``: ``exp(-|c - p|^2 / (2 sigma^2))`` at each heatmap pixel centre ``c``,
    with ``p = landmark * H / S``. The peak is 1 when ``p`` falls on a pixel centre; missing
    points give all-zero channels. Differentiable in ``landmarks``.
    """
    if landmarks.ndim != 3 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must be (B, K, 2), got {tuple(landmarks.shape)}")
    if not landmarks.is_floating_point():
        raise TypeError("landmarks must be a floating-point tensor")
    if sigma_px <= 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    valid = torch.isfinite(landmarks).all(dim=-1)                       # (B, K)
    p = torch.where(valid[..., None], landmarks, torch.zeros_like(landmarks))
    p = p * (heatmap_size / image_size)
    c = _pixel_centres(heatmap_size, landmarks)
    gx = torch.exp(-((c - p[..., 0:1]) ** 2) / (2 * sigma_px**2))       # (B, K, H) along x
    gy = torch.exp(-((c - p[..., 1:2]) ** 2) / (2 * sigma_px**2))       # (B, K, H) along y
    heat = gy[..., :, None] * gx[..., None, :]                          # rows are y
    return heat * valid[..., None, None].to(heat.dtype)


def _sharpened_weights(heat: torch.Tensor, beta: float) -> torch.Tensor:
    """``expm1(beta * relu(h)) / beta`` (``relu(h)`` at ``beta = 0``), rescaled per map by a
    constant where it would overflow; the scale cancels in the normalised mean."""
    h = heat.clamp(min=0)
    if beta == 0:
        return h
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    a = beta * h
    peak = a.detach().amax(dim=(-2, -1), keepdim=True)
    big = peak > 60.0
    small_branch = torch.expm1(a.clamp(max=60.0))
    big_branch = torch.exp(a - torch.where(big, peak, torch.zeros_like(peak)))
    return torch.where(big, big_branch, small_branch)


def soft_argmax(heatmaps: torch.Tensor, beta: float = 0.0,
                window: int | None = None) -> torch.Tensor:
    """Differentiable sub-pixel peak location of each heatmap (a weighted centroid).

    Parameters
    ----------
    heatmaps : ``(B, K, H, W)``.
    beta : sharpness in **1 / heatmap value** (an inverse temperature). Pixel weights are
        ``expm1(beta * relu(h)) / beta``, which is ``relu(h)`` at ``beta = 0`` (the default)
        and grows like a softmax ``exp(beta * h)`` for large ``beta``, but with weight exactly 0
        wherever ``h <= 0``. ``beta = 0`` is exact for Gaussian targets (error < 1e-6 px for
        ``sigma >= 1`` heatmap px, away from the border); ``beta > 0`` sharpens the weights,
        which damps a noisy background but biases the estimate toward pixel centres when the
        sharpened peak becomes narrower than about 0.8 px (``sigma / sqrt(beta)``).
    window : if given, only pixels within ``window`` heatmap pixels (Chebyshev distance) of
        each map's hard argmax count: use it on network outputs, whose small positive
        background otherwise pulls the centroid toward the map centre. Keep it at least
        ``4 sigma`` to stay exact on Gaussian peaks. The argmax is piecewise constant, so the
        result stays differentiable in ``heatmaps``.

    Returns
    -------
    ``(B, K, 2)`` ``(x, y)`` in **heatmap pixels** (pixel-centre convention). A map with no
    positive value (e.g. the zero heatmap of a missing point) gives NaN.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (B, K, H, W), got {tuple(heatmaps.shape)}")
    _, _, h, w = heatmaps.shape
    weights = _sharpened_weights(heatmaps, float(beta))
    if window is not None:
        flat = heatmaps.detach().flatten(-2).argmax(dim=-1)            # (B, K)
        row, col = (flat // w)[..., None], (flat % w)[..., None]
        near_y = ((torch.arange(h, device=heatmaps.device) - row).abs() <= window)
        near_x = ((torch.arange(w, device=heatmaps.device) - col).abs() <= window)
        weights = weights * (near_y[..., :, None] & near_x[..., None, :]).to(weights.dtype)
    total = weights.sum(dim=(-2, -1))
    x = (weights.sum(dim=-2) * _pixel_centres(w, weights)).sum(dim=-1) / total
    y = (weights.sum(dim=-1) * _pixel_centres(h, weights)).sum(dim=-1) / total
    return torch.stack([x, y], dim=-1)


def taylor_peak(heatmaps: torch.Tensor, max_offset_px: float = 1.0) -> torch.Tensor:
    """Sub-pixel peak from a second-order Taylor expansion of ``log h`` at the argmax.

    One Newton step ``p = m - Hess^-1 grad`` from the centre ``m`` of the argmax pixel, with
    central differences of ``log h`` on its 3x3 neighbourhood (Zhang et al. 2020). The log of
    a Gaussian is an exact quadratic, so Gaussian peaks (sigma from about 0.3 px up, even
    elliptical ones) are recovered to rounding error, while the far background, which biases
    :func:`soft_argmax` on network outputs, is never read. Differentiable in the nine values
    read; the argmax itself is piecewise constant.

    ``heatmaps``: ``(B, K, H, W)``, ``H, W >= 3``. The step is clipped to ``max_offset_px``
    heatmap pixels per axis, and dropped where the neighbourhood is not concave (or holds
    values <= 0), leaving the argmax pixel centre; an argmax on the border is moved one
    pixel inward. Returns ``(B, K, 2)`` ``(x, y)`` in **heatmap pixels**; NaN for a map with
    no positive value.
    """
    if heatmaps.ndim != 4 or min(heatmaps.shape[-2:]) < 3:
        raise ValueError(f"heatmaps must be (B, K, H, W) with H, W >= 3, "
                         f"got {tuple(heatmaps.shape)}")
    _, _, h, w = heatmaps.shape
    flat = heatmaps.flatten(-2)
    peak_idx = flat.detach().argmax(dim=-1)
    row = (peak_idx // w).clamp(1, h - 2)
    col = (peak_idx % w).clamp(1, w - 2)
    tiny = torch.finfo(heatmaps.dtype).tiny
    stencil = {}
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            idx = ((row + dr) * w + col + dc)[..., None]
            stencil[dr, dc] = flat.gather(-1, idx)[..., 0]
    positive = torch.stack(list(stencil.values())).amin(dim=0) > 0
    log = {k: v.clamp(min=tiny).log() for k, v in stencil.items()}
    gx = (log[0, 1] - log[0, -1]) / 2
    gy = (log[1, 0] - log[-1, 0]) / 2
    hxx = log[0, 1] - 2 * log[0, 0] + log[0, -1]
    hyy = log[1, 0] - 2 * log[0, 0] + log[-1, 0]
    hxy = (log[1, 1] - log[1, -1] - log[-1, 1] + log[-1, -1]) / 4
    det = hxx * hyy - hxy**2
    ok = positive & (hxx < 0) & (det > 0)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    dx = torch.where(ok, -(hyy * gx - hxy * gy) / safe_det, torch.zeros_like(det))
    dy = torch.where(ok, -(hxx * gy - hxy * gx) / safe_det, torch.zeros_like(det))
    x = col.to(heatmaps.dtype) + 0.5 + dx.clamp(-max_offset_px, max_offset_px)
    y = row.to(heatmaps.dtype) + 0.5 + dy.clamp(-max_offset_px, max_offset_px)
    xy = torch.stack([x, y], dim=-1)
    empty = (flat.detach().amax(dim=-1) <= 0)[..., None]
    return torch.where(empty, torch.full_like(xy, math.nan), xy)


def heatmaps_to_landmarks(heatmaps: torch.Tensor, image_size: int,
                          method: str = "soft_argmax", beta: float = 0.0,
                          window: int | None = None) -> torch.Tensor:
    """Heatmap peaks in **image pixels** of a square image of side ``image_size``.

    ``heatmaps``: ``(B, K, H, W)``; returns ``(B, K, 2)`` ``(x, y)``, the inverse of
    :func:`gaussian_heatmaps` (a pure scale by ``S / W`` and ``S / H``, see the module
    docstring). ``method``: ``"soft_argmax"`` (:func:`soft_argmax` with ``beta`` and
    ``window`` in heatmap pixels; smooth everywhere, but on network outputs it needs a
    ``window``) or ``"taylor"`` (:func:`taylor_peak`; local, the better choice for network
    outputs). Both are exact on Gaussian targets.
    """
    _, _, h, w = heatmaps.shape
    if method == "soft_argmax":
        xy = soft_argmax(heatmaps, beta=beta, window=window)
    elif method == "taylor":
        if beta != 0 or window is not None:
            raise ValueError("beta and window apply to method='soft_argmax' only")
        xy = taylor_peak(heatmaps)
    else:
        raise ValueError(f"method must be 'soft_argmax' or 'taylor', got {method!r}")
    scale = torch.tensor([image_size / w, image_size / h], dtype=xy.dtype, device=xy.device)
    return xy * scale


# --------------------------------------------------------------------------------------------
# Face masks for the generator
# --------------------------------------------------------------------------------------------

def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with std ``sigma_px`` **pixels**, zero
    padding, kernel radius ``ceil(3 sigma)``, kernel normalised to sum 1."""
    if sigma_px <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma_px))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-(t**2) / (2 * sigma_px**2))
    k = k / k.sum()
    c = images.shape[1]
    out = F.conv2d(images, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius),
                   groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0),
                    groups=c)


def _part_mask(heat: torch.Tensor, channels: Sequence[int], sigma_px: float,
               gain: float) -> torch.Tensor:
    mask = heat[:, list(channels)].sum(dim=1, keepdim=True).clamp(0, 1)
    return (gain * gaussian_blur(mask, sigma_px)).clamp(0, 1)


def face_masks(heatmaps: torch.Tensor, image_size: int, *, threshold: float = 0.1,
               fine_points: Sequence[int] = FINE_MASK_POINTS,
               coarse_points: Sequence[int] = COARSE_MASK_POINTS,
               fine_sigma_px: float | None = None, coarse_sigma_px: float | None = None,
               gain: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft face-part masks from landmark heatmaps, for the generator's high-pass skips.

    In StarGAN v2 the encoder caches its features at 32, 64 and 128 px (for 256 px images) and
    the decoder adds ``hpf(mask * cached)`` back: the high frequencies of the source pass only
    where the mask is on. The **coarse** mask (all points, jaw line included, blurred wider)
    gates the 32 px skip and keeps the face outline; the **fine** mask (brows, eyes, nose,
    mouth) gates the 64 and 128 px skips and keeps the inner parts' detail. Resize a mask to a
    skip's resolution with ``F.interpolate(mask, size=..., mode="bilinear")``.

    Steps: each channel is bilinearly upsampled to the image (``align_corners=False``, the
    module's pixel convention); values below ``threshold`` are zeroed, which removes a
    predicted map's background; a channel with anything left is divided by its peak (so at
    most ``1 / threshold`` times); the chosen channels are summed and clipped to 1; the sum
    is blurred, multiplied by ``gain`` and clipped to 1 again. Blur and gain turn the dotted
    contours into solid regions: with ``sigma = 1`` heatmap px targets and the defaults, the
    fine mask is 1 over the eyes, the nose and the mouth, and 0 on the jaw line.

    Parameters
    ----------
    heatmaps : ``(B, K, H, W)``, one channel per 68-point iBUG landmark (drop a boundary
        channel first); NaN values count as 0. Other layouts pass their own point lists.
    image_size : side ``S`` of the output masks in **pixels**.
    threshold : truncation level in heatmap units (targets peak at 1).
    fine_points, coarse_points : channels summed into each mask (default
        :data:`FINE_MASK_POINTS`, :data:`COARSE_MASK_POINTS`).
    fine_sigma_px, coarse_sigma_px : blur std in **image pixels**; by default ``S / 64``
        (fine: one feature pixel of the 64 px skip) and ``S / 16`` (coarse: two feature
        pixels of the 32 px skip).
    gain : the blurred sum is multiplied by it before clipping (>= 1 fills between points).

    Returns
    -------
    ``(coarse, fine)``, each ``(B, 1, S, S)`` with values in ``[0, 1]``.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be (B, K, H, W), got {tuple(heatmaps.shape)}")
    k = heatmaps.shape[1]
    for name, pts in (("fine_points", fine_points), ("coarse_points", coarse_points)):
        if len(pts) == 0 or max(pts) >= k or min(pts) < 0:
            raise ValueError(f"{name} must index the {k} heatmap channels")
    heat = torch.nan_to_num(heatmaps, nan=0.0)
    heat = F.interpolate(heat, size=(image_size, image_size), mode="bilinear",
                         align_corners=False)
    heat = torch.where(heat >= threshold, heat, torch.zeros_like(heat))
    peak = heat.amax(dim=(-2, -1), keepdim=True)
    heat = heat / torch.where(peak > 0, peak, torch.ones_like(peak))
    fine_sigma = image_size / 64 if fine_sigma_px is None else fine_sigma_px
    coarse_sigma = image_size / 16 if coarse_sigma_px is None else coarse_sigma_px
    return (_part_mask(heat, coarse_points, coarse_sigma, gain),
            _part_mask(heat, fine_points, fine_sigma, gain))


# --------------------------------------------------------------------------------------------
# Losses and metrics
# --------------------------------------------------------------------------------------------

def awing_weight_map(target: torch.Tensor, threshold: float = 0.2,
                     weight: float = 10.0) -> torch.Tensor:
    """Foreground weight map of the adaptive wing loss (Wang et al. 2019, Sec. 4.2).

    ``1 + weight * M`` where ``M`` is ``target > threshold`` grey-dilated by a 3x3 square.
    ``target``: ``(B, K, H, W)``; returns the same shape, no gradient.
    """
    fg = (target.detach() > threshold).to(target.dtype)
    fg = F.max_pool2d(fg.flatten(0, 1)[:, None], kernel_size=3, stride=1, padding=1)
    return 1.0 + weight * fg.view_as(target)


def adaptive_wing_loss(pred: torch.Tensor, target: torch.Tensor, omega: float = 14.0,
                       theta: float = 0.5, epsilon: float = 1.0, alpha: float = 2.1,
                       weighted: bool = False, weight: float = 10.0,
                       weight_threshold: float = 0.2, reduction: str = "mean") -> torch.Tensor:
    """Adaptive wing loss between heatmaps (Wang et al., ICCV 2019, Eq. 7-8).

    With ``d = |target - pred|`` and ``p = alpha - target`` (per pixel)::

        AWing = omega * ln(1 + (d / epsilon) ** p)   if d < theta
                A * d - C                            otherwise
        A = omega * p * (theta / epsilon) ** (p - 1) / (epsilon * (1 + (theta / epsilon) ** p))
        C = theta * A - omega * ln(1 + (theta / epsilon) ** p)

    so the two pieces meet with equal value and slope at ``d = theta``. Heatmap values are
    dimensionless (targets in ``[0, 1]``); ``omega``, ``theta`` and ``epsilon`` are in those
    units. The loss is 0 only where ``pred == target``; the target is treated as a constant.

    ``pred``, ``target``: ``(B, K, H, W)``. ``weighted``: multiply by
    :func:`awing_weight_map` (``weight`` on the dilated foreground ``target >
    weight_threshold``). ``reduction``: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    y = target.detach()
    d = (y - pred).abs()
    p = alpha - y
    ratio = theta / epsilon
    a = omega * p * ratio ** (p - 1) / (epsilon * (1 + ratio**p))
    c = theta * a - omega * torch.log1p(ratio**p)
    small = omega * torch.log1p((d.clamp(max=theta) / epsilon) ** p)
    loss = torch.where(d < theta, small, a * d - c)
    if weighted:
        loss = loss * awing_weight_map(y, weight_threshold, weight)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _normalizing_distance(gt: torch.Tensor, normalizer) -> torch.Tensor:
    b, k, _ = gt.shape
    if isinstance(normalizer, str):
        if normalizer in ("inter_ocular", "inter_pupil") and k != NUM_LANDMARKS_68:
            raise ValueError(f"normalizer {normalizer!r} needs the 68-point layout, got K={k}; "
                             "pass a pair of point indices instead")
        if normalizer == "inter_ocular":
            i, j = OUTER_EYE_CORNERS
            return (gt[:, i] - gt[:, j]).norm(dim=-1)
        if normalizer == "inter_pupil":
            right = gt[:, list(GROUPS["right_eye"])].mean(dim=1)
            left = gt[:, list(GROUPS["left_eye"])].mean(dim=1)
            return (right - left).norm(dim=-1)
        if normalizer == "box":
            finite = torch.isfinite(gt).all(dim=-1, keepdim=True)
            hi = torch.where(finite, gt, torch.full_like(gt, -math.inf)).amax(dim=1)
            lo = torch.where(finite, gt, torch.full_like(gt, math.inf)).amin(dim=1)
            return ((hi - lo).prod(dim=-1)).sqrt()
        raise ValueError(f"unknown normalizer {normalizer!r}: use 'inter_ocular', "
                         "'inter_pupil', 'box', a pair of indices or distances")
    if isinstance(normalizer, tuple | list) and len(normalizer) == 2 and all(
            isinstance(v, int) for v in normalizer):
        i, j = normalizer
        return (gt[:, i] - gt[:, j]).norm(dim=-1)
    dist = torch.as_tensor(normalizer, dtype=gt.dtype, device=gt.device)
    return dist.expand(b) if dist.ndim == 0 else dist


def nme(pred_landmarks: torch.Tensor, gt_landmarks: torch.Tensor,
        normalizer="inter_ocular") -> torch.Tensor:
    """Normalised mean error per image.

    ``NME_b = mean_k |pred_bk - gt_bk| / d_b`` over the points whose ground truth is finite
    (NaN rows of ``gt_landmarks`` are missing annotations and are skipped; a NaN prediction of
    an annotated point makes that image's NME NaN, so failures are not hidden).

    Parameters
    ----------
    pred_landmarks, gt_landmarks : ``(B, K, 2)`` ``(x, y)``, both in the same unit (pixels).
    normalizer : the distance ``d_b``:

        - ``"inter_ocular"``: outer eye corners 36-45 (68 points; 300-W, WFLW);
        - ``"inter_pupil"``: centroids of the two eye contours (68 points);
        - ``"box"``: ``sqrt(w h)`` of the ground truth's bounding box;
        - ``(i, j)``: distance between ground-truth points ``i`` and ``j`` (e.g. the two eye
          centres of a 5-point layout);
        - a number or a ``(B,)`` tensor of distances, in the landmarks' unit.

    Returns
    -------
    ``(B,)`` dimensionless NME; NaN for an image with no annotated point or an undefined
    normalising distance.
    """
    if pred_landmarks.shape != gt_landmarks.shape or gt_landmarks.ndim != 3:
        raise ValueError(f"pred {tuple(pred_landmarks.shape)} and gt "
                         f"{tuple(gt_landmarks.shape)} must both be (B, K, 2)")
    valid = torch.isfinite(gt_landmarks).all(dim=-1)                    # (B, K)
    diff = pred_landmarks - torch.where(valid[..., None], gt_landmarks,
                                        torch.zeros_like(gt_landmarks))
    # Keep gradients finite: skipped rows and exact hits (where the norm has no derivative)
    # never reach the square root.
    sq = diff.pow(2).sum(dim=-1)
    used = valid & (sq != 0)                                           # NaN stays NaN
    err = torch.where(used, torch.where(used, sq, torch.ones_like(sq)).sqrt(),
                      torch.zeros_like(sq))
    count = valid.sum(dim=1).to(err.dtype)
    mean_err = err.sum(dim=1) / count                                   # NaN if count == 0
    return mean_err / _normalizing_distance(gt_landmarks, normalizer)
