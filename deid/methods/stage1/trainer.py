"""Stage 1: learn the Zernike phase plate jointly with the heatmap regressor U.

``L = 1 - mean((x - y)^2) + alpha1 ||H - H_f|| / ||H_f|| + alpha2 mean|U(y) - U*(x)|``
(+ an optional identity hinge), with U initialised from the frozen teacher U*. See
:mod:`deid.methods.stage1.losses`.

The run folder holds ``config.yaml``, ``camera.yaml``, ``log.csv``, checkpoints
``ckpt_<step>.pt``, ``figures/`` and, at the end, ``coefficients.json`` and ``report.json``.
Resuming continues exactly: every random choice is keyed by (seed, step, sample), see
:mod:`optics.kit.schedule`. Under ``torchrun`` the model is wrapped in DDP; rank ``r``
takes samples ``r, r + W, ...`` of each global batch, so the result equals a one-process run
with the same global batch.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deid.faces.jitter import Jitter, draw_params, jitter, move_chip_affines
from deid.judges.dlib import DlibFaceEmbedder
from deid.judges.identity_twin import training_twin, twin_embed
from deid.methods.stage1.losses import (
    heatmap_loss,
    identity_loss,
    identity_spread_loss,
    image_distance_loss,
    psf_target_loss,
    window_energy_loss,
)
from deid.methods.stage1.plots import plot_heatmap_overlay, plot_loss_curves, plot_xy_grid
from optics import figures
from optics.camera import Camera, best_focus_z4_um, defocus_target_psf
from optics.coefficients import save_coefficients
from optics.deconv import wiener_balance_errors, wiener_restore, wiener_spectra
from optics.kit.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from optics.kit.config import save_config, to_dict
from optics.kit.distributed import DistInfo, all_mean
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to
from optics.kit.schedule import global_batch, rank_slice, sample_generator
from optics.presets import get_preset

__all__ = ["Stage1Config", "Stage1Model", "Stage1Trainer", "build_camera", "REGRESSOR_FILE"]

log = logging.getLogger(__name__)

LOG_FIELDS = ("step", "loss", "optics", "image_term", "psf_term", "hmap", "identity",
              "identity_spread", "attack_identity", "energy_term", "captured_min", "seconds")


@dataclass(frozen=True)
class Stage1Config:
    """Stage-1 settings. Coefficients in micrometres of OPD; sizes in pixels.

    Fields:
        camera: optics preset (lopez2024, prototype-4f) or lr16 (trains U alone).
        image_size: face side in pixels (the teacher's input size).
        psf_size_px: simulated PSF window in pixels; 0 = the preset's, scaled to image_size.
        n_modes: Zernike terms in the plate (Noll 1..n).
        modes: trainable Noll indices, comma-separated; unset = 4..n_modes.
        init_std_um: std of the random initial coefficients, um of OPD.
        defocus_um: Z4 of the target PSF H_f, um of OPD (on top of the scene's own defocus).
        defocus_from_focus: count ``defocus_um`` from the best focus on the face
            (:func:`optics.camera.best_focus_z4_um`: -0.654 um for lopez2024, whose lens is
            focused at 5 m and sees faces at 0.75 m), and start the plate's Z4 there too.
        alpha1: weight of ||H - H_f|| / ||H_f|| in L_optics.
        alpha2: weight of the heatmap loss |U(y) - U*(x)|.
        identity_weight: weight of the hinge relu(margin - ||e(y) - e(x)||) (dlib twin).
        identity_margin: the hinge's margin in dlib embedding distance (0.6 = same person).
        identity_spread_weight: weight of the batch spread of e(y) (matched-gallery attacker).
        attack_identity_weight: weight of the identity hinge after the attacker's Wiener
            deconvolution with the current PSF.
        attack_margin: the attack hinge's margin; about the distance of a plainly blurred face
            from its clean self (0.78 on the demo faces), since re-identification ranks.
        attack_balances: Wiener balances the attacker may use (comma-separated; default the
            grid the privacy report's attacker tunes over).
        attack_every: compute the attack term on every ``attack_every``-th joint step only,
            weighted ``attack_every`` times there (lazy regularisation: Karras et al.,
            "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020, sec. 3.1,
            compute R1 every 16 minibatches); 1 = every step.
        min_captured_energy: light fraction the PSF window must hold (else the halo is lost).
        energy_weight: weight of the window-energy penalty.
        steps: optimiser steps of the joint phase (optics and U together).
        regressor_steps: then this many steps that train U alone behind the frozen camera,
            its learning rate decaying from ``lr_fan`` to 0 on a cosine (a resumed run
            continues up to ``steps + regressor_steps``).
        regressor_init: where U starts that phase: ``joint`` (U as the joint phase left it)
            or ``teacher`` (a fresh copy of the teacher with fresh Adam moments: the
            fine-tuning the frontier gives every classic camera, behind the learned one).
        lr_regressor: U's learning rate where that phase's cosine starts (0: ``lr_fan``).
        batch_size: global batch (split across DDP processes).
        lr_optics: Adam step for the coefficients, um per step.
        lr_fan: Adam step for the student U.
        eval_every: steps between figures.
        ckpt_every: steps between checkpoints (the two newest are kept).
        seed: seed of batch order, flips, noise and the initial coefficients.
        noise: simulate sensor noise in training.
        augment: random geometric augmentation per sample, the family of the evaluation
            jitter (:mod:`deid.faces.jitter`): a flip, then a rotation, scale and shift within
            the three ranges below; the teacher's targets are its heatmaps of the augmented
            clean image.
        augment_rotation_deg: largest rotation, degrees.
        augment_scale: largest relative scale change.
        augment_shift: largest shift, fraction of the face size (the crop side / 1.6).
        data: face corpus folder (default $PRIVLENS_HOME/demo-faces).
        teacher: teacher checkpoint fan.pt (optics pretrain-fan).
        tensorboard: also log to TensorBoard.
        device: auto, cpu, cuda or cuda:N.
    """

    camera: str = "lopez2024"
    image_size: int = 128
    psf_size_px: int = 0
    n_modes: int = 15
    modes: tuple[int, ...] | None = None
    init_std_um: float = 0.05
    defocus_um: float = 0.5
    defocus_from_focus: bool = False
    alpha1: float = 1.0
    alpha2: float = 10.0
    identity_weight: float = 0.0
    identity_margin: float = 0.6
    identity_spread_weight: float = 0.0
    attack_identity_weight: float = 0.0
    attack_margin: float = 0.8
    attack_balances: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    attack_every: int = 1
    min_captured_energy: float = 0.95
    energy_weight: float = 10.0
    steps: int = 500
    regressor_steps: int = 0
    regressor_init: str = "joint"
    lr_regressor: float = 0.0
    batch_size: int = 8
    lr_optics: float = 0.02
    lr_fan: float = 1e-4
    eval_every: int = 100
    ckpt_every: int = 100
    seed: int = 0
    noise: bool = True
    augment: bool = True
    augment_rotation_deg: float = 20.0
    augment_scale: float = 0.15
    augment_shift: float = 0.10
    data: str = ""
    teacher: str = ""
    tensorboard: bool = False
    device: str = "auto"

    def __post_init__(self):
        if self.regressor_steps < 0:
            raise ValueError(f"regressor_steps must be >= 0, got {self.regressor_steps}")
        if self.regressor_init not in ("joint", "teacher"):
            raise ValueError(f"regressor_init must be 'joint' or 'teacher', got "
                             f"{self.regressor_init!r}")
        if self.steps < 0 or self.batch_size < 1 or self.image_size < 16:
            raise ValueError("need steps >= 0, batch_size >= 1 and image_size >= 16")
        for name in ("alpha1", "alpha2", "identity_weight", "identity_spread_weight",
                     "attack_identity_weight", "attack_margin", "energy_weight", "lr_optics",
                     "lr_fan", "lr_regressor", "init_std_um"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be finite and >= 0, got {v}")
        if self.eval_every < 1 or self.ckpt_every < 1:
            raise ValueError("eval_every and ckpt_every must be >= 1")
        if self.attack_every < 1:
            raise ValueError(f"attack_every must be >= 1, got {self.attack_every}")
        if not 0 <= self.min_captured_energy <= 1:
            raise ValueError(
                f"min_captured_energy must be in [0, 1], got {self.min_captured_energy}")
        if self.attack_identity_weight > 0 and (
                not self.attack_balances or self.camera == "lr16"
                or not all(b > 0 and math.isfinite(b) for b in self.attack_balances)):
            raise ValueError("attack_identity_weight needs positive attack_balances and a "
                             "camera with a phase plate (not lr16)")
        if self.psf_size_px < 0:
            raise ValueError(f"psf_size_px must be >= 0 (0: the preset's), got {self.psf_size_px}")
        self.augmentation()  # validates the ranges

    def augmentation(self) -> Jitter:
        """The per-sample geometric augmentation (flip probability 0.5)."""
        return Jitter(max_rotation_deg=self.augment_rotation_deg, max_scale=self.augment_scale,
                      max_shift=self.augment_shift)


def build_camera(cfg: Stage1Config, generator: torch.Generator | None = None) -> Camera:
    """The stage-1 camera: the preset at ``image_size``, ``n_modes`` Noll terms, trainable
    ``modes`` (default 4..n_modes; none for ``lr16``), random initial coefficients."""
    base = get_preset(cfg.camera).at_image_size(cfg.image_size)
    if cfg.psf_size_px:
        base = base.replace(psf_size_px=cfg.psf_size_px)
    if cfg.camera == "lr16":
        return Camera(base)
    cam_cfg = base.replace(n_modes=max(cfg.n_modes, max(cfg.modes or (0,))),
                           trainable_modes=cfg.modes)
    start = {4: target_z4_um(cfg, cam_cfg)} if cfg.defocus_from_focus else None
    return Camera(cam_cfg, start, init_std_um=cfg.init_std_um, generator=generator)


def regressor_lr(cfg: Stage1Config, step: int, total: int | None = None) -> float:
    """U's learning rate at ``step`` (0-based) of a run of ``total`` steps (default
    ``steps + regressor_steps``): ``lr_fan``, then a cosine from ``lr_regressor`` (0:
    ``lr_fan``) to 0 over the last ``regressor_steps`` steps."""
    total = cfg.steps + cfg.regressor_steps if total is None else total
    decay = min(cfg.regressor_steps, total)
    k = step - (total - decay)
    if decay == 0 or k < 0:
        return cfg.lr_fan
    top = cfg.lr_regressor or cfg.lr_fan
    return top * 0.5 * (1.0 + math.cos(math.pi * k / decay))


@torch.no_grad()
def clean_embeddings(twin: nn.Module, images: torch.Tensor, affines: torch.Tensor,
                     device=None, chunk: int = 16) -> torch.Tensor:
    """``(N, D)`` twin embeddings of the dlib chips of the clean ``images (N, C, H, W)``,
    ``chunk`` at a time (fixed chunks, so the values do not depend on a batch order). The
    attack term's target ``e(x)``: the augmented batch's chips are cut with the moved affines
    (:func:`deid.faces.jitter.move_chip_affines`), i.e. they are these chips resampled once
    more, so the clean chip is embedded once per image instead of once per step."""
    out = []
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(device)
        out.append(twin_embed(twin, x, affines[i:i + chunk].to(x.device)))
    return torch.cat(out)


def target_z4_um(cfg: Stage1Config, camera_config) -> float:
    """Z4 of the target PSF ``H_f`` in um of OPD, as added to the camera's own geometry."""
    offset = best_focus_z4_um(camera_config) if cfg.defocus_from_focus else 0.0
    return cfg.defocus_um + offset


#: The fine-tuned regressor U of a run, in the teacher's checkpoint format (``load_teacher``).
REGRESSOR_FILE = "regressor.pt"


class Stage1Model(nn.Module):
    """The trainable pair (camera, student U) behind one ``forward`` so DDP syncs both."""

    def __init__(self, camera: Camera, student: nn.Module):
        super().__init__()
        self.camera = camera
        self.student = student

    def forward(self, x: torch.Tensor, generators=None, noise: bool = True):
        """``(y, psf, heatmaps on y, captured)``; ``captured (C,)`` is the fraction of the light
        that the PSF window holds (the PSF is normalised to sum 1 inside it)."""
        raw = self.camera.psf(normalize=False)
        captured = raw.sum(dim=(-2, -1))
        psf = raw / captured[:, None, None]
        if noise and generators is not None:
            y = torch.cat([self.camera(x[i:i + 1], generator=g, psf=psf)
                           for i, g in enumerate(generators)])
        else:
            y = self.camera(x, noise=noise, psf=psf)
        return y, psf, self.student(resize_to(y, x.shape[-2:])), captured


class Stage1Trainer:
    """Runs stage 1 in ``out_dir``; see the module docstring."""

    def __init__(self, cfg: Stage1Config, out_dir, dist: DistInfo, train_images: torch.Tensor,
                 teacher: nn.Module, val_images: torch.Tensor | None = None,
                 identity_net: nn.Module | None = None):
        self.cfg, self.dist = cfg, dist
        self.out = Path(out_dir)
        self.device = dist.device
        self.train_images = train_images
        self.val_images = val_images if val_images is not None else train_images[:8]
        self.teacher = teacher.to(self.device).eval().requires_grad_(False)
        self.identity_net = identity_net
        self.chip_affines = None
        self.clean_embeddings = None
        self.twin = None
        if identity_net is not None:
            identity_net.to(self.device).eval().requires_grad_(False)
            self.twin = training_twin(identity_net)
            # dlib's alignment of the *clean* faces: the attacker's best case, fixed per image
            self.chip_affines = torch.as_tensor(
                DlibFaceEmbedder().chip_affines(train_images), dtype=torch.float32)
            self.clean_embeddings = clean_embeddings(self.twin, train_images, self.chip_affines,
                                                     self.device)
        gen = torch.Generator().manual_seed(cfg.seed)
        camera = build_camera(cfg, gen).to(self.device)
        student = copy.deepcopy(teacher).train().requires_grad_(True)
        self.model = Stage1Model(camera, student).to(self.device)
        target_z4 = target_z4_um(cfg, camera.config)
        self.target_psf = defocus_target_psf(camera.config, target_z4).to(self.device)
        groups = [{"params": [p for p in camera.parameters() if p.requires_grad],
                   "lr": cfg.lr_optics},
                  {"params": list(student.parameters()), "lr": cfg.lr_fan}]
        groups = [g for g in groups if g["params"]]
        self.optimizer = torch.optim.Adam(groups)
        self.ddp = self.model
        if dist.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.step = 0
        self.history: list[dict] = []

    def release_ddp(self) -> None:
        """Drop the DDP wrapper (it holds the process group); the model stays usable."""
        self.ddp = self.model

    # ------------------------------------------------------------------ state
    @property
    def camera(self) -> Camera:
        return self.model.camera

    def state(self) -> dict:
        return {"step": self.step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "config": to_dict(self.cfg),
                "history": self.history}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.history = list(state.get("history", []))

    def resume_from(self, folder) -> bool:
        """Load the newest checkpoint in ``folder``; False if there is none."""
        path = latest_checkpoint(folder)
        if path is None:
            return False
        self.load_state(load_checkpoint(path, map_location=self.device))
        log.info("resumed from %s at step %d", path, self.step)
        return True

    # ------------------------------------------------------------------- step
    def batch_indices(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positions in the global batch, training-image indices)`` of this rank's part of
        batch ``step``."""
        idx = global_batch(step, len(self.train_images), self.cfg.batch_size, self.cfg.seed)
        mine = rank_slice(torch.arange(len(idx)), self.dist.rank, self.dist.world_size)
        return mine, idx[mine]

    def batch(self, step: int) -> tuple[torch.Tensor, list, torch.Tensor | None]:
        """This rank's images, per-sample generators and chip affines for batch ``step``."""
        mine, images = self.batch_indices(step)
        gens = [sample_generator(self.cfg.seed, step, int(i)) for i in mine]
        x = self.train_images[images]
        affines = None if self.chip_affines is None else self.chip_affines[images]
        if self.cfg.augment:
            params = draw_params(gens, self.cfg.augmentation())
            x, _ = jitter(x, None, params)
            if affines is not None:
                affines = move_chip_affines(affines, params, x.shape[-1])
        return x.to(self.device), gens, affines

    def losses(self, x, gens, noise: bool = True, affines=None, e_x=None,
               with_attack: bool = True) -> dict:
        """The step's loss terms of the batch ``x``. ``affines``: its dlib chip affines (the
        identity terms need them); ``e_x``: the clean faces' twin embeddings (default: the
        twin run on the chips of ``x``); ``with_attack``: compute the attack term at this step
        (weighted ``attack_every`` times, see :class:`Stage1Config`); when False it is logged
        as NaN."""
        cfg = self.cfg
        y, psf, student_hm, captured = self.ddp(x, gens, noise=noise)
        with torch.no_grad():
            teacher_hm = self.teacher(x)
        image_term = image_distance_loss(x, y)
        psf_term = psf_target_loss(psf, self.target_psf)
        hmap = heatmap_loss(student_hm, teacher_hm)
        optics = image_term + cfg.alpha1 * psf_term
        energy = window_energy_loss(captured, cfg.min_captured_energy)
        total = optics + cfg.alpha2 * hmap + cfg.energy_weight * energy
        ident = torch.zeros((), device=x.device)
        spread = torch.zeros((), device=x.device)
        attack = torch.zeros((), device=x.device)
        if self.identity_net is not None and affines is not None:
            a = affines.to(x.device)
            if e_x is None:
                with torch.no_grad():
                    e_x = twin_embed(self.twin, x, a)
            if cfg.identity_weight > 0 or cfg.identity_spread_weight > 0:
                e_y = twin_embed(self.twin, resize_to(y, x.shape[-2:]), a)
                ident = identity_loss(e_y, e_x, cfg.identity_margin)
                spread = identity_spread_loss(e_y)
                total = total + cfg.identity_weight * ident + cfg.identity_spread_weight * spread
            if cfg.attack_identity_weight > 0 and with_attack:
                attack = self._attack_identity(y, psf, e_x, a, x=x)
                total = total + cfg.attack_every * cfg.attack_identity_weight * attack
            elif cfg.attack_identity_weight > 0:
                attack = torch.full((), float("nan"), device=x.device)
        return {"loss": total, "optics": optics, "image_term": image_term,
                "psf_term": psf_term, "hmap": hmap, "identity": ident,
                "identity_spread": spread, "attack_identity": attack, "energy_term": energy,
                "captured_min": captured.detach().min(), "y": y,
                "student_hm": student_hm, "teacher_hm": teacher_hm}

    def _attack_identity(self, y, psf, e_x, affines, x=None) -> torch.Tensor:
        """Identity hinge after the attacker's deconvolution: Wiener filters (Laplacian
        regulariser) with the camera's current PSF at every balance in ``attack_balances``
        (the FFTs of ``y`` and of the PSF shared by all). Two restorations per face reach the
        dlib twin: the balance with the best PSNR on this batch (what the attacker of the
        privacy report picks by tuning on faces), and one balance drawn from the list at this
        step (seeded by (seed, step), so resuming is exact), which keeps the whole range
        covered. The hinge acts on the smaller of the two embedding distances,
        ``relu(attack_margin - min ||e(W_b y) - e(x)||)``.
        Gradients reach the coefficients through ``y`` and through the PSF being inverted.
        Without ``x`` (e.g. benchmarks) the drawn balance alone is used.

        How it is computed (the same function as the straightforward one, fewer operations;
        tests compare the two): the FFTs of ``y`` and of the PSF are computed once; the search
        over the balances runs without autograd and forms only the observed corner of each
        restoration (:func:`optics.deconv.wiener_balance_errors`); the restorations' backward
        is hand-written (:func:`optics.deconv.wiener_restore`); if both picks are the same
        balance the twin runs once; and the twin's backward runs only on the restorations
        that carry a gradient, the nearer one of a face whose hinge is active
        (:mod:`deid.judges.identity_twin`)."""
        y = resize_to(y, (self.train_images.shape[-2], self.train_images.shape[-1]))
        balances = self.cfg.attack_balances
        b = y.shape[0]
        draw = int(torch.randint(len(balances), (1,), generator=sample_generator(
            self.cfg.seed, self.step, -1)))
        spectra = wiener_spectra(y, psf)  # with autograd, shared by every restoration below
        picks = [draw]
        if x is not None:  # the choice needs no gradient: search the grid without autograd
            best = int(wiener_balance_errors(spectra, balances, x).argmin())
            picks = [best] if best == draw else [best, draw]
        x_hat = torch.cat([wiener_restore(spectra, balances[k]) for k in picks])  # (P * B, ...)
        e = twin_embed(self.twin, x_hat, affines.repeat(len(picks), 1, 1))
        dist = (e.unflatten(0, (len(picks), b)) - e_x).norm(dim=-1)
        return F.relu(self.cfg.attack_margin - dist.min(dim=0).values).mean()

    @property
    def total_steps(self) -> int:
        """Joint steps, then regressor-only steps."""
        return self.cfg.steps + self.cfg.regressor_steps

    def _restart_regressor(self) -> None:
        """U back to the teacher's weights, its Adam moments dropped (``regressor_init:
        teacher``); runs once, at the first regressor step (a run resumed later has the
        restarted U in its checkpoint)."""
        student = self.model.student
        student.load_state_dict(self.teacher.state_dict())
        for p in student.parameters():
            self.optimizer.state.pop(p, None)

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        if self.step == self.cfg.steps and self.cfg.regressor_init == "teacher" \
                and self.cfg.regressor_steps > 0:
            self._restart_regressor()
        x, gens, affines = self.batch(self.step)
        joint = self.step < self.cfg.steps
        e_x = None
        if joint and self.clean_embeddings is not None:
            e_x = self.clean_embeddings[self.batch_indices(self.step)[1]]
        out = self.losses(x, gens, noise=self.cfg.noise, affines=affines if joint else None,
                          e_x=e_x, with_attack=self.step % self.cfg.attack_every == 0)
        # U's group is the last one (the optics group is dropped when nothing is trainable)
        self.optimizer.param_groups[-1]["lr"] = regressor_lr(self.cfg, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        # joint: every term; afterwards only U's heatmap term, and the camera stays as it is
        (out["loss"] if joint else self.cfg.alpha2 * out["hmap"]).backward()
        if not joint:
            for p in self.camera.parameters():
                p.grad = None  # Adam leaves parameters without a gradient untouched
        self.optimizer.step()
        self.step += 1
        row = {"step": self.step}
        for k in LOG_FIELDS[1:-1]:
            row[k] = float(all_mean(out[k].detach(), self.dist))
        row["seconds"] = time.perf_counter() - t0
        self.history.append(row)
        return row

    # -------------------------------------------------------------------- run
    def run(self, progress: bool = True) -> dict:
        """Train until ``steps + regressor_steps``; checkpoint, log and evaluate on the way."""
        cfg = self.cfg
        main = self.dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            save_config(self.camera.config, self.out / "camera.yaml")
            self._trim_csv()
        writer = self._tensorboard() if main and cfg.tensorboard else None
        total = self.total_steps
        bar = progress_bar(total=total, initial=self.step, disable=not (main and progress),
                   desc="stage 1", unit="step", dynamic_ncols=True)
        while self.step < total:
            row = self.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", hmap=f"{row['hmap']:.4f}")
            if main:
                self._append_csv(row)
                if writer is not None:
                    for k, v in row.items():
                        if k != "step":
                            writer.add_scalar(f"train/{k}", v, self.step)
            if self.step % cfg.ckpt_every == 0 or self.step == total:
                if main:
                    save_checkpoint(self.state(), self.out / f"ckpt_{self.step}.pt")
                    self._prune_checkpoints()
            if main and (self.step % cfg.eval_every == 0 or self.step == total):
                self.write_figures()
        bar.close()
        if writer is not None:
            writer.close()
        if main:
            save_coefficients(self.camera.coefficients_dict(), self.out / "coefficients.json",
                              camera=self.camera.config.name, steps=self.step,
                              source="optics train-stage1")
            student = self.model.student
            save_checkpoint({"fan_config": to_dict(student.config),
                             "state_dict": student.state_dict(), "steps": self.step,
                             "source": "optics train-stage1 (regressor U)"},
                            self.out / REGRESSOR_FILE)
        return self.history[-1] if self.history else {}

    # ----------------------------------------------------------------- output
    def _append_csv(self, row: dict) -> None:
        path = self.out / "log.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            if new:
                w.writeheader()
            w.writerow({k: row[k] for k in LOG_FIELDS})

    def _trim_csv(self) -> None:
        """Drop log rows past the resumed step (written after the last checkpoint)."""
        path = self.out / "log.csv"
        if not path.exists():
            return
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            w.writeheader()
            w.writerows(rows)

    def _prune_checkpoints(self, keep: int = 2) -> None:
        found = sorted(self.out.glob("ckpt_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        for p in found[:-keep]:
            p.unlink()

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed; logging to log.csv only")
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    @torch.no_grad()
    def write_figures(self) -> None:
        fig_dir = self.out / "figures"
        cam = self.camera
        cfg = cam.config
        labels = [f"{w * 1e9:.0f} nm" for w in cfg.wavelengths_m]
        psf = cam.psf()
        figures.plot_psf(psf, cfg.pixel_pitch_m, fig_dir / "psf.png", labels=labels)
        figures.plot_phase_map(cam.opd_m(), cam.aperture, 550e-9, fig_dir / "phase_map.png",
                               title=f"step {self.step}")
        x = self.val_images[:6].to(self.device)
        gens = [sample_generator(self.cfg.seed, -1, i) for i in range(len(x))]
        self.model.eval()
        y, _, hm, _ = self.model(x, gens, noise=self.cfg.noise)
        self.model.train()
        plot_xy_grid(x, y, fig_dir / "x_vs_y.png")
        plot_heatmap_overlay(y, hm, fig_dir / "heatmaps_on_y.png")
        plot_loss_curves(self.history, fig_dir / "loss_curves.png")
