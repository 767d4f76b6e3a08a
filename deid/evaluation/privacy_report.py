"""Every attack against every camera (``optics privacy-report``): per camera, attack and
identity judge, and each camera's worst case over attacks and judges, written as JSON,
markdown (:mod:`.tables`) and figures (:mod:`.figures`).

Per camera and attack: PSNR, SSIM and LPIPS of the reconstructed held-out faces, and per
identity judge (dlib, MobileFaceNet, FaceRes: :func:`deid.evaluation.judges.default_judges`)
the judge's distance to the clean faces and re-identification top-1 on the johns split, each
with a 95% interval (:class:`deid.evaluation.judge.Judge`); the worst judge of each attack
(``worst_over_judges``); per camera the worst case over attacks *and* judges (``worst_case``,
naming both). ``reid_baselines`` holds the chance and colour-floor rows, ``identity_set`` the
numbers of identities and images.

How the work is shared out (it is the same work as one attacker after another would do):

- attack workers (``workers`` processes, one torch thread each) prepare and run the attacks;
  this process judges their reconstructions as they come and writes the JSON after each, so
  attacks and judging overlap and an interrupted report loses at most the pairs in flight;
- each camera renders the held-out and johns faces once per worker, and the tuning faces once
  for all its attacks;
- the face denoiser is trained once; trained networks and tuned parameters are kept in
  ``store`` (default ``$PRIVLENS_HOME/attack-store``), keyed by the camera, the attacker's
  faces, the config and the attack code, so another report with the same cameras loads them
  (:meth:`deid.attacks.attacker.Attacker.prepare`);
- every distinct image is embedded once per judge, all of a pair's images in one batch per
  judge; the clean faces once per report (:class:`deid.evaluation.judge.EmbeddingCache`);
- a rerun into the same folder skips every (camera, attack) already judged by every judge.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing as mp
import os
import queue
import shutil
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from deid.attacks.attacker import (
    METHODS,
    AttackConfig,
    Attacker,
    digest,
    source_digest,
    tensor_digest,
)
from deid.attacks.cameras import BASELINES, DEFAULT_CAMERAS, build_camera
from deid.evaluation.figures import report_grid, worst_case_figure
from deid.evaluation.judge import Judge
from deid.evaluation.judges import JUDGE_NAMES, default_judges
from deid.evaluation.reid_table import baseline_rows
from deid.evaluation.tables import report_markdown
from deid.faces.corpus import FaceSets, load_face_sets
from deid.faces.corpus_builder import ensure_demo_corpus
from optics.kit.files import atomic_path, locked, write_text_atomic
from optics.kit.imageio import load_image, save_image
from optics.kit.malloc import keep_freed_memory
from optics.kit.paths import home_subdir
from optics.kit.progress import progress_bar
from optics.kit.resize import resize_to

__all__ = ["privacy_report", "worst_case", "attack_done", "default_store"]

log = logging.getLogger(__name__)

#: Figures of an attack entry that the report keeps per judge only (dlib's plain numbers).
_FLAT = ("fr_distance", "reid_top1")


def default_store() -> Path:
    """``$PRIVLENS_HOME/attack-store``: trained attack networks and tuned parameters."""
    return home_subdir("attack-store")


def worst_case(atts: dict) -> dict:
    """A camera's worst case: the highest re-identification over attacks and judges
    (``reid_top1``: value, interval, ``n``, ``n_groups``, ``attack``, ``judge``; ties go to
    the earlier attack), and the highest PSNR over attacks."""
    worst = None
    for m, a in atts.items():
        w = a["worst_over_judges"]["reid_top1"]
        if worst is None or (w["value"], w["lo"]) > (worst["value"], worst["lo"]):
            worst = {**w, "attack": m}
    psnrs = {m: a["psnr_db"] for m, a in atts.items() if not math.isnan(a["psnr_db"])}
    worst_psnr = max(psnrs, key=psnrs.get) if psnrs else None
    return {"reid_top1": worst, "psnr_db": psnrs[worst_psnr] if psnrs else float("nan"),
            "psnr_attack": worst_psnr}


def attack_done(entry: dict | None, judges) -> bool:
    """Whether an attack entry of a report has every judge's figures."""
    return bool(entry) and all(j in entry.get("judges", {}) for j in judges)


def _load_samples(out: Path, names, size: int) -> dict:
    samples = {}
    for name in names:
        d = out / "samples" / name
        samples[name] = {p.stem: load_image(p, size) for p in sorted(d.glob("*.png"))}
    return samples


# --------------------------------------------------------------------------- the pairs
#: Modules whose source decides a judged result (with the attack code's, in every key).
JUDGE_MODULES = ("deid.evaluation.privacy_report", "deid.evaluation.judge",
                 "deid.evaluation.judges", "deid.evaluation.reid", "deid.evaluation.reid_table",
                 "deid.evaluation.stats", "deid.judges.dlib", "deid.judges.heldout",
                 "deid.judges.tfjs", "deid.judges.lpips", "deid.judges.quality")


def _np_image(t) -> np.ndarray:
    return t.detach().cpu().float().numpy()


class _Pairs:
    """Attacks and judges (camera, method) pairs in one process, keeping each camera and its
    renderings of the held-out and johns faces, the attackers' shared cache (face denoiser,
    priors, tuning renders) and one :class:`Judge` (built at the first pair it is needed
    for). With a ``store`` and the judges by name, each judged pair is also kept there, keyed
    by everything it depends on, and taken from there when it is asked for again."""

    def __init__(self, specs, faces: FaceSets, config: AttackConfig, calibration, store,
                 judges, lpips: bool, redo=()):
        self.specs, self.faces, self.cfg = list(specs), faces, config
        self.calibration, self.store, self.lpips = calibration, store, lpips
        self.redo = set(redo)
        self.named = not isinstance(judges, dict)
        self.judges = judges if not self.named else list(judges or JUDGE_NAMES)
        self.cameras: dict = {}
        self.cache: dict = {}
        self._judge: Judge | None = None

    def camera(self, i: int):
        if i not in self.cameras:
            cam = build_camera(self.specs[i], self.cfg.size, calibration=self.calibration)
            seed = self.cfg.seed
            self.cameras[i] = (cam, cam(self.faces.test, seed=seed),
                               cam(self.faces.johns, seed=seed + 1))
        return self.cameras[i]

    def judge(self) -> Judge:
        if self._judge is None:
            fns = default_judges(self.judges) if self.named else self.judges
            if not (self.store and self.named):
                self._judge = Judge(self.faces, lpips=self.lpips, judges=fns,
                                    seed=self.cfg.seed)
                return self._judge
            key = digest("clean", tensor_digest(self.faces.test),
                         tensor_digest(self.faces.johns), self.judges,
                         source_digest(JUDGE_MODULES))
            path = self.store / f"clean-embeddings-{key}.npz"
            with locked(self.store / f"clean-embeddings-{key}.lock"):  # one worker embeds
                clean = None
                if path.exists():
                    with np.load(path) as z:
                        clean = {j: z[j] for j in self.judges}
                self._judge = Judge(self.faces, lpips=self.lpips, judges=fns,
                                    seed=self.cfg.seed, clean=clean)
                if clean is None:
                    with atomic_path(path) as tmp:
                        np.savez(tmp, **self._judge.clean)
        return self._judge

    def denoiser(self) -> None:
        """Train (or load) the face denoiser before any plug-and-play attack wants it."""
        Attacker("pnp", self.camera(0)[0], self.cfg)._face_denoiser(self.faces.train,
                                                                   self.store)

    def _key(self, i: int, method: str) -> str | None:
        if not (self.store and self.named):
            return None
        cam, y, y_johns = self.camera(i)
        f, cfg = self.faces, self.cfg
        stamp = ""
        if cfg.ddrm_checkpoint:
            st = Path(cfg.ddrm_checkpoint).stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        return digest("pair", method, Attacker(method, cam, cfg).camera_key(f.train, self.cache),
                      tensor_digest(y), tensor_digest(y_johns), tensor_digest(f.train),
                      tensor_digest(f.test), tensor_digest(f.johns), list(f.johns_ids),
                      json.dumps(dataclasses.asdict(cfg), sort_keys=True), self.judges,
                      self.lpips, stamp, source_digest(), source_digest(JUDGE_MODULES))

    def run(self, i: int, method: str) -> dict:
        """``{"index", "method", "metrics", "y0", "x0"}`` (the first test face's privacy
        image and reconstruction, None for ``matched``)."""
        cam, y, y_johns = self.camera(i)
        key = self._key(i, method)
        folder = self.store / "pairs" / f"{method}-{key}" if key else None
        if folder is not None and method not in self.redo and \
                (folder / "metrics.json").exists():
            metrics = json.loads((folder / "metrics.json").read_text())
            metrics["loaded"] = ["pair"]
            x0 = folder / "x0.png"
            return {"index": i, "method": method, "metrics": metrics,
                    "y0": _np_image(load_image(folder / "y0.png", self.cfg.size)),
                    "x0": _np_image(load_image(x0, self.cfg.size)) if x0.exists() else None}
        att = Attacker(method, cam, self.cfg).prepare(self.faces.train, self.cache, self.store)
        t0 = time.perf_counter()
        with torch.no_grad():
            x_hat = att.reconstruct(y)
            x_hat_johns = att.reconstruct(y_johns) if x_hat is not None else None
        t1 = time.perf_counter()
        judge = self.judge()
        if x_hat is None:  # matched
            metrics = judge.score_matched(cam, y_johns)
        else:
            metrics = judge.score(x_hat, x_hat_johns)
        for k in _FLAT:
            metrics.pop(k, None)
        metrics.update(seconds_prepare=att.seconds_prepare, seconds_attack=t1 - t0,
                       seconds_judge=time.perf_counter() - t1, params=dict(att.params),
                       loaded=list(att.loaded))
        y0 = resize_to(y[:1], self.cfg.size)[0]
        x0 = x_hat[0] if x_hat is not None else None
        if folder is not None:
            tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
            save_image(y0, tmp / "y0.png")
            if x0 is not None:
                save_image(x0, tmp / "x0.png")
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        return {"index": i, "method": method, "metrics": metrics, "y0": _np_image(y0),
                "x0": _np_image(x0) if x0 is not None else None}

    def stats(self) -> dict:
        e = self._judge.embeddings if self._judge is not None else None
        return {"pid": os.getpid(),
                "judge_seconds": dict(e.seconds) if e else {},
                "images_embedded": dict(e.embedded) if e else {},
                "images_requested": e.requested if e else 0}

    def trim(self) -> None:
        e = self._judge.embeddings if self._judge is not None else None
        if e is not None and sum(len(v) for v in e.memo.values()) > 12000:
            e.trim()  # keep the clean faces' embeddings, drop older attacks'


def _tasks(todo, workers: bool) -> list:
    """``(camera index, methods)`` tasks: ``identity`` and ``matched`` of one camera go
    together (the johns images ``matched`` embeds are ``identity``'s reconstructions when the
    sensor is full size, so the judges embed them once). With workers, the long attacks come
    first and plug-and-play last (it waits for the face denoiser, trained first)."""
    by_cam: dict = {}
    for i, m in todo:
        by_cam.setdefault(i, []).append(m)
    tasks = []
    for i, ms in by_cam.items():
        if "identity" in ms and "matched" in ms:
            ms = [m for m in ms if m != "matched"]
            ms[ms.index("identity")] = ("identity", "matched")
        tasks += [(i, m if isinstance(m, tuple) else (m,)) for m in ms]
    if workers:
        rank = {m: k for k, m in enumerate(("ddrm", "inversion", "tv", "rl"))}
        tasks.sort(key=lambda t: (t[1][0] == "pnp", rank.get(t[1][0], len(rank))))
    return tasks


def _worker(tasks, results, specs, faces, config, calibration, store, judges, lpips, redo,
            threads):
    keep_freed_memory()  # a spawned process: the parent's malloc settings are not inherited
    torch.set_num_threads(threads)
    pairs = _Pairs(specs, faces, config, calibration, store, judges, lpips, redo)
    while True:
        task = tasks.get()
        if task is None:
            return
        try:
            if task[1] is None:
                pairs.denoiser()
                results.put(("denoiser", None))
                continue
            for m in task[1]:
                r = pairs.run(task[0], m)
                r.update(pairs.stats())
                results.put(("ok", r))
                pairs.trim()
        except BaseException:  # noqa: BLE001 (reported to the parent, which raises)
            results.put(("error", f"{task}: {traceback.format_exc()}"))
            return


def _in_process(todo, specs, faces, config, calibration, store, judges, lpips, redo):
    pairs = _Pairs(specs, faces, config, calibration, store, judges, lpips, redo)
    for i, methods in _tasks(todo, workers=False):
        for m in methods:
            r = pairs.run(i, m)
            r.update(pairs.stats())
            yield r
            pairs.trim()


class _Workers:
    """``workers`` attack processes (spawned at once, one torch thread each) fed from a task
    queue: the face denoiser first if plug-and-play needs it, then the :func:`_tasks`.
    Iterating yields each pair's result as it comes; ``close`` stops the processes."""

    def __init__(self, todo, specs, faces, config, calibration, store, judges, lpips, redo,
                 workers, threads):
        ctx = mp.get_context("spawn")
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        tasks = _tasks(todo, workers=True)
        pnp_face = any("pnp" in ms for _, ms in tasks) and config.pnp_denoiser == "face"
        for t in ([(0, None)] if pnp_face else []) + tasks:
            self.tasks.put(t)
        for _ in range(workers):
            self.tasks.put(None)
        self.left = len(todo) + int(pnp_face)
        self.procs = [ctx.Process(target=_worker, daemon=True,
                                  args=(self.tasks, self.results, specs, faces, config,
                                        calibration, store, judges, lpips, tuple(redo),
                                        threads))
                      for _ in range(workers)]
        for p in self.procs:
            p.start()

    def __iter__(self):
        while self.left:
            try:
                kind, payload = self.results.get(timeout=5)
            except queue.Empty:
                if not any(p.is_alive() for p in self.procs):
                    raise RuntimeError(
                        "every attack worker stopped (their errors are above; a script that "
                        "calls privacy_report with workers needs an `if __name__ == "
                        "'__main__':` guard)") from None
                continue
            self.left -= 1
            if kind == "error":
                raise RuntimeError(f"an attack worker failed on {payload}")
            if kind == "ok":
                yield payload
        for p in self.procs:
            p.join()

    def close(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()


# --------------------------------------------------------------------------- the report
def privacy_report(out_dir, cameras=None, methods=METHODS, config: AttackConfig | None = None,
                   faces: FaceSets | None = None, calibration=None, lpips: bool = True,
                   progress: bool = True, redo=(), *, judges=None, store=None,
                   workers: int | None = None, threads: int = 1) -> dict:
    """Every method against every camera; writes ``privacy_report.json``, ``.md``, the
    figure grid ``privacy_grid.png`` and ``privacy_worst_case.png`` into ``out_dir``.
    ``cameras``: specs for :func:`build_camera` (default: the presets, then the software
    baselines).

    ``judges``: identity judge names (default :data:`JUDGE_NAMES`) or a dict
    ``{name: images -> (N, D)}`` (then the attacks run in this process). ``store``: the folder
    of trained attack networks and tuned parameters (default :func:`default_store`; False:
    none). ``workers``: attack processes (default: 2 if the machine has 2 CPUs or more, 0:
    in this process); ``threads``: torch threads of each process (this one included, while
    the report runs).

    Resumable: the JSON is rewritten after every attack, and a rerun into the same folder
    (same face size and faces) skips the (camera, method) pairs already there with every
    judge's figures, except methods listed in ``redo``; the figure is rebuilt from
    ``samples/`` (each camera's first test face). With a store (and the judges by name), a
    pair judged before by any report with the same camera, faces, config, judges and code is
    taken from the store (``loaded: ["pair"]``), except methods in ``redo``; trained
    networks and tuned parameters are taken from it whenever their key matches."""
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    config = config or AttackConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = list(cameras or (DEFAULT_CAMERAS + BASELINES))
    methods = list(methods)
    faces = faces or load_face_sets(config.size, ensure_demo_corpus())
    judge_names = list(judges) if judges is not None else list(JUDGE_NAMES)
    store = None if store is False else Path(store) if store else default_store()
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 else 0
    if not isinstance(judges, (type(None), list, tuple)):
        workers = 0  # judge callables stay in this process, and so do the attacks
    path = out / "privacy_report.json"
    results: dict = {}
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("config", {}).get("size") != config.size or \
                old.get("test_faces") != len(faces.test) or \
                old.get("johns_images", len(faces.johns)) != len(faces.johns):
            raise ValueError(f"{path} was made with other faces or another face size; use "
                             f"another --out")
        results = old.get("cameras", {})
    ids = np.asarray(faces.johns_ids)
    cams = [build_camera(s, config.size, calibration=calibration) for s in specs]
    names = [c.name for c in cams]
    todo = []
    for i, cam in enumerate(cams):
        entry = results.setdefault(cam.name, {"attacks": {}})
        entry["description"] = cam.description
        entry["attacks"] = {m: a for m, a in entry["attacks"].items()  # older reports' too
                            if attack_done(a, judge_names)}
        for m in methods:
            if m in redo or not attack_done(entry["attacks"].get(m), judge_names):
                todo.append((i, m))
    run_info = {"workers": workers, "threads": threads, "pairs_run": len(todo),
                "pairs_skipped": len(cams) * len(methods) - len(todo),
                "loadavg_start": list(load_start)}

    def report():
        rep = {"config": dataclasses.asdict(config), "methods": methods,
               "judges": judge_names, "test_faces": int(len(faces.test)),
               "johns_images": int(len(faces.johns)), "train_faces": int(len(faces.train)),
               "identity_set": {"split": "johns", "images": int(len(ids)),
                                "identities": int(len(np.unique(ids)))},
               "reid_chance": 1.0 / len(np.unique(ids)),
               "reid_baselines": baselines,
               "cameras": {n: results[n] for n in names  # the cameras asked for, in order
                           if results.get(n, {}).get("attacks")}}
        rep["run"] = run_info
        return rep

    baselines = baseline_rows(faces.johns, ids, config.seed)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if todo:
            _run(todo, cams, specs, methods, faces, config, calibration, lpips, progress,
                 judges, store, redo, workers, threads, results, out, path, report, run_info)
    finally:
        torch.set_num_threads(threads_before)
    run_info["seconds"] = time.perf_counter() - t_start
    run_info["loadavg_end"] = list(os.getloadavg())
    rep = report()
    write_text_atomic(path, json.dumps(rep, indent=1) + "\n")
    report_grid(_load_samples(out, names, config.size), faces.test, methods,
                out / "privacy_grid.png")
    worst_case_figure(rep, out / "privacy_worst_case.png")
    write_text_atomic(out / "privacy_report.md", report_markdown(rep) + "\n")
    return rep


def _run(todo, cams, specs, methods, faces, config, calibration, lpips, progress, judges,
         store, redo, workers, threads, results, out, path, report, run_info):
    """Attack and judge the ``todo`` pairs (in workers or here); record each as it comes."""
    bar = progress_bar(total=len(todo), desc="privacy report", disable=not progress)
    pool = None
    if workers > 0:
        pool = _Workers(todo, specs, faces, config, calibration, store, judges, lpips, redo,
                        workers, threads)
        stream = iter(pool)
    else:
        stream = _in_process(todo, specs, faces, config, calibration, store, judges, lpips,
                             redo)
    totals = {"prepare": 0.0, "attack": 0.0, "judge": 0.0}
    per_worker: dict = {}
    try:
        for r in stream:
            cam = cams[r["index"]]
            m = r["method"]
            metrics = r["metrics"]
            bar.set_postfix_str(f"{cam.name}/{m}")
            if "pair" not in metrics.get("loaded", []):
                for k in totals:
                    totals[k] += metrics[f"seconds_{k}"]
            entry = results[cam.name]
            entry["attacks"][m] = metrics
            entry["attacks"] = {k: entry["attacks"][k] for k in
                                [x for x in methods if x in entry["attacks"]]
                                + [x for x in entry["attacks"] if x not in methods]}
            entry["worst_case"] = worst_case(entry["attacks"])
            sample_dir = out / "samples" / cam.name
            save_image(torch.from_numpy(r["y0"]), sample_dir / "y.png")
            if r["x0"] is not None:
                save_image(torch.from_numpy(r["x0"]), sample_dir / f"{m}.png")
            per_worker[r["pid"]] = r
            run_info.update({f"seconds_{k}_total": v for k, v in totals.items()})
            run_info["pairs_from_store"] = run_info.get("pairs_from_store", 0) + int(
                "pair" in metrics.get("loaded", []))
            for k in ("judge_seconds", "images_embedded"):
                run_info[k] = {j: sum(w[k].get(j, 0) for w in per_worker.values())
                               for j in {j for w in per_worker.values() for j in w[k]}}
            run_info["images_requested"] = sum(w["images_requested"]
                                               for w in per_worker.values())
            write_text_atomic(path, json.dumps(report(), indent=1) + "\n")
            log.info("%s / %s: worst re-id %s", cam.name, m, metrics["worst_over_judges"])
            bar.update()
    finally:
        if pool is not None:
            pool.close()
        bar.close()
