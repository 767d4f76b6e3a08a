"""The kit: PRIVLENS_HOME, confined names, the one resize policy, progress off a terminal."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from optics.kit.paths import confined_name, confined_path, home_subdir, privlens_home
from optics.kit.progress import LineProgress, progress_bar
from optics.kit.resize import resize_to

REFUSED = {
    "separator": "../escape",
    "slash": "a/b",
    "backslash": "a\\b",
    "dotdot": "..",
    "dot": ".",
    "absolute": "/tmp/escape",
    "drive": "C:escape",
    "empty": "",
    "blank": "   ",
    "newline": "bad\nname",
    "nul": "bad\x00name",
    "escape": "bad\x1b[2Jname",
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_confined_name_refuses(kind):
    with pytest.raises(ValueError, match="session name") as e:
        confined_name(REFUSED[kind], "session")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["demo", "run-01", "2026.12.07_a", "é-ü", "..dots..x"])
def test_confined_name_accepts(name, tmp_path):
    assert confined_name(name) == name
    assert confined_path(tmp_path, name, ".h5") == tmp_path / f"{name}.h5"


def test_privlens_home(monkeypatch, tmp_path):
    monkeypatch.setenv("PRIVLENS_HOME", "~/somewhere")
    assert privlens_home() == Path(os.path.expanduser("~/somewhere"))
    monkeypatch.delenv("PRIVLENS_HOME")
    assert privlens_home() == privlens_home().expanduser()
    assert str(privlens_home()).endswith(os.path.join(".cache", "privlens"))
    monkeypatch.setenv("PRIVLENS_HOME", str(tmp_path))
    assert home_subdir("models") == tmp_path / "models"


def test_resize_policy():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    assert resize_to(x, 16) is x
    down = resize_to(x, 8)
    torch.testing.assert_close(down, F.avg_pool2d(x, 2))  # area: the mean of each footprint
    up = resize_to(x, (32, 40))
    assert up.shape == (2, 3, 32, 40)
    ref = F.interpolate(x, size=(32, 40), mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(up, ref)
    assert up.min() >= 0 and up.max() <= 1  # bicubic overshoot is clamped to the image range
    x.requires_grad_(True)
    resize_to(x, 32).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_progress_off_terminal_prints_sparse_lines():
    out = io.StringIO()
    bar = progress_bar(total=400, desc="stage 1", unit="step", stream=out)
    assert isinstance(bar, LineProgress)
    for _ in range(400):
        bar.update(1)
        bar.set_postfix(loss="0.1")
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert 9 <= len(lines) <= 11, lines  # one line per 10 percent, and the last
    assert lines[-1].startswith("stage 1: 100% 400/400 step")
    assert "[loss=0.1]" in lines[-1]


def test_progress_iterable_and_disable():
    out = io.StringIO()
    assert list(progress_bar(range(5), desc="x", stream=out)) == list(range(5))
    assert out.getvalue().splitlines()[-1].startswith("x: 100% 5/5")
    quiet = io.StringIO()
    for _ in progress_bar(range(50), disable=True, stream=quiet):
        pass
    assert quiet.getvalue() == ""
