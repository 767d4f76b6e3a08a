"""FALCO-style anonymisation, run over privlens' stage-2 generator.

Reference: S. Barattin, C. Tzelepis, I. Patras, N. Sebe, "Attribute-preserving Face Dataset
Anonymization via Latent Code Optimization", CVPR 2023 (FALCO).

Per clean face ``x`` (it needs ``x``: a software-level method):

1. **Inversion.** Per-block style codes ``W (B, K, D)`` such that ``G(y, W, masks)``
   reproduces ``x``. The content input is privlens' own, ``y = camera(x)`` and the masks of
   ``U(y)``, so FALCO and privlens differ only in how the style is chosen. ``W`` starts at
   ``E(x)`` in every block and takes ``invert_steps`` Adam steps on ``L1 + LPIPS``. FALCO
   inverts with e4e into StyleGAN2's W+; neither is available offline.
2. **Pairing.** ``x``'s nearest public reference by the cosine of spatially pooled
   LPIPS-AlexNet conv5 features; the middle blocks of ``W`` start from that reference's
   style ``E(r)``. FALCO pairs with CLIP, FaRL, DINO or ArcFace features against 60k
   StyleGAN2 samples.
3. **Optimisation** of the middle blocks only, ``steps`` Adam steps (lr x0.8 at 75 % and at
   90 % of the steps) on ``lambda_id |cos(e(G), e(x)) - m| + lambda_attr L1(f(x), f(G))``.
   ``e`` is the dlib twin with the privacy dial's centred cosine (the stage-2 run's centre);
   the held-out judges never enter. ``f`` is the five LPIPS-AlexNet ReLU taps, each unit-
   normalised over channels (FALCO: the 197 FaRL ViT-B/16 tokens). FALCO optimises W+
   layers 3 to 7 of 18; pose comes from ``y`` here, and the default optimises every decoder
   block but the first and the last.

When the generator has the privacy-dial input it gets the run's middle training margin, as
privlens' own outputs do.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from deid.judges.identity_net import IdentityNet
from deid.judges.identity_twin import training_twin, twin_embed
from deid.judges.lpips import LPIPS, scale_input, unit_normalize
from deid.methods.stage2.frozen import FrozenParts
from deid.methods.stage2.inference import Anonymizer
from deid.methods.stage2.solver import with_margin
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to

__all__ = ["FalcoConfig", "FalcoResult", "Falco", "lr_factor", "middle_blocks",
           "lpips_taps", "pooled_features", "attribute_distance", "centred_cosine"]

log = logging.getLogger(__name__)


@dataclass
class FalcoConfig:
    """FALCO-style optimisation (defaults are FALCO's, inversion is privlens').

    Attributes:
        margin: target identity cosine ``m`` to the source (1 keeps it, 0 unrelated)
        steps: Adam steps on the middle blocks per image (FALCO: 50)
        lr: their learning rate (FALCO: 0.01), x0.8 at 75 % and at 90 % of ``steps``
        lambda_id: weight of ``|cos - m|`` (FALCO: 10)
        lambda_attr: weight of the attribute L1 (FALCO: 0.1)
        invert_steps: Adam steps of the inversion (0: ``E(x)`` as is)
        invert_lr: the inversion's learning rate
        blocks: decoder blocks optimised (empty: all but the first and the last)
        batch: images optimised together (each has its own loss; Adam is per entry)
    """

    margin: float = 0.5
    steps: int = 50
    lr: float = 0.01
    lambda_id: float = 10.0
    lambda_attr: float = 0.1
    invert_steps: int = 100
    invert_lr: float = 0.03
    blocks: tuple[int, ...] = ()
    batch: int = 8

    def __post_init__(self):
        if not -1.0 <= self.margin <= 1.0:
            raise ValueError(f"the FALCO margin is a cosine in [-1, 1], got {self.margin}")
        if self.steps < 0 or self.invert_steps < 0:
            raise ValueError("steps and invert_steps must be at least 0")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")
        if not (self.lr > 0 and self.invert_lr > 0):
            raise ValueError("learning rates must be positive")


@dataclass
class FalcoResult:
    """Outputs ``(N, 3, S, S)`` in [0, 1] and, per image: the paired reference's index and
    feature cosine, and the twin's centred identity cosine to the source before (the
    inversion) and after the optimisation."""

    outputs: torch.Tensor
    reference_index: torch.Tensor
    reference_cosine: torch.Tensor
    identity_cosine_inverted: torch.Tensor
    identity_cosine: torch.Tensor
    blocks: tuple[int, ...] = field(default=())


def lr_factor(step: int, steps: int) -> float:
    """FALCO's schedule: 1, then 0.8 from 75 % of ``steps``, 0.64 from 90 %."""
    return 0.8 ** (int(step >= math.ceil(0.75 * steps)) + int(step >= math.ceil(0.9 * steps)))


def middle_blocks(k: int) -> tuple[int, ...]:
    """The decoder blocks FALCO-style editing moves by default: all but the first and last
    (all of them when there are fewer than three)."""
    return tuple(range(1, k - 1)) if k >= 3 else tuple(range(k))


def lpips_taps(lpips: LPIPS, images: torch.Tensor) -> list[torch.Tensor]:
    """The five LPIPS-AlexNet ReLU taps of ``images (B, 3, H, W)`` in [0, 1], each unit-
    normalised over channels; differentiable."""
    return [unit_normalize(t) for t in lpips.features(scale_input(2.0 * images - 1.0))]


def pooled_features(lpips: LPIPS, images: torch.Tensor) -> torch.Tensor:
    """``(B, 256)`` unit vectors: LPIPS-AlexNet conv5, pooled over positions (the pairing
    feature space)."""
    with torch.no_grad():
        conv5 = lpips.features(scale_input(2.0 * images - 1.0))[-1]
    return F.normalize(conv5.mean((2, 3)), dim=1)


def attribute_distance(taps_a: list[torch.Tensor], taps_b: list[torch.Tensor]) -> torch.Tensor:
    """``(B,)`` mean over the taps of the mean absolute difference."""
    return torch.stack([(a - b).abs().flatten(1).mean(1)
                        for a, b in zip(taps_a, taps_b, strict=True)], 1).mean(1)


def centred_cosine(a: torch.Tensor, b: torch.Tensor,
                   centre: torch.Tensor | None) -> torch.Tensor:
    """``(B,)`` ``cos(a - c, b - c)`` (plain cosine when ``centre`` is None)."""
    if centre is not None:
        a, b = a - centre, b - centre
    return F.cosine_similarity(a, b, dim=1)


class Falco:
    """FALCO-style anonymisation with a trained stage-1 and stage-2 run (see the module
    docstring). ``anonymizer``: privlens' :class:`~deid.methods.stage2.inference.Anonymizer`
    (its camera, U and generator); ``twin``: the identity embedder ``e`` of chips (the dlib
    twin by default); ``lpips``: the LPIPS network (``f`` and the pairing features)."""

    def __init__(self, anonymizer: Anonymizer, cfg: FalcoConfig | None = None,
                 twin: torch.nn.Module | None = None, lpips: LPIPS | None = None):
        self.anon = anonymizer
        self.cfg = cfg or FalcoConfig()
        dev = anonymizer.device
        self.twin = twin if twin is not None else training_twin(IdentityNet.load().to(dev))
        self.twin.requires_grad_(False).eval()
        self.lpips = (lpips if lpips is not None else LPIPS()).to(dev)
        self.generator = anonymizer.model.nets["generator"]
        k = self.generator.n_style_blocks
        self.blocks = tuple(self.cfg.blocks) or middle_blocks(k)
        if any(not 0 <= b < k for b in self.blocks):
            raise ValueError(f"blocks must be in 0..{k - 1} (the decoder has {k}), "
                             f"got {self.blocks}")
        c = anonymizer.model.identity_centre
        self.centre = None if c is None else c.to(dev)

    # ------------------------------------------------------------------ pieces
    def _decode(self, y, masks, w):
        m = self.anon.margin
        margin = None if m is None else torch.full((len(y),), float(m), device=y.device)
        return self.generator(y, with_margin(w, margin), masks)

    def _embed(self, images_s: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
        r = self.anon.frozen.stage1_size
        return twin_embed(self.twin, resize_to(images_s.clamp(0, 1), r), affines)

    def invert(self, x_s, y, masks) -> torch.Tensor:
        """Per-block codes ``(B, K, D)`` with ``G(y, W, masks) ~ x_s``."""
        k = self.generator.n_style_blocks
        dom = torch.zeros(len(x_s), dtype=torch.long, device=x_s.device)
        with torch.no_grad():
            s0 = self.anon.model.nets["style_encoder"](x_s, dom)
        w = s0[:, None].repeat(1, k, 1).clone().requires_grad_(True)
        if self.cfg.invert_steps == 0:
            return w.detach()
        opt = torch.optim.Adam([w], lr=self.cfg.invert_lr)
        for _ in range(self.cfg.invert_steps):
            out = self._decode(y, masks, w)
            loss = ((out - x_s).abs().flatten(1).mean(1) +
                    self.lpips(out.clamp(0, 1), x_s)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return w.detach()

    # ------------------------------------------------------------------ the method
    def anonymize(self, images: torch.Tensor, references: torch.Tensor, seed: int = 0,
                  progress: bool = False) -> FalcoResult:
        """De-identify clean faces ``images (N, 3, H, W)`` in [0, 1] (square); the public
        pool is ``references (M, 3, h, w)``. Sensor noise of image ``i`` is drawn from
        ``seed + i``, as privlens' anonymize does."""
        cfg, anon = self.cfg, self.anon
        s, r = anon.size, anon.frozen.stage1_size
        dev = anon.device
        refs_s = resize_to(references.to(dev), s)
        ref_feats = pooled_features(self.lpips, refs_s)
        ref_styles = anon.reference_styles(refs_s)
        keep = [b for b in range(self.generator.n_style_blocks) if b not in self.blocks]
        order = torch.tensor([*keep, *self.blocks]).argsort().to(dev)

        def assemble(fixed, moving):  # (B, K, D): fixed and optimised blocks in place
            return torch.cat([fixed, moving], dim=1)[:, order]

        outs, idx_all, pcos_all, cos0_all, cos1_all = [], [], [], [], []
        starts = range(0, len(images), cfg.batch)
        bar = progress_bar(starts, desc="falco", unit="batch", disable=not progress)
        for i in bar:
            chunk = images[i:i + cfg.batch].to(dev)
            y, masks = anon.privacy(chunk, captured=False, seed=seed + i)
            x_s = resize_to(chunk, s)
            affines = FrozenParts.chip_affines(resize_to(chunk, r)).to(dev)
            with torch.no_grad():
                e_x = self._embed(x_s, affines)
                taps_x = lpips_taps(self.lpips, x_s)
            pcos, idx = (pooled_features(self.lpips, x_s) @ ref_feats.T).max(dim=1)
            w_inv = self.invert(x_s, y, masks)
            with torch.no_grad():
                cos0 = centred_cosine(self._embed(self._decode(y, masks, w_inv), affines),
                                      e_x, self.centre)
            fixed = w_inv[:, keep]
            moving = ref_styles[idx][:, None].repeat(1, len(self.blocks), 1)
            moving = moving.clone().requires_grad_(True)
            opt = torch.optim.Adam([moving], lr=cfg.lr)
            for step in range(cfg.steps):
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_factor(step, cfg.steps)
                out = self._decode(y, masks, assemble(fixed, moving)).clamp(0, 1)
                cos = centred_cosine(self._embed(out, affines), e_x, self.centre)
                loss = (cfg.lambda_id * (cos - cfg.margin).abs() + cfg.lambda_attr *
                        attribute_distance(lpips_taps(self.lpips, out), taps_x)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                out = self._decode(y, masks, assemble(fixed, moving)).clamp(0, 1)
                cos1 = centred_cosine(self._embed(out, affines), e_x, self.centre)
            outs.append(out.cpu())
            idx_all.append(idx.cpu())
            pcos_all.append(pcos.cpu())
            cos0_all.append(cos0.cpu())
            cos1_all.append(cos1.cpu())
        if not outs:
            z = torch.zeros(0)
            return FalcoResult(torch.zeros(0, 3, s, s), z.long(), z, z, z, self.blocks)
        return FalcoResult(torch.cat(outs), torch.cat(idx_all), torch.cat(pcos_all),
                           torch.cat(cos0_all), torch.cat(cos1_all), self.blocks)
