"""``deid threats``: optical and software de-identification side by side, under three threat
models.

Rows are methods, all run on the same clean faces (the demo corpus' ``johns`` split, known
identities never trained on, at 128 px):

- optical cameras: the learned camera of a stage-1 run, ``defocus`` (its optics with only the
  defocus target H_f) and ``lr16`` (a 16 px sensor); the output is ``y``;
- classic software degradations of the clean image: ``blur-4`` and ``mosaic-8``;
- privlens two-stage: ``G(y)`` of the stage-2 run, with a public reference's style;
- FALCO-style at its margins and Private-Encoder-style at its epsilons
  (:mod:`deid.methods.software`), both computed from the clean image.

Columns are threat models; each cell is a re-identification top-1 (nearest neighbour in each
identity judge's metric, a probe's own source image never a candidate) with its 95 %
two-level bootstrap interval, worst case over judges and attacks (naming both):

1. **output only**: the attacker has the published output and attacks it: ``direct`` (the
   output against the clean gallery), ``matched`` (against the other outputs of the same
   method: the attacker puts a gallery of known people through the method) and, for rows whose
   output is a degraded image (cameras, blur, mosaic), the ``wiener`` and ``rl``
   deconvolutions with the known PSF, tuned on the attacker's own faces
   (:class:`deid.attacks.attacker.Attacker`). ``optics privacy-report`` runs the whole attack
   suite on the cameras;
2. **sniffing**: the attacker reads what the device holds before the output is made. A
   software method holds the clean image ``x`` (re-ID of ``x`` itself); an optical camera holds
   only ``y`` (its output-only cell); privlens holds ``y`` of its learned camera;
3. **utility** of the output: the jittered landmark NME of the output against its source (the
   source and its output get the same seeded jitter of issue 12, ``EVAL_JITTER``; dlib's 68
   points on both; mean point distance over the source's outer-eye-corner distance, over pairs
   where both are found), dlib's face-detection rate and landmark L1 (px at 128 px), and FID
   against the stage-2 run's public faces where the output is a face.

Beside them, Private-Encoder's own protocol: the fraction of outputs whose cosine to their
source (held-out judges) exceeds the largest impostor cosine of the clean gallery, SSIM on the
centre crop (the middle half), and the dlib detection rate; their published rows (FFHQ,
CurricularFace) are shown apart, labelled "published".
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from deid.attacks.attacker import METHODS, AttackConfig, Attacker
from deid.attacks.cameras import build_camera
from deid.evaluation.judges import JUDGE_NAMES, default_judges, judge_similarity
from deid.evaluation.privacy_report import default_store
from deid.evaluation.reid import reid_hits
from deid.evaluation.stage2_eval import dlib_faces, evaluate_deid, pair_mean
from deid.faces.corpus import load_face_sets, load_split
from deid.faces.corpus_builder import ensure_demo_corpus
from deid.faces.jitter import EVAL_JITTER, draw_params, jitter
from deid.judges.quality import ssim
from deid.methods.software.falco import Falco, FalcoConfig
from deid.methods.software.private_encoder import PrivateEncoderAnonymizer, load_private_encoder
from deid.methods.stage2.data import load_stage2_data
from deid.methods.stage2.inference import Anonymizer
from optics.kit.files import write_text_atomic
from optics.kit.imageio import save_image
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to
from optics.kit.schedule import sample_generator

__all__ = ["threat_report", "threat_markdown", "plot_threats", "PUBLISHED_PRIVATE_ENCODER",
           "SIZE_PX", "KIND_STYLE", "THREAT_MODELS", "threat_worst"]

log = logging.getLogger(__name__)

SIZE_PX = 128
CAMERAS = ("defocus", "lr16")
SOFTWARE = ("blur-4", "mosaic-8")
ATTACKS = ("wiener", "rl")  # the default reconstructions of degraded-image rows
#: Reconstruction attacks ``--attacks`` may name (``direct`` and ``matched`` always run).
RECONSTRUCTIONS = tuple(m for m in METHODS if m not in ("identity", "matched"))

#: Private-Encoder's published evaluation (FFHQ; identity by CurricularFace against the
#: largest impostor similarity, 0.19; SSIM on a 112 px centre crop; dlib CNN detection rate),
#: from ``shared/notes/stage2-facts.md``.
PUBLISHED_PRIVATE_ENCODER = [
    ("Private-Encoder (published)", "", "0.63-0.70", "0.999"),
    ("Gaussian blur, kernel 9 to 349 (published)", "", "0.86-0.50", "kernel 31: 0.78, "
     "59: 0.15, 349: 0.002"),
    ("mosaic, 4 to 100 (published)", "", "0.68-0.40", ""),
]


def _worst(cells: dict) -> dict:
    """The largest re-ID among ``{(judge, attack): entry}``, naming both."""
    (judge, attack), e = max(cells.items(), key=lambda kv: kv[1]["value"])
    return {"judge": judge, "attack": attack, **e}


def _reid(e_probe, e_gal, ids, n_boot, seed) -> dict:
    hits = reid_hits(e_probe, ids, e_gal, ids, leave_one_out=True)
    return pair_mean(hits.astype(float)[:, None], ids, n_boot, seed)


def _centre(x: torch.Tensor) -> torch.Tensor:
    s = x.shape[-1]
    a = s // 4
    return x[..., a:s - a, a:s - a]


def _pe_protocol(src, out, emb_src: dict, emb_out: dict, ids, n_boot, seed) -> dict:
    """Private-Encoder's protocol with the held-out (cosine) judges."""
    res = {}
    diff = ids[:, None] != ids[None, :]
    for name, es in emb_src.items():
        if name == "dlib":
            continue
        thr = float(judge_similarity(name, es, es)[diff].max())
        cos = np.diag(judge_similarity(name, emb_out[name], es))
        res[name] = {"impostor_max": thr,
                     "identity_kept": pair_mean((cos > thr).astype(float)[:, None], ids,
                                                n_boot, seed)}
    with torch.no_grad():
        s = ssim(_centre(out), _centre(src))
    res["ssim_centre"] = pair_mean(np.asarray(s, float).reshape(-1, 1), ids, n_boot, seed)
    return res


def jittered_nme(src: torch.Tensor, out: torch.Tensor, ids, seed: int, n_boot: int) -> dict:
    """Landmark NME of ``out`` against ``src`` (both ``(N, 3, S, S)``) under the same seeded
    jitter per pair: dlib's 68 points, mean distance over the source's outer-eye-corner
    distance (points 36 and 45); pairs where either face is missed are left out."""
    params = draw_params([sample_generator(seed, 1, i) for i in range(len(src))], EVAL_JITTER)
    fs = dlib_faces(jitter(src.float(), None, params)[0].clamp(0, 1))
    fo = dlib_faces(jitter(out.float(), None, params)[0].clamp(0, 1))
    nme = np.full(len(src), np.nan)
    for i, (a, b) in enumerate(zip(fs, fo, strict=True)):
        if a is not None and b is not None:
            iod = np.linalg.norm(a[1][36] - a[1][45])
            if iod > 0:
                nme[i] = np.linalg.norm(a[1] - b[1], axis=1).mean() / iod
    return pair_mean(nme[:, None], ids, n_boot, seed)


def _y_at(cam, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The camera's images of ``x``, image ``i``'s noise from ``(seed, i)``."""
    return torch.cat([cam.forward(x[i:i + 1], sample_generator(seed, 0, i))
                      for i in range(len(x))])


def threat_report(stage1, stage2, out_dir, encoder=None, falco_margins=(1.0, 0.5, 0.0),
                  epsilons=(0.1, 1.0, 10.0, 100.0, math.inf), max_sources: int | None = None,
                  falco_steps: int = 50, invert_steps: int = 50, seed: int = 0,
                  n_boot: int = 500, judges=None, attacks=ATTACKS, device="cpu",
                  progress: bool = True, store=None) -> dict:
    """Measure every row under every threat model; writes ``threats.json``, ``threats.md``,
    ``threats.png`` (one panel per threat model) and ``threats_grid.png``. ``attacks``: the
    reconstructions run on degraded-image rows (:data:`RECONSTRUCTIONS`); ``device``: where
    the generators run (the cameras, attacks and judges run on the CPU). ``store``: trained
    attack networks and tuned parameters, shared with ``optics privacy-report`` (default
    :func:`~deid.evaluation.privacy_report.default_store`; False: none)."""
    bad = [a for a in attacks if a not in RECONSTRUCTIONS]
    if bad:
        raise ValueError(f"unknown attack {bad[0]!r}; choose from {', '.join(RECONSTRUCTIONS)}")
    if encoder:
        load_private_encoder(encoder)  # a wrong folder fails here, not after the cameras
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x, _, ids = load_split(None, "johns", SIZE_PX, landmark_key=None)
    ids = list(ids)
    if max_sources and len(x) > max_sources:  # keep every identity: take them in turn
        order = sorted(range(len(x)), key=lambda i: (ids[:i].count(ids[i]), i))[:max_sources]
        order.sort()
        x, ids = x[order], [ids[i] for i in order]
    ids_np = np.asarray(ids)
    anon = Anonymizer(stage1, stage2, device=device)
    c2 = anon.model.config
    data = load_stage2_data(c2.data or None, anon.frozen.stage1_size, seed=c2.seed,
                            reference_fraction=c2.reference_fraction)
    refs = data.references
    fid_ref = resize_to(refs, SIZE_PX)
    judges = judges if judges is not None else default_judges(JUDGE_NAMES)
    train = load_face_sets(SIZE_PX, ensure_demo_corpus()).train

    store = None if store is False else Path(store) if store else default_store()
    cache: dict = {}  # the attackers' shared face denoiser, priors and tuning renders
    rows: dict[str, dict] = {}  # name -> {"kind", "output", "attacked" {attack: x_hat}}

    def add(name, kind, output, attacked=None, note=""):
        rows[name] = {"kind": kind, "output": resize_to(output.clamp(0, 1), SIZE_PX),
                      "attacked": attacked or {}, "note": note}

    steps = ["cameras", "privlens", "falco", "private-encoder"]
    bar = progress_bar(steps, desc="threats", unit="part", disable=not progress)
    for part in bar:
        if part == "cameras":
            specs = [("learned camera", str(stage1), "optical"),
                     *((c, c, "optical") for c in CAMERAS),
                     *((s, s, "software") for s in SOFTWARE)]
            for name, spec, kind in specs:
                cam = build_camera(spec, SIZE_PX)
                y = _y_at(cam, x, seed)
                attacked = {}
                for m in attacks:
                    att = Attacker(m, cam, AttackConfig(size=SIZE_PX, seed=seed))
                    att.prepare(train, cache, store)
                    attacked[m] = att.reconstruct(y).clamp(0, 1)
                add(name, kind, y, attacked, cam.description)
        elif part == "privlens":
            styles = anon.reference_styles(refs)
            add("privlens two-stage", "two-stage", anon.anonymize(x, styles, seed=seed),
                note=f"reference i mod {len(refs)}, dial margin {anon.margin}")
        elif part == "falco":
            for m in falco_margins:
                cfg = FalcoConfig(margin=m, steps=falco_steps, invert_steps=invert_steps)
                res = Falco(anon, cfg).anonymize(x, refs, seed=seed)
                add(f"FALCO-style m={m:g}", "software", res.outputs,
                    note=f"twin cosine {float(res.identity_cosine.mean()):.3f}")
        elif part == "private-encoder" and encoder:
            for eps in epsilons:
                pe = PrivateEncoderAnonymizer(encoder, stage2, device=device, epsilon=eps)
                add(f"Private-Encoder-style eps={eps:g}", "software",
                    pe.anonymize(x, seed=seed),
                    note=f"Laplace scale {pe.scale:.4g}, d {pe.model.dim}, C {pe.model.clip}")
    src = x
    emb_src = {n: np.asarray(fn(src)) for n, fn in judges.items()}
    clean_cells = {(n, "direct"): _reid(e, e, ids_np, n_boot, seed) for n, e in emb_src.items()}
    clean = {"reid": {f"{j}/{a}": v for (j, a), v in clean_cells.items()},
             "worst": _worst(clean_cells)}
    table: dict[str, dict] = {}
    for name, row in progress_bar(list(rows.items()), desc="judging", unit="row",
                                  disable=not progress):
        o = row["output"]
        cells = {}
        emb_out = {}
        for j, fn in judges.items():
            eo = np.asarray(fn(o))
            emb_out[j] = eo
            cells[(j, "direct")] = _reid(eo, emb_src[j], ids_np, n_boot, seed)
            cells[(j, "matched")] = _reid(eo, eo, ids_np, n_boot, seed)
            for a, xa in row["attacked"].items():
                cells[(j, a)] = _reid(np.asarray(fn(xa)), emb_src[j], ids_np, n_boot, seed)
        util = evaluate_deid(src, o[:, None], ids, judges={},
                             fid_reference=fid_ref if row["kind"] != "optical" else None,
                             detectors=("dlib",), n_boot=n_boot, seed=seed, label=name)
        table[name] = {"kind": row["kind"], "note": row["note"],
                       "output_only": {"worst": _worst(cells),
                                       "cells": {f"{j}/{a}": v for (j, a), v in cells.items()}},
                       "utility": {"geometry": util["geometry"]["dlib"], "fid": util["fid"],
                                   "jittered_nme": jittered_nme(src, o, ids_np, seed, n_boot)},
                       "private_encoder_protocol": _pe_protocol(src, o, emb_src, emb_out,
                                                                ids_np, n_boot, seed)}
    learned = table["learned camera"]["output_only"]["worst"]
    for t in table.values():
        if t["kind"] == "software":
            t["sniffing"] = {**clean["worst"], "holds": "the clean image x"}
        elif t["kind"] == "two-stage":
            t["sniffing"] = {**learned, "holds": "y of the learned camera"}
        else:
            t["sniffing"] = {**t["output_only"]["worst"], "holds": "y"}
    report = {"faces": {"split": "johns", "images": len(x), "identities": len(set(ids)),
                        "size_px": SIZE_PX},
              "reid_chance": 1.0 / len(set(ids)), "clean": clean,
              "stage1": str(stage1), "stage2": str(stage2), "encoder": str(encoder or ""),
              "judges": list(judges), "bootstrap": {"n_boot": n_boot, "seed": seed},
              "attacks": ["direct", "matched", *attacks],
              "rows": table}
    write_text_atomic(out / "threats.json", json.dumps(report, indent=1, default=str) + "\n")
    write_text_atomic(out / "threats.md", threat_markdown(report) + "\n")
    plot_threats(report, out / "threats.png")
    grid = [src[:6]] + [r["output"][:6] for r in rows.values()]
    save_image(torch.cat([torch.cat(list(g), -1) for g in grid], -2), out / "threats_grid.png")
    return report


def _pct(e: dict) -> str:
    return f"{100 * e['value']:.0f}% [{100 * e['lo']:.0f}, {100 * e['hi']:.0f}]"


def _who(e: dict) -> str:
    return f"{_pct(e)} ({e['judge']}, {e['attack']})" if "attack" in e else _pct(e)


def threat_markdown(rep: dict) -> str:
    f = rep["faces"]
    lines = ["# Threat models: optical and software de-identification",
             "",
             f"{f['images']} johns faces ({f['identities']} identities) at {f['size_px']} px; "
             f"re-identification top-1, worst case over judges ({', '.join(rep['judges'])}) "
             f"and attacks, 95% two-level bootstrap intervals; chance "
             f"{100 * rep['reid_chance']:.0f}%, the clean image "
             f"{_who(rep['clean']['worst'])}. Lower re-ID is more private.",
             "",
             "| method | kind | output only | sniffing | jittered NME | dlib detection | "
             "landmark L1 px | FID |",
             "|---|---|---|---|---|---|---|---|"]
    for name, t in rep["rows"].items():
        g = t["utility"]["geometry"]
        det = _pct(g["detection_rate"]) if "detection_rate" in g else "-"
        lm = g.get("landmark_l1_px", {})
        lm = f"{lm['value']:.1f} [{lm['lo']:.1f}, {lm['hi']:.1f}]" if lm and \
            math.isfinite(lm.get("value", math.nan)) else "-"
        fid = t["utility"]["fid"]
        fid = f"{fid['value']:.0f}" if "value" in fid else "-"
        nme = t["utility"]["jittered_nme"]
        nme = f"{nme['value']:.3f} [{nme['lo']:.3f}, {nme['hi']:.3f}] (n {nme['n']})" \
            if math.isfinite(nme["value"]) else "- (no pair found)"
        lines.append(f"| {name} | {t['kind']} | {_who(t['output_only']['worst'])} | "
                     f"{_who(t['sniffing'])} | {nme} | {det} | {lm} | {fid} |")
    lines += ["", "## Private-Encoder's protocol", "",
              "Identity kept: outputs whose cosine to their source exceeds the largest "
              "impostor cosine of the clean gallery (per held-out judge); SSIM on the centre "
              "crop (middle half); dlib detection rate.", "",
              "| method | identity kept | SSIM centre | dlib detection |", "|---|---|---|---|"]
    for name, t in rep["rows"].items():
        p = t["private_encoder_protocol"]
        kept = ", ".join(f"{j} {_pct(v['identity_kept'])} (thr {v['impostor_max']:.2f})"
                         for j, v in p.items() if j != "ssim_centre")
        g = t["utility"]["geometry"]
        det = _pct(g["detection_rate"]) if "detection_rate" in g else "-"
        lines.append(f"| {name} | {kept} | {p['ssim_centre']['value']:.2f} | {det} |")
    for row in PUBLISHED_PRIVATE_ENCODER:
        lines.append(f"| {row[0]} | (CurricularFace, FFHQ) | {row[2]} | {row[3]} |")
    return "\n".join(lines)


#: colour and marker of each row kind in the figures
KIND_STYLE = {"optical": ("tab:blue", "o"), "software": ("tab:orange", "s"),
              "two-stage": ("tab:green", "*")}
#: the threat models drawn as figure panels: (key in a row, title)
THREAT_MODELS = (("output_only", "output only"), ("sniffing", "sniffing (device memory)"))


def threat_worst(row: dict, key: str) -> dict:
    """A row's worst case under threat model ``key`` (``output_only`` or ``sniffing``)."""
    return row[key]["worst"] if key == "output_only" else row[key]


def plot_threats(rep: dict, path) -> Path:
    """One panel per threat model: worst re-ID (x, lower is more private) against the dlib
    detection rate of the output (y, higher is more useful), one point per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {k: c for k, (c, _) in KIND_STYLE.items()}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    for ax, (key, title) in zip(axes, THREAT_MODELS, strict=True):
        for name, t in rep["rows"].items():
            w = threat_worst(t, key)
            g = t["utility"]["geometry"].get("detection_rate", {"value": math.nan})
            ax.errorbar(100 * w["value"], 100 * g["value"],
                        xerr=[[100 * (w["value"] - w["lo"])], [100 * (w["hi"] - w["value"])]],
                        fmt="o", color=colours.get(t["kind"], "k"), capsize=2)
            ax.annotate(name, (100 * w["value"], 100 * g["value"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.axvline(100 * rep["reid_chance"], ls=":", c="grey", lw=1)
        ax.set_title(title)
        ax.set_xlabel("worst-case re-ID top-1 (%)")
        ax.set_xlim(-3, 103)
    axes[0].set_ylabel("dlib detection rate of the output (%)")
    for kind, c in colours.items():
        axes[1].plot([], [], "o", color=c, label=kind)
    axes[1].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
