"""The simulated bench: what the two virtual cameras see, rendered from the devices' state.

The privacy branch's frame is a function of the mirror's *current* surface (read from the
fake TLDFM library), the pinhole stage position (phase diversity) and the scene, rendered by
the optics simulator (:class:`optics.camera.Camera` of the rig's optics preset). The
reference branch renders the same scene sharply, seen through a hidden homography (the
second camera's pose), which ``rig calibrate`` must find. Both frames get a sensor offset
(dark level) and read noise, are quantised to 8 bits and written into the virtual cameras'
folders *before* the trigger, so the real gphoto2 backend downloads them.

Scenes: ``dark`` (lens capped), ``pinhole`` (a point source on the stage), ``checkerboard``,
``faces`` (the demo corpus, else scikit-image's astronaut), or ``folder:PATH`` (any images).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from deid.faces.corpus import default_corpus
from hardware.config import RigConfig
from optics.camera import Camera
from optics.imaging import convolve
from optics.presets import get_preset

__all__ = ["SimBench", "SCENES", "reference_homography"]

log = logging.getLogger(__name__)

SCENES = ("dark", "pinhole", "checkerboard", "faces", "folder:PATH")


def checkerboard_image(size_px: int, squares: int = 8, margin_px: int | None = None):
    """(size, size) float image in [0, 1]: a ``squares x squares`` board with a white margin,
    so it has ``(squares - 1)^2`` inner corners."""
    margin = size_px // 8 if margin_px is None else margin_px
    board = size_px - 2 * margin
    yy, xx = np.mgrid[0:board, 0:board] * squares // board
    img = np.ones((size_px, size_px))
    img[margin:margin + board, margin:margin + board] = ((yy + xx) % 2).astype(float)
    return img


def reference_homography(sim, size_px: int) -> np.ndarray:
    """Hidden 3x3 map privacy-camera px -> reference-camera px: rotation and scale about the
    frame centre, then a shift."""
    c = (size_px - 1) / 2.0
    th = math.radians(sim.reference_rotation_deg)
    s = sim.reference_scale
    a = np.array([[s * math.cos(th), -s * math.sin(th)], [s * math.sin(th), s * math.cos(th)]])
    t = np.array([c, c]) - a @ np.array([c, c]) + np.asarray(sim.reference_shift_px, float)
    h = np.eye(3)
    h[:2, :2] = a
    h[:2, 2] = t
    return h


def _face_images(spec: str, size: int) -> list[np.ndarray]:
    from PIL import Image

    if spec.startswith("folder:"):
        folder = Path(spec.split(":", 1)[1]).expanduser()
    else:
        folder = default_corpus() / "images"
    paths = []
    if folder.is_dir():
        paths = sorted(p for p in folder.rglob("*")
                       if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    elif spec.startswith("folder:"):
        raise FileNotFoundError(2, "no such scene folder", str(folder))
    if not paths:
        from skimage import data

        log.info("no demo faces (run `deid fetch-demo-data`); the faces scene uses "
                 "scikit-image's astronaut")
        img = data.astronaut()[20:320, 110:410]
        return [np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))]
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)))
    return out


class SimBench:
    """Renders and writes both virtual cameras' next frames from the devices' state.

    ``mirror_control``: :class:`hardware.sim.fake_tldfm.FakeMirrorControl` (surface state);
    ``stage``: a :class:`hardware.devices.Stage` or None; ``privacy_dir``/``reference_dir``:
    :class:`hardware.sim.vcamera.VirtualCameraDir`.
    """

    def __init__(self, config: RigConfig, mirror_control, privacy_dir, reference_dir,
                 stage=None):
        self.config = config
        self.sim = config.sim
        self.size = config.sim.image_size_px
        self.mirror_control = mirror_control
        self.privacy_dir = privacy_dir
        self.reference_dir = reference_dir
        self.stage = stage
        optics = get_preset(config.optics).at_image_size(self.size)
        self.camera = Camera(optics.replace(n_modes=15))
        self.static_um = np.zeros(15)
        st = np.asarray(self.sim.static_aberration_um, dtype=float)[:15]
        self.static_um[: len(st)] = st
        self.homography = reference_homography(self.sim, self.size)
        self.rng = np.random.default_rng(self.sim.seed)
        self.scene = "dark"
        self.exposure = 1.0  # relative exposure (shutter time) of both cameras
        self._faces = None
        self._face_index = 0
        self.frames_rendered = 0

    # ----------------------------------------------------------------- state
    def coefficients_um(self) -> np.ndarray:
        """(15,) Noll OPD of the privacy branch now: static + mirror + pinhole diversity."""
        c = self.static_um + np.asarray(self.mirror_control.surface_noll_um(), float)[:15]
        if self.scene == "pinhole" and self.stage is not None:
            dz = self.stage.position_mm - self.config.stage.focus_mm
            c = c.copy()
            c[3] += dz * self.config.diversity_um_per_mm()
        return c

    def set_scene(self, scene: str) -> None:
        if scene not in SCENES[:-1] and not scene.startswith("folder:"):
            raise ValueError(f"unknown scene {scene!r}; use one of {', '.join(SCENES)}")
        self.scene = scene
        if scene == "faces" or scene.startswith("folder:"):
            self._faces = _face_images(scene, self.size)
            self._face_index = 0

    # ----------------------------------------------------------------- rendering
    def _scene_image(self) -> np.ndarray:
        n = self.size
        if self.scene == "dark":
            return np.zeros((n, n, 3))
        if self.scene == "pinhole":
            img = np.zeros((n, n, 3))
            # an off-axis pinhole at whole pixels; sub-pixel offsets come from the static
            # tip/tilt in ``static_aberration_um``, as they do on the bench
            r, c = (n // 2 + int(round(o)) for o in self.sim.pinhole_offset_px)
            img[r, c] = 1.0
            return img * 0.8  # full scale at exposure 1 in a perfect 1-pixel PSF
        if self.scene == "checkerboard":
            return np.repeat(checkerboard_image(n)[..., None], 3, axis=-1) * 0.85 + 0.05
        img = self._faces[self._face_index % len(self._faces)].astype(np.float64) / 255.0
        self._face_index += 1
        return img

    def _sensor(self, linear: np.ndarray) -> np.ndarray:
        y = linear + self.sim.dark_level
        y = y + self.rng.normal(0.0, self.sim.read_noise_std, y.shape)
        return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """(privacy, reference) uint8 (H, W, 3) frames of the current scene and state."""
        import cv2

        scene = self._scene_image() * self.exposure
        coeffs = torch.tensor(self.coefficients_um(), dtype=torch.float32)
        with torch.no_grad():
            psf = self.camera.psf_of(coeffs)
            x = torch.from_numpy(scene.transpose(2, 0, 1).copy()).float()
            boundary = "linear" if self.scene in ("pinhole", "dark") else "replicate"
            y = convolve(x, psf, boundary=boundary).numpy().transpose(1, 2, 0)
        ref = cv2.warpPerspective(scene, self.homography, (self.size, self.size),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return self._sensor(y), self._sensor(ref)

    def prepare_capture(self) -> None:
        """Render the next frames and write them into both virtual cameras (before the
        trigger)."""
        priv, ref = self.render()
        self.privacy_dir.write_frame(priv)
        if self.reference_dir is not None:
            self.reference_dir.write_frame(ref)
        self.frames_rendered += 1
