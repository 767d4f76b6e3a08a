"""optics frontier on a tiny sweep: points with intervals, resumable, a figure, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from deid.faces.fan import FAN, FANConfig
from deid.methods.stage1.regressor import finetune_regressor
from deid.methods.stage1.trainer import Stage1Config
from optics.cli.main import main as optics_main
from optics.kit.checkpoint import save_checkpoint
from optics.kit.config import save_config, to_dict


def test_finetune_regressor_moves_the_student_towards_the_teacher():
    torch.manual_seed(0)
    teacher = FAN.from_config(FANConfig(input_size=32, width=8, depth=2))
    x = torch.rand(6, 3, 32, 32)

    def blur(images, g):
        return torch.nn.functional.avg_pool2d(images, 5, stride=1, padding=2)

    cfg = Stage1Config(image_size=32, batch_size=4, lr_fan=1e-3, seed=0)
    a = finetune_regressor(blur, teacher, x, cfg, steps=3)
    b = finetune_regressor(blur, teacher, x, cfg, steps=3)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)  # deterministic for a seed
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), teacher.parameters(),
                                                       strict=True))
    tuned = finetune_regressor(blur, teacher, x, cfg, steps=10)
    with torch.no_grad():
        t = teacher(x)
        before = (teacher(blur(x, None)) - t).abs().mean()
        after = (tuned(blur(x, None)) - t).abs().mean()
    assert after < before


def test_finetune_steps_default_to_what_stage1_gives_u():
    """A classic camera's regressor gets as many steps as U of a stage-1 run with the same
    recipe gets behind its final camera."""
    torch.manual_seed(0)
    teacher = FAN.from_config(FANConfig(input_size=32, width=8, depth=2))
    x = torch.rand(4, 3, 32, 32)
    seen = []

    def cam(images, g):
        seen.append(1)
        return images

    for init, expected in (("joint", 3 + 2), ("teacher", 2)):
        seen.clear()
        cfg = Stage1Config(image_size=32, batch_size=1, steps=3, regressor_steps=2,
                           regressor_init=init)
        finetune_regressor(cam, teacher, x, cfg)
        assert len(seen) == expected, init


@pytest.mark.slow
def test_frontier_on_the_demo_corpus(tmp_path, capsys):
    cfg = FANConfig(input_size=64, width=16)
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint({"fan_config": to_dict(cfg), "state_dict": FAN.from_config(cfg).state_dict()},
                    teacher)
    out = tmp_path / "fr"
    args = ["frontier", "--out", str(out), "--teacher", str(teacher), "--cameras",
            "blur-4,lowres-16", "--finetune-steps", "2", "--set", "size=64", "--quiet"]
    assert optics_main(args) == 0
    res = json.loads((out / "frontier.json").read_text())
    assert set(res["points"]) == {"blur-4", "lowres-16"}
    for p in res["points"].values():
        w = p["worst"]
        assert 0 <= w["lo"] <= w["value"] <= w["hi"] <= 1
        assert w["attack"] in ("identity", "matched", "wiener") and w["judge"] in res["judges"]
        assert p["family"] in ("blur", "lowres")
        # (a random teacher's landmarks can collapse: then no face has a finite NME)
        assert p["nme_jittered"]["n"] > 0 or math.isnan(p["nme_jittered"]["value"])
    assert (out / "frontier.png").stat().st_size > 10_000
    from deid.evaluation.frontier import frontier_markdown

    md = frontier_markdown(res)  # the README's table (docs/update_readme.py)
    assert md.index("| blur-4 | blur |") < md.index("| lowres-16 | lowres |")
    assert "56 images of 7 identities" in md or "identities" in md
    # a rerun skips what is done; another config is refused in one line
    assert optics_main(args) == 0
    capsys.readouterr()
    other = [a if a != "2" else "3" for a in args]  # --finetune-steps 3
    assert optics_main(other) == 2
    assert "another frontier config" in capsys.readouterr().err
    assert optics_main(["frontier", "--out", str(out), "--teacher", str(teacher),
                        "--cameras", "blur-x"]) == 2
    # --cameras '': no classic camera (a part holding only --run points)
    assert optics_main(["frontier", "--out", str(tmp_path / "none"), "--teacher", str(teacher),
                        "--cameras", "", "--finetune-steps", "2", "--set", "size=64",
                        "--quiet"]) == 0
    assert json.loads((tmp_path / "none" / "frontier.json").read_text())["points"] == {}
    # parts run in parallel merge into one frontier
    part = ["frontier", "--out", str(tmp_path / "fr3"), "--teacher", str(teacher), "--cameras",
            "mosaic-8", "--finetune-steps", "2", "--set", "size=64", "--quiet"]
    assert optics_main(part) == 0
    merged_dir = tmp_path / "merged"
    assert optics_main(["frontier", "--out", str(merged_dir), "--merge", str(out),
                        "--merge", str(tmp_path / "fr3")]) == 0
    merged = json.loads((merged_dir / "frontier.json").read_text())
    assert set(merged["points"]) == {"blur-4", "lowres-16", "mosaic-8"}
    assert merged["points"]["mosaic-8"] == json.loads(
        (tmp_path / "fr3" / "frontier.json").read_text())["points"]["mosaic-8"]
    assert (merged_dir / "frontier.png").stat().st_size > 10_000
    # points fine-tuned with another recipe (the stage-1 config changed) are not reused
    recipe = tmp_path / "s1.yaml"
    save_config(Stage1Config(image_size=64, lr_regressor=3e-3), recipe)
    again = ["frontier", "--out", str(tmp_path / "fr2"), "--teacher", str(teacher), "--cameras",
             "blur-4", "--finetune-steps", "2", "--set", "size=64", "--set",
             f"stage1_config={recipe}", "--quiet"]
    assert optics_main(again) == 0
    assert json.loads((tmp_path / "fr2" / "frontier.json").read_text())["recipe"][
        "lr_regressor"] == 3e-3
    save_config(Stage1Config(image_size=64, lr_regressor=1e-2), recipe)
    capsys.readouterr()
    assert optics_main(again) == 2
    assert "another fine-tuning recipe" in capsys.readouterr().err
    assert optics_main(["frontier", "--out", str(tmp_path / "m2"), "--merge", str(out),
                        "--merge", str(tmp_path / "fr2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs" in err[0] and "recipe" in err[0], err


def test_bad_finetune_steps_is_one_line(tmp_path, capsys):
    assert optics_main(["frontier", "--out", str(tmp_path / "f"), "--finetune-steps", "-2",
                        "--cameras", "blur-4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finetune_steps must be -1" in err[0], err


def _interval(v, half=0.05):
    return {"value": v, "lo": max(0.0, v - half), "hi": min(1.0, v + half)}


def test_threat_models_as_panels(tmp_path, capsys):
    """``--threats``: a `deid threats` report's methods as points, one panel per threat model
    (a row whose outputs hold no face is drawn at the "no face found" edge); anything else is
    refused in one line."""
    from PIL import Image

    from deid.evaluation.frontier import load_threats, plot_frontier

    result = {"points": {f"blur-{s}": {"family": "blur", "ratio_to_mean_shape": r,
                                       "ratio_interval": [r - 0.1, r + 0.1],
                                       "worst": _interval(w)}
                         for s, r, w in ((2, 0.5, 1.0), (8, 0.7, 0.6))},
              "reid_baselines": {"chance": {"value": 0.14},
                                 "colour_floor_mean_rgb": {"value": 0.34}},
              "identity_set": {"images": 56, "identities": 7}, "test_faces": 48}
    rows = {}
    for name, kind, nme, out, sniff in (("defocus", "optical", float("nan"), 0.7, 0.7),
                                        ("FALCO-style m=0", "software", 0.06, 0.8, 1.0),
                                        ("privlens two-stage", "two-stage", 0.05, 0.9, 0.7)):
        n = {**_interval(nme, 0.01), "n": 0 if math.isnan(nme) else 50}
        rows[name] = {"kind": kind, "output_only": {"worst": _interval(out)},
                      "sniffing": _interval(sniff), "utility": {"jittered_nme": n}}
    threats = tmp_path / "threats"
    threats.mkdir()
    (threats / "threats.json").write_text(json.dumps({"rows": rows, "reid_chance": 0.14}))
    one = plot_frontier(result, tmp_path / "one.png")
    three = plot_frontier(result, tmp_path / "three.png", threats=load_threats(threats))
    w1, w3 = Image.open(one).size[0], Image.open(three).size[0]
    assert w3 > 2.2 * w1, (w1, w3)
    (tmp_path / "bad.json").write_text(json.dumps({"points": {}}))
    with pytest.raises(ValueError, match="not a `deid threats` report"):
        load_threats(tmp_path / "bad.json")
    assert optics_main(["frontier", "--out", str(tmp_path / "x"), "--threats",
                        str(tmp_path / "bad.json")]) == 2
    assert "not a `deid threats` report" in capsys.readouterr().err
