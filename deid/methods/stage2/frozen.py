"""What stage 2 keeps frozen: the stage-1 run's camera and regressor U, the clean teacher U*,
the dlib twin ``e`` of the privacy dial and the LPIPS network.

Sizes: the camera and U work at the stage-1 run's image size ``R`` (U was trained there);
the generator works at ``S``. A clean face ``x_R`` is rendered ``y_R = camera(x_R)``, U reads
``y_R``, and ``y_R``, ``x_R`` and the masks are then brought to ``S``. A captured privacy frame
is brought to ``R`` for U instead.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

from deid.faces.heatmaps import face_masks
from deid.judges.dlib import DlibFaceEmbedder
from deid.judges.identity_net import IdentityNet
from deid.judges.identity_twin import training_twin, twin_embed
from deid.judges.lpips import LPIPS
from deid.methods.stage1.inference import load_run_camera, load_run_regressor
from deid.methods.stage1.trainer import Stage1Config
from deid.methods.teacher import load_teacher
from optics.kit.config import load_config
from optics.kit.resize import resize_to

__all__ = ["FrozenParts", "stage1_fingerprint"]

log = logging.getLogger(__name__)


def stage1_fingerprint(run) -> str:
    """A digest of a stage-1 run's camera and regressor files (a stage-2 run records it, so
    it is never used with another stage-1 run)."""
    run = Path(run)
    h = hashlib.sha256()
    for name in ("camera.yaml", "coefficients.json", "regressor.pt", "config.yaml"):
        p = run / name
        h.update(name.encode())
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


class FrozenParts(nn.Module):
    """The frozen networks of stage 2 (no parameter requires grad; gradients still flow
    through them to the generator's output).

    ``camera``: an :class:`optics.camera.Camera` for ``R``-px scenes; ``regressor``: U;
    ``teacher``: U* or None; ``twin``: the dlib twin or None; ``lpips``: LPIPS or None.
    """

    def __init__(self, camera: nn.Module, regressor: nn.Module, img_size: int,
                 teacher: nn.Module | None = None, twin: nn.Module | None = None,
                 lpips: nn.Module | None = None):
        super().__init__()
        self.camera, self.regressor, self.teacher = camera, regressor, teacher
        self.twin, self.lpips = twin, lpips
        self.img_size = img_size
        self.stage1_size = int(regressor.config.input_size)
        self.requires_grad_(False)
        self.eval()
        with torch.no_grad():
            self.register_buffer("psf", camera.psf().detach(), persistent=False)

    def train(self, mode: bool = True):  # always in eval mode
        return super().train(False)

    @classmethod
    def from_run(cls, run, img_size: int, teacher: str = "", with_twin: bool = True,
                 with_lpips: bool = True, with_teacher: bool = True,
                 device="cpu") -> FrozenParts:
        """Load the parts of stage-1 run ``run`` (see :mod:`deid.methods.stage1`)."""
        run = Path(run)
        if not (run / "config.yaml").is_file():
            raise FileNotFoundError(2, "not a stage-1 run (no config.yaml)", str(run))
        regressor = load_run_regressor(run, device)
        camera = load_run_camera(run, int(regressor.config.input_size))
        t = None
        if with_teacher:
            path = teacher or load_config(Stage1Config, run / "config.yaml").teacher
            if not path or not Path(path).is_file():
                raise FileNotFoundError(2, "no clean teacher for the expression loss "
                                           "(pass --teacher PATH/fan.pt)", str(path))
            t = load_teacher(path, device)
        twin = training_twin(IdentityNet.load().to(device)) if with_twin else None
        lp = LPIPS().to(device) if with_lpips else None
        return cls(camera.to(device), regressor, img_size, t, twin, lp).to(device)

    # ------------------------------------------------------------------ the privacy branch
    def render(self, x_r: torch.Tensor, generators, noise: bool = True) -> torch.Tensor:
        """``y_R`` of clean faces ``x_R (B, 3, R, R)``, one noise generator per sample (so a
        sample's noise does not depend on how the batch is split)."""
        psf = self.psf.to(x_r.dtype)
        with torch.no_grad():
            return torch.cat([self.camera(x_r[i:i + 1], noise=noise, generator=g, psf=psf)
                              for i, g in enumerate(generators)])

    @torch.no_grad()
    def heatmaps(self, y_r: torch.Tensor) -> torch.Tensor:
        """U's heatmaps of privacy images (any size; brought to ``R``)."""
        return self.regressor(resize_to(y_r, self.stage1_size))

    @torch.no_grad()
    def masks(self, heat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(coarse, fine)`` face-part masks at ``S`` from U's heatmaps."""
        return face_masks(heat[:, :68], self.img_size)

    def teacher_heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        """U*'s heatmaps of images (any size; brought to ``R``); differentiable."""
        return self.teacher(resize_to(images, self.stage1_size))

    def identity(self, images: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
        """Twin embeddings of images (any size; brought to ``R``, where the dlib affines
        ``(B, 2, 3)`` were found); differentiable."""
        return twin_embed(self.twin, resize_to(images, self.stage1_size), affines)

    @staticmethod
    def chip_affines(images_r: torch.Tensor) -> torch.Tensor:
        """dlib's chip affines of clean ``R``-px faces ``(N, 2, 3)`` (float32)."""
        return torch.as_tensor(DlibFaceEmbedder().chip_affines(images_r), dtype=torch.float32)
