"""The privacy-utility frontier (``optics frontier``): where a learned lens stands among the
classic ways of hiding a face.

Each camera is one point:

- **x**: utility, the landmark NME on the geometry-jittered test faces (:mod:`.utility`) of
  the best regressor for that camera, as a ratio to the mean-shape constant. For a classic
  camera (Gaussian blur, defocus, mosaic, low resolution) that regressor is the teacher
  fine-tuned behind it the way stage 1 fine-tunes (:mod:`deid.methods.stage1.regressor`);
  for a stage-1 run it is the run's own U.
- **y**: privacy, the **worst case** re-identification top-1 over attacks (looking at ``y``,
  a matched gallery, a tuned Wiener filter, ...) and identity judges, with its 95% interval.

Lower-left is better. The chance and colour-floor rows (:mod:`.reid_table`) are drawn as
lines: a camera cannot be "at chance" below the colour floor.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deid.attacks.attacker import AttackConfig, Attacker
from deid.attacks.cameras import build_camera, check_camera_spec
from deid.evaluation.judges import default_judges
from deid.evaluation.reid_table import baseline_rows, reid_interval
from deid.evaluation.stats import mean_with_interval
from deid.evaluation.threats import KIND_STYLE, THREAT_MODELS, threat_worst
from deid.evaluation.utility import load_landmark_sets, mean_shape, predict_landmarks
from deid.faces.corpus import load_split
from deid.faces.heatmaps import nme
from deid.methods.stage1.inference import load_run_regressor
from deid.methods.stage1.regressor import finetune_regressor
from deid.methods.stage1.trainer import Stage1Config
from deid.methods.teacher import load_teacher
from optics.kit.config import load_config, save_config
from optics.kit.files import write_text_atomic
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to

__all__ = ["FrontierConfig", "SWEEP", "frontier", "merge_frontiers", "plot_frontier",
           "load_threats", "frontier_markdown"]

log = logging.getLogger(__name__)

#: The classic cameras, by family, weakest first (strengths at 128 px faces).
SWEEP = {
    "blur": ("blur-2", "blur-4", "blur-8", "blur-16", "blur-32"),
    # from best focus on the face: lopez2024 itself (focused at 5 m) is focus-0.654
    "defocus": ("focus-0.1", "focus-0.2", "focus-0.35", "focus-0.654", "focus-1.15"),
    "mosaic": ("mosaic-4", "mosaic-8", "mosaic-16", "mosaic-32"),
    "lowres": ("lowres-64", "lowres-32", "lowres-16", "lowres-8"),
}


#: Config fields that points merged or resumed into one frontier must share (a resumed run
#: must also name the same stage-1 config; merged parts are checked by the recipe itself).
_SHARED = ("size", "attacks", "finetune_steps", "seed")


@dataclass
class FrontierConfig:
    """What ``optics frontier`` sweeps and how.

    Fields:
        size: face side, pixels (the teacher's input size).
        cameras: classic camera specs (default: the whole ``SWEEP``).
        attacks: attacks of the worst case (``identity``, ``matched``, ``wiener``, ``rl``,
            ``tv``, ``pnp``, ``ddrm``, ``inversion``).
        finetune_steps: regressor fine-tuning steps per classic camera (0: the teacher as is;
            -1: as many as the stage-1 recipe gives U: ``regressor_steps`` when U restarts
            from the teacher, else ``steps + regressor_steps``).
        stage1_config: stage-1 config file whose steps, batch, U learning-rate schedule,
            seed and augmentation the fine-tuning uses (empty: the first ``--run``'s
            config, else the repository's ``configs/stage1-demo.yaml``, else the defaults).
        seed: noise, jitter and bootstrap seed.
    """

    size: int = 128
    cameras: tuple[str, ...] = tuple(c for fam in SWEEP.values() for c in fam)
    attacks: tuple[str, ...] = ("identity", "matched", "wiener")
    finetune_steps: int = -1
    stage1_config: str = ""
    seed: int = 0
    runs: list = field(default_factory=list)

    def __post_init__(self):
        if self.finetune_steps < -1:
            raise ValueError(f"finetune_steps must be -1 (the stage-1 recipe's), 0 or more; "
                             f"got {self.finetune_steps}")


def _family(spec: str) -> str:
    for fam, specs in SWEEP.items():
        if spec in specs or spec.startswith(fam + "-"):
            return fam
    return "stage1 run"


def _recipe(cfg: FrontierConfig) -> Stage1Config:
    """The stage-1 config whose fine-tuning recipe the classic cameras get: ``stage1_config``,
    else the first run's, else the repository's demo config, else the defaults."""
    if cfg.stage1_config:
        if not Path(cfg.stage1_config).is_file():
            raise FileNotFoundError(f"stage-1 config not found: {cfg.stage1_config}")
        return load_config(Stage1Config, cfg.stage1_config)
    demo = Path(__file__).resolve().parents[2] / "configs" / "stage1-demo.yaml"
    for path in [Path(r) / "config.yaml" for r in cfg.runs[:1]] + [demo]:
        if path.is_file():
            return load_config(Stage1Config, path)
    return Stage1Config()


def _recipe_fields(s1: Stage1Config) -> dict:
    """The stage-1 fields that decide how a classic camera's regressor is fine-tuned."""
    keys = ("steps", "regressor_steps", "regressor_init", "lr_fan", "lr_regressor",
            "batch_size", "seed", "augment", "augment_rotation_deg", "augment_scale",
            "augment_shift")
    return {k: getattr(s1, k) for k in keys}


def _privacy(cam, faces_train, johns, ids, judges, clean, attacks, seed) -> dict:
    """Re-ID with intervals per attack and judge, and the worst case."""
    size = johns.shape[-1]
    y = cam(johns, seed=seed + 1)
    per = {}
    for attack in attacks:
        if attack == "matched":
            seen = resize_to(y, size)
            per[attack] = {j: reid_interval(e(seen), e(seen), ids, seed)
                           for j, e in judges.items()}
            continue
        attacker = Attacker(attack, cam, AttackConfig(size=size, seed=seed))
        attacker.prepare(faces_train)
        with torch.no_grad():
            x_hat = attacker.reconstruct(y)
        per[attack] = {j: reid_interval(e(x_hat), clean[j], ids, seed) for j, e in judges.items()}
    worst = max(((a, j) for a in per for j in per[a]), key=lambda aj: per[aj[0]][aj[1]]["value"])
    return {"reid": per, "worst": {"attack": worst[0], "judge": worst[1],
                                   **per[worst[0]][worst[1]]}}


def _utility(regressor, cam, sets, shape_nme, seed) -> dict:
    images, points = sets.images["test_jittered"], sets.points["test_jittered"]
    y = resize_to(cam(images, seed=seed), images.shape[-1])
    err = nme(predict_landmarks(regressor, y), points.float()).numpy()
    r = mean_with_interval(err, sets.groups["test_jittered"], seed=seed)
    return {"nme_jittered": r, "ratio_to_mean_shape": r["value"] / shape_nme,
            "ratio_interval": [r["lo"] / shape_nme, r["hi"] / shape_nme]}


def frontier(out_dir, teacher_path, root, config: FrontierConfig | None = None,
             judges: dict | None = None, progress: bool = True) -> dict:
    """Every camera of ``config`` (and every stage-1 run in ``config.runs``) as a frontier
    point; writes ``frontier.json`` (after every point: a rerun skips done points),
    ``frontier.png`` and ``frontier-config.yaml`` into ``out_dir``."""
    cfg = config or FrontierConfig()
    for spec in cfg.cameras:
        check_camera_spec(spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "frontier-config.yaml")
    s1 = _recipe(cfg)
    teacher = load_teacher(teacher_path)
    if teacher.config.input_size != cfg.size:
        raise ValueError(f"the teacher takes {teacher.config.input_size} px faces, the "
                         f"frontier runs at {cfg.size} px")
    judges = judges or default_judges()
    sets = load_landmark_sets(root, cfg.size, jitter_seed=cfg.seed)
    train, _, _ = load_split(root, "train", cfg.size, landmark_key=None)
    johns, _, ids = load_split(root, "johns", cfg.size, landmark_key=None)
    ids = np.asarray(ids)
    clean = {j: e(johns) for j, e in judges.items()}
    shape = mean_shape(sets.train_points)
    shape_err = nme(shape.expand(len(sets.images["test_jittered"]), -1, -1),
                    sets.points["test_jittered"].float()).numpy()
    shape_nme = float(np.nanmean(shape_err))
    path = out / "frontier.json"
    points = {}
    if path.exists():
        old = json.loads(path.read_text())
        keys = _SHARED + ("stage1_config",)
        if any(old["config"].get(k) != (list(v) if isinstance(v, tuple) else v)
               for k, v in asdict(cfg).items() if k in keys):
            raise ValueError(f"{path} was made with another frontier config; use another --out")
        if old.get("recipe") != _recipe_fields(s1):
            raise ValueError(f"{path} was made with another fine-tuning recipe; use another "
                             f"--out")
        points = old.get("points", {})
    result = {"config": asdict(cfg), "recipe": _recipe_fields(s1), "judges": list(judges),
              "identity_set": {"images": int(len(ids)), "identities": int(len(set(ids)))},
              "test_faces": int(len(sets.images["test_jittered"])),
              "mean_shape_nme_jittered": mean_with_interval(shape_err,
                                                            sets.groups["test_jittered"]),
              "teacher_clean": _utility(teacher, build_camera("none", cfg.size), sets,
                                        shape_nme, cfg.seed),
              "reid_baselines": baseline_rows(johns, ids, cfg.seed), "points": points}
    todo = [(spec, None) for spec in cfg.cameras] + [(str(r), r) for r in cfg.runs]
    bar = progress_bar(todo, desc="frontier", unit="camera", disable=not progress)
    for spec, run in bar:
        if spec in points:
            continue
        cam = build_camera(spec, cfg.size)
        if run is None:
            steps = None if cfg.finetune_steps < 0 else cfg.finetune_steps  # None: s1's
            regressor = teacher if steps == 0 else finetune_regressor(
                lambda x, g, c=cam: c.forward(x, g), teacher, train, s1, steps=steps)
        else:
            regressor = load_run_regressor(run)
        point = {"family": _family(spec) if run is None else "stage1 run",
                 "description": cam.description,
                 "regressor": "teacher fine-tuned behind the camera" if run is None and
                 cfg.finetune_steps else ("the run's U" if run else "teacher as is")}
        point.update(_utility(regressor, cam, sets, shape_nme, cfg.seed))
        point.update(_privacy(cam, train, johns, ids, judges, clean, cfg.attacks, cfg.seed))
        points[spec] = point
        log.info("%s: NME ratio %.3f, worst re-ID %.2f (%s, %s)", spec,
                 point["ratio_to_mean_shape"], point["worst"]["value"],
                 point["worst"]["attack"], point["worst"]["judge"])
        write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    plot_frontier(result, out / "frontier.png")
    return result


def merge_frontiers(out_dir, parts) -> dict:
    """One frontier from the ``frontier.json`` of several folders (e.g. camera subsets run
    in parallel): they must share size, attacks, fine-tuning, seed, recipe, judges and test
    sets, else a one-line ``ValueError``; a camera in several parts is taken from the first.
    Writes ``frontier.json`` and ``frontier.png`` into ``out_dir``."""
    results = []
    for part in parts:
        path = Path(part) / "frontier.json"
        if not path.is_file():
            raise FileNotFoundError(f"no frontier.json in {part}")
        results.append((path, json.loads(path.read_text())))
    if not results:
        raise ValueError("nothing to merge")
    first_path, merged = results[0]
    merged = json.loads(json.dumps(merged))  # a copy
    for path, r in results[1:]:
        for key in ("recipe", "judges", "identity_set", "test_faces", "mean_shape_nme_jittered"):
            if r.get(key) != merged.get(key):
                raise ValueError(f"{path} differs from {first_path} in {key}; cannot merge")
        for key in _SHARED:
            if r["config"].get(key) != merged["config"].get(key):
                raise ValueError(f"{path} differs from {first_path} in {key}; cannot merge")
        for spec, point in r["points"].items():
            merged["points"].setdefault(spec, point)
        for key in ("cameras", "runs"):
            merged["config"][key] = list(dict.fromkeys(merged["config"][key] + r["config"][key]))
    merged["merged_from"] = [str(Path(p).parent) for p, _ in results]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "frontier.json", json.dumps(merged, indent=1) + "\n")
    plot_frontier(merged, out / "frontier.png")
    return merged


_STYLE = {"blur": ("tab:blue", "o"), "defocus": ("tab:orange", "s"),
          "mosaic": ("tab:green", "^"), "lowres": ("tab:purple", "D"),
          "stage1 run": ("tab:red", "*")}


def load_threats(path) -> dict:
    """A ``deid threats`` report (``threats.json``, or the folder holding it) for
    :func:`plot_frontier`; a one-line ``ValueError`` if it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / "threats.json"
    try:
        rep = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the threat report {path}: {e}") from None
    rows = rep.get("rows") if isinstance(rep, dict) else None
    if not rows or not all({"output_only", "sniffing", "utility", "kind"} <= set(t)
                           for t in rows.values()):
        raise ValueError(f"{path} is not a `deid threats` report (threats.json)")
    return rep


def _threat_panel(ax, threats: dict, key: str, title: str) -> None:
    """One threat model of a ``deid threats`` report (``threats.json``): each method (row) at
    the jittered landmark NME of its output against the source (x; dlib's 68 points over the
    outer-eye-corner distance) and its worst-case re-ID under that threat model (y), with
    95% intervals. A method whose outputs dlib finds no face in has no NME: it is drawn,
    hollow, at the right edge ("no face found")."""
    rows = threats["rows"]
    nmes = [t["utility"]["jittered_nme"]["value"] for t in rows.values()]
    finite = [v for v in nmes if np.isfinite(v)]
    x_none = 1.15 * max(finite) if finite else 1.0
    for name, t in rows.items():
        w = threat_worst(t, key)
        n = t["utility"]["jittered_nme"]
        colour, marker = KIND_STYLE.get(t["kind"], ("black", "x"))
        found = np.isfinite(n["value"])
        x = n["value"] if found else x_none
        xerr = [[x - n["lo"]], [n["hi"] - x]] if found else None
        ax.errorbar([x], [w["value"]], xerr=xerr,
                    yerr=[[w["value"] - w["lo"]], [w["hi"] - w["value"]]], color=colour,
                    marker=marker, markerfacecolor=colour if found else "none", capsize=2,
                    linestyle="none", markersize=8 if t["kind"] == "two-stage" else 5)
        ax.annotate(name, (x, w["value"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(threats["reid_chance"], color="grey", linestyle=":")
    ax.axvline(x_none, color="grey", linewidth=0.5)
    ax.text(x_none, 1.02, " no face found", fontsize=6, transform=ax.get_xaxis_transform())
    ax.set_title(f"threat model: {title}", fontsize=9)
    ax.set_xlabel("landmark NME of the output vs the source, jittered\n(dlib 68 points; "
                  "lower: more useful)", fontsize=8)
    ax.set_ylim(0, 1.05)
    for kind, (colour, marker) in KIND_STYLE.items():
        ax.plot([], [], marker=marker, color=colour, linestyle="none", label=kind)
    ax.legend(fontsize=7, loc="lower left")


def plot_frontier(result: dict, path, threats: dict | None = None) -> Path:
    """x: jittered NME / mean shape; y: worst-case re-ID top-1; 95% intervals on both.
    ``threats``: a ``deid threats`` report (``threats.json``); its methods are added as points
    in one more panel per threat model (:data:`THREAT_MODELS`), on their own utility axis."""
    panels = 1 + (len(THREAT_MODELS) if threats else 0)
    fig = Figure(figsize=(7.5 + 5.5 * (panels - 1), 5.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    if threats:
        ax.set_title("classic cameras, stage-1 runs",
                     fontsize=9)
        for a, (key, title) in zip(axes[1:], THREAT_MODELS, strict=True):
            _threat_panel(a, threats, key, title)
    by_family: dict = {}
    for spec, p in result["points"].items():
        by_family.setdefault(p["family"], []).append((spec, p))
    for fam, pts in by_family.items():
        colour, marker = _STYLE.get(fam, ("black", "x"))
        pts = sorted(pts, key=lambda sp: sp[1]["ratio_to_mean_shape"])
        xs = [p["ratio_to_mean_shape"] for _, p in pts]
        ys = [p["worst"]["value"] for _, p in pts]
        xerr = [[x - p["ratio_interval"][0] for x, (_, p) in zip(xs, pts, strict=True)],
                [p["ratio_interval"][1] - x for x, (_, p) in zip(xs, pts, strict=True)]]
        yerr = [[y - p["worst"]["lo"] for y, (_, p) in zip(ys, pts, strict=True)],
                [p["worst"]["hi"] - y for y, (_, p) in zip(ys, pts, strict=True)]]
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, color=colour, marker=marker,
                    linestyle="-" if fam != "stage1 run" else "none", capsize=2,
                    markersize=9 if fam == "stage1 run" else 5, label=fam)
        for (spec, _), x, y in zip(pts, xs, ys, strict=True):
            ax.annotate(Path(spec).name, (x, y), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    base = result["reid_baselines"]
    ax.axhline(base["chance"]["value"], color="grey", linestyle=":", label="chance")
    ax.axhline(base["colour_floor_mean_rgb"]["value"], color="grey", linestyle="--",
               label="colour floor (mean RGB)")
    ax.axvline(1.0, color="black", linewidth=0.6)
    ax.axvline(0.5, color="black", linewidth=0.6, linestyle="--")
    ax.text(1.0, 1.02, " mean shape", fontsize=7, transform=ax.get_xaxis_transform())
    ax.text(0.5, 1.02, " 0.5x", fontsize=7, transform=ax.get_xaxis_transform())
    ident = result["identity_set"]
    ax.set_xlabel(f"landmark NME on {result['test_faces']} jittered test faces / mean shape "
                  "(lower: more useful)")
    ax.set_ylabel(f"worst-case re-ID top-1 over attacks and judges\n({ident['images']} images, "
                  f"{ident['identities']} identities; lower: more private)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def frontier_markdown(result: dict) -> str:
    """The frontier as a markdown table (the README's), families in sweep order, weakest
    first, stage-1 runs last."""
    ids = result["identity_set"]
    base = result["reid_baselines"]
    lines = [f"Jittered NME of the best regressor / the mean shape's ({result['test_faces']} test "
             f"faces) against the worst re-identification top-1 over attacks "
             f"({', '.join(result['config']['attacks'])}) and judges "
             f"({', '.join(result['judges'])}), {ids['images']} images of {ids['identities']} "
             f"identities; chance {base['chance']['value']:.2f}, colour floor "
             f"{base['colour_floor_mean_rgb']['value']:.2f} (mean RGB). Clean teacher: "
             f"{result['teacher_clean']['ratio_to_mean_shape']:.2f}.", "",
             "| camera | family | NME ratio [95%] | worst re-ID [95%] | by |",
             "| --- | --- | ---: | ---: | --- |"]
    order = {c: i for i, c in enumerate(c for fam in SWEEP.values() for c in fam)}
    points = sorted(result["points"].items(),
                    key=lambda kv: (kv[1]["family"] == "stage1 run", order.get(kv[0], 99)))
    for spec, p in points:
        lo, hi = p["ratio_interval"]
        w = p["worst"]
        name = Path(spec).name if p["family"] == "stage1 run" else spec
        lines.append(f"| {name} | {p['family']} | {p['ratio_to_mean_shape']:.2f} [{lo:.2f}, "
                     f"{hi:.2f}] | {w['value']:.2f} [{w['lo']:.2f}, {w['hi']:.2f}] | "
                     f"{w['attack']}, {w['judge']} |")
    return "\n".join(lines)
