"""Tests for the stage-2 metrics (deid.evaluation.stage2_eval), FID (deid.judges.fid) and MTCNN
(deid.judges.mtcnn).

Identity is judged by small deterministic fake judges (an image's mean colour is its
identity): ``"dlib"`` takes dlib's Euclidean metric and 0.6 threshold, ``"mobilefacenet"``
the cosine distance with an EER threshold. Tests that need real weights (Inception, MTCNN,
LPIPS, dlib) skip with the loader's one-line reason when they cannot be had.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deid.evaluation import stage2_eval as s2
from deid.judges import fid as fidm
from deid.judges import lpips as lp
from deid.judges import mtcnn as mt
from optics.kit.imageio import example_face

#: One colour per fake identity (RGB in [0, 1]).
COLOURS = torch.tensor([[0.9, 0.2, 0.2], [0.2, 0.9, 0.2], [0.2, 0.2, 0.9]])
SIZE_PX = 32


def _faces(identities, seed: int) -> torch.Tensor:
    """Flat ``(n, 3, 32, 32)`` images of the identities' colours, each shifted a little."""
    g = torch.Generator().manual_seed(seed)
    jitter = 0.08 * (torch.rand(len(identities), 3, generator=g) - 0.5)
    c = COLOURS[list(identities)] + jitter
    return c[:, :, None, None].expand(-1, -1, SIZE_PX, SIZE_PX).clone()


def _colour_embed(images) -> np.ndarray:
    """Fake dlib-like judge: 3x the mean colour (same person: < 0.42 apart; others: > 2.5)."""
    return 3.0 * torch.as_tensor(images).mean(dim=(2, 3)).double().numpy()


def _centred_embed(images) -> torch.Tensor:
    """Fake cosine judge: the mean colour minus grey (a torch tensor, as the held-out judges)."""
    return torch.as_tensor(images).mean(dim=(2, 3)) - 0.5


JUDGES = {"dlib": _colour_embed, "mobilefacenet": _centred_embed}
SOURCE_IDS = [0, 0, 1, 1, 2, 2]


@pytest.fixture(scope="module")
def sources():
    return _faces(SOURCE_IDS, seed=1)


@pytest.fixture(scope="module")
def gallery():
    ids = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    return _faces(ids, seed=2), np.array(ids)


def _repeat(x: torch.Tensor, r: int) -> torch.Tensor:
    return x[:, None].expand(-1, r, -1, -1, -1).clone()


def _evaluate(src, out, gallery=None, **kw):
    g, gid = gallery if gallery is not None else (None, None)
    kw.setdefault("judges", JUDGES)
    kw.setdefault("detectors", ())
    kw.setdefault("n_boot", 200)
    return s2.evaluate_deid(src, out, SOURCE_IDS, g, gid, **kw)


# ------------------------------------------------------------------ DIS and re-identification

def test_dis_zero_when_outputs_are_the_sources(sources, gallery, monkeypatch):
    monkeypatch.setattr(s2, "lpips_distance", lambda a, b: torch.zeros(len(a)))
    res = _evaluate(sources, _repeat(sources, 3), gallery)
    assert (res["n_sources"], res["n_identities"], res["r"]) == (6, 3, 3)
    for name in JUDGES:
        d = res["dis"][name]
        assert d["dis"]["value"] == 0.0 and d["dis"]["n"] == 18 and d["dis"]["n_groups"] == 3
        assert d["mean_distance"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert res["dis"]["dlib"]["threshold"] == 0.6
    cos = res["dis"]["mobilefacenet"]
    assert cos["threshold_from"] == "EER of the clean gallery's pairs" and cos["eer"] == 0.0
    assert 0.0 < cos["threshold"] < 1.0
    assert res["dis_worst"]["value"] == 0.0


def test_dis_one_when_outputs_are_other_identities(sources, gallery, monkeypatch):
    monkeypatch.setattr(s2, "lpips_distance", lambda a, b: torch.zeros(len(a)))
    others = _faces([(k + 1) % 3 for k in SOURCE_IDS], seed=3)
    res = _evaluate(sources, _repeat(others, 2), gallery)
    for name in JUDGES:
        assert res["dis"][name]["dis"]["value"] == 1.0
        assert res["dis"][name]["dis"]["lo"] == 1.0
    assert res["dis"]["dlib"]["mean_distance"]["value"] > 2.0
    # re-identification: every output is named after the other identity
    for name in JUDGES:
        r = res["reid"][name]
        assert r["top1"]["value"] == 0.0
        assert r["clean_top1"]["value"] == 1.0
        assert r["chance"] == pytest.approx(1 / 3)
        assert (r["n_gallery"], r["n_gallery_identities"], r["n_sources_known"]) == (9, 3, 6)


def test_reid_with_fake_judges(sources, gallery, monkeypatch):
    monkeypatch.setattr(s2, "lpips_distance", lambda a, b: torch.zeros(len(a)))
    res = _evaluate(sources, _repeat(sources, 2), gallery)
    for name in JUDGES:
        assert res["reid"][name]["top1"]["value"] == 1.0
        assert res["reid"][name]["top1"]["n"] == 12
    assert res["sources_in_gallery"] == 0
    # half the outputs of each source swapped for another identity: top-1 one half
    others = _faces([(k + 1) % 3 for k in SOURCE_IDS], seed=4)
    mixed = torch.stack([sources, others], dim=1)
    res = _evaluate(sources, mixed, gallery)
    for name in JUDGES:
        top1 = res["reid"][name]["top1"]
        assert top1["value"] == 0.5 and top1["lo"] <= 0.5 <= top1["hi"]
        assert res["dis"][name]["dis"]["value"] == 0.5


def test_a_source_in_the_gallery_is_no_candidate(sources, gallery, monkeypatch):
    """Only the sources themselves in the gallery: each output's own source is excluded, the
    other source of its identity is still found."""
    monkeypatch.setattr(s2, "lpips_distance", lambda a, b: torch.zeros(len(a)))
    res = _evaluate(sources, _repeat(sources, 2), (sources, np.array(SOURCE_IDS)))
    assert res["sources_in_gallery"] == 6
    assert res["reid"]["dlib"]["top1"]["value"] == 1.0
    single = (sources[::2], np.array(SOURCE_IDS[::2]))  # one image per identity: all excluded
    res = _evaluate(sources, _repeat(sources, 2), single)
    assert res["reid"]["dlib"]["top1"]["value"] == 0.5  # the odd sources still find theirs


def test_thresholds_without_a_gallery(sources, monkeypatch):
    monkeypatch.setattr(s2, "lpips_distance", lambda a, b: torch.zeros(len(a)))
    res = _evaluate(sources, _repeat(sources, 2))
    assert "skipped" in res["reid"]
    assert res["dis"]["mobilefacenet"]["threshold_from"] == "EER of the sources' pairs"
    # every source a different person: no pairs to set a threshold, mean distance only
    res = s2.evaluate_deid(sources, _repeat(sources, 2), list("abcdef"), judges=JUDGES,
                           detectors=(), n_boot=50)
    cos = res["dis"]["mobilefacenet"]
    assert cos["dis"] is None and "no gallery" in cos["reason"]
    assert cos["mean_distance"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert res["dis"]["dlib"]["dis"]["value"] == 0.0  # dlib's threshold needs no pairs
    assert res["dis_worst"]["judge"] == "dlib"


def test_eer_threshold():
    t, eer = s2.eer_threshold([0.9, 0.8, 0.7], [0.1, 0.2, 0.3])
    assert (t, eer) == (pytest.approx(0.5), 0.0)
    t, eer = s2.eer_threshold([0.9, 0.8, 0.4, 0.7], [0.1, 0.5, 0.2, 0.3])
    assert eer == 0.25 and 0.4 < t <= 0.5


def test_pair_mean_counts_only_finite_pairs():
    v = np.array([[1.0, np.nan], [0.0, 0.0], [np.nan, np.nan]])
    m = s2.pair_mean(v, ["a", "a", "b"], n_boot=100)
    assert m["value"] == pytest.approx(1 / 3)
    assert (m["n"], m["n_sources"], m["n_groups"]) == (3, 2, 1)


# -------------------------------------------------------------------------------- LPIPS

def test_lpips_diversity_zero_for_identical_outputs(sources):
    try:
        lp.fetch_lpips_weights()
    except lp.LPIPSWeightsUnavailable as e:
        pytest.skip(str(e))
    same = s2.evaluate_deid(sources[:2], _repeat(sources[:2], 3), SOURCE_IDS[:2], judges={},
                            detectors=(), n_boot=50)
    d = same["lpips_diversity"]
    assert d["value"] == pytest.approx(0.0, abs=1e-6) and d["pairs_per_source"] == 3
    face = example_face(64)
    varied = torch.stack([face, face.flip(-1), face.transpose(-1, -2)])[None]
    res = s2.evaluate_deid(face[None], varied, ["eileen"], judges={}, detectors=(), n_boot=50)
    assert res["lpips_diversity"]["value"] > 0.05


# ------------------------------------------------------------------------ unavailability

def test_unavailable_dependencies_are_reported(sources, monkeypatch):
    def no_mtcnn(*a, **k):
        raise mt.MTCNNUnavailable("cannot download facenet-pytorch==2.6.0 (offline)")

    def no_inception(*a, **k):
        raise fidm.FIDUnavailable("FID Inception weights are not cached")

    def no_lpips(*a, **k):
        raise lp.LPIPSWeightsUnavailable("LPIPS weights are not cached")

    def broken_judge(images):
        raise FileNotFoundError("judge weights missing")

    monkeypatch.setattr(s2, "detect_faces", no_mtcnn)
    monkeypatch.setattr(fidm, "load_inception", no_inception)
    monkeypatch.setattr(s2, "lpips_distance", no_lpips)
    res = _evaluate(sources, _repeat(sources, 2), judges={**JUDGES, "faceres": broken_judge},
                    detectors=("mtcnn",), fid_reference=sources)
    assert res["geometry"]["mtcnn"] == {
        "unavailable": "MTCNNUnavailable: cannot download facenet-pytorch==2.6.0 (offline)"}
    assert res["fid"] == {"unavailable": "FIDUnavailable: FID Inception weights are not cached"}
    assert "LPIPSWeightsUnavailable" in res["lpips_diversity"]["unavailable"]
    assert "judge weights missing" in res["dis"]["faceres"]["unavailable"]
    assert res["dis"]["dlib"]["dis"]["value"] == 0.0  # the other judges still ran
    table = s2.markdown_table(res)
    assert "n/a" in table and "MTCNNUnavailable" in table and "FIDUnavailable" in table


def test_missing_inputs_are_skipped(sources):
    res = s2.evaluate_deid(sources, sources[:, None], SOURCE_IDS, judges={}, detectors=(),
                           n_boot=10)
    assert "skipped" in res["fid"] and "skipped" in res["reid"]
    assert "R = 1" in res["lpips_diversity"]["skipped"]
    assert "skipped" in res["dis_worst"]


def test_bad_shapes_raise(sources):
    with pytest.raises(ValueError, match="do not match"):
        s2.evaluate_deid(sources, _repeat(sources[:3], 2), SOURCE_IDS, judges={}, detectors=())
    with pytest.raises(ValueError, match="unknown detectors"):
        s2.evaluate_deid(sources, _repeat(sources, 2), SOURCE_IDS, judges={},
                         detectors=("haar",))


# -------------------------------------------------------------------------------- tables

def test_markdown_keeps_published_rows_apart(sources, gallery, monkeypatch):
    monkeypatch.setattr(s2, "lpips_distance", lambda a, b: torch.zeros(len(a)))
    res = _evaluate(sources, _repeat(sources, 2), gallery, label="ours, 32 px")
    table = s2.markdown_table({"ours, 32 px": res, "ours again": res}, s2.PUBLISHED_STARGAN_V2)
    measured, published = table.split("### published (CelebA-HQ, GPU)")
    assert "ours, 32 px" in measured and "ours again" in measured
    assert "StarGAN v2" not in measured and "13.73" not in measured
    assert "ours" not in published
    for label, row in s2.PUBLISHED_STARGAN_V2.items():
        assert label in published and f"{row['fid']:.2f}" in published
    assert "23.84" in published and "0.39" in published
    assert "FaceNet (CASIA-WebFace and VGGFace2) DIS" in measured
    assert "| DIS dlib | DIS mobilefacenet | worst DIS |" in measured
    assert s2.markdown_table(res).count("| ours, 32 px |") == 2  # privacy and utility rows
    assert "published" not in s2.markdown_table(res)


def test_published_figures_are_the_noted_ones():
    rows = s2.PUBLISHED_STARGAN_V2
    assert {k: (v["fid"], v["lpips_diversity"]) for k, v in rows.items()} == {
        "StarGAN v2, latent-guided": (13.73, 0.45),
        "StarGAN v2, reference-guided": (23.84, 0.39)}


# ----------------------------------------------------------------------------------- FID

def test_frechet_distance_identical_sets_is_zero():
    a = np.random.default_rng(0).normal(size=(50, 16))
    assert fidm.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert fidm.frechet_distance(a, a, method="sqrtm") == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("method", ["lowrank", "sqrtm"])
def test_frechet_distance_analytic(method):
    """A shifted copy: same covariance, so FD = ||delta||^2. A copy scaled by 2 and shifted:
    S_b = 4 S_a, (S_a S_b)^(1/2) = 2 S_a, so FD = ||mu_b - mu_a||^2 + Tr S_a."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 12)) * rng.uniform(0.5, 2.0, size=12)
    delta = rng.normal(size=12)
    assert fidm.frechet_distance(a, a + delta, method) == pytest.approx(delta @ delta, rel=1e-7)
    b = 2 * a + delta
    diff = b.mean(0) - a.mean(0)
    expected = diff @ diff + np.trace(np.cov(a, rowvar=False))
    assert fidm.frechet_distance(a, b, method) == pytest.approx(expected, rel=1e-7)


def test_frechet_lowrank_matches_sqrtm_on_singular_covariances():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20, 48)), 1.3 * rng.normal(size=(25, 48)) + 0.2
    assert fidm.frechet_distance(a, b, "lowrank") == pytest.approx(
        fidm.frechet_distance(a, b, "sqrtm"), rel=1e-6)


def test_legacy_resize_samples_at_scaled_coordinates():
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    y = fidm.legacy_bilinear_resize(x, 8)  # output pixel j at input coordinate j / 2
    assert torch.allclose(y[0, 0, 0], torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]))


def test_inception_features_and_self_fid():
    try:
        fidm.load_inception()
    except fidm.FIDUnavailable as e:
        pytest.skip(str(e))
    face = example_face(96)
    x = torch.stack([face, face.flip(-1), face.transpose(-1, -2)])
    p = fidm.preprocess(x)
    assert p.shape == (3, 3, 299, 299)
    assert p.min() >= fidm.INPUT_RANGE[0] and p.max() <= fidm.INPUT_RANGE[1]
    f = fidm.inception_features(x, batch=2)
    assert f.shape == (3, fidm.FEATURE_DIM) and f.dtype == np.float64
    assert np.isfinite(f).all() and (f >= 0).all()  # pool_3 follows a ReLU
    assert np.allclose(f, fidm.inception_features(x, batch=3), atol=1e-4)
    assert fidm.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    assert fidm.fid(x[:2], x[1:]) > 1.0


# --------------------------------------------------------------------------------- MTCNN

#: The box [x0, y0, x1, y1] in px that facenet_pytorch 2.6.0's ``MTCNN(keep_all=True).detect``
#: gives for ``example_face(256)`` (as uint8), measured once with the package itself.
EXAMPLE_FACE_BOX = (84.51, 43.72, 179.71, 166.22)


@pytest.fixture(scope="module")
def mtcnn():
    try:
        return mt.MTCNN()
    except mt.MTCNNUnavailable as e:
        pytest.skip(str(e))


def test_mtcnn_finds_the_example_face(mtcnn):
    x = torch.stack([example_face(256), torch.full((3, 256, 256), 0.5)])
    (boxes, probs, points), (nb, npr, npts) = mt.detect_faces(x, return_points=True,
                                                              model=mtcnn)
    assert boxes.shape == (1, 4) and probs.shape == (1,) and points.shape == (1, 5, 2)
    assert probs[0] > 0.99
    assert np.allclose(boxes[0], EXAMPLE_FACE_BOX, atol=0.05)
    x0, y0, x1, y1 = boxes[0]
    (le, re, nose, ml, mr) = points[0]
    assert x0 < le[0] < re[0] < x1 and y0 < le[1] < nose[1] < ml[1] < y1
    assert ml[0] < mr[0]
    assert nb.shape == (0, 4) and npr.shape == (0,)  # a grey image has no face
    assert len(mt.detect_faces(x[:1], model=mtcnn)[0]) == 2  # (boxes, probs) by default


def test_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 4, 4]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert mt.nms(boxes, scores, 0.5).tolist() == [3, 0, 2]  # box 1 overlaps box 0 by 0.68
    assert mt.nms(boxes, scores, 0.5, mode="min").tolist() == [3, 2]  # box 3 lies in box 0


def test_pyramid_scales():
    s = mt.pyramid_scales(256, 256)
    assert s[0] == pytest.approx(0.6) and np.allclose(np.diff(np.log(s)), np.log(0.709))
    assert 256 * s[-1] >= 12 > 256 * s[-1] * 0.709


# --------------------------------------------------------------------- detectors, end to end

def test_geometry_is_zero_for_identical_outputs(monkeypatch):
    """The real detectors on the astronaut: every output is the source, so the outputs are
    all found and their boxes and landmarks sit exactly on the source's."""
    monkeypatch.setattr(s2, "lpips_distance", lambda a, b: torch.zeros(len(a)))
    src = example_face(160)[None]
    try:
        s2._dlib_models()
    except (ImportError, OSError) as e:
        pytest.skip(f"dlib unavailable: {e}")
    res = s2.evaluate_deid(src, _repeat(src, 2), ["eileen"], judges={}, n_boot=20)
    dl = res["geometry"]["dlib"]
    assert dl["detection_rate"]["value"] == 1.0 and dl["detection_rate_sources"]["value"] == 1.0
    assert dl["box_l1_px"]["value"] == 0.0 and dl["landmark_l1_px"]["value"] == 0.0
    assert dl["n_landmarks"] == 68 and dl["box_l1_px"]["n"] == 2
    m = res["geometry"]["mtcnn"]
    if "unavailable" in m:
        pytest.skip(m["unavailable"])
    assert m["detection_rate"]["value"] == 1.0 and m["n_landmarks"] == 5
    # batches of 1 and 2 images differ in float rounding only (about 1e-6 px)
    assert m["box_l1_px"]["value"] < 1e-3 and m["landmark_l1_px"]["value"] < 1e-3
