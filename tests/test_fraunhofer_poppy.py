"""Far-field PSF against poppy's Fraunhofer OpticalSystem (pixel for pixel)."""

import astropy.units as u
import numpy as np
import poppy
import pytest
import torch

from optics.psf import FraunhoferPSF, fraunhofer_psf

D = 0.01  # pupil diameter, metres


def poppy_psf(coefficients_m, wavelength_m, npix, oversample=2):
    osys = poppy.OpticalSystem(oversample=oversample, npix=npix, pupil_diameter=D * u.m)
    osys.add_pupil(poppy.CircularAperture(radius=D / 2 * u.m, gray_pixel=False))
    osys.add_pupil(poppy.ZernikeWFE(radius=D / 2 * u.m, coefficients=coefficients_m * u.m))
    osys.add_image()
    psf = osys.calc_psf(wavelength=wavelength_m)[0].data
    return psf / psf.sum()


def random_coefficients(seed, n=15, rms_m=60e-9):
    c = np.random.default_rng(seed).normal(0, rms_m, n)
    c[6:10] *= 2  # make sure coma and trefoil (odd modes) are strong
    return c


@pytest.mark.parametrize("npix,seed", [(64, 0), (256, 1)])
def test_matches_poppy_float64(npix, seed):
    c = random_coefficients(seed)
    for wl in (640e-9, 550e-9, 440e-9):
        ref = poppy_psf(c, wl, npix)
        ours = fraunhofer_psf(c, wl, D, npix)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() / ref.max() < 1e-12


def test_matches_poppy_complex64_multichannel():
    c = random_coefficients(2)
    wls = [640e-9, 550e-9, 440e-9]
    ours = fraunhofer_psf(torch.tensor(c, dtype=torch.float32), wls, D, 128)
    assert ours.dtype == torch.float32 and ours.shape == (3, 256, 256)
    for k, wl in enumerate(wls):
        ref = poppy_psf(c, wl, 128)
        assert np.abs(ours[k].numpy() - ref).max() / ref.max() < 1e-5


def test_coma_is_not_point_reflected():
    """Odd modes expose a flipped sign convention that defocus alone would hide."""
    c = np.zeros(8)
    c[7] = 150e-9  # coma X
    ref = poppy_psf(c, 550e-9, 64)
    ours = fraunhofer_psf(c, 550e-9, D, 64)
    flipped = ours[::-1, ::-1]
    assert np.abs(ours - ref).max() / ref.max() < 1e-12
    assert np.abs(flipped - ref).max() / ref.max() > 0.1


def test_gradcheck_wrt_coefficients():
    model = FraunhoferPSF(6, [550e-9, 440e-9], 16, 2, dtype=torch.float64)
    c_units = torch.tensor(random_coefficients(3, 6) * 1e7, requires_grad=True)  # 100 nm units
    assert torch.autograd.gradcheck(lambda x: model(x * 1e-7), (c_units,))


def test_bad_input():
    with pytest.raises(ValueError):
        fraunhofer_psf(np.zeros(4), -550e-9, D, 16)
    with pytest.raises(ValueError):
        fraunhofer_psf(np.zeros(4), 550e-9, -D, 16)
