"""Stage-2 training: StarGAN v2's four sub-steps behind a frozen stage-1 run.

Per step (Choi et al., StarGAN v2, CVPR 2020, and its ``core/solver.py`` habits), gradients
zeroed before each sub-step, and only the networks a sub-step steps require grad in it:

1. D on latent styles: ``adv(D(r), 1) + lambda_r1 R1(r) + adv(D(G(y, F(z))), 0)``, the fake
   made without gradient; steps D.
2. D on reference styles: the same with ``G(y, E(r'))``; steps D.
3. G on latent styles: ``lambda_adv adv(D(G), 1) + lambda_sty |E(G) - s| - lambda_ds(t)
   |G(s1) - G(s2)| + lambda_cyc |G(G, E(y)) - y| + expression + privacy dial``; steps G, F
   and E.
4. G on reference styles: the same losses plus ``lambda_lpips LPIPS(r, G)``; steps **G
   only** (training E here hurt, as the StarGAN v2 authors found).

Then the EMA copies of G, F and E move (``ema_decay``).

The discriminator's real images are the **references** only: no source image ever reaches D
(the sources enter only through ``y``, and only into G).

Randomness is a pure function of ``(seed, step, sample)`` (:mod:`optics.kit.schedule`):
batches of sources and references, latents, margins and sensor noise; so a resumed run
repeats an uninterrupted one bit for bit on CPU. Under ``torchrun`` each process takes its
slice of the global batch, and gradients are averaged over processes before each optimiser
step (the same arithmetic as DDP, with no hooks to tear down).

Files in the run folder: ``config.yaml``, ``ckpt_<step>.pt`` (atomic; nets, EMA nets,
optimisers, step, stage-1 fingerprint), ``log.csv``, ``samples/step_<step>.png``,
``run.json``.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from deid.methods.stage2.config import Stage2Config
from deid.methods.stage2.data import check_disjoint
from deid.methods.stage2.losses import (
    adversarial_loss,
    cycle_loss,
    diversity_loss,
    expression_heatmap_loss,
    expression_mask,
    expression_pixel_loss,
    privacy_dial_loss,
    r1_penalty,
    style_reconstruction_loss,
)
from deid.methods.stage2.nets import Discriminator, Generator, MappingNetwork, StyleEncoder
from optics.kit.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from optics.kit.config import to_dict
from optics.kit.distributed import DistInfo, all_mean, average_gradients
from optics.kit.files import write_text_atomic
from optics.kit.imageio import save_image
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to
from optics.kit.schedule import global_batch, rank_slice, sample_generator

__all__ = ["build_nets", "Batch", "Stage2Solver", "CHECKPOINT_KIND", "SUB_STEPS"]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "privlens-stage2"
#: The sub-steps and the networks each one steps.
SUB_STEPS = {"d_latent": ("discriminator",), "d_reference": ("discriminator",),
             "g_latent": ("generator", "mapping", "style_encoder"),
             "g_reference": ("generator",)}
_NETS = ("generator", "mapping", "style_encoder", "discriminator")
_EMA = ("generator", "mapping", "style_encoder")


def build_nets(cfg: Stage2Config, num_domains: int) -> nn.ModuleDict:
    """G, F, E and D for ``cfg`` (G's style input has one more entry, the margin, when the
    privacy dial is on)."""
    s = cfg.style_dim + (1 if cfg.dial else 0)
    return nn.ModuleDict({
        "generator": Generator(cfg.img_size, s, cfg.base_width, cfg.max_width, cfg.w_hpf,
                               cfg.use_heatmap),
        "mapping": MappingNetwork(cfg.latent_dim, cfg.style_dim, num_domains,
                                  cfg.mapping_width),
        "style_encoder": StyleEncoder(cfg.img_size, cfg.style_dim, num_domains,
                                      cfg.base_width, cfg.max_width),
        "discriminator": Discriminator(cfg.img_size, num_domains, cfg.base_width,
                                       cfg.max_width),
    })


def with_margin(style: torch.Tensor, margin: torch.Tensor | None) -> torch.Tensor:
    """G's style input: the style code (``(B, D)`` or per block ``(B, K, D)``), and the
    margin ``(B,)`` as one more entry (of every block) when given."""
    if margin is None:
        return style
    m = margin.to(style.dtype)[:, None]
    if style.dim() == 3:
        m = m[:, None].expand(-1, style.shape[1], 1)
    return torch.cat([style, m], dim=-1)


class Batch:
    """One process's slice of a step's data, at the generator's size ``S`` (and ``R`` where
    the frozen parts need it)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class Stage2Solver:
    """Trains stage 2 in ``out_dir``. ``data``: a :class:`~deid.methods.stage2.data.
    Stage2Data` at the stage-1 size ``R``; ``frozen``: the
    :class:`~deid.methods.stage2.frozen.FrozenParts`; ``fingerprint``: the stage-1 run's."""

    def __init__(self, cfg: Stage2Config, data, frozen, out_dir, dist_info: DistInfo | None = None,
                 fingerprint: str = ""):
        check_disjoint(data)
        self.cfg, self.data, self.frozen = cfg, data, frozen
        self.dist = dist_info or DistInfo()
        self.device = self.dist.device
        self.out = Path(out_dir)
        self.fingerprint = fingerprint
        self.num_domains = len(data.domains)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.nets = build_nets(cfg, self.num_domains).to(self.device)
        self.ema = copy.deepcopy(nn.ModuleDict({k: self.nets[k] for k in _EMA}))
        self.ema.requires_grad_(False).eval()
        self.optims = {
            k: torch.optim.Adam(self.nets[k].parameters(),
                                lr=cfg.lr_mapping if k == "mapping" else cfg.lr,
                                betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
            for k in _NETS}
        self.step = 0
        self.affines = None
        self.identity_centre = None
        if cfg.privacy_weight > 0:
            if frozen.twin is None:
                raise ValueError("the privacy dial needs the dlib twin")
            self.affines = frozen.chip_affines(data.sources)
            self.identity_centre = self._identity_centre()
        if cfg.expression != "off" and cfg.lambda_exp > 0 and frozen.teacher is None:
            raise ValueError("the expression loss needs the clean teacher U*")
        if cfg.lambda_lpips > 0 and frozen.lpips is None:
            raise ValueError("the LPIPS loss needs the LPIPS network")

    @torch.no_grad()
    def _identity_centre(self, chunk: int = 16) -> torch.Tensor:
        """The mean twin embedding of the sources and references (the dial's centre)."""
        d, fr = self.data, self.frozen
        faces = torch.cat([d.sources, d.references])
        affines = torch.cat([self.affines, fr.chip_affines(d.references)])
        out = [fr.identity(faces[i:i + chunk].to(self.device),
                           affines[i:i + chunk].to(self.device))
               for i in range(0, len(faces), chunk)]
        return torch.cat(out).mean(0)

    # ------------------------------------------------------------------------ data
    def batch(self, step: int) -> Batch:
        """This process's slice of step ``step``'s global batch."""
        cfg, d = self.cfg, self.data
        b = cfg.batch_size
        src = global_batch(step, len(d.sources), b, cfg.seed)
        ref = global_batch(step, len(d.references), b, cfg.seed + 1)
        ref2 = global_batch(step, len(d.references), b, cfg.seed + 2)
        keep = rank_slice(torch.arange(b), self.dist.rank, self.dist.world_size)
        src, ref, ref2 = src[keep], ref[keep], ref2[keep]
        gens = [sample_generator(cfg.seed, step, int(i)) for i in keep]
        z1 = torch.stack([torch.randn(cfg.latent_dim, generator=g) for g in gens])
        z2 = torch.stack([torch.randn(cfg.latent_dim, generator=g) for g in gens])
        margins = None
        if cfg.dial:
            pick = [int(torch.randint(len(cfg.privacy_margins), (1,), generator=g))
                    for g in gens]
            margins = torch.tensor([cfg.privacy_margins[i] for i in pick])
        noise_gens = [sample_generator(cfg.seed + 3, step, int(i)) for i in keep]
        dev, s = self.device, cfg.img_size
        x_r = d.sources[src].to(dev)
        if d.captured is not None:
            y_r = resize_to(d.captured[src].to(dev), self.frozen.stage1_size)
        else:
            y_r = self.frozen.render(x_r, noise_gens, noise=cfg.noise)
        heat = self.frozen.heatmaps(y_r) if cfg.use_heatmap else None
        masks = self.frozen.masks(heat) if heat is not None else None
        ref_dom = d.reference_domains[ref].to(dev)
        return Batch(x=resize_to(x_r, s), y=resize_to(y_r, s), masks=masks,
                     src_domain=d.source_domains[src].to(dev),
                     ref=resize_to(d.references[ref].to(dev), s),
                     ref2=resize_to(d.references[ref2].to(dev), s),
                     ref_domain=ref_dom, ref2_domain=d.reference_domains[ref2].to(dev),
                     z1=z1.to(dev), z2=z2.to(dev),
                     margin=None if margins is None else margins.to(dev),
                     affines=None if self.affines is None else self.affines[src].to(dev),
                     index=src)

    # ------------------------------------------------------------------------ losses
    def _style(self, b: Batch, which: str, mode: str):
        nets = self.nets
        if mode == "latent":
            return nets["mapping"](b.z1 if which == "1" else b.z2, b.ref_domain)
        r = b.ref if which == "1" else b.ref2
        dom = b.ref_domain if which == "1" else b.ref2_domain
        return nets["style_encoder"](r, dom)

    def d_losses(self, b: Batch, mode: str) -> dict:
        """The discriminator's terms (``mode``: ``latent`` or ``reference``); reals are the
        references."""
        cfg, n = self.cfg, self.nets
        real = b.ref.detach().requires_grad_(cfg.lambda_r1 > 0)
        out = n["discriminator"](real, b.ref_domain)
        terms = {"real": adversarial_loss(out, 1.0)}
        if cfg.lambda_r1 > 0:
            terms["r1"] = r1_penalty(out, real)
        with torch.no_grad():
            s = self._style(b, "1", mode)
            fake = n["generator"](b.y, with_margin(s, b.margin), b.masks)
        terms["fake"] = adversarial_loss(n["discriminator"](fake, b.ref_domain), 0.0)
        terms["total"] = terms["real"] + terms["fake"] + cfg.lambda_r1 * terms.get("r1", 0.0)
        return terms

    def g_losses(self, b: Batch, mode: str, step: int | None = None) -> dict:
        """The generator's terms (``mode``: ``latent`` or ``reference``)."""
        cfg, n, fr = self.cfg, self.nets, self.frozen
        step = self.step if step is None else step
        if mode == "latent":
            s1, s2 = self._style(b, "1", mode), self._style(b, "2", mode)
        else:  # the reference step trains G only: the styles carry no gradient
            with torch.no_grad():
                s1, s2 = self._style(b, "1", mode), self._style(b, "2", mode)
        fake = n["generator"](b.y, with_margin(s1, b.margin), b.masks)
        terms, total = {}, 0.0
        if cfg.lambda_adv > 0:
            terms["adv"] = adversarial_loss(n["discriminator"](fake, b.ref_domain), 1.0)
            total = total + cfg.lambda_adv * terms["adv"]
        if cfg.lambda_sty > 0:
            terms["sty"] = style_reconstruction_loss(n["style_encoder"](fake, b.ref_domain), s1)
            total = total + cfg.lambda_sty * terms["sty"]
        w_ds = cfg.diversity_weight(step)
        if w_ds > 0:
            fake2 = n["generator"](b.y, with_margin(s2, b.margin), b.masks)
            terms["ds"] = diversity_loss(fake, fake2)
            total = total - w_ds * terms["ds"]
        if cfg.lambda_cyc > 0:
            s_y = n["style_encoder"](b.y, b.src_domain)
            keep = None if b.margin is None else torch.ones_like(b.margin)
            rec = n["generator"](fake, with_margin(s_y, keep), b.masks)
            terms["cyc"] = cycle_loss(rec, b.y)
            total = total + cfg.lambda_cyc * terms["cyc"]
        if cfg.expression != "off" and cfg.lambda_exp > 0:
            with torch.no_grad():
                t_src = fr.teacher_heatmaps(b.x)
            if cfg.expression == "heatmap":
                terms["exp"] = expression_heatmap_loss(t_src, fr.teacher_heatmaps(fake))
            else:
                terms["exp"] = expression_pixel_loss(b.x, fake,
                                                     expression_mask(t_src, cfg.img_size))
            total = total + cfg.lambda_exp * terms["exp"]
        if cfg.privacy_weight > 0:
            with torch.no_grad():
                e_x = fr.identity(b.x, b.affines)
            terms["dial"] = privacy_dial_loss(fr.identity(fake, b.affines), e_x, b.margin,
                                              self.identity_centre)
            total = total + cfg.privacy_weight * terms["dial"]
        if mode == "reference" and cfg.lambda_lpips > 0:
            terms["lpips"] = fr.lpips(b.ref, fake).mean()
            total = total + cfg.lambda_lpips * terms["lpips"]
        terms["total"] = total
        return terms

    # ------------------------------------------------------------------------ steps
    def _only(self, names) -> None:
        for k in _NETS:
            self.nets[k].requires_grad_(k in names)

    def _average_grads(self, names) -> None:
        average_gradients((p for k in names for p in self.nets[k].parameters()), self.dist)

    def sub_step(self, name: str, b: Batch) -> dict:
        """One of :data:`SUB_STEPS` on batch ``b``; returns its terms (floats)."""
        names = SUB_STEPS[name]
        self._only(names)
        for k in _NETS:
            self.optims[k].zero_grad(set_to_none=True)
        mode = "latent" if name.endswith("latent") else "reference"
        terms = self.d_losses(b, mode) if name.startswith("d_") else self.g_losses(b, mode)
        terms["total"].backward()
        self._average_grads(names)
        for k in names:
            self.optims[k].step()
        self._only(())
        keys = list(terms)
        values = torch.stack([torch.as_tensor(terms[k]).detach().float().reshape(())
                              for k in keys])
        values = all_mean(values, self.dist)  # log the global batch's means
        return {f"{name}/{k}": float(v) for k, v in zip(keys, values.cpu(), strict=True)}

    @torch.no_grad()
    def update_ema(self) -> None:
        for k in _EMA:
            for p_ema, p in zip(self.ema[k].parameters(), self.nets[k].parameters(),
                                strict=True):
                p_ema.lerp_(p, 1.0 - self.cfg.ema_decay)

    def train_step(self) -> dict:
        """The four sub-steps of step ``self.step``, then the EMA; returns the terms."""
        b = self.batch(self.step)
        row = {}
        for name in SUB_STEPS:
            row.update(self.sub_step(name, b))
        self.update_ema()
        self.step += 1
        return row

    # ------------------------------------------------------------------------ files
    def state(self) -> dict:
        return {"kind": CHECKPOINT_KIND, "step": self.step, "config": to_dict(self.cfg),
                "domains": list(self.data.domains), "stage1_fingerprint": self.fingerprint,
                "identity_centre": self.identity_centre,
                "nets": {k: self.nets[k].state_dict() for k in _NETS},
                "ema": {k: self.ema[k].state_dict() for k in _EMA},
                "optims": {k: self.optims[k].state_dict() for k in _NETS}}

    def save(self) -> Path | None:
        """Write ``ckpt_<step>.pt`` atomically (main process) and drop all but the newest
        ``keep_checkpoints``."""
        if not self.dist.is_main:
            return None
        path = save_checkpoint(self.state(), self.out / f"ckpt_{self.step}.pt")
        old = sorted(self.out.glob("ckpt_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for p in old[:-max(1, self.cfg.keep_checkpoints)]:
            p.unlink(missing_ok=True)
        return path

    def load_state(self, state: dict) -> None:
        if state.get("kind") != CHECKPOINT_KIND:
            raise ValueError("not a stage-2 checkpoint")
        for k in _NETS:
            self.nets[k].load_state_dict(state["nets"][k])
            self.optims[k].load_state_dict(state["optims"][k])
        for k in _EMA:
            self.ema[k].load_state_dict(state["ema"][k])
        self.step = int(state["step"])

    def resume_from(self, folder) -> bool:
        """Continue from the newest checkpoint in ``folder``; False if there is none."""
        found = latest_checkpoint(folder)
        if found is None:
            return False
        state = load_checkpoint(found, map_location=self.device)
        if _training_fields(state.get("config", {})) != _training_fields(to_dict(self.cfg)):
            raise ValueError(f"{found} was made with another config; resume with the run's "
                             f"own config.yaml")
        if self.fingerprint and state.get("stage1_fingerprint") != self.fingerprint:
            raise ValueError(f"{found} was trained on another stage-1 run")
        self.load_state(state)
        log.info("resuming stage 2 from %s (step %d)", found, self.step)
        return True

    def init_from(self, path) -> None:
        """Start from another run's newest checkpoint (fine-tuning, ``--init``): nets and EMA
        nets, fresh optimisers, step 0."""
        path = Path(path)
        found = latest_checkpoint(path) if path.is_dir() else (path if path.is_file() else None)
        if found is None:
            raise FileNotFoundError(2, "no stage-2 checkpoint to start from", str(path))
        state = load_checkpoint(found, map_location=self.device)
        if state.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"{found} is not a stage-2 checkpoint")
        if list(state["domains"]) != list(self.data.domains):
            raise ValueError(f"the --init run has the domains {state['domains']}, this data "
                             f"has {list(self.data.domains)}")
        for k in _NETS:
            self.nets[k].load_state_dict(state["nets"][k])
        for k in _EMA:
            self.ema[k].load_state_dict(state["ema"][k])

    @torch.no_grad()
    def sample_grid(self, path, count: int = 4) -> Path:
        """A grid: rows x, y, the fine mask, then per reference (columns of the first
        ``count`` sources) the EMA generator's output with that reference's style."""
        d, cfg, s = self.data, self.cfg, self.cfg.img_size
        n = min(count, len(d.sources))
        x_r = d.sources[:n].to(self.device)
        gens = [sample_generator(cfg.seed + 4, 0, i) for i in range(n)]
        y_r = (resize_to(d.captured[:n].to(self.device), self.frozen.stage1_size)
               if d.captured is not None else self.frozen.render(x_r, gens, cfg.noise))
        masks = self.frozen.masks(self.frozen.heatmaps(y_r)) if cfg.use_heatmap else None
        y = resize_to(y_r, s)
        rows = [resize_to(x_r, s), y]
        rows.append((masks[1] if masks is not None else torch.zeros_like(y[:, :1]))
                    .expand(-1, 3, -1, -1))
        m = len(d.references)
        for j in range(min(3, m)):
            r = resize_to(d.references[j:j + 1].to(self.device), s)
            style = self.ema["style_encoder"](r, d.reference_domains[j:j + 1].to(self.device))
            style = style.expand(n, -1)
            margin = (torch.full((n,), cfg.privacy_margins[len(cfg.privacy_margins) // 2],
                                 device=self.device) if cfg.dial else None)
            out = self.ema["generator"](y, with_margin(style, margin), masks).clamp(0, 1)
            rows.append(torch.cat([r, out]))
        width = n + 1
        tiles = [torch.cat([torch.ones_like(rows[0][:1]), r]) if len(r) == n else r
                 for r in rows]
        grid = torch.cat([torch.cat(list(t[:width]), dim=-1) for t in tiles], dim=-2)
        return save_image(grid, path)

    def run(self, progress: bool = True) -> dict:
        """Train to ``cfg.steps``; checkpoints, log and samples as the config says."""
        cfg = self.cfg
        main = self.dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        log_path = self.out / "log.csv"
        writer = _TensorBoard(self.out) if (cfg.tensorboard and main) else None
        bar = progress_bar(range(self.step, cfg.steps), desc="stage 2", unit="step",
                           initial=self.step, total=cfg.steps, disable=not (progress and main))
        row, t0 = {}, time.perf_counter()
        for _ in bar:
            t = time.perf_counter()
            row = self.train_step()
            row["seconds"] = time.perf_counter() - t
            row["step"] = self.step
            if not all(math.isfinite(v) for v in row.values()):
                raise FloatingPointError(f"stage 2 diverged at step {self.step}: {row}")
            if main and (self.step % max(1, cfg.log_every) == 0 or self.step == cfg.steps):
                _append_csv(log_path, row)
                if writer is not None:
                    writer.add(row, self.step)
            bar.set_postfix(g=f"{row['g_reference/total']:.3f}",
                            d=f"{row['d_reference/total']:.3f}")
            if cfg.sample_every and self.step % cfg.sample_every == 0 and main:
                self.sample_grid(self.out / "samples" / f"step_{self.step}.png")
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.step < cfg.steps:
                self.save()
        if main:
            self.save()
            self.sample_grid(self.out / "samples" / f"step_{self.step}.png")
            write_text_atomic(self.out / "run.json", json.dumps(
                {"steps": self.step, "seconds": time.perf_counter() - t0,
                 "sources": len(self.data.sources), "references": len(self.data.references),
                 "domains": list(self.data.domains), "stage1_fingerprint": self.fingerprint,
                 "last": row}, indent=1) + "\n")
        if writer is not None:
            writer.close()
        return row


#: Config fields that do not change what a step computes (a resumed run may change them).
BOOKKEEPING = ("steps", "ckpt_every", "sample_every", "log_every", "keep_checkpoints",
               "tensorboard", "device")


def _training_fields(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in BOOKKEEPING}


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    keys = ["step"] + sorted(k for k in row if k != "step")
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        if new:
            w.writeheader()
        w.writerow(row)


class _TensorBoard:
    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ValueError("tensorboard is not installed (pip install tensorboard), "
                             "or leave tensorboard off") from e
        self.w = SummaryWriter(str(folder / "tb"))

    def add(self, row: dict, step: int) -> None:
        for k, v in row.items():
            if k != "step":
                self.w.add_scalar(k, v, step)

    def close(self) -> None:
        self.w.close()
