"""Tests for optics.imaging (image formation: convolution, noise, response, ADC, binning)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve

from optics.imaging import (
    SensorModel,
    add_noise,
    apply_response,
    bin_sensor,
    convolve,
    form_image,
    quantize,
)

# --------------------------------------------------------------------------------------------
# numpy references
# --------------------------------------------------------------------------------------------


def _direct_linear(x: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """y[i,j] = sum_{u,v} psf[u,v] x[i-(u-Kh//2), j-(v-Kw//2)], zero outside (one 2-D image)."""
    h, w = x.shape
    kh, kw = psf.shape
    y = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for u in range(kh):
                for v in range(kw):
                    a, b = i - (u - kh // 2), j - (v - kw // 2)
                    if 0 <= a < h and 0 <= b < w:
                        y[i, j] += psf[u, v] * x[a, b]
    return y


def _direct_circular(x: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Same sum with periodic indices (one 2-D image)."""
    h, w = x.shape
    kh, kw = psf.shape
    y = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for u in range(kh):
                for v in range(kw):
                    y[i, j] += psf[u, v] * x[(i - (u - kh // 2)) % h, (j - (v - kw // 2)) % w]
    return y


def _rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=dtype)


# --------------------------------------------------------------------------------------------
# convolve
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 7, 15, 25, 41])
def test_linear_matches_scipy_same_odd_k(k):
    x = _rand(2, 3, 20, 17, seed=k)
    psf = _rand(3, k, k, seed=100 + k)
    y = convolve(x, psf, boundary="linear")
    assert y.shape == x.shape and y.dtype == torch.float64
    xn, pn = x.numpy(), psf.numpy()
    for b in range(2):
        for c in range(3):
            ref = fftconvolve(xn[b, c], pn[c], mode="same")
            np.testing.assert_allclose(y[b, c].numpy(), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("kh", "kw"), [(2, 2), (4, 4), (6, 3), (10, 8), (12, 12)])
def test_linear_even_k_matches_direct_sum(kh, kw):
    x = _rand(1, 7, 6, seed=kh)
    psf = _rand(1, kh, kw, seed=kw + 50)
    y = convolve(x, psf, boundary="linear")
    ref = _direct_linear(x[0].numpy(), psf[0].numpy())
    np.testing.assert_allclose(y[0].numpy(), ref, rtol=0, atol=1e-12)
    if kh == kw:  # the even-K centre differs from scipy's "same" crop by one pixel
        sp = fftconvolve(x[0].numpy(), psf[0].numpy(), mode="same")
        assert not np.allclose(y[0].numpy(), sp)


@pytest.mark.parametrize(("kh", "kw"), [(3, 3), (4, 4), (5, 2), (9, 9), (13, 11)])
def test_circular_matches_direct_sum(kh, kw):
    x = _rand(2, 6, 5, seed=kh)  # kernels up to 13 > H=6 exercise the wrap-summing
    psf = _rand(2, kh, kw, seed=kw + 7)
    y = convolve(x, psf, boundary="circular")
    for c in range(2):
        ref = _direct_circular(x[c].numpy(), psf[c].numpy())
        np.testing.assert_allclose(y[c].numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("boundary", ["linear", "circular"])
@pytest.mark.parametrize("k", [1, 4, 5, 40])
def test_delta_psf_is_identity(boundary, k):
    x = _rand(2, 3, 32, 24, dtype=torch.float32)
    psf = torch.zeros(3, k, k)
    psf[:, k // 2, k // 2] = 1.0
    y = convolve(x, psf, boundary=boundary)
    assert y.dtype == torch.float32
    assert torch.allclose(y, x, rtol=0, atol=1e-6)


def test_shifted_delta_translates():
    x = _rand(1, 1, 16, 16)
    psf = torch.zeros(1, 5, 5, dtype=torch.float64)
    psf[0, 3, 4] = 1.0  # one pixel down, two right of the axis
    y = convolve(x, psf, boundary="circular")
    assert torch.allclose(y, torch.roll(x, shifts=(1, 2), dims=(-2, -1)), atol=1e-12)
    yl = convolve(x, psf, boundary="linear")
    assert torch.allclose(yl[..., 1:, 2:], x[..., :-1, :-2], atol=1e-12)
    assert torch.allclose(yl[..., :1, :], torch.zeros(1, 1, 1, 16, dtype=torch.float64))


def test_circular_conserves_energy_linear_loses_at_edges():
    x = _rand(2, 3, 24, 24)
    psf = _rand(3, 9, 9, seed=3)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    yc = convolve(x, psf, boundary="circular")
    assert torch.allclose(yc.sum(dim=(-2, -1)), x.sum(dim=(-2, -1)), rtol=1e-12)
    yl = convolve(x, psf, boundary="linear")
    assert (yl.sum(dim=(-2, -1)) < x.sum(dim=(-2, -1)) - 1e-3).all()


def test_per_image_psf_batch():
    x = _rand(3, 2, 16, 16)
    psf = _rand(3, 2, 5, 5, seed=9)
    y = convolve(x, psf)
    for b in range(3):
        yb = convolve(x[b], psf[b])
        assert torch.allclose(y[b], yb, atol=1e-12)
    # the same image with different PSFs gives different outputs
    xs = x[:1].expand(3, -1, -1, -1)
    ys = convolve(xs, psf)
    assert not torch.allclose(ys[0], ys[1])
    # a (1, C, K, K) PSF broadcasts over the batch like a (C, K, K) one
    assert torch.allclose(convolve(x, psf[:1]), convolve(x, psf[0]), atol=1e-12)


def test_unbatched_shape_and_dtype_promotion():
    x = _rand(3, 10, 12, dtype=torch.float32)
    psf = _rand(3, 4, 4)
    y = convolve(x, psf)
    assert y.shape == (3, 10, 12) and y.dtype == torch.float64


def test_half_precision_runs_in_float32():
    x = _rand(1, 1, 8, 8, dtype=torch.float32)
    psf = torch.full((1, 3, 3), 1 / 9)
    y = convolve(x.half(), psf.half())
    assert y.dtype == torch.float16
    assert torch.allclose(y.float(), convolve(x, psf), atol=2e-3)


@pytest.mark.parametrize(
    ("xs", "ps", "kw"),
    [
        ((2, 3, 8, 8), (2, 5, 5), {}),  # channel mismatch
        ((8, 8), (1, 3, 3), {}),  # x is 2-D
        ((1, 8, 8), (3, 3), {}),  # psf is 2-D
        ((2, 1, 8, 8), (3, 1, 3, 3), {}),  # psf batch mismatch
        ((1, 8, 8), (1, 3, 3), {"boundary": "reflect"}),
        ((1, 8, 8), (1, 0, 3), {}),
    ],
)
def test_convolve_bad_input(xs, ps, kw):
    with pytest.raises(ValueError):
        convolve(torch.zeros(xs), torch.zeros(ps), **kw)


@pytest.mark.parametrize(("boundary", "k"), [("linear", 3), ("linear", 4), ("circular", 7)])
def test_convolve_gradcheck(boundary, k):
    x = _rand(2, 2, 5, 6).requires_grad_()
    psf = _rand(2, 2, k, k, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: convolve(a, b, boundary=boundary), (x, psf))


# --------------------------------------------------------------------------------------------
# response, quantize, binning
# --------------------------------------------------------------------------------------------


def test_apply_response():
    x = torch.tensor([-0.5, 0.0, 1e-9, 0.25, 1.0], dtype=torch.float64, requires_grad=True)
    assert apply_response(x, "linear") is x
    y = apply_response(x, "gamma", gamma=2.0)
    assert torch.allclose(y[3:], torch.tensor([0.5, 1.0], dtype=torch.float64))
    assert y[0] == 0 and y[1] == 0
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[3].item() == pytest.approx(0.5 * 0.25**-0.5)
    with pytest.raises(ValueError):
        apply_response(x, "log")


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_quantize_levels_and_straight_through(bits):
    x = torch.linspace(-0.2, 1.2, 1001, dtype=torch.float64, requires_grad=True)
    y = quantize(x, bits)
    levels = 2**bits - 1
    codes = y.detach() * levels
    assert torch.allclose(codes, codes.round(), atol=1e-9)
    assert y.min() == 0 and y.max() == 1
    assert (torch.abs(y.detach() - x.detach().clamp(0, 1)) <= 0.5 / levels + 1e-12).all()
    y.sum().backward()
    inside = (x > 0) & (x < 1)
    assert torch.equal(x.grad[inside], torch.ones(int(inside.sum()), dtype=torch.float64))
    assert (x.grad[(x < 0) | (x > 1)] == 0).all()


def test_quantize_none_and_bad_bits():
    x = torch.rand(4)
    assert quantize(x, None) is x
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError):
            quantize(x, bad)


def test_bin_sensor_block_means():
    x = _rand(2, 3, 256, 256)
    y = bin_sensor(x, 16)
    assert y.shape == (2, 3, 16, 16)
    ref = x.reshape(2, 3, 16, 16, 16, 16).mean(dim=(3, 5))
    assert torch.allclose(y, ref, atol=1e-12)
    assert bin_sensor(x, 1) is x
    assert bin_sensor(x[0], 4).shape == (3, 64, 64)


def test_bin_sensor_errors():
    with pytest.raises(ValueError):
        bin_sensor(torch.zeros(1, 1, 20, 16), 8)
    with pytest.raises(ValueError):
        bin_sensor(torch.zeros(1, 1, 16, 16), 0)


# --------------------------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------------------------


def test_read_noise_std():
    x = torch.full((1, 1, 512, 512), 0.5)
    g = torch.Generator().manual_seed(1)
    y = add_noise(x, read_noise_std=0.02, generator=g)
    assert abs(y.std().item() / 0.02 - 1) < 0.03
    assert abs(y.mean().item() - 0.5) < 1e-3
    assert torch.equal(add_noise(x), x)


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("level", [0.05, 0.6])
def test_shot_noise_variance(exact, level):
    photons = 1000.0
    x = torch.full((512, 512), level, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    y = add_noise(x, photons=photons, generator=g, exact_poisson=exact)
    assert abs(y.var().item() / (level / photons) - 1) < 0.05
    assert abs(y.mean().item() - level) < 3 * (level / photons / x.numel()) ** 0.5 + 1e-12


def test_noise_reproducible_with_generator():
    x = _rand(2, 3, 32, 32, dtype=torch.float32)
    for exact in (False, True):
        kw = {"read_noise_std": 0.01, "photons": 500.0, "exact_poisson": exact}
        a = add_noise(x, generator=torch.Generator().manual_seed(7), **kw)
        b = add_noise(x, generator=torch.Generator().manual_seed(7), **kw)
        c = add_noise(x, generator=torch.Generator().manual_seed(8), **kw)
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
        assert a.dtype == x.dtype


def test_exact_poisson_integer_counts_and_straight_through():
    photons = 50.0
    x = _rand(64, 64, dtype=torch.float64).requires_grad_()
    y = add_noise(
        x, photons=photons, exact_poisson=True, generator=torch.Generator().manual_seed(3)
    )
    counts = y.detach() * photons
    assert torch.allclose(counts, counts.round(), atol=1e-9)
    assert (counts >= 0).all()
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_gaussian_shot_noise_gradient_finite_at_zero():
    x = torch.tensor([0.0, 1e-14, 0.5], dtype=torch.float64, requires_grad=True)
    y = add_noise(x, photons=100.0, generator=torch.Generator().manual_seed(0))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_add_noise_bad_args():
    x = torch.zeros(4)
    with pytest.raises(ValueError):
        add_noise(x, read_noise_std=-0.1)
    with pytest.raises(ValueError):
        add_noise(x, photons=0.0)


# --------------------------------------------------------------------------------------------
# SensorModel / form_image
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"boundary": "reflect"},
        {"response": "log"},
        {"gamma": 0.0},
        {"read_noise_std": -0.01},
        {"photons": 0.0},
        {"photons": -5.0},
        {"bit_depth": 0},
        {"binning": 0},
        {"binning": 2.5},
    ],
)
def test_sensor_model_validation(kw):
    with pytest.raises(ValueError):
        SensorModel(**kw)


def test_sensor_model_frozen():
    s = SensorModel()
    with pytest.raises(AttributeError):
        s.binning = 2  # type: ignore[misc]


def test_form_image_noiseless_pipeline():
    x = _rand(2, 3, 32, 32, dtype=torch.float32)
    psf = _rand(3, 5, 5, seed=4, dtype=torch.float32)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    s = SensorModel(response="gamma", gamma=2.2, bit_depth=8, binning=2, photons=100.0)
    y = form_image(x, psf, s, noise=False)
    ref = quantize(apply_response(bin_sensor(convolve(x, psf), 2), "gamma", 2.2), 8)
    assert y.shape == (2, 3, 16, 16)
    assert torch.equal(y, ref)


def test_form_image_noise_and_gradients():
    x = torch.full((1, 1, 256, 256), 0.4, dtype=torch.float64, requires_grad=True)
    psf = torch.full((1, 3, 3), 1 / 9, dtype=torch.float64, requires_grad=True)
    s = SensorModel(boundary="circular", photons=1000.0, read_noise_std=0.01, binning=2)
    y = form_image(x, psf, s, generator=torch.Generator().manual_seed(5))
    # shot noise on the 2x2-binned signal uses 4x the photons; read noise once per pixel
    expected_var = 0.4 / 4000.0 + 0.01**2
    assert abs(y.var().item() / expected_var - 1) < 0.05
    y.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert psf.grad is not None and torch.isfinite(psf.grad).all()


def test_replicate_boundary_keeps_flat_fields_flat_and_matches_edge_padding():
    g = torch.Generator().manual_seed(0)
    psf = torch.rand(3, 9, 9, generator=g, dtype=torch.float64)
    psf = psf / psf.sum(dim=(-1, -2), keepdim=True)
    flat = torch.full((1, 3, 12, 12), 0.7, dtype=torch.float64)
    torch.testing.assert_close(convolve(flat, psf, "replicate"), flat)
    x = torch.rand(2, 3, 12, 16, generator=g, dtype=torch.float64)
    from scipy.signal import convolve2d

    ref = np.stack([[convolve2d(np.pad(x[b, c].numpy(), 4, mode="edge"),
                                             psf[c].numpy(), mode="valid")
                     for c in range(3)] for b in range(2)])
    np.testing.assert_allclose(convolve(x, psf, "replicate").numpy(), ref, atol=1e-12)
    # a kernel larger than the image
    big = torch.ones(3, 31, 31, dtype=torch.float64) / 31**2
    torch.testing.assert_close(convolve(flat, big, "replicate"), flat)
