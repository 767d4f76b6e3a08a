"""Bootstrap intervals and verification statistics (deid.evaluation.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from deid.evaluation.reid import reid_hits, reid_top1
from deid.evaluation.stats import (
    hierarchical_sample,
    mean_with_interval,
    pair_scores,
    roc_auc,
    verification,
)


def test_roc_auc_equals_the_pair_count():
    rng = np.random.default_rng(0)
    g = np.round(rng.normal(1, 1, 40), 1)  # rounded: ties on purpose
    i = np.round(rng.normal(0, 1, 70), 1)
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in g for b in i])
    assert roc_auc(g, i) == pytest.approx(brute, abs=1e-12)
    assert roc_auc([2, 3], [0, 1]) == 1.0 and roc_auc([0, 1], [2, 3]) == 0.0
    assert roc_auc([1, 1], [1, 1]) == 0.5


def test_hierarchical_sample_draws_identities_then_probes():
    rng = np.random.default_rng(1)
    groups = np.array(["a"] * 3 + ["b"] * 5 + ["c"] * 1)
    for _ in range(20):
        idx = hierarchical_sample(groups, rng)
        # every drawn identity brings as many items as it has, all of its own
        labels, counts = np.unique(groups[idx], return_counts=True)
        size = {"a": 3, "b": 5, "c": 1}
        assert all(c % size[k] == 0 for k, c in zip(labels, counts, strict=True))
        assert sum(c // size[k] for k, c in zip(labels, counts, strict=True)) == 3


def test_mean_interval_contains_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(2)
    small = mean_with_interval(rng.random(20))
    big = mean_with_interval(rng.random(2000))
    assert small["lo"] <= small["value"] <= small["hi"]
    assert big["hi"] - big["lo"] < (small["hi"] - small["lo"]) / 3
    const = mean_with_interval(np.ones(10))
    assert const["lo"] == const["hi"] == 1.0
    nan = mean_with_interval([np.nan, 1.0, 3.0])
    assert nan["value"] == 2.0 and nan["n"] == 2


def test_identity_clustering_widens_the_interval():
    """Probes of one person move together: resampling identities, not probes alone, is what
    keeps the interval honest."""
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(5), 11)
    person = rng.random(5) < 0.5  # a person is either always or never re-identified
    hits = person[ids].astype(float)
    grouped = mean_with_interval(hits, ids)
    flat = mean_with_interval(hits)
    assert grouped["hi"] - grouped["lo"] > 1.5 * (flat["hi"] - flat["lo"])
    assert grouped["n"] == 55 and grouped["n_groups"] == 5


def test_interval_coverage_is_about_95_percent():
    rng = np.random.default_rng(4)
    covered = 0
    for k in range(150):
        v = rng.random(60) < 0.7
        r = mean_with_interval(v, n_boot=300, seed=k)
        covered += r["lo"] <= 0.7 <= r["hi"]
    assert 0.85 <= covered / 150 <= 0.995


def test_verification_separated_and_reversed():
    ids = np.repeat(np.arange(4), 3)
    same = (ids[:, None] == ids[None, :]).astype(float)
    v = verification(same * 0.9 + 0.05, ids, n_boot=200)
    assert v["auc"]["value"] == 1.0 and v["tar"]["value"] == 1.0
    assert v["genuine_pairs"] == 12 and v["impostor_pairs"] == 54
    rev = verification(1 - same, ids, n_boot=50)
    assert rev["auc"]["value"] == 0.0 and rev["tar"]["value"] == 0.0
    g, i = pair_scores(same, ids, index=np.array([0, 0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11]))
    assert len(g) == 11  # the pair of image 0 with its own copy is dropped


def test_reid_hits_match_top1():
    rng = np.random.default_rng(5)
    ids = np.repeat(np.arange(5), 4)
    e = rng.normal(size=(20, 8)) + 3 * np.eye(8)[ids]
    hits = reid_hits(e, ids, e, ids, leave_one_out=True)
    assert hits.shape == (20,) and hits.mean() == reid_top1(e, ids, e, ids, leave_one_out=True)


def test_cross_verification_uses_every_off_diagonal_pair():
    ids = np.repeat(np.arange(3), 2)
    s = np.random.default_rng(0).random((6, 6))
    g, i = pair_scores(s, ids, cross=True)
    assert len(g) == 6 and len(i) == 24  # ordered pairs: 3 ids x 2 x 1, and 6 x 4
    same = ids[:, None] == ids[None, :]
    v = verification(np.where(same, 1.0, 0.0) + np.eye(6) * -5, ids, n_boot=50, cross=True)
    assert v["auc"]["value"] == 1.0 and v["genuine_pairs"] == 6
