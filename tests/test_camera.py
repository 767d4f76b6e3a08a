"""Physical camera model: presets, consistency with the Fraunhofer oracle, gradients."""

import math

import numpy as np
import pytest
import torch

from optics.camera import Camera, CameraConfig, best_focus_z4_um, defocus_target_psf
from optics.kit.config import load_config, save_config
from optics.materials import refractive_index
from optics.presets import PRESETS, get_preset
from optics.propagation import SamplingError
from optics.psf import circular_aperture, fraunhofer_psf, sensor_psf
from optics.zernike import compose_opd, zernike_basis


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset(name, tmp_path):
    cfg = get_preset(name)
    cam = Camera(cfg)
    cam.validate()
    h = cam.psf()
    k = cfg.psf_size_px
    assert h.shape == (len(cfg.wavelengths_m), k, k)
    np.testing.assert_allclose(h.sum(dim=(-1, -2)).detach().numpy(), 1.0, atol=1e-5)
    assert (h >= 0).all()
    size = cfg.image_size_px
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    y1 = cam(x, generator=torch.Generator().manual_seed(1))
    y2 = cam(x, generator=torch.Generator().manual_seed(1))
    assert y1.shape == (2, 3, cfg.output_size_px, cfg.output_size_px)
    assert torch.equal(y1, y2)
    # config round trip through YAML
    assert load_config(CameraConfig, save_config(cfg, tmp_path / "cam.yaml")) == cfg


def test_lr16_is_16x16():
    cam = Camera(get_preset("lr16"))
    assert cam(torch.rand(1, 3, 256, 256)).shape == (1, 3, 16, 16)


def test_in_focus_sensor_psf_equals_fraunhofer_oracle():
    """At focus, with the sensor sampled on the FFT grid, the Fresnel model is poppy's."""
    n, os_, lam, a, f = 64, 2, 550e-9, 2e-3, 0.05
    c = np.random.default_rng(5).normal(0, 60e-9, 15)
    basis = zernike_basis(15, n)
    opd = compose_opd(torch.tensor(c), basis)
    pitch = lam * f / (n * (2 * a / n) * os_)
    ours = sensor_psf(opd, aperture=circular_aperture(n), wavelength_m=[lam], aperture_radius_m=a,
                      focal_length_m=[f], sensor_distance_m=f, object_distance_m=math.inf,
                      pixel_pitch_m=pitch, psf_size=n * os_, pixel_oversample=1)[0]
    ref = fraunhofer_psf(c, lam, 2 * a, n, os_)
    assert np.abs(ours.numpy() - ref).max() / ref.max() < 1e-12


def small_config(**kw):
    base = dict(wavelengths_m=(600e-9, 450e-9), pupil_samples=16, psf_size_px=8,
                pixel_oversample=1, pixel_pitch_m=8e-6, n_modes=10, image_size_px=16,
                object_distance_m=5.0)
    base.update(kw)
    return get_preset("lopez2024").replace(**base)


def test_gradcheck_wrt_coefficients():
    cam = Camera(small_config(), {4: 0.05, 8: 0.02}).double()
    w = torch.rand(2, 8, 8, dtype=torch.float64)

    beta = (torch.randn(7, dtype=torch.float64) * 0.02).requires_grad_()

    def g(b):
        full = cam.frozen_um.index_put((cam.trainable_index,), b) * 1e-6
        opd = compose_opd(full, cam.basis)
        return (sensor_psf(opd, aperture=cam.aperture, wavelength_m=cam.wavelengths_m,
                           aperture_radius_m=cam.config.aperture_radius_m,
                           focal_length_m=cam.focal_lengths_m, sensor_distance_m=0.05,
                           object_distance_m=5.0, pixel_pitch_m=8e-6, psf_size=8,
                           pixel_oversample=1) * w).sum(dim=(-1, -2))

    assert torch.autograd.gradcheck(g, (beta,))
    # and the module path gives the same gradient as the functional path
    cam.trainable_um.data = beta.detach().clone()
    cam.zero_grad()
    (cam.psf() * w).sum().backward()
    b2 = beta.detach().clone().requires_grad_()
    g(b2).sum().backward()
    torch.testing.assert_close(cam.trainable_um.grad, b2.grad)


def test_gradcheck_wrt_object_distance():
    cam = Camera(small_config(), {6: 0.05}).double()
    w = torch.rand(2, 8, 8, dtype=torch.float64)
    opd = cam.opd_m().detach()

    def g(d):
        return (sensor_psf(opd, aperture=cam.aperture, wavelength_m=cam.wavelengths_m,
                           aperture_radius_m=cam.config.aperture_radius_m,
                           focal_length_m=cam.focal_lengths_m, sensor_distance_m=0.05,
                           object_distance_m=d, pixel_pitch_m=8e-6, psf_size=8,
                           pixel_oversample=1) * w).sum(dim=(-1, -2))

    d = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(g, (d,))
    cam_d = Camera(small_config(learn_object_distance=True))
    cam_d.psf().pow(2).sum().backward()
    assert cam_d.object_distance_m.grad is not None and cam_d.object_distance_m.grad != 0


def test_trainable_modes_and_frozen_ptt():
    cam = Camera(small_config(trainable_modes=(1, 2, 4, 8)), {3: 0.2})
    assert cam.config.trainable == (4, 8)
    assert cam.trainable_um.shape == (2,)
    cam.psf().pow(2).sum().backward()
    assert (cam.trainable_um.grad != 0).all()
    full = cam.coefficients_um()
    assert float(full[2].detach()) == pytest.approx(0.2)
    free = Camera(small_config(freeze_piston_tip_tilt=False))
    assert free.config.trainable == tuple(range(1, 11))


def test_chromatic_focal_shift():
    cfg = get_preset("lopez2024")
    f_r, f_g, f_b = cfg.focal_lengths_m
    assert f_b < f_g < f_r and f_g == pytest.approx(cfg.focal_length_m)
    assert refractive_index(587.6e-9) == pytest.approx(1.4585, abs=2e-4)  # fused silica n_d
    # in focus for green: green is sharper than blue
    in_focus_m = 1 / (1 / cfg.focal_length_m - 1 / cfg.sensor_distance_m)
    focused = cfg.replace(object_distance_m=in_focus_m)
    h = Camera(focused).psf().detach()
    assert h[1].max() > h[2].max()
    achro = Camera(focused.replace(chromatic=False)).psf().detach()
    assert achro[2].max() > h[2].max()


def test_defocus_target():
    cfg = small_config(pupil_samples=64, psf_size_px=32)
    peaks = [float(defocus_target_psf(cfg, d)[0].max()) for d in (0.0, 0.2, 0.5)]
    assert peaks[0] > peaks[1] > peaks[2]
    torch.testing.assert_close(defocus_target_psf(cfg, 0.0), Camera(cfg).psf().detach())


def test_best_focus_z4_refocuses_the_published_camera():
    """lopez2024 is focused at 5 m and sees faces at 0.75 m: about 2.27 um peak-to-valley of
    defocus OPD (a^2/2 (1/d - 1/s_i)), cancelled by Z4 = -0.654 um; the green PSF's peak is
    highest there (a scan in 0.02 um steps), and the in-focus bench needs no Z4."""
    cfg = get_preset("lopez2024")
    f, a = cfg.focal_length_m, cfg.aperture_radius_m
    inv_si = 1 / f - 1 / 0.75
    expected = -(a * a / 2) * (1 / 0.05 - inv_si) / (2 * math.sqrt(3)) * 1e6
    assert best_focus_z4_um(cfg) == pytest.approx(expected, rel=1e-12)
    assert best_focus_z4_um(cfg) == pytest.approx(-0.654, abs=2e-3)
    assert best_focus_z4_um(get_preset("prototype-4f")) == pytest.approx(0.0, abs=1e-12)
    small = cfg.at_image_size(64).replace(chromatic=False, wavelengths_m=(550e-9,))
    z0 = best_focus_z4_um(small)
    scan = [z0 + 0.02 * k for k in range(-5, 6)]
    peaks = [float(defocus_target_psf(small, z)[0].max()) for z in scan]
    assert max(range(len(scan)), key=peaks.__getitem__) == 5
    assert peaks[5] > 10 * float(defocus_target_psf(small, 0.0)[0].max())


def test_sampling_errors():
    cam = Camera(small_config(), {4: 50.0})
    with pytest.raises(SamplingError):
        cam.validate()
    with pytest.raises(SamplingError):
        Camera(small_config(psf_size_px=4096)).validate()


@pytest.mark.parametrize("bad", [dict(aperture_radius_m=-1.0), dict(wavelengths_m=(-5e-7,)),
                                 dict(object_distance_m=0.0), dict(trainable_modes=(99,)),
                                 dict(image_size_px=100)])
def test_bad_config(bad):
    with pytest.raises(ValueError):
        small_config(**({"sensor": get_preset("lr16").sensor} if "image_size_px" in bad else {}),
                     **bad)


def test_absolute_peak_and_captured_energy():
    """Unnormalised PSF: the in-focus peak per pixel is A p^2 / (lambda z)^2 (A the pupil area),
    and a window much larger than the PSF captures all the light."""
    cfg = small_config(pupil_samples=64, psf_size_px=64, wavelengths_m=(550e-9,),
                       pixel_pitch_m=1e-6)
    cam = Camera(cfg)
    raw = cam.psf(normalize=False).double()
    n, a = cfg.pupil_samples, cfg.aperture_radius_m
    area = float(cam.aperture.sum()) * (2 * a / n) ** 2
    lam, z = 550e-9, cfg.sensor_distance_m
    peak = area * cfg.pixel_pitch_m**2 / (lam * z) ** 2
    assert float(raw.max().detach()) == pytest.approx(peak, rel=1e-4)
    wide = Camera(cfg.replace(psf_size_px=128, pixel_pitch_m=3e-6))
    assert float(wide.captured_energy()) == pytest.approx(1.0, abs=5e-3)
    narrow = Camera(cfg.replace(psf_size_px=4))
    assert float(narrow.captured_energy()) < 0.5


def near_field_kwargs(n=128):
    """A lensless mask 10 mm from the sensor: both Fresnel forms are sampled."""
    from optics.zernike import pupil_polar_grid

    rho, _ = pupil_polar_grid(n)
    apodised = torch.exp(-((rho / 0.4) ** 2)) * (rho <= 1)  # smooth: no edge fringes
    return dict(aperture=apodised, wavelength_m=[550e-9], aperture_radius_m=0.25e-3,
                focal_length_m=[math.inf], sensor_distance_m=0.01, object_distance_m=math.inf,
                pixel_pitch_m=8e-6, psf_size=96)


def test_transfer_function_and_impulse_response_forms_agree():
    """Two independent evaluations of the same Fresnel integral, with coma (an odd mode, so a
    point reflection between them would show): measured 7e-4 of the peak."""
    kw = near_field_kwargs()
    opd = compose_opd(torch.tensor([0, 0, 0, 0.05e-6, 0, 0, 0, 0.08e-6], dtype=torch.float64),
                      zernike_basis(8, 128))
    tf = sensor_psf(opd, method="tf", **kw)
    ir = sensor_psf(opd, method="ir", pixel_oversample=8, **kw)
    assert float((tf - ir).abs().max() / ir.max()) < 2e-3
    assert float((tf - ir.flip(-1, -2)).abs().max() / ir.max()) > 0.05
    raw_tf = sensor_psf(opd, method="tf", normalize=False, **kw).sum()
    raw_ir = sensor_psf(opd, method="ir", pixel_oversample=8, normalize=False, **kw).sum()
    assert float(raw_tf) == pytest.approx(float(raw_ir), abs=1e-3)


def test_method_is_chosen_by_sampling():
    from optics.psf import sensor_propagation_method as choose

    for cfg in PRESETS.values():
        assert choose(cfg.pupil_samples, cfg.aperture_radius_m, cfg.wavelengths_m,
                      cfg.focal_lengths_m, cfg.sensor_distance_m, cfg.object_distance_m,
                      cfg.pixel_pitch_m, cfg.psf_size_px) == "ir"
    # lensless, 3 mm from the sensor: the residual curvature aliases, the transfer function
    # does not
    args = (512, 1e-3, [550e-9], [math.inf], 3e-3, math.inf, 10e-6, 128)
    assert choose(*args) == "tf"
    lensless = get_preset("lopez2024").replace(
        pupil_samples=512, aperture_radius_m=1e-3, focal_length_m=math.inf,
        sensor_distance_m=3e-3,
        object_distance_m=math.inf, pixel_pitch_m=10e-6, chromatic=False)
    cam = Camera(lensless)
    assert cam.method == "tf"
    assert cam.psf().shape == (3, lensless.psf_size_px, lensless.psf_size_px)
    with pytest.raises(SamplingError, match="no Fresnel form"):
        choose(32, 1e-3, [550e-9], [math.inf], 3e-3, math.inf, 1e-6, 128)
