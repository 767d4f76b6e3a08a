"""Private-Encoder-style anonymisation: an encoder whose latent code is made differentially
private, decoded by privlens' frozen stage-2 generator.

Reference: the Private-Encoder code (YuanZhao940711/Private-Encoder) fine-tunes a pSp encoder
into a frozen StyleGAN2 with ``0.1 |t - cos(id(out), id(x))| + MSE + 0.8 LPIPS``; its paper
speaks of differential privacy, but **the public code adds no noise**. privlens adds real
noise (:mod:`deid.methods.software.dp`) and shows what it costs.

The pieces (``S``: the stage-2 generator's size; ``K`` decoder blocks of ``D`` style entries;
``d = K D``):

- ``encode``: a StyleEncoder-shaped CNN maps the clean ``x (B, 3, S, S)`` to ``C tanh(h / C)``,
  a code in ``[-C, C]^d`` (so clipping changes nothing in training; it is applied anyway).
- the mechanism adds Laplace or Gaussian noise to the clipped code.
- ``decode`` sees the noised code **alone**: a learned linear lift to per-block styles, a
  learned constant canvas (content image and masks, the same for every input; it starts as
  the mean privacy image of the training faces and the masks U reads from it, so ``G`` sees
  the kind of input it was trained on) and the frozen generator ``G``.
  Nothing computed from the image reaches the output around the noise, so the output is as
  private as the code (post-processing).

Training (``deid train-private-encoder``) runs noise-free, as the published code, on the
stage-2 run's training sources with ``lambda_mse MSE + lambda_lpips LPIPS + lambda_id |t -
cos(e(out), e(x))|`` (``e`` the dlib twin with the dial's centred cosine); the encoder, lift
and canvas learn, ``G`` stays frozen. One process (CPU or one GPU).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deid.judges.identity_net import IdentityNet
from deid.judges.identity_twin import training_twin, twin_embed
from deid.judges.lpips import LPIPS
from deid.methods.software.dp import MECHANISMS, noise_scale, privatize
from deid.methods.software.falco import centred_cosine
from deid.methods.stage2.data import load_stage2_data
from deid.methods.stage2.frozen import FrozenParts
from deid.methods.stage2.inference import default_margin, load_stage2
from deid.methods.stage2.nets import StyleEncoder
from deid.methods.stage2.solver import with_margin
from optics.kit.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from optics.kit.config import from_dict, save_config, to_dict
from optics.kit.distributed import (
    all_mean,
    apply_thread_limit,
    average_gradients,
    distributed_session,
)
from optics.kit.imageio import save_image
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to
from optics.kit.schedule import global_batch, rank_slice, sample_generator

__all__ = ["PrivateEncoderConfig", "PrivateEncoder", "train_private_encoder",
           "load_private_encoder", "PrivateEncoderAnonymizer", "CHECKPOINT_KIND"]

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "privlens-private-encoder"


@dataclass
class PrivateEncoderConfig:
    """Training of the Private-Encoder-style encoder on top of a stage-2 run.

    Attributes:
        stage2: the stage-2 run folder (its EMA generator decodes; its training faces train)
        data: face data (default: the stage-2 run's)
        steps: Adam steps
        batch_size: faces per step
        lr: Adam learning rate
        clip: the bound C of the code, ``[-C, C]^d``
        lambda_mse: weight of the pixel MSE
        lambda_lpips: weight of LPIPS (published: 0.8)
        lambda_id: weight of ``|t - cos(e(out), e(x))|`` (published: 0.1)
        id_target: the target similarity t (published: swept from 0 to 1)
        base_width: encoder channels at full resolution
        max_width: cap on the encoder channels
        canvas_init: ``privacy-mean`` (the canvas starts as the mean privacy image ``y`` of
            the training faces, through the stage-2 run's stage-1 camera, with U's masks of
            it) or ``grey``
        seed: data order and initial weights
        ckpt_every: steps between checkpoints (0: only the last)
        log_every: steps between log rows
        device: auto (a GPU if any), cpu, cuda:0, ...
    """

    stage2: str = ""
    data: str = ""
    steps: int = 400
    batch_size: int = 8
    lr: float = 3e-4
    clip: float = 1.0
    lambda_mse: float = 1.0
    lambda_lpips: float = 0.8
    lambda_id: float = 0.1
    id_target: float = 0.3
    base_width: int = 16
    max_width: int = 128
    canvas_init: str = "privacy-mean"
    seed: int = 0
    ckpt_every: int = 100
    log_every: int = 10
    device: str = "auto"

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if not self.clip > 0:
            raise ValueError(f"clip must be positive, got {self.clip}")
        if not -1.0 <= self.id_target <= 1.0:
            raise ValueError(f"id_target is a cosine in [-1, 1], got {self.id_target}")
        if self.canvas_init not in ("privacy-mean", "grey"):
            raise ValueError(f"canvas_init must be privacy-mean or grey, got "
                             f"{self.canvas_init!r}")
        if self.ckpt_every < 0 or self.log_every < 1:
            raise ValueError("ckpt_every must be >= 0 and log_every >= 1")


class PrivateEncoder(nn.Module):
    """The encoder and the decoder side (lift and canvas) around a frozen generator."""

    def __init__(self, img_size: int, n_blocks: int, style_dim: int, base_width: int = 16,
                 max_width: int = 128, clip: float = 1.0):
        super().__init__()
        self.img_size, self.n_blocks, self.style_dim = img_size, n_blocks, style_dim
        self.clip = float(clip)
        d = n_blocks * style_dim
        self.encoder = StyleEncoder(img_size, d, 1, base_width, max_width)
        self.lift = nn.Linear(d, d)
        self.canvas = nn.Parameter(torch.full((1, 3, img_size, img_size), 0.5))
        self.canvas_masks = nn.Parameter(torch.zeros(1, 2, img_size, img_size))

    @property
    def dim(self) -> int:
        """The code length ``d``."""
        return self.n_blocks * self.style_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` codes in ``[-C, C]`` of clean faces ``x (B, 3, S, S)`` in [0, 1]."""
        dom = torch.zeros(len(x), dtype=torch.long, device=x.device)
        return self.clip * torch.tanh(self.encoder(resize_to(x, self.img_size), dom) / self.clip)

    def decode(self, generator: nn.Module, code: torch.Tensor,
               margin: float | None = None) -> torch.Tensor:
        """``(B, 3, S, S)`` from ``code (B, d)`` alone (not clamped)."""
        b = len(code)
        styles = self.lift(code).view(b, self.n_blocks, self.style_dim)
        y = self.canvas.clamp(0, 1).expand(b, -1, -1, -1)
        masks = None
        if generator.use_heatmap:
            m = torch.sigmoid(self.canvas_masks).expand(b, -1, -1, -1)
            masks = (m[:, :1], m[:, 1:])
        mg = None if margin is None else torch.full((b,), float(margin), device=code.device)
        return generator(y, with_margin(styles, mg), masks)


def train_private_encoder(cfg: PrivateEncoderConfig, out_dir, resume: bool = False,
                          progress: bool = True) -> dict:
    """Train in ``out_dir`` (config.yaml, log.csv, atomic ckpt_<step>.pt, samples.png,
    run.json); ``resume`` continues exactly. Returns the last log row. Under ``torchrun``
    every process takes its slice of each global batch (:func:`rank_slice`) and the
    gradients are averaged over processes before each Adam step, so N processes train as one
    does (to float summation order); only rank 0 writes."""
    apply_thread_limit()
    if not cfg.stage2:
        raise ValueError("no stage-2 run: pass --stage2 RUN")
    with distributed_session(cfg.device) as info:
        return _train(cfg, Path(out_dir), resume, progress, info)


def _train(cfg: PrivateEncoderConfig, out: Path, resume: bool, progress: bool, info) -> dict:
    device = info.device
    main = info.is_main
    s2 = load_stage2(cfg.stage2, device)
    gen = s2.nets["generator"]
    s2cfg = s2.config
    frozen = None
    if cfg.canvas_init == "privacy-mean":  # also on resume: the faces load at its size
        if not s2cfg.stage1:
            raise ValueError("canvas_init privacy-mean needs the stage-2 run's stage-1 run; "
                             "use canvas_init grey")
        frozen = FrozenParts.from_run(s2cfg.stage1, s2cfg.img_size, with_twin=False,
                                      with_lpips=False, with_teacher=False, device=device)
    size = frozen.stage1_size if frozen is not None else s2cfg.img_size
    data = load_stage2_data(cfg.data or s2cfg.data or None, size, split="train",
                            seed=s2cfg.seed, reference_fraction=s2cfg.reference_fraction)
    xs = resize_to(data.sources, s2cfg.img_size)
    torch.manual_seed(cfg.seed)  # the initial weights
    model = PrivateEncoder(s2cfg.img_size, gen.n_style_blocks, s2cfg.style_dim,
                           cfg.base_width, cfg.max_width, cfg.clip).to(device)
    if frozen is not None:
        with torch.no_grad():
            x_r = data.sources.to(device)
            y_r = torch.cat([
                frozen.render(x_r[i:i + 16], [sample_generator(cfg.seed, 0, j)
                                              for j in range(i, min(i + 16, len(x_r)))])
                for i in range(0, len(x_r), 16)])
            y_mean = y_r.mean(0, keepdim=True)
            coarse, fine = frozen.masks(frozen.heatmaps(y_mean))
            model.canvas.copy_(resize_to(y_mean, s2cfg.img_size).clamp(0, 1))
            m = torch.cat([coarse, fine], 1).clamp(1e-3, 1 - 1e-3)
            model.canvas_masks.copy_(torch.log(m / (1 - m)))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    lpips = LPIPS().to(device) if cfg.lambda_lpips > 0 else None
    twin, affines = None, None
    if cfg.lambda_id > 0:
        twin = training_twin(IdentityNet.load().to(device))
        affines = FrozenParts.chip_affines(xs)
    margin = default_margin(s2.config)
    step = 0
    if resume:
        found = latest_checkpoint(out)
        if found is None:
            raise ValueError(f"nothing to resume in {out} (no ckpt_*.pt)")
        state = load_checkpoint(found, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    def checkpoint(k: int) -> None:
        save_checkpoint({"kind": CHECKPOINT_KIND, "step": k, "config": to_dict(cfg),
                         "stage2_checkpoint": str(s2.path), "stage2_step": s2.step,
                         "model": model.state_dict(), "optimizer": opt.state_dict(),
                         "arch": {"img_size": model.img_size, "n_blocks": model.n_blocks,
                                  "style_dim": model.style_dim}}, out / f"ckpt_{k}.pt")

    log_path = out / "log.csv"
    if main and not resume and log_path.exists():
        log_path.unlink()
    last: dict = {}
    t0 = time.perf_counter()
    bar = progress_bar(range(step, cfg.steps), desc="private encoder", unit="step",
                       disable=not (progress and main))
    params = list(model.parameters())
    for k in bar:
        idx = rank_slice(global_batch(k, len(xs), cfg.batch_size, cfg.seed), info.rank,
                         info.world_size)
        x = xs[idx].to(device)
        o = model.decode(gen, model.encode(x), margin)
        terms = {"mse": F.mse_loss(o, x)}
        if lpips is not None:
            terms["lpips"] = lpips(o.clamp(0, 1), x).mean()
        if twin is not None:
            a = affines[idx].to(device)
            with torch.no_grad():
                e_x = twin_embed(twin, x, a)
            cos = centred_cosine(twin_embed(twin, o.clamp(0, 1), a), e_x, s2.identity_centre)
            terms["id"] = (cfg.id_target - cos).abs().mean()
            terms["cos"] = cos.mean().detach()
        total = cfg.lambda_mse * terms["mse"]
        if "lpips" in terms:
            total = total + cfg.lambda_lpips * terms["lpips"]
        if "id" in terms:
            total = total + cfg.lambda_id * terms["id"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        average_gradients(params, info)
        opt.step()
        done = k + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            terms = {n: all_mean(v.detach(), info) for n, v in terms.items()}
            total = all_mean(total.detach(), info)
            last = {"step": done, "total": float(total),
                    **{n: float(v) for n, v in terms.items()},
                    "elapsed_s": round(time.perf_counter() - t0, 2)}
        if main and (done % cfg.log_every == 0 or done == cfg.steps):
            new = not log_path.exists()
            with log_path.open("a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(last))
                if new:
                    w.writeheader()
                w.writerow(last)
            bar.set_postfix_str(f"loss {float(total.detach()):.4f}")
        if main and ((cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps):
            checkpoint(done)
    bar.close()
    if not main:
        return last
    with torch.no_grad():
        x = xs[:8].to(device)
        o = model.decode(gen, model.encode(x), margin).clamp(0, 1)
        save_image(torch.cat([torch.cat(list(x), -1), torch.cat(list(o), -1)], -2),
                   out / "samples.png")
    (out / "run.json").write_text(json.dumps({"steps": cfg.steps, "last": last,
                                              "stage2": cfg.stage2,
                                              "code_length": model.dim}, indent=1) + "\n")
    return last


def load_private_encoder(run, device="cpu") -> tuple[PrivateEncoderConfig, PrivateEncoder,
                                                     dict]:
    """``(config, model in eval mode, checkpoint state)`` of a trained encoder run."""
    run = Path(run)
    found = latest_checkpoint(run) if run.is_dir() else None
    if found is None:
        raise FileNotFoundError(2, "not a private-encoder run (no ckpt_*.pt)", str(run))
    state = load_checkpoint(found, map_location=device)
    if state.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{found} is not a private-encoder checkpoint")
    cfg = from_dict(PrivateEncoderConfig, state["config"])
    a = state["arch"]
    model = PrivateEncoder(a["img_size"], a["n_blocks"], a["style_dim"], cfg.base_width,
                           cfg.max_width, cfg.clip)
    model.load_state_dict(state["model"])
    return cfg, model.to(device).eval().requires_grad_(False), state


class PrivateEncoderAnonymizer:
    """``x -> decode(privatize(encode(x)))`` with a trained encoder run and its stage-2 run.

    ``epsilon``: the privacy budget (``math.inf``: no noise, the published behaviour);
    ``mechanism``: ``laplace`` (eps-DP) or ``gaussian`` (``(eps, delta)``-DP)."""

    def __init__(self, encoder_run, stage2=None, device="cpu", epsilon: float = math.inf,
                 mechanism: str = "laplace", delta: float = 1e-5):
        self.device = torch.device(device)
        self.cfg, self.model, _ = load_private_encoder(encoder_run, self.device)
        self.stage2 = load_stage2(stage2 or self.cfg.stage2, self.device)
        g = self.stage2.nets["generator"]
        if (g.n_style_blocks, self.stage2.config.style_dim, self.stage2.config.img_size) != \
                (self.model.n_blocks, self.model.style_dim, self.model.img_size):
            raise ValueError(f"the encoder run {encoder_run} was trained on another stage-2 "
                             f"generator (blocks, style, size differ)")
        if mechanism not in MECHANISMS:
            raise ValueError(f"--mechanism must be one of {', '.join(MECHANISMS)}, "
                             f"got {mechanism!r}")
        self.epsilon, self.mechanism, self.delta = float(epsilon), mechanism, float(delta)
        self.scale = noise_scale(mechanism, self.model.clip, self.model.dim, self.epsilon,
                                 self.delta)
        self.margin = default_margin(self.stage2.config)

    @property
    def size(self) -> int:
        return self.model.img_size

    @torch.no_grad()
    def codes(self, images: torch.Tensor) -> torch.Tensor:
        """Clean codes ``(N, d)`` in ``[-C, C]``."""
        return self.model.encode(images.to(self.device))

    @torch.no_grad()
    def noised(self, codes: torch.Tensor, seed: int = 0, start: int = 0) -> torch.Tensor:
        """The mechanism applied to ``codes``; code ``i``'s noise comes from ``(seed, start +
        i)`` alone."""
        return torch.cat([privatize(c[None], self.model.clip, self.epsilon, self.mechanism,
                                    self.delta, sample_generator(seed, 0, start + i))
                          for i, c in enumerate(codes)]) if len(codes) else codes

    @torch.no_grad()
    def decode(self, noised: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` in [0, 1] from noised codes alone."""
        g = self.stage2.nets["generator"]
        return self.model.decode(g, noised.to(self.device), self.margin).clamp(0, 1)

    @torch.no_grad()
    def anonymize(self, images: torch.Tensor, seed: int = 0, batch: int = 16) -> torch.Tensor:
        """De-identified faces ``(N, 3, S, S)`` of clean ``images (N, 3, H, W)`` in [0, 1]."""
        out = []
        for i in range(0, len(images), batch):
            codes = self.codes(resize_to(images[i:i + batch], self.size))
            out.append(self.decode(self.noised(codes, seed, i)).cpu())
        return torch.cat(out) if out else torch.zeros(0, 3, self.size, self.size)
