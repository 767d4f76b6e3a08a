"""Zernike polynomials against poppy (independent oracle) and analytic spot checks."""

import math

import numpy as np
import poppy
import pytest
import torch

from optics.zernike import (
    compose_opd,
    decompose_opd,
    nm_to_noll,
    noll_to_nm,
    pupil_polar_grid,
    zern_name,
    zernike,
    zernike_basis,
)


def test_noll_table_matches_poppy_to_100():
    for j in range(1, 101):
        assert noll_to_nm(j) == tuple(int(v) for v in poppy.zernike.noll_indices(j)), j
        assert nm_to_noll(*noll_to_nm(j)) == j


@pytest.mark.parametrize("npix", [64, 255, 256])
def test_values_match_poppy_float64(npix):
    rho, theta = pupil_polar_grid(npix, xp=np)
    for j in range(1, 37):
        ref = poppy.zernike.zernike1(j, rho=rho, theta=theta, outside=0.0)
        ours = zernike(j, rho, theta)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12, err_msg=f"j={j}")
        t = zernike(j, torch.from_numpy(rho), torch.from_numpy(theta))
        np.testing.assert_allclose(t.numpy(), ref, rtol=0, atol=1e-12, err_msg=f"torch j={j}")


def test_spot_values_and_signs():
    # Z2 = 2x, Z3 = 2y; Z4(0) = -sqrt(3)
    x, y = 0.3, -0.2
    rho, th = math.hypot(x, y), math.atan2(y, x)
    assert float(zernike(2, np.array(rho), np.array(th))) == pytest.approx(2 * x)
    assert float(zernike(3, np.array(rho), np.array(th))) == pytest.approx(2 * y)
    assert float(zernike(4, np.array(0.0), np.array(0.0))) == pytest.approx(-math.sqrt(3))
    # odd modes: coma Y (j=7) = sqrt(8)(3 rho^3 - 2 rho) sin(theta): positive for +y at the edge
    assert float(zernike(7, np.array(1.0), np.array(math.pi / 2))) == pytest.approx(math.sqrt(8))
    assert float(zernike(7, np.array(1.0), np.array(0.0))) == pytest.approx(0.0, abs=1e-12)
    assert float(zernike(8, np.array(1.0), np.array(0.0))) == pytest.approx(math.sqrt(8))
    # trefoil Y (j=9) = sqrt(8) rho^3 sin(3 theta); trefoil X (j=10) uses cos(3 theta)
    assert float(zernike(9, np.array(1.0), np.array(math.pi / 6))) == pytest.approx(math.sqrt(8))
    assert float(zernike(10, np.array(1.0), np.array(0.0))) == pytest.approx(math.sqrt(8))
    assert zern_name(8) == "Coma X" and zern_name(11) == "Spherical"


def test_zero_outside_disk_and_unit_rms():
    basis = zernike_basis(15, 256)
    rho, _ = pupil_polar_grid(256)
    assert (basis[:, rho > 1] == 0).all()
    inside = rho <= 1
    rms = basis[:, inside].pow(2).mean(dim=1).sqrt()
    np.testing.assert_allclose(rms[1:].numpy(), 1.0, atol=3e-3)


def test_torch_batched_float32_and_differentiable():
    rho = torch.rand(4, 10, dtype=torch.float64, requires_grad=True)
    theta = torch.rand(4, 10, dtype=torch.float64) * 6.28
    torch.autograd.gradcheck(lambda r: zernike(8, r, theta), (rho,))
    z32 = zernike(12, rho.detach().float(), theta.float())
    assert z32.dtype == torch.float32 and z32.shape == (4, 10)


def test_compose_decompose_round_trip():
    basis = zernike_basis(21, 64)
    c = torch.randn(21, dtype=torch.float64)
    np.testing.assert_allclose(decompose_opd(compose_opd(c, basis), basis).numpy(), c.numpy(),
                               atol=1e-10)


@pytest.mark.parametrize("bad", [0, -3, 1.5, "4"])
def test_bad_index(bad):
    with pytest.raises((ValueError, TypeError)):
        noll_to_nm(bad)
