"""Stage 2 data: identity splits, the three kinds of data, and the disjointness guarantee.

Synthetic folders (StarGAN layout, a tiny demo corpus, a paired dataset) are built in
``tmp_path``; the real demo corpus is used only when it is present (``PRIVLENS_HOME``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from captures.dataset import DATASET_FORMAT
from captures.store import CaptureWriter
from deid.faces.manifest import corpus_dir
from deid.methods.stage2.data import (
    Stage2Data,
    check_disjoint,
    load_stage2_data,
    split_identities,
)


def _flat(path, k: int, shape=(24, 20)) -> None:
    """A flat image whose colour encodes ``k`` (red = k, green = 255 - k)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((*shape, 3), np.uint8)
    a[..., 0], a[..., 1], a[..., 2] = k, 255 - k, 128
    Image.fromarray(a).save(path)


def _code(images: torch.Tensor) -> list[int]:
    """The ``k`` of each flat image (red channel at the centre)."""
    s = images.shape[-1] // 2
    return [round(v) for v in (images[:, 0, s, s] * 255).tolist()]


@pytest.fixture
def stargan(tmp_path):
    """``train/{female: 5, male: 4}`` and ``val/{female: 1, male: 2}``; image k = its code."""
    root = tmp_path / "celeba"
    k = 0
    for split, counts in (("train", {"female": 5, "male": 4}), ("val", {"female": 1, "male": 2})):
        for domain, n in counts.items():
            for j in range(n):
                _flat(root / split / domain / f"{j:03d}.png", k)
                k += 1
    return root


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A tiny demo corpus as ``PRIVLENS_HOME``: train has identities A (3 images), B (2),
    C (1) and 4 unknown faces; test has 3 unknown faces."""
    home = tmp_path / "home"
    corpus = home / "demo-faces"
    records = []
    plan = [("train", "A")] * 3 + [("train", "B")] * 2 + [("train", "C")] + \
        [("train", None)] * 4 + [("test", None)] * 3
    for k, (split, who) in enumerate(plan):
        _flat(corpus / "images" / f"f{k:02d}.png", 100 + k, shape=(32, 32))
        records.append({"file": f"images/f{k:02d}.png", "split": split, "identity": who,
                        "source": "synthetic"})
    (corpus / "manifest.json").write_text(json.dumps(records))
    monkeypatch.setenv("PRIVLENS_HOME", str(home))
    return home


def _paired(root, n_train: int = 4, n_test: int = 2, side: int = 16, session=None):
    """A paired dataset as ``captures.dataset.build_paired_dataset`` writes it (the fields the
    loader reads); privacy and reference crops are different noise images."""
    rng = np.random.default_rng(0)
    records = []
    for split, n in (("train", n_train), ("test", n_test)):
        for j in range(n):
            rel = {b: f"{split}/{b}/{j:06d}.png" for b in ("privacy", "reference")}
            for b in rel:
                (root / rel[b]).parent.mkdir(parents=True, exist_ok=True)
                img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / rel[b])
            records.append({"split": split, "index": j, **rel, "frame": j, "face": 0,
                            "session": str(session or root / "missing-session.h5")})
    (root / "manifest.json").write_text(json.dumps({
        "format": DATASET_FORMAT, "size": side, "pairs": len(records),
        "splits": {"train": n_train, "test": n_test}, "records": records}))
    return root


def _png(path) -> torch.Tensor:
    a = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)


# ----------------------------------------------------------------------------- identities

def test_split_identities_keeps_identities_whole_and_is_deterministic():
    ids = [f"p{k % 7}" for k in range(40)] + [f"img:{k}" for k in range(10)]
    src, ref = split_identities(ids, 0.5, seed=3)
    assert sorted(src + ref) == list(range(len(ids)))
    assert src == sorted(src) and ref == sorted(ref)
    assert not {ids[i] for i in src} & {ids[i] for i in ref}
    assert abs(len(ref) - 25) <= 6  # closest whole-identity cut to half the images
    assert split_identities(ids, 0.5, seed=3) == (src, ref)
    # the same identities on each side whatever the input order
    perm = np.random.default_rng(1).permutation(len(ids))
    shuffled = [ids[i] for i in perm]
    s2, r2 = split_identities(shuffled, 0.5, seed=3)
    assert {shuffled[i] for i in r2} == {ids[i] for i in ref}
    # the seed matters
    assert len({tuple(split_identities(ids, 0.5, seed=s)[1]) for s in range(6)}) > 1
    # both sides non-empty at the extremes
    for frac in (0.01, 0.99):
        s, r = split_identities(["a", "b", "b"], frac, seed=0)
        assert s and r


@pytest.mark.parametrize("ids, frac, match", [
    (["a", "a", "a"], 0.5, "at least 2 identities"),
    ([], 0.5, "at least 2 identities"),
    (["a", "b"], 0.0, r"in \(0, 1\)"),
    (["a", "b"], 1.0, r"in \(0, 1\)"),
    (["a", "", "b"], 0.5, "empty"),
])
def test_split_identities_errors(ids, frac, match):
    with pytest.raises(ValueError, match=match) as e:
        split_identities(ids, frac, seed=0)
    assert "\n" not in str(e.value)


def test_check_disjoint_raises_on_a_shared_identity():
    x = torch.zeros(2, 3, 4, 4)
    zeros = torch.zeros(2, dtype=torch.long)
    ok = Stage2Data(x, zeros, ["a", "b"], x, zeros, ["c", "d"], ["face"])
    check_disjoint(ok)
    bad = Stage2Data(x, zeros, ["a", "b"], x, zeros, ["b", "c"], ["face"])
    with pytest.raises(ValueError, match="'b' is both a source and a reference"):
        check_disjoint(bad)
    with pytest.raises(ValueError, match="identities"):
        Stage2Data(x, zeros, ["a"], x, zeros, ["c", "d"], ["face"])
    with pytest.raises(ValueError, match="empty identity"):
        Stage2Data(x, zeros, ["a", ""], x, zeros, ["c", "d"], ["face"])


# ----------------------------------------------------------------------------- StarGAN layout

def test_stargan_layout(stargan):
    d = load_stage2_data(stargan, size=8, split="train", seed=0)
    assert d.kind == "stargan" and d.domains == ["female", "male"] and d.captured is None
    assert d.sources.shape[1:] == (3, 8, 8) and d.references.shape[1:] == (3, 8, 8)
    assert d.sources.dtype == torch.float32 and d.source_domains.dtype == torch.int64
    s = d.summary()
    assert s["sources"] + s["references"] == 9
    assert all(s["sources_per_domain"]) and all(s["references_per_domain"])
    check_disjoint(d)
    # every image once, on one side, its pixels matching its identity (path) and domain
    order = [f"img:train/{dom}/{j:03d}.png" for dom, n in (("female", 5), ("male", 4))
             for j in range(n)]
    codes = _code(d.sources) + _code(d.references)
    ids = d.source_identities + d.reference_identities
    doms = d.source_domains.tolist() + d.reference_domains.tolist()
    assert sorted(codes) == list(range(9))
    for c, i, dom in zip(codes, ids, doms, strict=True):
        assert order.index(i) == c and dom == (0 if "female" in i else 1)
    # deterministic
    again = load_stage2_data(stargan, size=8, split="train", seed=0)
    assert torch.equal(again.sources, d.sources) and torch.equal(again.references, d.references)
    assert again.source_identities == d.source_identities


def test_stargan_lone_image_is_a_reference(stargan):
    d = load_stage2_data(stargan, size=8, split="val")  # female has 1 image, male 2
    assert d.summary()["sources_per_domain"] == [0, 1]
    assert d.summary()["references_per_domain"] == [1, 1]


def test_bad_input_is_refused_in_one_line(stargan, tmp_path):
    cases = [
        (FileNotFoundError, dict(data=tmp_path / "nowhere", size=8)),
        (FileNotFoundError, dict(data=stargan, size=8, split="test")),
        (ValueError, dict(data=stargan, size=0)),
        (ValueError, dict(data=stargan, size=7.5)),
        (ValueError, dict(data=stargan, size=8, reference_fraction=1.5)),
    ]
    for exc, kw in cases:
        with pytest.raises(exc) as e:
            load_stage2_data(**kw)
        assert "\n" not in str(e.value), kw
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "manifest.json").write_text(json.dumps({"format": "something/2"}))
    with pytest.raises(ValueError, match="neither a demo corpus"):
        load_stage2_data(odd, size=8)


# ----------------------------------------------------------------------------- demo corpus

def test_demo_corpus_keeps_identities_whole(home):
    for data in (None, "demo", home, home / "demo-faces"):
        d = load_stage2_data(data, size=16, split="train", seed=0)
        assert d.kind == "demo" and d.domains == ["face"] and d.captured is None
        assert len(d.sources) + len(d.references) == 10
        check_disjoint(d)
        ids = d.source_identities + d.reference_identities
        assert ids.count("A") == 3 and ids.count("B") == 2
        assert sum(i.startswith("img:images/") for i in ids) == 4
        assert torch.equal(d.sources, load_stage2_data(data, 16, "train", 0).sources)
    with pytest.raises(ValueError, match="no split 'johns'"):
        load_stage2_data(None, size=16, split="johns")


@pytest.mark.skipif(not (corpus_dir() / "manifest.json").is_file(),
                    reason="no demo corpus (deid fetch-demo-data; set PRIVLENS_HOME)")
def test_real_demo_corpus():
    for split in ("train", "johns"):
        d = load_stage2_data(None, size=32, split=split, seed=0)
        check_disjoint(d)
        assert d.domains == ["face"] and len(d.sources) and len(d.references)
        assert float(d.sources.min()) >= 0 and float(d.sources.max()) <= 1
    assert len(set(d.source_identities)) >= 2  # johns: several images per named identity


# ----------------------------------------------------------------------------- paired

def test_paired_dataset(tmp_path, home):
    root = _paired(tmp_path / "paired")
    d = load_stage2_data(root, size=16, split="train")
    assert d.kind == "paired" and d.domains == ["face"]
    assert d.captured is not None and d.captured.shape == d.sources.shape == (4, 3, 16, 16)
    for j in range(4):  # manifest order, pixel-exact at the stored size
        assert torch.equal(d.sources[j], _png(root / f"train/reference/{j:06d}.png"))
        assert torch.equal(d.captured[j], _png(root / f"train/privacy/{j:06d}.png"))
    assert d.source_identities == [f"pair:train/{j:06d}" for j in range(4)]
    assert len(d.references) == 10 and (d.reference_domains == 0).all()  # demo train, all
    check_disjoint(d)
    small = load_stage2_data(root, size=8, split="test")
    assert small.sources.shape == small.captured.shape == (2, 3, 8, 8)
    assert len(small.references) == 3
    assert small.summary()["captured"] is True
    with pytest.raises(ValueError, match="no pairs of split 'val'"):
        load_stage2_data(root, size=8, split="val")


def test_paired_dataset_needs_the_demo_corpus(tmp_path, monkeypatch):
    root = _paired(tmp_path / "paired")
    monkeypatch.setenv("PRIVLENS_HOME", str(tmp_path / "empty-home"))
    with pytest.raises(FileNotFoundError, match="demo corpus") as e:
        load_stage2_data(root, size=16)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("scene, simulated, refused", [
    ("faces", True, True),
    ("folder:CORPUS", True, True),
    ("folder:HOME", False, True),
    ("faces", False, False),
    ("checkerboard", True, False),
])
def test_paired_dataset_that_filmed_the_demo_corpus_is_refused(tmp_path, home, scene,
                                                               simulated, refused):
    scene = scene.replace("CORPUS", str(home / "demo-faces" / "images"))
    scene = scene.replace("HOME", str(home))
    session = tmp_path / "s.h5"
    with CaptureWriter(session, {"scene": scene, "simulated": simulated}, privacy_only=False,
                       frame_shape=(8, 8, 3)):
        pass
    root = _paired(tmp_path / "paired", session=session)
    if refused:
        with pytest.raises(ValueError, match="filmed .*demo corpus"):
            load_stage2_data(root, size=16)
    else:
        check_disjoint(load_stage2_data(root, size=16))


def test_unknown_faces_judged_the_same_person_become_one_identity():
    """Unknown faces within dlib's 0.6 of each other (transitively) share an identity, so the
    split cannot put one person on both sides; a named face gives its name to its matches."""
    from deid.methods.stage2.data import group_unknown_identities

    emb = torch.tensor([[0.0], [0.5], [1.0], [5.0], [9.0], [9.3], [20.0]])
    ids = ["img:a", "img:b", "img:c", "img:d", "Ann", "img:f", "img:g"]
    out = group_unknown_identities(torch.zeros(7, 3, 4, 4), ids, embed=lambda x: emb.numpy())
    assert out[0] == out[1] == out[2] == "group:a"  # a-b-c chained
    assert out[3] == "img:d" and out[6] == "img:g"
    assert out[4] == out[5] == "Ann"
    src, ref = split_identities(out, 0.5, seed=0)
    assert not {out[i] for i in src} & {out[i] for i in ref}
