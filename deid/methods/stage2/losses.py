"""Stage-2 loss terms, as plain functions of tensors (the solver decides which networks each
one trains; see :mod:`deid.methods.stage2.solver`).

References:

- Y. Choi et al., "StarGAN v2", CVPR 2020: non-saturating adversarial loss, style
  reconstruction, diversity sensitive loss, cycle consistency.
- L. Mescheder, A. Geiger, S. Nowozin, "Which training methods for GANs do actually
  converge?", ICML 2018: the R1 penalty ``0.5 E||grad_x D(x)||^2`` on reals.
- R. Zhang et al., "The unreasonable effectiveness of deep features as a perceptual metric",
  CVPR 2018 (LPIPS, here with the offline AlexNet weights of :mod:`deid.judges.lpips`).

Images are ``(B, 3, S, S)`` in [0, 1]; styles ``(B, style_dim)``; heatmaps ``(B, K, S/4,
S/4)``; embeddings ``(B, D)``. Every function returns a scalar mean over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deid.faces.heatmaps import face_masks
from deid.faces.landmark_groups import indices

__all__ = ["adversarial_loss", "r1_penalty", "style_reconstruction_loss", "diversity_loss",
           "cycle_loss", "expression_heatmap_loss", "expression_pixel_loss",
           "expression_mask", "privacy_dial_loss", "EXPRESSION_GROUPS"]

#: Landmark groups that carry expression (the jaw and nose carry pose and identity).
EXPRESSION_GROUPS = ("brows", "eyes", "mouth")


def _expression_points() -> list[int]:
    return sorted(i for g in EXPRESSION_GROUPS for i in indices(g))


def adversarial_loss(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of ``logits (B,)`` against a constant label (1 real, 0 fake);
    with target 1 on fakes it is the generator's non-saturating loss."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def r1_penalty(logits: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
    """``0.5 * mean_b ||d logits_b / d reals_b||^2`` (``reals`` must require grad and
    ``logits`` be computed from it); differentiable (``create_graph``) so it trains D."""
    (grad,) = torch.autograd.grad(logits.sum(), reals, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


def style_reconstruction_loss(s_pred: torch.Tensor, s_target: torch.Tensor) -> torch.Tensor:
    """``mean |E(G(y, s)) - s|``."""
    return (s_pred - s_target).abs().mean()


def diversity_loss(out1: torch.Tensor, out2: torch.Tensor) -> torch.Tensor:
    """``mean |G(y, s1) - G(y, s2)|`` (the solver *subtracts* it, with a decaying weight;
    ``out2`` is detached, as upstream)."""
    return (out1 - out2.detach()).abs().mean()


def cycle_loss(reconstruction: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean |G(G(y, s), E(y)) - y|``: the output, re-encoded with the style of ``y``, gives
    back the privacy image."""
    return (reconstruction - y).abs().mean()


def expression_heatmap_loss(teacher_source: torch.Tensor,
                            teacher_output: torch.Tensor) -> torch.Tensor:
    """``mean |U*(x) - U*(G(..))|`` on the expression landmarks' heatmap channels (brows,
    eyes, mouth): ``(B, K, h, w)`` each, K >= 68 (a boundary channel is ignored). The clean
    teacher's heatmaps of the source are the target (pass them detached)."""
    pts = _expression_points()
    return (teacher_output[:, pts] - teacher_source[:, pts]).abs().mean()


def expression_mask(teacher_source: torch.Tensor, image_size: int) -> torch.Tensor:
    """``(B, 1, S, S)`` soft mask of the eye and mouth regions (brows included), from the
    teacher's heatmaps of the source (:func:`deid.faces.heatmaps.face_masks`, fine
    sigma)."""
    _, mask = face_masks(teacher_source[:, :68].detach(), image_size,
                         fine_points=_expression_points(),
                         coarse_points=_expression_points())
    return mask


def expression_pixel_loss(source: torch.Tensor, output: torch.Tensor,
                          mask: torch.Tensor) -> torch.Tensor:
    """The paper's Eq. 12 read with the generated image: ``sum |M * (x - G(..))| / sum M``
    on the eye and mouth regions ``M`` (:func:`expression_mask`). It copies the source's
    pixels there, so it can leak identity; the heatmap form is the default."""
    num = (mask * (source - output).abs()).sum()
    return num / (mask.sum() * source.shape[1]).clamp_min(1.0)


def privacy_dial_loss(e_output: torch.Tensor, e_source: torch.Tensor,
                      margin: torch.Tensor | float,
                      centre: torch.Tensor | None = None) -> torch.Tensor:
    """``mean |cos(e(G(..)) - c, e(x) - c) - margin|``: the output's identity cosine to its
    source is pulled to ``margin`` (a float or per-sample ``(B,)``): 1 keeps the identity, 0
    makes it unrelated. ``e`` is the differentiable dlib twin, never a held-out judge.

    ``centre`` ``c`` (``(D,)``, the mean embedding of the training faces): dlib's
    descriptors are not centred (on the johns faces, different people have cosine 0.81 on
    average and noise has 0.84 to a face), so raw cosines of 0.3 or 0 are out of reach of
    any face. Centred by the training faces' mean, different people average 0.14 and the
    same person 0.88, the scale ArcFace cosines (FALCO's margins) live on."""
    if centre is not None:
        e_output, e_source = e_output - centre, e_source - centre
    cos = F.cosine_similarity(e_output, e_source.detach(), dim=1)
    return (cos - margin).abs().mean()
