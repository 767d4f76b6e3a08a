"""Stage-2 metrics: identity, re-identification, face geometry, realism and diversity.

Stage 2 turns the privacy image of a source face into a new face: the pose and expression of
the source, the identity and style of a public reference. Each of N sources is anonymised
with R references (R = 10 in StarGAN v2's evaluation protocol, ``metrics/eval.py``, which
the paper follows), so the outputs are ``(N, R, 3, S, S)``. :func:`evaluate_deid` measures,
over the N R (source, output) pairs:

- **DIS** (de-identification score) per identity judge (:mod:`.judges`): the fraction of
  pairs the judge does *not* verify as one person. dlib: Euclidean distance above 0.6, its
  documented same-person threshold. The held-out judges (cosine distance): the threshold at
  the equal error rate (EER, :func:`eer_threshold`) of the clean gallery's genuine and
  impostor pairs; without a gallery, of the sources' own pairs if identities repeat; else only
  the mean distance is reported, with the reason. The mean identity distance goes beside
  DIS, and the worst case over judges is the smallest DIS;
- **re-identification** of each output among the clean gallery: top-1 nearest neighbour in
  the judge's own metric, a hit if it has the source's identity, with chance
  (1 / gallery identities) and the clean sources' own top-1 (the attack's ceiling) beside
  it. A gallery image identical to a source is never a candidate for that source's outputs;
- **box and landmark L1** per detector, dlib (HOG box, 68 points,
  :mod:`deid.faces.detect`) and MTCNN (box, five points, :mod:`deid.judges.mtcnn`): the mean
  absolute coordinate difference in **px** at the image size S between the largest face of
  the source and of the output, over pairs where both are found;
- **detection rate** of the outputs per detector, and of the sources for reference;
- **FID** of all N R outputs against ``fid_reference`` (the target domain's train images,
  as StarGAN v2 does), with both set sizes: on small sets it is heavily biased upwards
  (:mod:`deid.judges.fid`), so only FIDs at equal sizes compare;
- **LPIPS diversity**: mean LPIPS (:func:`deid.judges.lpips.lpips_distance`) over the
  ``R (R - 1) / 2`` pairs of one source's outputs, averaged over sources (StarGAN v2's LPIPS).

Intervals are 95% two-level bootstrap intervals (:mod:`.stats`): source identities drawn
with replacement, then sources within each, every source with all its R outputs. A pair
figure's value is the mean over its pairs; each carries ``n`` (pairs), ``n_sources`` and
``n_groups`` (identities). FID has no interval: it is not a mean over images, and its
small-sample bias is larger than its resampling spread.

A metric whose dependency cannot be had (a judge's weights, the MTCNN or FID wheel, LPIPS,
dlib) is ``{"unavailable": reason}`` and logged; one the inputs do not allow (no gallery, no
FID reference, R = 1) is ``{"skipped": reason}``. :func:`markdown_table` renders results in
the shape of the paper's Tables 2 (privacy) and 3 (utility); published figures
(:data:`PUBLISHED_STARGAN_V2`) go in a block of their own.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch

from deid.evaluation.judges import JUDGE_NAMES, default_judges, judge_distance, judge_similarity
from deid.evaluation.reid import reid_hits
from deid.evaluation.stats import LEVEL, N_BOOT, bootstrap_interval, pair_scores
from deid.evaluation.tables import ci, pct_ci
from deid.faces.detect import FaceDetector, LandmarkPredictor
from deid.judges.dlib import SAME_PERSON_THRESHOLD, to_uint8_hwc
from deid.judges.fid import FEATURE_DIM, frechet_distance, inception_features
from deid.judges.lpips import lpips_distance
from deid.judges.mtcnn import detect_faces

__all__ = ["evaluate_deid", "markdown_table", "pair_mean", "eer_threshold", "DETECTORS",
           "dlib_faces", "PUBLISHED_STARGAN_V2", "DLIB_UPSAMPLE", "FACENET_NOTE"]

log = logging.getLogger(__name__)

#: Published StarGAN v2 figures on CelebA-HQ (10 outputs per source; FID against the target
#: domain's train images at 299 px; LPIPS over the 45 pairs of a source's outputs), as
#: collected in the project's notes on StarGAN v2's evaluation protocol.
PUBLISHED_STARGAN_V2 = {
    "StarGAN v2, latent-guided": {"fid": 13.73, "lpips_diversity": 0.45,
                                  "source": "StarGAN v2 (Choi et al., CVPR 2020), CelebA-HQ"},
    "StarGAN v2, reference-guided": {"fid": 23.84, "lpips_diversity": 0.39,
                                     "source": "StarGAN v2 (Choi et al., CVPR 2020), CelebA-HQ"},
}
#: Why the paper's own DIS judges are missing from every measured table.
FACENET_NOTE = ("FaceNet (CASIA-WebFace and VGGFace2) DIS, the paper's judges, cannot be "
                "computed offline: their weights are downloaded at run time. dlib's ResNet and "
                "the held-out MobileFaceNet and FaceRes judge identity instead.")
#: Upsampling levels of dlib's HOG detector (level 1 finds faces down to about 40 px).
DLIB_UPSAMPLE = (0, 1)
#: Errors that mean "this dependency cannot be had here" (weights, wheels, dlib).
_UNAVAILABLE = (RuntimeError, OSError, ImportError)
#: Images per call of an embedding function.
_EMBED_BATCH = 64


# ------------------------------------------------------------------------------ helpers

def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else 'no message'}"


def _unavailable(what: str, e: BaseException) -> dict:
    reason = _one_line(e)
    log.warning("%s unavailable: %s", what, reason)
    return {"unavailable": reason}


def _skipped(what: str, reason: str) -> dict:
    log.info("%s skipped: %s", what, reason)
    return {"skipped": reason}


def pair_mean(values, groups, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean of a per-pair figure ``(N, R)`` (NaN: no value for that pair) over its finite
    pairs, with a 95% two-level bootstrap interval: ``groups`` (one identity per source)
    drawn with replacement, then sources within each, every source with all its pairs.

    Returns ``{"value", "lo", "hi", "n" (pairs), "n_sources", "n_groups"}``."""
    g = np.asarray(groups)
    v = np.asarray(values, float).reshape(len(g), -1)
    ok = np.isfinite(v)
    sums, counts = np.where(ok, v, 0.0).sum(axis=1), ok.sum(axis=1)
    keep = counts > 0
    if not keep.any():
        return {"value": math.nan, "lo": math.nan, "hi": math.nan, "n": 0, "n_sources": 0,
                "n_groups": 0}
    s, c, g = sums[keep], counts[keep], g[keep]
    lo, hi = bootstrap_interval(lambda idx: float(s[idx].sum() / c[idx].sum()), g, len(s),
                                n_boot, seed)
    return {"value": float(s.sum() / c.sum()), "lo": lo, "hi": hi, "n": int(c.sum()),
            "n_sources": int(keep.sum()), "n_groups": int(len(np.unique(g)))}


def eer_threshold(genuine, impostor) -> tuple[float, float]:
    """Similarity threshold at the equal error rate of genuine and impostor pair scores
    (higher: more alike), and that rate.

    A pair is accepted at or above the threshold: FAR = impostors accepted, FRR = genuine
    pairs rejected. Candidates are the midpoints between consecutive distinct scores (and one
    beyond each end); the one with the smallest ``|FAR - FRR|`` is taken (the lowest on a
    tie), and EER = ``(FAR + FRR) / 2`` there. Separable scores give the midpoint of the gap
    and EER 0."""
    g = np.sort(np.asarray(genuine, float))
    i = np.sort(np.asarray(impostor, float))
    if len(g) == 0 or len(i) == 0:
        raise ValueError("need genuine and impostor scores")
    v = np.unique(np.concatenate([g, i]))
    cand = np.concatenate([[v[0] - 1.0], (v[:-1] + v[1:]) / 2, [v[-1] + 1.0]])
    far = 1.0 - np.searchsorted(i, cand, side="left") / len(i)
    frr = np.searchsorted(g, cand, side="left") / len(g)
    k = int(np.argmin(np.abs(far - frr)))
    return float(cand[k]), float((far[k] + frr[k]) / 2)


def _as_images(x, what: str, ndim: int) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach().to("cpu", torch.float32)
    if t.ndim != ndim or t.shape[-3] != 3:
        shape = "(N, R, 3, S, S)" if ndim == 5 else "(N, 3, H, W)"
        raise ValueError(f"{what} must be {shape} RGB images, got {tuple(t.shape)}")
    return t


def _embed(fn: Callable, images: torch.Tensor) -> np.ndarray:
    """``(N, D)`` float64 embeddings of ``fn`` (numpy or torch), ``_EMBED_BATCH`` at a time."""
    parts = []
    for i in range(0, len(images), _EMBED_BATCH):
        e = fn(images[i:i + _EMBED_BATCH])
        e = e.detach().cpu().double().numpy() if isinstance(e, torch.Tensor) else \
            np.asarray(e, float)
        parts.append(e.reshape(len(e), -1))
    return np.concatenate(parts)


def _image_keys(images: torch.Tensor) -> list[str]:
    """A digest of each image's 8-bit pixels (equal digests: the same picture)."""
    u8 = (images.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return [hashlib.sha1(a.tobytes() + repr(a.shape).encode()).hexdigest() for a in u8]


# ------------------------------------------------------------------------ identity judges

def _eer_threshold(name: str, emb: np.ndarray, ids: np.ndarray, what: str) -> dict | None:
    """Cosine-distance threshold of judge ``name`` at the EER of ``emb``'s genuine and impostor
    pairs, and where it came from; None without both kinds of pairs."""
    gen, imp = pair_scores(judge_similarity(name, emb, emb), ids)
    if len(gen) == 0 or len(imp) == 0:
        return None
    t, eer = eer_threshold(gen, imp)
    return {"threshold": 1.0 - t, "threshold_from": f"EER of the {what} pairs", "eer": eer,
            "genuine_pairs": int(len(gen)), "impostor_pairs": int(len(imp))}


def _dis(name: str, e_src: np.ndarray, e_out: np.ndarray, ids: np.ndarray,
         ref: tuple | None, n_boot: int, seed: int) -> dict:
    """DIS and mean identity distance of one judge; ``ref`` = ``(embeddings, ids, what)`` of
    the clean gallery (None: no gallery)."""
    n, r = len(e_src), len(e_out) // len(e_src)
    d = judge_distance(name, np.repeat(e_src, r, axis=0), e_out).reshape(n, r)
    entry = {"metric": "euclidean" if name == "dlib" else "cosine distance",
             "mean_distance": pair_mean(d, ids, n_boot, seed)}
    if name == "dlib":
        thr = {"threshold": SAME_PERSON_THRESHOLD,
               "threshold_from": "dlib's documented same-person distance"}
    else:
        thr = _eer_threshold(name, *ref) if ref is not None else None
        if thr is None and len(np.unique(ids)) < len(ids):
            thr = _eer_threshold(name, e_src, ids, "sources'")
    if thr is None:
        why = ("the gallery lacks genuine or impostor pairs" if ref is not None else
               "no gallery") + " and no source identity repeats: no pairs to set a threshold"
        entry.update(dis=None, reason=why)
        log.info("DIS %s: %s; mean distance only", name, why)
        return entry
    entry.update(thr)
    entry["dis"] = pair_mean((d > thr["threshold"]).astype(float), ids, n_boot, seed)
    return entry


def _reid(name: str, e_src, e_out, e_gal, ids, gallery_ids, src_keys, gal_keys,
          n_boot: int, seed: int) -> dict:
    if name != "dlib":  # cosine ranking = Euclidean ranking of unit vectors
        e_src, e_out, e_gal = (e / np.linalg.norm(e, axis=1, keepdims=True)
                               for e in (e_src, e_out, e_gal))
    n, r = len(e_src), len(e_out) // len(e_src)
    hits = reid_hits(e_out, np.repeat(ids, r), e_gal, gallery_ids, leave_one_out=True,
                     probe_index=np.repeat(src_keys, r), gallery_index=gal_keys)
    clean = reid_hits(e_src, ids, e_gal, gallery_ids, leave_one_out=True,
                      probe_index=src_keys, gallery_index=gal_keys)
    k = len(np.unique(gallery_ids))
    return {"top1": pair_mean(hits.reshape(n, r).astype(float), ids, n_boot, seed),
            "clean_top1": pair_mean(clean[:, None].astype(float), ids, n_boot, seed),
            "chance": 1.0 / k, "n_gallery": int(len(gallery_ids)), "n_gallery_identities": k,
            "n_sources_known": int(np.isin(ids, gallery_ids).sum())}


# ------------------------------------------------------------------------------ geometry

def _area(box) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


@functools.lru_cache(maxsize=1)
def _dlib_models() -> tuple[FaceDetector, LandmarkPredictor]:
    return FaceDetector(), LandmarkPredictor()


def dlib_faces(images: torch.Tensor) -> list:
    """Per image the largest dlib HOG face: ``(box (4,), points (68, 2))`` in px, or None."""
    detector, predictor = _dlib_models()
    out = []
    for im in to_uint8_hwc(images):
        dets = detector(im, upsample=DLIB_UPSAMPLE)
        if not dets:
            out.append(None)
            continue
        best = max(dets, key=lambda d: _area(d.box))
        out.append((np.asarray(best.box, float), predictor(im, best.box)))
    return out


def _mtcnn_faces(images: torch.Tensor) -> list:
    """Per image the largest MTCNN face: ``(box (4,), points (5, 2))`` in px, or None."""
    out = []
    for boxes, _, points in detect_faces(images, return_points=True):
        if len(boxes) == 0:
            out.append(None)
            continue
        k = int(np.argmax([_area(b) for b in boxes]))
        out.append((boxes[k], points[k]))
    return out


#: Face detectors by name: images ``(N, 3, S, S)`` -> per image ``(box, points)`` or None.
DETECTORS: dict[str, Callable[[torch.Tensor], list]] = {"dlib": dlib_faces,
                                                         "mtcnn": _mtcnn_faces}


def _geometry(faces_src: list, faces_out: list, ids: np.ndarray, r: int, n_boot: int,
              seed: int) -> dict:
    n = len(faces_src)
    box, pts = np.full((n, r), np.nan), np.full((n, r), np.nan)
    for i, a in enumerate(faces_src):
        for j in range(r):
            b = faces_out[i * r + j]
            if a is not None and b is not None:
                box[i, j] = np.abs(a[0] - b[0]).mean()
                pts[i, j] = np.abs(a[1] - b[1]).mean()
    found_out = np.array([f is not None for f in faces_out], float).reshape(n, r)
    found_src = np.array([f is not None for f in faces_src], float)[:, None]
    n_points = next((len(f[1]) for f in faces_src + faces_out if f is not None), 0)
    return {"detection_rate": pair_mean(found_out, ids, n_boot, seed),
            "detection_rate_sources": pair_mean(found_src, ids, n_boot, seed),
            "box_l1_px": pair_mean(box, ids, n_boot, seed),
            "landmark_l1_px": pair_mean(pts, ids, n_boot, seed), "n_landmarks": n_points}


# ------------------------------------------------------------------- realism and diversity

def _fid(outputs: torch.Tensor, reference) -> dict:
    if reference is None:
        return _skipped("FID", "no fid_reference (the target domain's train images) given")
    ref = _as_images(reference, "fid_reference", 4)
    if len(outputs) < 2 or len(ref) < 2:
        return _skipped("FID", f"needs 2 or more images a side, got {len(outputs)} outputs "
                               f"and {len(ref)} reference images")
    try:
        f_out, f_ref = inception_features(outputs), inception_features(ref)
    except _UNAVAILABLE as e:
        return _unavailable("FID", e)
    small = min(len(f_out), len(f_ref)) < FEATURE_DIM
    entry = {"value": frechet_distance(f_out, f_ref), "n_outputs": int(len(f_out)),
             "n_reference": int(len(f_ref)), "small_sample": small,
             "interval": "none: FID is not a mean over images; its small-sample bias "
                         "exceeds its resampling spread"}
    if small:
        entry["note"] = (f"fewer than {FEATURE_DIM} images a side: FID is biased upwards "
                         f"(roughly by c/N); compare only at equal N")
    log.info("FID %.2f (%d outputs, %d reference images)", entry["value"], len(f_out),
             len(f_ref))
    return entry


def _lpips_diversity(outputs: torch.Tensor, ids: np.ndarray, n_boot: int, seed: int) -> dict:
    n, r = outputs.shape[:2]
    if r < 2:
        return _skipped("LPIPS diversity", f"needs 2 or more outputs per source, got R = {r}")
    a, b = (torch.as_tensor(v) for v in np.triu_indices(r, k=1))
    per_source = np.empty(n)
    try:
        with torch.no_grad():
            for i in range(n):
                per_source[i] = float(lpips_distance(outputs[i, a], outputs[i, b]).mean())
    except _UNAVAILABLE as e:
        return _unavailable("LPIPS diversity", e)
    return {**pair_mean(per_source[:, None], ids, n_boot, seed), "pairs_per_source": int(len(a))}


# ----------------------------------------------------------------------------- the entry

def evaluate_deid(sources, outputs, source_ids, gallery=None, gallery_ids=None, judges=None,
                  fid_reference=None, detectors=("dlib", "mtcnn"), n_boot: int = N_BOOT,
                  seed: int = 0, *, label: str = "measured") -> dict:
    """Every stage-2 metric of ``outputs`` against their ``sources`` (see the module text).

    Parameters
    ----------
    sources:
        ``(N, 3, S, S)`` in **[0, 1]**.
    outputs:
        ``(N, R, 3, S, S)`` in **[0, 1]**: R outputs per source, one per reference.
    source_ids:
        The identity of each source (N labels).
    gallery, gallery_ids:
        Clean images ``(M, 3, H, W)`` of known identities and their labels, for
        re-identification and the held-out judges' thresholds (None: re-ID skipped).
    judges:
        ``{name: images -> (n, D) embeddings}``; the name sets the metric (``"dlib"``:
        Euclidean with threshold 0.6; any other: cosine). Default: every judge of
        :func:`deid.evaluation.judges.default_judges` that loads.
    fid_reference:
        The target domain's train images ``(K, 3, H, W)`` for FID (None: skipped).
    detectors:
        Names from :data:`DETECTORS`.
    n_boot, seed:
        Bootstrap replicates and seed of every interval.
    label:
        The row name in :func:`markdown_table`.
    """
    src = _as_images(sources, "sources", 4)
    out = _as_images(outputs, "outputs", 5)
    n, r = out.shape[:2]
    ids = np.asarray(source_ids)
    if len(src) != n or len(ids) != n or out.shape[2:] != src.shape[1:]:
        raise ValueError(f"sources {tuple(src.shape)}, outputs {tuple(out.shape)} and "
                         f"{len(ids)} source ids do not match (N, R, 3, S, S)")
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detectors {unknown}; known: {', '.join(DETECTORS)}")
    gal = None
    if gallery is not None:
        gal = _as_images(gallery, "gallery", 4)
        gallery_ids = np.asarray(gallery_ids if gallery_ids is not None else [])
        if len(gallery_ids) != len(gal) or len(gal) == 0:
            raise ValueError(f"{len(gal)} gallery images but {len(gallery_ids)} gallery ids")
    flat = out.reshape(n * r, *out.shape[2:])
    result: dict = {"label": label, "n_sources": int(n), "n_identities": int(len(np.unique(ids))),
                    "r": int(r), "image_size_px": int(src.shape[-1]),
                    "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "level": LEVEL,
                                  "resampled": "source identities, then sources (each with "
                                               "all its R outputs)"}}

    dis: dict = {}
    reid: dict = {}
    if judges is None:
        judges = {}
        for name in JUDGE_NAMES:
            try:
                judges.update(default_judges((name,)))
            except _UNAVAILABLE as e:
                dis[name] = reid[name] = _unavailable(f"judge {name}", e)
    if gal is not None:
        keys: dict[str, int] = {}
        src_keys = np.array([keys.setdefault(k, len(keys)) for k in _image_keys(src)])
        gal_keys = np.array([keys.setdefault(k, len(keys)) for k in _image_keys(gal)])
        result["sources_in_gallery"] = int(np.isin(src_keys, gal_keys).sum())
    for name, fn in judges.items():
        try:
            e_src, e_out = _embed(fn, src), _embed(fn, flat)
            e_gal = _embed(fn, gal) if gal is not None else None
        except _UNAVAILABLE as e:
            dis[name] = reid[name] = _unavailable(f"judge {name}", e)
            continue
        ref = (e_gal, gallery_ids, "clean gallery's") if gal is not None else None
        dis[name] = _dis(name, e_src, e_out, ids, ref, n_boot, seed)
        if gal is not None:
            reid[name] = _reid(name, e_src, e_out, e_gal, ids, gallery_ids, src_keys,
                               gal_keys, n_boot, seed)
    result["dis"] = dis
    scored = {k: v["dis"] for k, v in dis.items()
              if v.get("dis") and math.isfinite(v["dis"]["value"])}
    worst = min(scored, key=lambda k: scored[k]["value"]) if scored else None
    result["dis_worst"] = ({"judge": worst, **scored[worst]} if worst else
                           _skipped("worst DIS", "no judge gave a DIS"))
    result["reid"] = reid if gal is not None else _skipped(
        "re-identification", "no gallery of clean images of known identities given")

    geometry = {}
    for name in detectors:
        try:
            geometry[name] = _geometry(DETECTORS[name](src), DETECTORS[name](flat), ids, r,
                                       n_boot, seed)
        except _UNAVAILABLE as e:
            geometry[name] = _unavailable(f"detector {name}", e)
    result["geometry"] = geometry
    result["fid"] = _fid(flat, fid_reference)
    result["lpips_diversity"] = _lpips_diversity(out, ids, n_boot, seed)
    log.info("stage-2 evaluation of %d sources x %d outputs (%d identities) done", n, r,
             result["n_identities"])
    return result


# ------------------------------------------------------------------------------- tables

def _rows(result: Mapping) -> dict[str, Mapping]:
    """``{label: result}`` of one :func:`evaluate_deid` result or a mapping of them."""
    if "n_sources" in result:
        return {result.get("label", "measured"): result}
    return dict(result)


def _cell(entry, fmt: Callable[[dict], str]) -> str:
    if not isinstance(entry, Mapping):
        return "-"
    if "unavailable" in entry or "skipped" in entry:
        return "n/a"
    return fmt(entry)


def _l1(d: dict) -> str:
    return ci(d, 2)


def _why(entry) -> str | None:
    if isinstance(entry, Mapping):
        return entry.get("unavailable") or entry.get("skipped") or entry.get("reason")
    return None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def markdown_table(result: Mapping, published: Mapping | None = None) -> str:
    """Markdown tables of measured stage-2 results, shaped like the paper's Tables 2
    (privacy: DIS and re-ID per judge) and 3 (utility: FID, LPIPS diversity, detection rate,
    box and landmark L1 per detector); rows are methods or settings.

    ``result`` is one :func:`evaluate_deid` result or ``{row label: result}``. ``published``
    (e.g. :data:`PUBLISHED_STARGAN_V2`, ``{row label: {"fid", "lpips_diversity", ...,
    "source"}}``) goes in a separate block labelled "published (CelebA-HQ, GPU)", never
    among the measured rows. Unavailable or skipped figures show ``n/a``, with their reasons
    listed below the tables."""
    rows = _rows(result)
    judges = list(dict.fromkeys(j for r in rows.values() for j in r.get("dis", {})))
    dets = list(dict.fromkeys(d for r in rows.values() for d in r.get("geometry", {})))
    notes: list[str] = []

    def note(label: str, what: str, entry) -> None:
        why = _why(entry)
        if why:
            notes.append(f"- {label}, {what}: {why}")

    lines = ["### Privacy (measured)", ""]
    header = ["setting", "N / ids / R", *(f"DIS {j}" for j in judges), "worst DIS",
              *(f"re-ID {j} (clean; chance)" for j in judges)]
    body = []
    for label, res in rows.items():
        row = [label, f"{res['n_sources']} / {res['n_identities']} / {res['r']}"]
        for j in judges:
            e = res.get("dis", {}).get(j)
            note(label, f"DIS {j}", e)
            if isinstance(e, Mapping) and "unavailable" not in e and e.get("dis") is None:
                row.append(f"- (mean d {ci(e.get('mean_distance'))})")
            else:
                row.append(_cell(e, lambda e: f"{pct_ci(e['dis'])}; d {ci(e['mean_distance'])}"))
        w = res.get("dis_worst")
        row.append(_cell(w, lambda w: f"{pct_ci(w)} ({w['judge']})"))
        reid = res.get("reid", {})
        if _why(reid):
            note(label, "re-ID", reid)
        for j in judges:
            e = reid.get(j) if not _why(reid) else reid
            if not _why(reid):
                note(label, f"re-ID {j}", e)
            row.append(_cell(e, lambda e: f"{pct_ci(e['top1'])} ({pct_ci(e['clean_top1'])}; "
                                          f"{100 * e['chance']:.0f}%)"))
        body.append(row)
    lines += _table(header, body)

    lines += ["", "### Utility (measured)", ""]
    header = ["setting", "FID (N out / N ref)", "LPIPS diversity",
              *(f"{kind} {d}" for d in dets for kind in
                ("detected", "box L1 px", "landmark L1 px"))]
    body = []
    for label, res in rows.items():
        f = res.get("fid")
        note(label, "FID", f)
        lp = res.get("lpips_diversity")
        note(label, "LPIPS diversity", lp)
        row = [label, _cell(f, lambda f: f"{f['value']:.2f} ({f['n_outputs']} / "
                                         f"{f['n_reference']})"), _cell(lp, ci)]
        for d in dets:
            g = res.get("geometry", {}).get(d)
            note(label, f"detector {d}", g)
            row += [_cell(g, lambda g: f"{pct_ci(g['detection_rate'])} (sources "
                                       f"{pct_ci(g['detection_rate_sources'])})"),
                    _cell(g, lambda g: _l1(g["box_l1_px"])),
                    _cell(g, lambda g: _l1(g["landmark_l1_px"]))]
        body.append(row)
    lines += _table(header, body)

    lines += ["", f"Intervals: {100 * LEVEL:.0f}% bootstrap over source identities, then "
              "sources. DIS: share of (source, output) pairs the judge does not verify as one "
              "person (d: mean identity distance). re-ID: top-1 of outputs against the clean "
              "gallery. FID is biased upwards on small sets: compare only at equal N. "
              + FACENET_NOTE]
    if notes:
        lines += ["", "Not measured:", *notes]

    if published:
        keys = list(dict.fromkeys(k for p in published.values() for k in p if k != "source"))
        names = {"fid": "FID", "lpips_diversity": "LPIPS diversity"}
        lines += ["", "### published (CelebA-HQ, GPU)", "",
                  "Figures as published, on thousands of CelebA-HQ images; not comparable "
                  "with the measured rows above at small N.", ""]
        body = [[label, *(f"{p[k]:.2f}" if isinstance(p.get(k), (int, float)) else
                          str(p.get(k, "-")) for k in keys), str(p.get("source", "-"))]
                for label, p in published.items()]
        lines += _table(["published row", *(names.get(k, k) for k in keys), "source"], body)
    return "\n".join(lines) + "\n"
