"""Command line: outputs exist and bad input ends in one line with exit status 2."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from optics.cli.main import main


def run(*argv):
    return subprocess.run([sys.executable, "-m", "optics", *argv], capture_output=True, text=True)


def test_psf_writes_figures_and_summary(tmp_path):
    coeffs = tmp_path / "c.json"
    coeffs.write_text(json.dumps({"convention": "noll", "units": "um_opd",
                                  "coefficients": {"4": 0.2, "8": -0.1}}))
    assert main(["psf", "--preset", "lopez2024", "--coefficients", str(coeffs),
                 "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    for name in ("phase_map.png", "psf.png", "mtf.png", "example.png", "summary.json",
                 "camera.yaml", "coefficients.json"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["channels"]) == {"640nm", "550nm", "440nm"}
    for ch in summary["channels"].values():
        assert 0 < ch["strehl"] <= 1 and ch["ee_1px"] < ch["ee_2px"] < ch["ee_4px"] <= 1
    # the saved camera and coefficients replay to the same summary
    assert main(["psf", "--camera-config", str(out / "camera.yaml"), "--coefficients",
                 str(out / "coefficients.json"), "--out", str(tmp_path / "replay")]) == 0
    replay = json.loads((tmp_path / "replay" / "summary.json").read_text())
    assert replay["channels"] == summary["channels"]


def test_simulate(tmp_path):
    img = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)).save(img)
    assert main(["simulate", str(img), "--preset", "lr16", "--out", str(tmp_path / "y.png")]) == 0
    assert Image.open(tmp_path / "y.png").size == (16, 16)


@pytest.mark.parametrize("args,needle", [
    (["simulate", "missing.png", "--out", "y.png"], "no such image"),
    (["psf", "--coefficients", "{nan}", "--out", "o"], "not finite"),
    (["psf", "--coefficients", "{bad_index}", "--out", "o"], "not an integer"),
    (["psf", "--coefficients", "{missing}", "--out", "o"], "cannot read"),
    (["psf", "--set", "wavelengths_m=[-5e-7]", "--out", "o"], "wavelengths_m must be positive"),
    (["psf", "--set", "object_distance_m=-1", "--out", "o"], "object_distance_m must be positive"),
    (["psf", "--set", "pupil_samples=16", "--out", "o"], "raise pupil_samples"),
    (["psf", "--preset", "nope", "--out", "o"], "unknown camera preset"),
    (["psf", "--set", "bogus=1", "--out", "o"], "unknown field"),
])
def test_bad_input_is_one_line(tmp_path, args, needle):
    files = {"{nan}": '{"coefficients": {"4": NaN}}', "{bad_index}": '{"coefficients": {"x": 1}}'}
    resolved = []
    for a in args:
        if a in files:
            (tmp_path / "c.json").write_text(files[a])
            a = str(tmp_path / "c.json")
        elif a == "{missing}":
            a = str(tmp_path / "none.json")
        elif a in ("o", "y.png"):
            a = str(tmp_path / a)
        resolved.append(a)
    r = run(*resolved)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("optics: error:"), r.stderr
    assert needle in lines[0]


def test_help_and_other_tools():
    assert "psf" in run("--help").stdout
    for tool in ("deid", "hardware"):
        r = subprocess.run([sys.executable, "-c", f"from {tool}.cli import main; main(['info'])"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_demo_cameras(tmp_path):
    assert main(["demo", "--cameras-only", "--out", str(tmp_path)]) == 0
    for name in ("lopez2024", "lopez2024-example-mask", "lr16"):
        assert (tmp_path / "cameras" / name / "psf.png").stat().st_size > 0


def test_field_help_reads_the_fields_section():
    """`--help` explains config fields from the dataclass docstring's ``Fields:`` section."""
    import argparse
    import dataclasses

    from optics.kit.cli import add_dataclass_args, field_help

    @dataclasses.dataclass(frozen=True)
    class Demo:
        """Settings.

        Fields:
            alpha: the first weight,
                continued here.
            balances: comma-separated floats.
        """

        alpha: float = 1.0
        balances: tuple[float, ...] = (0.1, 1.0)
        other: int = 3

    assert field_help(Demo) == {"alpha": "the first weight, continued here.",
                                "balances": "comma-separated floats."}
    p = argparse.ArgumentParser()
    add_dataclass_args(p, Demo)
    text = p.format_help()
    assert "the first weight, continued here. (default 1.0)" in text
    assert "(default 0.1,1.0)" in text and "(default 3)" in text
    assert p.parse_args(["--balances", "0.5,2"]).cfg_balances == (0.5, 2.0)
    with pytest.raises(SystemExit):
        p.parse_args(["--balances", "a,b"])
