"""The demo corpus on disk: ``manifest.json`` (one record per face: file, split, identity,
source) and the landmark cache ``landmarks.h5`` (``(N, 68, 2)`` points in pixels of the stored
crop). Written by :mod:`deid.faces.corpus_builder`, read by :mod:`deid.faces.dataset`."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from deid.faces import landmarks as lm
from optics.kit.paths import privlens_home

__all__ = ["SPLITS", "IMAGE_SUFFIXES", "corpus_dir", "load_manifest", "read_landmarks",
           "write_landmarks"]


SPLITS = ("train", "val", "test", "johns")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


def corpus_dir(home: str | Path | None = None) -> Path:
    """The demo corpus folder under ``home`` (default ``PRIVLENS_HOME``)."""
    return (Path(home).expanduser() if home else privlens_home()) / "demo-faces"


def read_landmarks(path: Path) -> dict:
    """A landmark cache as ``{"file": [str], "size": int, "dlib68": array, ...}``."""
    with h5py.File(path, "r") as h:
        out = {"file": [s.decode() if isinstance(s, bytes) else str(s) for s in h["file"][()]],
               "size": int(h.attrs.get("size", 0))}
        for k in h:
            if k != "file":
                out[k] = np.asarray(h[k][()], np.float32)
    return out


def load_manifest(root: str | Path) -> tuple[Path, list[dict]]:
    """``(corpus folder, records)`` of a demo corpus; ``root`` is it or its home."""
    root = Path(root).expanduser()
    for d in (root, root / "demo-faces"):
        if (d / "manifest.json").is_file():
            return d, json.loads((d / "manifest.json").read_text())
    raise FileNotFoundError(f"no demo face corpus (manifest.json) in {root}; "
                            f"build it with: deid fetch-demo-data --home {root}")


def write_landmarks(path: Path, files: list[str], size: int, attrs: dict | None = None,
                    **arrays: np.ndarray) -> None:
    """Write a landmark cache: ``file`` names plus ``(N, 68, 2)`` arrays in crop pixels."""
    with h5py.File(path, "w") as h:
        h.create_dataset("file", data=np.array(files, dtype=object),
                         dtype=h5py.string_dtype())
        for k, a in arrays.items():
            a = np.asarray(a, np.float32)
            if a.shape != (len(files), lm.N_POINTS, 2):
                raise ValueError(f"landmarks {k} have shape {a.shape}, expected "
                                 f"({len(files)}, 68, 2)")
            h.create_dataset(k, data=a)
        h.attrs["size"] = int(size)
        h.attrs["coordinates"] = ("x, y in pixels of the stored image; the centre of the "
                                  "top-left pixel is (0, 0)")
        h.attrs["dlib68"] = "dlib shape_predictor_68_face_landmarks (teacher)"
        h.attrs["human68"] = "human iBUG 68-point annotations; NaN where none"
        h.attrs["xml68"] = ("points of dlib's example XML files, made by dlib's own predictor "
                            "(per the files' comment); NaN where none")
        for k, v in (attrs or {}).items():
            if v is not None:
                h.attrs[k] = v
