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


@pytest.mark.slow
def test_privacy_report_headline_is_the_worst_case(tmp_path, capsys):
    out = tmp_path / "pr"
    assert optics_main(["privacy-report", "--out", str(out), "--size", "48", "--cameras",
                        "blur-2,mosaic-8", "--methods", "identity,wiener,matched",
                        "--max-faces", "6", "--no-lpips", "--quiet", "--set",
                        "tune_faces=4"]) == 0
    rep = json.loads((out / "privacy_report.json").read_text())
    for cam in ("blur-2", "mosaic-8"):
        atts = rep["cameras"][cam]["attacks"]
        worst = rep["cameras"][cam]["worst_case"]
        assert set(atts) == {"identity", "wiener", "matched"}
        assert worst["reid_top1"] == max(a["reid_top1"] for a in atts.values())
        assert worst["psnr_db"] == max(a["psnr_db"] for a in atts.values()
                                       if not np.isnan(a["psnr_db"]))
    md = (out / "privacy_report.md").read_text()
    assert md.startswith("## Worst case") and "| blur-2 |" in md
    assert report_markdown(rep) in md
    assert (out / "privacy_grid.png").stat().st_size > 1000
    assert "Worst case" in capsys.readouterr().out
