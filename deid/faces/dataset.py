"""``FaceFolder``: a torch ``Dataset`` over a folder of face images.

Three ways in:

- ``FaceFolder(root)``: every image under ``root`` (recursive; jpg, jpeg, png, bmp);
- ``FaceFolder(root, split="train")``: the StarGAN v2 layout ``root/{train,val}/{domain}/*``
  (Choi et al., "StarGAN v2: Diverse Image Synthesis for Multiple Domains", CVPR 2020), e.g.
  CelebA-HQ as ``celeba_hq/train/{female,male}``; items carry a ``domain`` index;
- ``FaceFolder.from_manifest(home_or_corpus, split="test")``: the demo corpus built by
  ``deid fetch-demo-data`` (:mod:`deid.faces.corpus_builder`), with identities where known.

Each item is a dict:

- ``"image"``: float32 tensor ``(3, S, S)`` in [0, 1]: the centred square of the image,
  resized to ``S`` with antialiasing (Lanczos);
- ``"index"`` (int) and ``"path"`` (str);
- ``"landmarks"``: float32 ``(68, 2)`` ``(x, y)`` in pixels of the returned image, when a
  landmark cache is present (``landmarks.h5`` in ``root``, or the ``landmarks=`` file);
  NaN where the cache has none (e.g. ``landmark_key="human68"`` on faces nobody annotated);
- ``"identity"`` (str, ``""`` if unknown) when any item's identity is known;
- ``"domain"`` (int, index into ``dataset.domains``) for the StarGAN layout.

All items of one dataset have the same keys, so the default ``DataLoader`` collation works.
Order is the sorted relative path (or the manifest order): deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from deid.faces import landmarks as lm
from deid.faces.manifest import load_manifest, read_landmarks

__all__ = ["FaceFolder", "IMAGE_EXTENSIONS", "list_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
LANDMARKS_FILE = "landmarks.h5"


def list_images(folder: Path, extensions=IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under ``folder`` (recursive, case-insensitive suffix), sorted."""
    exts = tuple(e.lower() for e in extensions)
    return sorted((p for p in Path(folder).rglob("*")
                   if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")),
                  key=lambda p: p.relative_to(folder).as_posix())


class FaceFolder(Dataset):
    """Face images of a folder, as square float tensors, with cached landmarks if present.

    Args:
        root: the folder.
        size: side ``S`` of the returned images, in **pixels**.
        split: ``None`` for every image under ``root``; a name (``"train"``, ``"val"``) for the
            StarGAN v2 layout ``root/split/domain/*``.
        landmarks: ``"auto"`` uses ``root/landmarks.h5`` if it exists; a path uses that file
            (it must exist); ``None`` uses none. Its ``file`` entries are paths relative to
            the file's folder; its points are pixels of the stored images.
        landmark_key: which array of the cache to return (``"dlib68"``, ``"human68"``, ...).
        extensions: image suffixes to read.
    """

    def __init__(self, root, size: int = 256, split: str | None = None, landmarks="auto",
                 landmark_key: str = "dlib68", extensions: Sequence[str] = IMAGE_EXTENSIONS):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"no such image folder: {root}")
        self.domains: list[str] | None = None
        self.records: list[dict] | None = None
        domain_of: list[int] | None = None
        if split is None:
            paths = list_images(root, extensions)
            if not paths:
                raise ValueError(f"no images ({', '.join(extensions)}) under {root}")
        else:
            split_dir = root / split
            if not split_dir.is_dir():
                have = sorted(p.name for p in root.iterdir() if p.is_dir())
                raise FileNotFoundError(f"no split folder {split_dir} (StarGAN v2 layout "
                                        f"ROOT/{split}/DOMAIN/*.jpg); folders here: "
                                        f"{', '.join(have) or 'none'}")
            loose = [p for p in split_dir.iterdir()
                     if p.is_file() and p.suffix.lower() in extensions]
            if loose:
                raise ValueError(f"{split_dir} has images outside domain folders (e.g. "
                                 f"{loose[0].name}); expected {split_dir}/DOMAIN/*.jpg")
            self.domains = sorted(p.name for p in split_dir.iterdir()
                                  if p.is_dir() and list_images(p, extensions))
            if not self.domains:
                raise ValueError(f"no images in any domain folder of {split_dir}")
            paths, domain_of = [], []
            for k, d in enumerate(self.domains):
                found = list_images(split_dir / d, extensions)
                paths += found
                domain_of += [k] * len(found)
        self._init(root, paths, size, landmarks, landmark_key, identities=None,
                   domain_of=domain_of)

    def _init(self, root: Path, paths: list[Path], size: int, landmarks, landmark_key: str,
              identities: list[str | None] | None, domain_of: list[int] | None) -> None:
        if int(size) < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        self.root = root
        self.size = int(size)
        self.paths = [Path(p) for p in paths]
        self.domain_of = domain_of
        known = identities is not None and any(identities)
        self.identities = [i or "" for i in identities] if known else None
        self.landmark_key = landmark_key
        self.landmarks_path, self._points = self._load_landmarks(landmarks, landmark_key)

    @classmethod
    def from_manifest(cls, root, split: str | Sequence[str] | None = "train", size: int = 256,
                      landmark_key: str = "dlib68", landmarks="auto") -> FaceFolder:
        """The demo corpus (``deid fetch-demo-data``) at ``root`` (the corpus or its home).

        ``split`` is one of ``"train"``, ``"val"``, ``"test"``, ``"johns"``, several, or
        ``None`` for all.
        """
        corpus, records = load_manifest(root)
        have = sorted({r["split"] for r in records})
        wanted = None if split is None else ([split] if isinstance(split, str) else list(split))
        if wanted is not None:
            unknown = [s for s in wanted if s not in have]
            if unknown:
                raise ValueError(f"no split {unknown[0]!r} in {corpus / 'manifest.json'}; "
                                 f"splits: {', '.join(have)}")
            records = [r for r in records if r["split"] in wanted]
        if not records:
            raise ValueError(f"{corpus / 'manifest.json'} lists no faces")
        self = cls.__new__(cls)
        self.domains = None
        self.records = records
        self._init(corpus, [corpus / r["file"] for r in records], size, landmarks,
                   landmark_key, identities=[r.get("identity") for r in records],
                   domain_of=None)
        return self

    def _load_landmarks(self, landmarks, key: str):
        if landmarks is None or landmarks is False:
            return None, None
        if landmarks == "auto":
            path = self.root / LANDMARKS_FILE
            if not path.is_file():
                return None, None
        else:
            path = Path(landmarks).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"no landmark cache {path}")
        cache = read_landmarks(path)
        if key not in cache:
            keys = [k for k in cache if k not in ("file", "size")]
            raise ValueError(f"{path} has no landmarks {key!r}; it has {', '.join(keys)}")
        index = {(path.parent / f).resolve(): i for i, f in enumerate(cache["file"])}
        rows = [index.get(p.resolve()) for p in self.paths]
        missing = [p for p, r in zip(self.paths, rows, strict=True) if r is None]
        if missing:
            raise ValueError(f"{path} has no landmarks for {len(missing)} of {len(rows)} "
                             f"images (e.g. {missing[0].name}); pass landmarks=None to "
                             f"ignore it")
        return path, cache[key][np.array(rows, dtype=int)]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} faces")
        index = index % len(self)
        path = self.paths[index]
        with Image.open(path) as im:
            img = im.convert("RGB")
        box = lm.center_square_box(*img.size)
        img = lm.crop_and_resize(img, box, self.size)
        a = np.asarray(img, dtype=np.float32) / 255.0
        item = {"image": torch.from_numpy(a).permute(2, 0, 1).contiguous(),
                "index": index, "path": str(path)}
        if self._points is not None:
            pts = lm.points_to_crop(self._points[index], box, self.size)
            item["landmarks"] = torch.from_numpy(pts.astype(np.float32))
        if self.identities is not None:
            item["identity"] = self.identities[index]
        if self.domain_of is not None:
            item["domain"] = self.domain_of[index]
        return item

    def __repr__(self) -> str:
        extra = f", domains={self.domains}" if self.domains else ""
        lmk = f", landmarks={self.landmark_key}" if self._points is not None else ""
        return f"FaceFolder({str(self.root)!r}, n={len(self)}, size={self.size}{extra}{lmk})"
