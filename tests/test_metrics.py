"""Tests for optics.metrics (Strehl, encircled energy, MTF, FWHM, summary) and optics.figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from optics import figures
from optics.camera import Camera
from optics.metrics import (
    diffraction_limited_config,
    diffraction_limited_psf,
    encircled_energy,
    fwhm_px,
    in_focus_object_distance_m,
    mtf,
    psf_centroid,
    psf_summary,
    radial_profile,
    strehl_ratio,
)
from optics.presets import get_preset


def _in_focus(cfg):
    return cfg.replace(object_distance_m=in_focus_object_distance_m(cfg))


def _mono_550(pitch_m: float, size_px: int):
    """Single-channel, achromatic, in-focus lopez2024 geometry with a fine pixel (128 pupil
    samples are plenty without defocus)."""
    cfg = get_preset("lopez2024").replace(wavelengths_m=(550e-9,), chromatic=False,
                                          pixel_pitch_m=pitch_m, psf_size_px=size_px,
                                          pupil_samples=128, n_modes=11)
    return _in_focus(cfg)


def _gaussian(k: int, sigma: float, cy: float, cx: float) -> torch.Tensor:
    i = torch.arange(k, dtype=torch.float64)
    g = torch.exp(-((i[:, None] - cy) ** 2 + (i[None, :] - cx) ** 2) / (2 * sigma**2))
    return g / g.sum()


@pytest.fixture(scope="module")
def lopez_reference():
    return diffraction_limited_psf(get_preset("lopez2024"))


@pytest.fixture(scope="module")
def lopez_coma_psf():
    """lopez2024 with the object in focus (5 m, not the preset's 0.75 m) and 0.1 um RMS coma;
    chromatic, so R and B also carry a little defocus."""
    with torch.no_grad():
        return Camera(_in_focus(get_preset("lopez2024")), {8: 0.1}).psf()


# --------------------------------------------------------------------------------------------
# in-focus reference
# --------------------------------------------------------------------------------------------


def test_in_focus_object_distance_of_presets():
    assert in_focus_object_distance_m(get_preset("lopez2024")) == pytest.approx(5.0, rel=1e-9)
    assert in_focus_object_distance_m(get_preset("lr16")) == pytest.approx(0.75, rel=1e-9)
    assert in_focus_object_distance_m(get_preset("prototype-4f")) == math.inf
    inside = get_preset("prototype-4f").replace(sensor_distance_m=0.04, object_distance_m=2.0)
    with pytest.raises(ValueError):
        in_focus_object_distance_m(inside)
    twin = diffraction_limited_config(inside)  # focuses the lens on the object instead
    v = 1 / twin.object_distance_m - 1 / twin.focal_length_m + 1 / twin.sensor_distance_m
    assert abs(v) < 1e-9


def test_reference_is_achromatic_in_focus_airy(lopez_reference):
    cfg = get_preset("lopez2024")
    twin = diffraction_limited_config(cfg)
    assert not twin.chromatic and twin.object_distance_m == pytest.approx(5.0)
    assert lopez_reference.shape == (3, cfg.psf_size_px, cfg.psf_size_px)
    assert not lopez_reference.requires_grad
    torch.testing.assert_close(lopez_reference.sum(dim=(-2, -1)).double(),
                               torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-5)
    k = cfg.psf_size_px
    peak = lopez_reference.flatten(1).argmax(dim=1)
    assert peak.tolist() == [(k // 2) * k + k // 2] * 3  # Airy peak on the optical axis
    # a Camera or its config gives the same reference, whatever the coefficients
    lr16 = get_preset("lr16")
    torch.testing.assert_close(diffraction_limited_psf(Camera(lr16, {4: 0.3})),
                               diffraction_limited_psf(lr16))


# --------------------------------------------------------------------------------------------
# Strehl ratio
# --------------------------------------------------------------------------------------------


def test_strehl_of_reference_is_one(lopez_reference):
    s = strehl_ratio(lopez_reference, lopez_reference)
    torch.testing.assert_close(s, torch.ones(3, dtype=torch.float64))
    # scale-free, numpy in -> numpy out
    s_np = strehl_ratio(3.0 * lopez_reference.numpy(), lopez_reference.numpy())
    assert isinstance(s_np, np.ndarray) and np.allclose(s_np, 1.0)
    # an in-focus, achromatic camera with no phase plate *is* the reference
    twin = Camera(diffraction_limited_config(get_preset("lopez2024")))
    with torch.no_grad():
        torch.testing.assert_close(strehl_ratio(twin.psf(), lopez_reference),
                                   torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError):
        strehl_ratio(lopez_reference, lopez_reference[:, :64, :64])


def test_strehl_drops_with_coma_and_defocus(lopez_reference, lopez_coma_psf):
    with torch.no_grad():
        defocused = Camera(get_preset("lopez2024")).psf()  # the face at 0.75 m, not 5 m
    s = strehl_ratio(lopez_coma_psf, lopez_reference)  # Marechal: 0.13 (B) .. 0.38 (R)
    assert s.shape == (3,)
    assert bool((s < 0.8).all()) and bool((s > 0.05).all()), s
    assert bool((strehl_ratio(defocused, lopez_reference) < 0.05).all())


@pytest.mark.parametrize("noll", [4, 6, 8, 11])
def test_strehl_matches_marechal_for_small_aberrations(noll):
    cfg = _mono_550(pitch_m=1e-6, size_px=64)
    sigma_um = 0.03
    with torch.no_grad():
        psf = Camera(cfg, {noll: sigma_um}).psf()
    s = float(strehl_ratio(psf, diffraction_limited_psf(cfg))[0])
    marechal = math.exp(-((2 * math.pi * sigma_um / 0.55) ** 2))  # 0.889
    assert s == pytest.approx(marechal, rel=0.1)
    assert s < 0.97


# --------------------------------------------------------------------------------------------
# encircled energy
# --------------------------------------------------------------------------------------------


def test_encircled_energy_of_a_delta():
    d = torch.zeros(1, 9, 9, dtype=torch.float64)
    d[0, 4, 4] = 1.0
    ee = encircled_energy(d, [0.0, 0.25, 0.5, 0.71, 1.0, 3.0, 100.0])
    assert ee.shape == (1, 7)
    expected = [0.0, math.pi / 16, math.pi / 4, 1.0, 1.0, 1.0, 1.0]
    torch.testing.assert_close(ee[0], torch.tensor(expected, dtype=torch.float64))
    # just under sqrt(2)/2 the pixel's corners are still outside
    assert float(encircled_energy(d, 0.70)[0, 0]) < 1.0


def test_encircled_energy_is_exact_area_for_a_flat_psf():
    k = 32
    flat = torch.ones(2, k, k, dtype=torch.float64)
    radii = [0.3, 1.7, 5.5, 15.5]  # circles inside the window around pixel (16, 16)
    expected = torch.tensor([math.pi * r**2 / k**2 for r in radii], dtype=torch.float64)
    ee = encircled_energy(flat, radii)
    torch.testing.assert_close(ee, expected.expand(2, -1), rtol=1e-12, atol=1e-12)


def test_encircled_energy_monotone_smooth_and_complete(lopez_reference, lopez_coma_psf):
    psf = lopez_coma_psf
    radii = torch.linspace(0, 120, 241)  # 0.5 px steps, past the corners of a 160 px window
    ee = encircled_energy(psf, radii)
    assert ee.shape == (3, 241)
    step = ee.diff(dim=-1)
    assert bool((step >= -1e-12).all())
    # continuous in r: an annulus can hold at most (its area) x (the densest pixel)
    annulus = math.pi * (radii[1:] ** 2 - radii[:-1] ** 2).double()
    density = psf.double() / psf.double().sum(dim=(-2, -1), keepdim=True)
    bound = density.amax(dim=(-2, -1))[:, None] * annulus
    assert bool((step <= bound + 1e-12).all())
    torch.testing.assert_close(ee[:, -1], torch.ones(3, dtype=torch.float64))  # covers window
    # most of an Airy pattern's energy is within a few lambda F# (~1.9 px here)
    assert bool((encircled_energy(lopez_reference, 20.0)[:, 0] > 0.95).all())
    ee_np = encircled_energy(psf.numpy(), (1, 2, 4))
    assert isinstance(ee_np, np.ndarray)
    np.testing.assert_allclose(ee_np, ee[:, [2, 4, 8]].numpy(), atol=1e-6)


def test_encircled_energy_about_the_centroid():
    k = 33
    centred = _gaussian(k, 1.5, 16, 16)
    shifted = _gaussian(k, 1.5, 9, 22)
    both = torch.stack([centred, shifted])
    c = psf_centroid(both)
    torch.testing.assert_close(c, torch.tensor([[16.0, 16.0], [9.0, 22.0]], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    radii = (1, 2, 4)
    ee_c = encircled_energy(both, radii, centre="centroid")
    torch.testing.assert_close(ee_c[1], ee_c[0], atol=1e-6, rtol=0)
    ee_a = encircled_energy(both, radii, centre="axis")
    torch.testing.assert_close(ee_a[0], ee_c[0], atol=1e-6, rtol=0)
    assert float(ee_a[1, -1]) < 1e-3  # the shifted spot is far from the axis
    # continuous analytic check: a round Gaussian encloses 1 - exp(-r^2 / 2 sigma^2)
    g = torch.tensor([1 - math.exp(-(r**2) / (2 * 1.5**2)) for r in radii], dtype=torch.float64)
    torch.testing.assert_close(ee_c[0], g, atol=0.02, rtol=0)
    with pytest.raises(ValueError):
        encircled_energy(both, radii, centre="peak")
    with pytest.raises(ValueError):
        encircled_energy(both, (-1.0,))


# --------------------------------------------------------------------------------------------
# MTF, radial profile, FWHM
# --------------------------------------------------------------------------------------------


def test_mtf_dc_and_delta():
    g = torch.Generator().manual_seed(0)
    psf = torch.rand(2, 16, 16, generator=g, dtype=torch.float64)
    m = mtf(psf)
    assert m.shape == (2, 16, 16)
    torch.testing.assert_close(m[:, 8, 8], torch.ones(2, dtype=torch.float64))
    assert float(m.max()) <= 1.0 + 1e-12
    d = np.zeros((15, 15))
    d[3, 11] = 2.0  # a delta anywhere: flat MTF (odd size: DC at 7)
    md = mtf(d)
    assert isinstance(md, np.ndarray)
    np.testing.assert_allclose(md, 1.0, atol=1e-12)


def test_airy_mtf_matches_theory_and_vanishes_beyond_cutoff():
    pitch, k = 2e-6, 128  # Nyquist 250 cycles/mm, cutoff 2a/(lambda z) = 145 cycles/mm
    cfg = _mono_550(pitch_m=pitch, size_px=k)
    with torch.no_grad():
        psf = Camera(cfg).psf()
    radii, prof = radial_profile(mtf(psf))
    freq = radii.numpy() / (k * pitch)  # cycles/m
    cutoff = 2 * cfg.aperture_radius_m / (550e-9 * cfg.sensor_distance_m)
    s = freq / cutoff
    p = prof[0].numpy()
    assert p[0] == pytest.approx(1.0)
    beyond = s > 1.05
    assert beyond.sum() > 10
    assert np.nanmax(p[beyond]) < 1e-3
    # inside the pass band: the circular-pupil MTF times the pixel's sinc
    band = (s > 0.05) & (s < 0.95)
    sb = s[band]
    theory = 2 / np.pi * (np.arccos(sb) - sb * np.sqrt(1 - sb**2)) * np.sinc(pitch * freq[band])
    np.testing.assert_allclose(p[band], theory, atol=0.02)


def test_radial_profile():
    k = 21
    i = torch.arange(k, dtype=torch.float64) - k // 2
    dist = torch.hypot(i[:, None], i[None, :])
    radii, prof = radial_profile(torch.stack([dist, torch.full_like(dist, 3.0)]))
    assert radii.shape == prof.shape[-1:] and prof.shape[0] == 2
    assert radii.tolist() == list(range(len(radii)))
    assert float(prof[0, 0]) == 0.0
    assert float((prof[0, 1:] - radii[1:]).abs().max()) < 0.3  # mean distance in each ring
    torch.testing.assert_close(prof[1], torch.full_like(prof[1], 3.0))
    r5, p5 = radial_profile(dist.numpy(), centre=(0.0, 0.0), nbins=5)
    assert isinstance(p5, np.ndarray) and p5.shape == (5,) and p5[0] == pytest.approx(10 * 2**0.5)


def test_fwhm_of_a_gaussian_and_a_delta():
    sigma = 3.0
    g = _gaussian(64, sigma, 32, 32)
    assert float(fwhm_px(g)) == pytest.approx(2 * math.sqrt(2 * math.log(2)) * sigma, rel=0.05)
    d = torch.zeros(8, 8)
    d[4, 4] = 1
    assert float(fwhm_px(d)) == pytest.approx(2 / math.sqrt(math.pi))


def test_psf_summary_is_json_and_consistent():
    cam = Camera(get_preset("lr16"))  # in-focus lens: diffraction limited
    summary = psf_summary(cam)
    back = json.loads(json.dumps(summary, allow_nan=False))
    assert back == summary
    assert summary["camera"] == "lr16"
    assert summary["coefficients_um"] == {}
    assert list(summary["channels"]) == ["640nm", "550nm", "440nm"]
    for ch in summary["channels"].values():
        assert set(ch) >= {"strehl", "ee_1px", "ee_2px", "ee_4px", "fwhm_px"}
        assert all(type(v) is float for v in ch.values())
        assert ch["strehl"] == pytest.approx(1.0)
        assert 0 < ch["ee_1px"] < ch["ee_2px"] < ch["ee_4px"] <= 1
    cfg = get_preset("lr16").replace(n_modes=8)
    aberrated = psf_summary(Camera(cfg, {8: 0.1}))
    assert aberrated["coefficients_um"] == {"8": pytest.approx(0.1)}
    assert all(ch["strehl"] < 0.9 for ch in aberrated["channels"].values())


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def _is_png(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_figures_write_pngs(tmp_path):
    cfg = get_preset("lr16").replace(n_modes=8)
    cam = Camera(cfg, {4: 0.2, 8: -0.1})
    with torch.no_grad():
        psf = cam.psf()
        opd = cam.opd_m()
        x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        y = cam.forward(torch.nn.functional.interpolate(x, size=256), noise=False)
    labels = ["640 nm", "550 nm", "440 nm"]
    outputs = [
        figures.plot_phase_map(opd, cam.aperture, 550e-9, tmp_path / "phase.png", title="Z4+Z8"),
        figures.plot_psf(psf, cfg.pixel_pitch_m, tmp_path / "psf.png", labels=labels),
        figures.plot_psf(psf[1].numpy(), cfg.pixel_pitch_m, tmp_path / "psf_mono.png"),
        figures.plot_mtf(psf, cfg.pixel_pitch_m, tmp_path / "sub" / "mtf.png", labels=labels),
        figures.plot_image_pair(x[0], y[0], tmp_path / "pair.png"),
        figures.plot_image_pair(x[0].permute(1, 2, 0).numpy(), y[0, :1], tmp_path / "pair2.png",
                                titles=("a", "b")),
        figures.plot_coefficients(cam.coefficients_dict(), tmp_path / "coeffs.png"),
        figures.plot_coefficients({"11": 0.3, "5": -0.1}, tmp_path / "coeffs_json.png"),
        figures.plot_coefficients({}, tmp_path / "coeffs_empty.png"),
    ]
    for out in outputs:
        assert out.exists() and out.stat().st_size > 2000, out
        assert _is_png(out)
    with pytest.raises(ValueError):
        figures.plot_psf(psf, cfg.pixel_pitch_m, tmp_path / "bad.png", labels=["one"])
