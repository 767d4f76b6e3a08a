"""Statistics that say how sure a figure is: hierarchical bootstrap intervals, and
verification (ROC AUC, true-accept rate at the impostor-max threshold).

Faces of one person are not independent samples, so intervals resample **identities** with
replacement, then **probes** within each drawn identity (a two-level bootstrap; Davison and
Hinkley, *Bootstrap Methods and their Application*, 1997, sec. 3.8). A figure with one image
per identity reduces to the ordinary bootstrap over images.

Verification follows the Private-Encoder protocol: the threshold is the largest impostor
similarity (different-identity pairs), and the true-accept rate (TAR) is the fraction of
genuine (same-identity) pairs above it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["hierarchical_sample", "bootstrap_interval", "mean_with_interval", "roc_auc",
           "pair_scores", "verification", "N_BOOT"]

N_BOOT = 1000  # bootstrap replicates
LEVEL = 0.95


def _groups(groups, n: int) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    g = np.asarray(groups)
    if len(g) != n:
        raise ValueError(f"{n} values but {len(g)} group labels")
    return g


class _Grouping:
    """Items sorted by group, for fast vectorised two-level resampling."""

    def __init__(self, groups):
        g = np.asarray(groups)
        _, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
        self.order = np.argsort(inverse, kind="stable")  # items, grouped
        self.counts = counts
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        picked = rng.integers(0, len(self.counts), size=len(self.counts))
        sizes = self.counts[picked]
        group_of_draw = np.repeat(picked, sizes)
        offset = (rng.random(len(group_of_draw)) * self.counts[group_of_draw]).astype(int)
        return self.order[self.starts[group_of_draw] + offset]


def hierarchical_sample(groups, rng: np.random.Generator) -> np.ndarray:
    """Indices of one two-level bootstrap sample: identities drawn with replacement, then,
    for each drawn identity, as many of its items as it has, drawn with replacement."""
    return _Grouping(groups).sample(rng)


def bootstrap_interval(statistic: Callable[[np.ndarray], float], groups, n: int,
                       n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
                       ) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over ``n_boot`` hierarchical resamples
    of ``n`` items grouped by ``groups`` (None: every item its own group). Seeded."""
    grouping = _Grouping(_groups(groups, n))
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(grouping.sample(rng)) for _ in range(n_boot)], float)
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))


def mean_with_interval(values, groups=None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """``{"value", "lo", "hi", "n", "n_groups"}``: the mean of ``values`` (NaN rows dropped)
    and its 95% two-level bootstrap interval."""
    v = np.asarray(values, float).reshape(-1)
    g = _groups(groups, len(v))
    keep = np.isfinite(v)
    v, g = v[keep], g[keep]
    if len(v) == 0:
        return {"value": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0,
                "n_groups": 0}
    lo, hi = bootstrap_interval(lambda idx: float(v[idx].mean()), g, len(v), n_boot, seed)
    return {"value": float(v.mean()), "lo": lo, "hi": hi, "n": int(len(v)),
            "n_groups": int(len(np.unique(g)))}


def roc_auc(genuine, impostor) -> float:
    """Area under the ROC curve of similarity scores: the probability that a genuine pair
    scores above an impostor pair (ties count one half; Mann-Whitney U / (n_g n_i))."""
    gs, im = np.asarray(genuine, float), np.asarray(impostor, float)
    if len(gs) == 0 or len(im) == 0:
        return float("nan")
    allv = np.concatenate([gs, im])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(gs)].sum() - len(gs) * (len(gs) + 1) / 2
    return float(u / (len(gs) * len(im)))


def pair_scores(similarity: np.ndarray, ids, index=None,
                cross: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor scores of all pairs ``i < j`` of a symmetric ``(N, N)``
    similarity matrix, or of all pairs ``i != j`` with ``cross`` (probe ``i`` against gallery
    ``j``, e.g. a camera image against clean photos). ``index`` (one image id per row, e.g.
    from a bootstrap sample) drops pairs of an image with a copy of itself."""
    s = np.asarray(similarity, float)
    ids = np.asarray(ids)
    if cross:
        iu, ju = np.nonzero(~np.eye(len(ids), dtype=bool))
    else:
        iu, ju = np.triu_indices(len(ids), k=1)
    keep = np.ones(len(iu), bool) if index is None else \
        np.asarray(index)[iu] != np.asarray(index)[ju]
    same = (ids[iu] == ids[ju]) & keep
    diff = (ids[iu] != ids[ju]) & keep
    return s[iu[same], ju[same]], s[iu[diff], ju[diff]]


def _tar_at_impostor_max(genuine, impostor) -> float:
    if len(genuine) == 0 or len(impostor) == 0:
        return float("nan")
    return float((np.asarray(genuine) > np.max(impostor)).mean())


def verification(similarity, ids, n_boot: int = N_BOOT, seed: int = 0,
                 threshold: float | None = None, cross: bool = False) -> dict:
    """ROC AUC and TAR at the impostor-max threshold of a ``(N, N)`` similarity matrix over
    images with identities ``ids``, each with a two-level bootstrap interval.

    ``threshold``: a fixed threshold (e.g. the impostor max of a held-out set) instead of
    this set's own impostor max; ``cross``: see :func:`pair_scores`."""
    s, ids = np.asarray(similarity, float), np.asarray(ids)
    gen, imp = pair_scores(s, ids, cross=cross)

    def tar(g, i):
        return _tar_at_impostor_max(g, i) if threshold is None else \
            float((np.asarray(g) > threshold).mean()) if len(g) else float("nan")

    def stat(kind):
        def f(idx):
            g, i = pair_scores(s[np.ix_(idx, idx)], ids[idx], index=idx, cross=cross)
            return roc_auc(g, i) if kind == "auc" else tar(g, i)
        return f

    out = {"n_images": int(len(ids)), "n_identities": int(len(np.unique(ids))),
           "genuine_pairs": int(len(gen)), "impostor_pairs": int(len(imp)),
           "threshold": float(np.max(imp)) if threshold is None and len(imp) else threshold}
    for kind, value in (("auc", roc_auc(gen, imp)), ("tar", tar(gen, imp))):
        lo, hi = bootstrap_interval(stat(kind), ids, len(ids), n_boot, seed)
        out[kind] = {"value": value, "lo": lo, "hi": hi}
    return out
