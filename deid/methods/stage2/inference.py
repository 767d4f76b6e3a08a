"""De-identification with trained runs: ``deid anonymize``'s library side.

A clean face goes through the stage-1 camera (or a captured privacy frame is taken as is),
U reads its heatmaps, and the stage-2 EMA generator draws a new face with the style of a
public reference (``E(r)``) or of a latent (``F(z)``), at a privacy margin when the run was
trained with the dial.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from deid.methods.stage2.config import Stage2Config
from deid.methods.stage2.frozen import FrozenParts, stage1_fingerprint
from deid.methods.stage2.solver import build_nets, with_margin
from optics.kit.checkpoint import latest_checkpoint, load_checkpoint
from optics.kit.config import from_dict
from optics.kit.resize import resize_to
from optics.kit.schedule import sample_generator

__all__ = ["Stage2Model", "load_stage2", "Anonymizer", "default_margin"]

log = logging.getLogger(__name__)


@dataclass
class Stage2Model:
    """A trained stage-2 run's EMA networks (eval mode) and what it was made with."""

    config: Stage2Config
    nets: torch.nn.ModuleDict  # generator, mapping, style_encoder (the EMA copies)
    domains: list[str]
    fingerprint: str
    step: int
    path: Path
    identity_centre: torch.Tensor | None = None  # (D,) the dial's twin centre, if trained so


def load_stage2(run, device="cpu") -> Stage2Model:
    """The newest checkpoint of stage-2 run ``run`` (``weights_only`` load)."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(2, "no such stage-2 run", str(run))
    found = latest_checkpoint(run)
    if found is None:
        raise FileNotFoundError(2, "not a stage-2 run (no ckpt_*.pt)", str(run))
    state = load_checkpoint(found, map_location=device)
    if state.get("kind") != "privlens-stage2":
        raise ValueError(f"{found} is not a stage-2 checkpoint")
    cfg = from_dict(Stage2Config, state["config"])
    nets = build_nets(cfg, len(state["domains"]))
    ema = torch.nn.ModuleDict({k: nets[k] for k in ("generator", "mapping", "style_encoder")})
    for k, sd in state["ema"].items():
        ema[k].load_state_dict(sd)
    ema.to(device).eval().requires_grad_(False)
    centre = state.get("identity_centre")
    return Stage2Model(cfg, ema, list(state["domains"]), state.get("stage1_fingerprint", ""),
                       int(state["step"]), found,
                       None if centre is None else centre.to(device))


def default_margin(cfg: Stage2Config) -> float | None:
    """The middle of a run's training margins (None for a run without the privacy dial)."""
    if not cfg.dial:
        return None
    margins = sorted(cfg.privacy_margins)
    return margins[len(margins) // 2]


class Anonymizer:
    """Stage 1 + stage 2 ready to de-identify batches.

    ``margin``: the privacy dial's target cosine to the source (None: the middle of the
    run's training margins); refused for a run trained without the dial.
    """

    def __init__(self, stage1, stage2, device="cpu", margin: float | None = None):
        self.model = load_stage2(stage2, device)
        cfg = self.model.config
        if not Path(stage1, "config.yaml").is_file():
            raise FileNotFoundError(2, "not a stage-1 run (no config.yaml)", str(stage1))
        got = stage1_fingerprint(stage1)
        if self.model.fingerprint and got != self.model.fingerprint:
            raise ValueError(f"the stage-2 run {stage2} was trained on another stage-1 run "
                             f"(fingerprint {self.model.fingerprint}, {stage1} has {got})")
        self.frozen = FrozenParts.from_run(stage1, cfg.img_size, with_twin=False,
                                           with_lpips=False, with_teacher=False, device=device)
        if margin is not None and not cfg.dial:
            raise ValueError("this stage-2 run was trained without the privacy dial; "
                             "drop --margin")
        if margin is not None and not -1.0 <= margin <= 1.0:
            raise ValueError(f"--margin is a cosine in [-1, 1], got {margin}")
        self.margin = default_margin(cfg) if margin is None else margin
        self.device = torch.device(device)

    @property
    def size(self) -> int:
        return self.model.config.img_size

    @torch.no_grad()
    def privacy(self, images: torch.Tensor, captured: bool = False, seed: int = 0):
        """``(y at S, masks)`` of clean images (rendered by the camera, noise from ``seed``)
        or of captured privacy frames. ``images``: ``(N, 3, H, W)`` in [0, 1], square."""
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be square, got {images.shape[-2]}x{images.shape[-1]}")
        r = self.frozen.stage1_size
        x_r = resize_to(images.to(self.device), r)
        if captured:
            y_r = x_r
        else:
            gens = [sample_generator(seed, 0, i) for i in range(len(images))]
            y_r = self.frozen.render(x_r, gens, noise=True)
        cfg = self.model.config
        masks = self.frozen.masks(self.frozen.heatmaps(y_r)) if cfg.use_heatmap else None
        return resize_to(y_r, cfg.img_size), masks

    @torch.no_grad()
    def reference_styles(self, references: torch.Tensor, domain: int = 0) -> torch.Tensor:
        """``(M, style_dim)`` styles of reference faces ``(M, 3, H, W)`` in [0, 1]."""
        r = resize_to(references.to(self.device), self.size)
        dom = torch.full((len(r),), domain, dtype=torch.long, device=self.device)
        return self.model.nets["style_encoder"](r, dom)

    @torch.no_grad()
    def latent_styles(self, n: int, seed: int, domain: int = 0) -> torch.Tensor:
        """``(n, style_dim)`` styles from latents drawn with ``seed``."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.model.config.latent_dim, generator=g).to(self.device)
        dom = torch.full((n,), domain, dtype=torch.long, device=self.device)
        return self.model.nets["mapping"](z, dom)

    @torch.no_grad()
    def generate(self, y: torch.Tensor, masks, styles: torch.Tensor,
                 margin: float | None = None) -> torch.Tensor:
        """``(N, 3, S, S)`` in [0, 1]: G's output for privacy images ``y`` with one style per
        image."""
        margin = self.margin if margin is None else margin
        m = None if margin is None else torch.full((len(y),), float(margin), device=y.device)
        return self.model.nets["generator"](y, with_margin(styles, m), masks).clamp(0, 1)

    @torch.no_grad()
    def anonymize(self, images: torch.Tensor, styles: torch.Tensor, captured: bool = False,
                  seed: int = 0, batch: int = 16, margin: float | None = None) -> torch.Tensor:
        """De-identified faces ``(N, 3, S, S)``: image ``i`` gets ``styles[i % len(styles)]``;
        ``batch`` images at a time."""
        out = []
        for i in range(0, len(images), batch):
            chunk = images[i:i + batch]
            y, masks = self.privacy(chunk, captured, seed + i)
            idx = torch.arange(i, i + len(chunk)) % len(styles)
            out.append(self.generate(y, masks, styles[idx.to(styles.device)], margin).cpu())
        return torch.cat(out) if out else torch.zeros(0, 3, self.size, self.size)
