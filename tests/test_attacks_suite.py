"""The attack suite end to end: threat-model cameras, the attacker's tuning, the judge's
metrics, `optics attack` (simulated and captured inputs) and `optics privacy-report`."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from deid.attacks.attacker import METHODS, AttackConfig, Attacker
from deid.attacks.cameras import BASELINES, DEFAULT_CAMERAS, build_camera
from deid.evaluation.tables import report_markdown
from optics.cli.main import main as optics_main
from optics.presets import PRESETS

torch.set_num_threads(1)


@pytest.mark.parametrize("spec", DEFAULT_CAMERAS + BASELINES + tuple(sorted(PRESETS)))
def test_every_camera_renders_with_a_normalised_psf(spec):
    cam = build_camera(spec, 64)
    x = torch.rand(2, 3, 64, 64)
    y1, y2 = cam(x, seed=3), cam(x, seed=3)
    assert torch.equal(y1, y2)  # seeded
    side = cam.output_size or 64
    assert y1.shape == (2, 3, side, side) and 0 <= float(y1.min()) <= float(y1.max()) <= 1
    torch.testing.assert_close(cam.psf.sum(dim=(-2, -1)), torch.ones(3), atol=1e-5, rtol=0)
    if spec != "none" and y1.shape == x.shape:
        assert not torch.allclose(y1, x, atol=1e-2)


def test_measured_psf_files(tmp_path):
    import h5py

    from deid.attacks.cameras import load_psf

    k = np.zeros((3, 9, 9))
    k[:, 4, 4] = 2.0
    k[0, 4, 5] = -0.1  # noise below zero is clipped
    k[1:, 0, 0] = 5.0  # the defocused planes must not be used
    with h5py.File(tmp_path / "cal.h5", "w") as f:
        f["psf/stack"] = k  # a 3-plane diversity stack of one channel
    psf = load_psf(f"{tmp_path / 'cal.h5'}:psf/stack")
    assert psf.shape == (3, 9, 9) and float(psf[1, 4, 4]) == pytest.approx(1.0)
    assert float(psf[:, 0, 0].abs().max()) == 0.0
    np.save(tmp_path / "p.npy", np.ones((5, 5)))
    torch.testing.assert_close(load_psf(str(tmp_path / "p.npy")).sum(dim=(-2, -1)),
                               torch.ones(3))
    with pytest.raises(ValueError, match="dataset"):
        load_psf(str(tmp_path / "cal.h5"))


def test_unknown_camera_is_refused():
    with pytest.raises(ValueError, match="unknown camera"):
        build_camera("fisheye", 64)


@pytest.mark.parametrize("spec,needle", [("fisheye", "unknown camera"),
                                          ("defocus-x", "expected a number"),
                                          ("blur--1", "finite and >= 0"),
                                          ("mosaic-nan", "finite")])
def test_camera_specs_are_checked_up_front(spec, needle, tmp_path):
    from deid.attacks.cameras import check_camera_spec

    with pytest.raises(ValueError, match=needle):
        check_camera_spec(spec)
    with pytest.raises(ValueError, match=needle):
        build_camera(spec, 32)
    for good in ("none", "defocus-1.5", "blur-8", "mosaic-16"):
        check_camera_spec(good)
    r = subprocess.run([sys.executable, "-m", "optics", "privacy-report", "--out",
                        str(tmp_path / "r"), "--cameras", spec], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr


def test_focus_cameras_count_defocus_from_best_focus():
    """``focus-D`` is the lopez2024 lens with Z4 = best focus + D: ``focus-0`` is sharper
    than the published camera as it is (``defocus-0``, focused at 5 m), which equals
    ``focus-0.654...``; more D, more blur."""
    from optics.camera import best_focus_z4_um
    from optics.presets import get_preset

    def rms_radius(spec):
        p = build_camera(spec, 64).psf[1].double()
        p = p / p.sum()
        c = torch.arange(p.shape[-1], dtype=torch.float64) - (p.shape[-1] - 1) / 2
        return float((p * (c[:, None] ** 2 + c[None, :] ** 2)).sum().sqrt())

    r = [rms_radius(f"focus-{d}") for d in (0, 0.2, 0.5)]
    assert r[0] < r[1] < r[2] and r[0] < 0.5 * rms_radius("defocus-0")
    own = -best_focus_z4_um(get_preset("lopez2024").at_image_size(64))
    a, b = build_camera(f"focus-{own!r}", 64).psf, build_camera("defocus-0", 64).psf
    k = min(a.shape[-1], b.shape[-1])
    crop = [t[..., (t.shape[-1] - k) // 2:(t.shape[-1] - k) // 2 + k,
              (t.shape[-1] - k) // 2:(t.shape[-1] - k) // 2 + k] for t in (a, b)]
    torch.testing.assert_close(crop[0] / crop[0].sum(), crop[1] / crop[1].sum(),
                               atol=2e-4, rtol=0)


def test_stage1_run_camera(tmp_path):
    from deid.methods.stage1.trainer import Stage1Config
    from optics.coefficients import save_coefficients
    from optics.kit.config import save_config

    run = tmp_path / "run"
    save_config(Stage1Config(camera="lopez2024", image_size=64), run / "config.yaml")
    save_coefficients({4: 0.4, 8: -0.2}, run / "coefficients.json")
    cam = build_camera(str(run), 64)
    assert cam.name == "run" and cam.psf.shape[0] == 3
    flat = build_camera("none", 64)
    x = torch.rand(1, 3, 64, 64)
    assert float((cam(x) - flat(x)).abs().mean()) > 0.01


def test_stage1_run_camera_keeps_the_runs_psf_window(tmp_path):
    """A run's camera.yaml (its PSF window included) is what the attacker models; without
    it, the window comes from the run's config."""
    from deid.methods.stage1.trainer import Stage1Config
    from deid.methods.stage1.trainer import build_camera as stage1_camera
    from optics.coefficients import save_coefficients
    from optics.kit.config import save_config

    run = tmp_path / "run"
    cfg = Stage1Config(camera="lopez2024", image_size=64, psf_size_px=44)
    save_config(cfg, run / "config.yaml")
    save_coefficients({4: 0.4}, run / "coefficients.json")
    assert build_camera(str(run), 64).psf.shape[-1] == 44
    save_config(stage1_camera(cfg).config.replace(psf_size_px=50), run / "camera.yaml")
    assert build_camera(str(run), 64).psf.shape[-1] == 50


def _faces(n=6, size=48):
    from skimage import data
    from skimage.transform import resize

    img = resize(data.astronaut()[:300, 100:400], (size + 16, size + 16), anti_aliasing=True)
    out = []
    for i in range(n):
        a, b = i % 4, (i * 3) % 5
        out.append(torch.from_numpy(img[a:a + size, b:b + size].transpose(2, 0, 1).copy()))
    return torch.stack(out).float()


def test_attacker_tuning_picks_the_best_parameter_on_its_own_faces():
    faces = _faces()
    cam = build_camera("blur-4", 48)
    att = Attacker("wiener", cam, AttackConfig(size=48, tune_faces=4)).prepare(faces)
    from deid.judges.quality import psnr

    chosen = att.params["reg"]
    y = cam(faces[:4], seed=7)
    from optics.deconv import wiener

    scores = {r: float(psnr(faces[:4], wiener(y, cam.psf, reg=r)).mean())
              for r in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)}
    assert float(psnr(faces[:4], wiener(y, cam.psf, reg=chosen)).mean()) >= max(
        scores.values()) - 1e-6
    x_hat = att.reconstruct(cam(faces[4:], seed=1))
    assert x_hat.shape == faces[4:].shape
    assert float(psnr(faces[4:], x_hat).mean()) > float(psnr(faces[4:], cam(faces[4:],
                                                                              seed=1)).mean())


def test_mosaic_attacker_reads_blocks_smoothly():
    cam = build_camera("mosaic-8", 64)
    x = _faces(2, 64)
    y = cam(x)
    obs = cam.observe(y)
    # the re-interpolated blocks keep the block means and lose the block edges
    pool = torch.nn.functional.avg_pool2d
    torch.testing.assert_close(pool(obs, 8), pool(y, 8), atol=0.03, rtol=0)
    assert float((obs - x).abs().mean()) < float((y - x).abs().mean())


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown attack"):
        Attacker("magic", build_camera("none", 32), AttackConfig(size=32))


def _attack(tmp_path, method, camera="blur-4", extra=()):
    out = tmp_path / f"{method}-{camera}"
    rc = optics_main(["attack", "--method", method, "--camera", camera, "--size", "48",
                      "--out", str(out), "--no-lpips", "--set", "inversion_steps=30",
                      "--set", "denoiser_steps=30", "--set", "tune_faces=4", *extra])
    assert rc == 0
    return out, json.loads((out / "attack.json").read_text())


def test_optics_attack_wiener_writes_images_grid_and_json(tmp_path):
    out, res = _attack(tmp_path, "wiener")
    m = res["metrics"]
    assert res["camera"] == "blur-4" and 0 < res["reid_chance"] <= 0.2  # 5+ identities
    assert 10 < m["psnr_db"] < 60 and 0 < m["ssim"] <= 1 and 0 <= m["reid_top1"] <= 1
    assert len(list((out / "recovered").glob("*.png"))) == res["n_images"]
    assert (out / "grid.png").stat().st_size > 1000


def test_optics_attack_takes_a_preset_name(tmp_path, capsys):
    """--camera PRESET_OR_RUN: a preset name is a camera (was refused before)."""
    out, res = _attack(tmp_path, "identity", camera="lopez2024")
    assert res["camera"] == "lopez2024" and "preset" in res["camera_description"]
    assert optics_main(["attack", "--method", "identity", "--camera", "lopez2025",
                        "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown camera 'lopez2025'" in err[0] and "lopez2024" in err[0]


def test_optics_attack_reads_captured_images(tmp_path):
    """--captured: the attack runs on files, paired with the originals by sorted name; the
    same images as the simulation give the same numbers."""
    from deid.faces.corpus import load_face_sets
    from optics.kit.imageio import save_image

    faces = load_face_sets(48)
    cam = build_camera("blur-4", 48)
    y = cam(faces.test[:5], seed=0)
    orig, cap = tmp_path / "orig", tmp_path / "cap"
    for i in range(5):
        save_image(faces.test[i], orig / f"{i:03d}.png")
        save_image(y[i], cap / f"{i:03d}.png")
    _, sim = _attack(tmp_path, "rl", extra=["--images", str(orig)])
    _, got = _attack(tmp_path / "c", "rl", extra=["--images", str(orig), "--captured",
                                                   str(cap)])
    assert got["captured"] and got["n_images"] == 5
    assert got["metrics"]["psnr_db"] == pytest.approx(sim["metrics"]["psnr_db"], abs=0.3)
    bad = tmp_path / "bad"
    save_image(y[0], bad / "000.png")
    assert optics_main(["attack", "--method", "rl", "--camera", "blur-4", "--size", "48",
                        "--images", str(orig), "--captured", str(bad), "--out",
                        str(tmp_path / "x"), "--no-lpips"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in METHODS if m != "wiener"])
def test_every_method_runs_from_the_command_line(tmp_path, method):
    camera = "lr16" if method == "inversion" else "prototype"
    _, res = _attack(tmp_path, method, camera)
    m = res["metrics"]
    assert 0 <= m["reid_top1"] <= 1
    if method == "matched":
        assert np.isnan(m["psnr_db"])
    else:
        assert m["psnr_db"] > 12


def _check_interval(d, n=None, n_groups=None):
    assert 0 <= d["lo"] <= d["value"] <= d["hi"] <= 1, d
    if n is not None:
        assert d["n"] == n and d["n_groups"] == n_groups, d


def _check_report(rep, cameras, methods):
    """Every figure of a privacy report: per-judge keys, intervals in [0, 1] and ordered,
    the worst case over judges per attack and over attacks and judges per camera."""
    judges = rep["judges"]
    ident = rep["identity_set"]
    assert ident["split"] == "johns" and ident["images"] == rep["johns_images"]
    assert rep["reid_chance"] == pytest.approx(1 / ident["identities"])
    base = rep["reid_baselines"]
    assert base["chance"]["value"] == pytest.approx(rep["reid_chance"])
    for k in ("colour_floor_mean_rgb", "colour_floor_pooled_4x4"):
        _check_interval(base[k], ident["images"], ident["identities"])
    assert list(rep["cameras"]) == cameras
    for c in rep["cameras"].values():
        atts = c["attacks"]
        assert list(atts) == methods
        overall = []
        for m, a in atts.items():
            assert set(a["judges"]) == set(judges) and "reid_top1" not in a
            for j, r in a["judges"].items():
                _check_interval(r["reid_top1"], ident["images"], ident["identities"])
                assert r["reid_top1"]["gallery"] == ("camera" if m == "matched" else "clean")
                if m == "matched":
                    assert "distance_to_clean" not in r
                else:
                    d = r["distance_to_clean"]
                    assert 0 <= d["lo"] <= d["value"] <= d["hi"], d
                    assert d["n"] == rep["test_faces"]
                overall.append((r["reid_top1"]["value"], m, j))
            w = a["worst_over_judges"]["reid_top1"]
            assert w["value"] == max(r["reid_top1"]["value"] for r in a["judges"].values())
            assert a["judges"][w["judge"]]["reid_top1"]["value"] == w["value"]
        worst = c["worst_case"]["reid_top1"]
        assert worst["value"] == max(v for v, _, _ in overall)
        assert atts[worst["attack"]]["judges"][worst["judge"]]["reid_top1"]["value"] == \
            worst["value"]
        _check_interval(worst, ident["images"], ident["identities"])
        psnrs = [a["psnr_db"] for a in atts.values() if not np.isnan(a["psnr_db"])]
        assert c["worst_case"]["psnr_db"] == max(psnrs)


def _colour_judge(k):
    import torch.nn.functional as F

    def embed(x):
        return F.adaptive_avg_pool2d(x, k).flatten(1).numpy()
    return embed


QUICK = dict(methods=["identity", "wiener", "matched"], progress=False, lpips=False)


def _quick_report(out, store, **kw):
    from deid.evaluation.privacy_report import privacy_report
    from deid.faces.corpus import load_face_sets

    faces = load_face_sets(32, max_test=5)
    judges = {"coarse": _colour_judge(2), "fine": _colour_judge(8)}
    return privacy_report(out, ["blur-2", "mosaic-8"], config=AttackConfig(size=32, tune_faces=3),
                          faces=faces, judges=judges, store=store, **{**QUICK, **kw})


def test_privacy_report_per_judge_worst_case_and_rerun(tmp_path):
    """Per (camera, attack): each judge's distance and re-ID with intervals; the worst case
    over attacks and judges names both; the baseline rows; a rerun skips what is done, redo
    reruns a method, and another report takes the judged pairs from the store."""
    out, store = tmp_path / "pr", tmp_path / "store"
    rep = _quick_report(out, store)
    _check_report(rep, ["blur-2", "mosaic-8"], QUICK["methods"])
    assert rep["judges"] == ["coarse", "fine"] and rep["run"]["pairs_run"] == 6
    assert rep["run"]["workers"] == 0  # judge callables: everything in this process
    md = (out / "privacy_report.md").read_text()
    assert md.startswith("## Worst case over attacks and judges")
    assert "colour floor: mean RGB" in md and "| chance (1 / identities) |" in md
    assert "| blur-2 | wiener |" in md and "fine re-ID top-1" in md
    assert md.index("colour floor") < md.index("## Every")  # the CLI prints the head only
    for f in ("privacy_grid.png", "privacy_worst_case.png"):
        assert (out / f).stat().st_size > 1000
    again = _quick_report(out, store)
    assert again["run"]["pairs_run"] == 0 and again["run"]["pairs_skipped"] == 6
    assert json.dumps(again["cameras"]) == json.dumps(rep["cameras"])  # NaN LPIPS
    redo = _quick_report(out, store, redo=("wiener",))
    assert redo["run"]["pairs_run"] == 2
    for cam in ("blur-2", "mosaic-8"):
        a, b = redo["cameras"][cam]["attacks"]["wiener"], rep["cameras"][cam]["attacks"]["wiener"]
        assert a["judges"] == b["judges"] and a["params"] == b["params"]


def test_privacy_report_refuses_other_faces(tmp_path):
    _quick_report(tmp_path / "pr", False, methods=["identity"])
    from deid.evaluation.privacy_report import privacy_report
    from deid.faces.corpus import load_face_sets

    with pytest.raises(ValueError, match="other faces"):
        privacy_report(tmp_path / "pr", ["blur-2"], ["identity"], AttackConfig(size=32),
                       faces=load_face_sets(32, max_test=4), judges={"c": _colour_judge(2)},
                       store=False, progress=False, lpips=False)


def test_embedding_cache_embeds_each_image_once():
    from deid.evaluation.judge import EmbeddingCache

    seen = []

    def judge(x):
        seen.append(len(x))
        return x.flatten(1)[:, :4].numpy() * 2

    cache = EmbeddingCache({"a": judge})
    x = torch.rand(5, 3, 8, 8)
    e1 = cache(x)["a"]
    cache.pin()
    e2 = cache(torch.cat([x[:2], x[:2], torch.rand(3, 3, 8, 8)]))["a"]
    assert seen == [5, 3]  # two repeated rows and two known images are not embedded again
    np.testing.assert_array_equal(e2[:2], e1[:2])
    np.testing.assert_array_equal(e2[2:4], e1[:2])
    cache.trim()
    assert len(cache.memo["a"]) == 5  # the pinned images stay


def test_judge_keeps_dlibs_plain_figures():
    """``Judge`` (as ``optics attack`` and the stage-1 report use it): per-judge figures with
    intervals, and dlib's ``fr_distance``/``reid_top1`` as plain numbers."""
    from deid.evaluation.judge import Judge, run_attack
    from deid.evaluation.reid import reid_top1
    from deid.faces.corpus import FaceSets

    g = torch.Generator().manual_seed(0)
    ids = [i // 3 for i in range(12)]
    johns = torch.rand(12, 3, 16, 16, generator=g)
    faces = FaceSets(train=torch.rand(6, 3, 16, 16, generator=g),
                     test=torch.rand(4, 3, 16, 16, generator=g), johns=johns, johns_ids=ids)
    judge = Judge(faces, lpips=False, judges={"dlib": _colour_judge(4), "x": _colour_judge(2)})
    att = Attacker("wiener", build_camera("blur-2", 16), AttackConfig(size=16, tune_faces=3))
    r = run_attack(att.prepare(faces.train), judge)
    m = r["metrics"]
    assert set(r) == {"metrics", "x_hat", "y", "x_hat_johns"}
    e = _colour_judge(4)
    assert m["reid_top1"] == pytest.approx(reid_top1(e(r["x_hat_johns"]), ids, e(johns), ids,
                                                     leave_one_out=True))
    assert m["reid_top1"] == m["judges"]["dlib"]["reid_top1"]["value"]
    assert m["fr_distance"] == pytest.approx(float(np.linalg.norm(
        e(r["x_hat"]) - e(faces.test), axis=1).mean()))
    assert m["worst_over_judges"]["reid_top1"]["judge"] in ("dlib", "x")
    matched = run_attack(Attacker("matched", att.camera, att.cfg), judge)["metrics"]
    assert np.isnan(matched["psnr_db"]) and matched["judges"]["x"]["reid_top1"]["n"] == 12


def test_attacker_store_reuses_tuning_and_networks(tmp_path):
    """A second attacker on the same camera, faces and config loads the tuned parameter and
    the trained networks from the store, and reconstructs exactly as the first."""
    faces = _faces(6, 32)
    cfg = AttackConfig(size=32, tune_faces=3, inversion_steps=4, denoiser_steps=3,
                       pnp_iterations=2)
    cam = build_camera("blur-2", 32)
    y = cam(faces[:2], seed=1)
    for method, loaded in (("wiener", ["params"]), ("inversion", ["inversion"]),
                           ("pnp", ["face_denoiser", "params"])):
        a = Attacker(method, cam, cfg).prepare(faces, store=tmp_path)
        b = Attacker(method, cam, cfg).prepare(faces, store=tmp_path)
        assert a.loaded == [] and b.loaded == loaded and a.params == b.params
        torch.testing.assert_close(a.reconstruct(y), b.reconstruct(y), rtol=0, atol=0)
    other = Attacker("wiener", build_camera("blur-4", 32), cfg).prepare(faces, store=tmp_path)
    assert other.loaded == []  # another camera: another key


def test_report_tasks_group_identity_with_matched_and_put_pnp_last():
    from deid.evaluation.privacy_report import _tasks

    todo = [(0, m) for m in METHODS] + [(1, "matched"), (1, "pnp")]
    tasks = _tasks(todo, workers=True)
    assert sorted(m for _, ms in tasks for m in ms) == sorted(m for _, m in todo)
    assert (0, ("identity", "matched")) in tasks and (1, ("matched",)) in tasks
    assert [t[1][0] for t in tasks[:2]] == ["ddrm", "inversion"]
    assert all(t[1] == ("pnp",) for t in tasks[-2:])
    assert _tasks(todo, workers=False)[0] == (0, ("identity", "matched"))


@pytest.mark.slow
def test_privacy_report_headline_is_the_worst_case(tmp_path, capsys):
    """The command line with the real judges (dlib, MobileFaceNet, FaceRes) and two attack
    workers; a rerun into the same folder attacks nothing."""
    out = tmp_path / "pr"
    args = ["privacy-report", "--out", str(out), "--size", "48", "--cameras",
            "blur-2,mosaic-8", "--methods", "identity,wiener,matched", "--max-faces", "6",
            "--no-lpips", "--quiet", "--set", "tune_faces=4", "--store", str(tmp_path / "st")]
    assert optics_main(args) == 0
    rep = json.loads((out / "privacy_report.json").read_text())
    assert rep["judges"] == ["dlib", "mobilefacenet", "faceres"] and rep["run"]["workers"] == 2
    _check_report(rep, ["blur-2", "mosaic-8"], ["identity", "wiener", "matched"])
    md = (out / "privacy_report.md").read_text()
    assert md.startswith("## Worst case") and "| blur-2 |" in md
    assert report_markdown(rep) in md
    assert (out / "privacy_grid.png").stat().st_size > 1000
    assert "Worst case" in capsys.readouterr().out
    assert optics_main(args) == 0
    again = json.loads((out / "privacy_report.json").read_text())
    assert again["run"]["pairs_run"] == 0
    assert json.dumps(again["cameras"]) == json.dumps(rep["cameras"])
    # another folder: every judged pair comes from the store, with the same figures
    args[args.index(str(out))] = str(tmp_path / "other")
    assert optics_main(args) == 0
    other = json.loads((tmp_path / "other" / "privacy_report.json").read_text())
    assert other["run"]["pairs_from_store"] == 6
    for cam, c in other["cameras"].items():
        for m, a in c["attacks"].items():
            assert a["judges"] == rep["cameras"][cam]["attacks"][m]["judges"]
