"""Tests for optics.imaging (image formation: convolution, noise, response, ADC, binning)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve

import optics.imaging as imaging
from optics.imaging import (
    IMAGE_BOUNDARIES,
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


# --------------------------------------------------------------------------------------------
# the fast path (hand-written FFT backward, chunks, cached kernel spectra) against a reference
# --------------------------------------------------------------------------------------------


def _reference_blur(x, psf, boundary):
    """Straightforward autograd reference of ``convolve``: pad, then a per-channel
    ``conv2d`` with the flipped kernel (a correlation), batched PSFs one image at a time.

    ``y[i] = sum_u psf[u] x[i - (u - K//2)]`` needs ``K - 1 - K//2`` pixels before and
    ``K//2`` after the image; ``"replicate"`` fills exactly those with edge values.
    """
    b, c, h, w = x.shape
    kh, kw = psf.shape[-2:]
    ch, cw = kh // 2, kw // 2
    reach = (kw - 1 - cw, cw, kh - 1 - ch, ch)  # left, right, top, bottom
    if boundary == "circular":  # periodic extension by index (kernels may exceed the image)
        ih = torch.arange(-reach[2], h + reach[3]) % h
        iw = torch.arange(-reach[0], w + reach[1]) % w
        xp = x[:, :, ih[:, None], iw[None, :]]
    elif boundary == "replicate":
        xp = torch.nn.functional.pad(x, reach, mode="replicate")
    else:
        xp = torch.nn.functional.pad(x, reach)
    psfs = psf.expand(b, c, kh, kw)
    out = [torch.nn.functional.conv2d(xp[i:i + 1], psfs[i].flip(-2, -1)[:, None], groups=c)
           for i in range(b)]
    return torch.cat(out)


_CASES = [
    # boundary, (h, w), (kh, kw), psf batch: None (shared), 1 or "B"
    ("linear", (12, 10), (5, 5), None),
    ("linear", (9, 14), (4, 6), "B"),
    ("linear", (8, 8), (3, 8), 1),
    ("circular", (10, 7), (4, 4), None),
    ("circular", (6, 5), (9, 3), "B"),  # a kernel taller than the image wraps
    ("replicate", (11, 9), (5, 3), None),
    ("replicate", (10, 12), (6, 4), "B"),
    ("replicate", (7, 8), (2, 7), 1),
    ("replicate", (6, 6), (13, 10), None),  # a kernel larger than the image
]


def _case(boundary, hw, khw, pb, b=3, c=2, dtype=torch.float64, seed=0):
    x = _rand(b, c, *hw, seed=seed, dtype=dtype)
    shape = (c, *khw) if pb is None else ((b if pb == "B" else 1), c, *khw)
    return x, _rand(*shape, seed=seed + 1, dtype=dtype)


@pytest.mark.parametrize(("boundary", "hw", "khw", "pb"), _CASES)
@pytest.mark.parametrize("chunk_bytes", [None, 1])  # one chunk, or one image per chunk
def test_convolve_and_gradients_match_reference(boundary, hw, khw, pb, chunk_bytes,
                                                 monkeypatch):
    if chunk_bytes is not None:
        monkeypatch.setattr(imaging, "_CPU_CHUNK_BYTES", chunk_bytes)
    x, psf = _case(boundary, hw, khw, pb)
    x.requires_grad_()
    psf.requires_grad_()
    y = convolve(x, psf, boundary)
    ref = _reference_blur(x, psf, boundary)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
    w = _rand(*y.shape, seed=7)
    gx, gp = torch.autograd.grad((y * w).sum(), (x, psf))
    rx, rp = torch.autograd.grad((ref * w).sum(), (x, psf))
    torch.testing.assert_close(gx, rx, rtol=0, atol=1e-11)
    torch.testing.assert_close(gp, rp, rtol=0, atol=1e-11)
    # gradient to one input only (the other branch of the backward is skipped)
    (gp_only,) = torch.autograd.grad((convolve(x.detach(), psf, boundary) * w).sum(), (psf,))
    (gx_only,) = torch.autograd.grad((convolve(x, psf.detach(), boundary) * w).sum(), (x,))
    torch.testing.assert_close(gp_only, rp, rtol=0, atol=1e-11)
    torch.testing.assert_close(gx_only, rx, rtol=0, atol=1e-11)


@pytest.mark.parametrize(("boundary", "hw", "khw", "pb"), _CASES[::2])
def test_convolve_float32_matches_reference(boundary, hw, khw, pb):
    x, psf = _case(boundary, hw, khw, pb, dtype=torch.float32, seed=3)
    y = convolve(x, psf, boundary)
    assert y.dtype == torch.float32
    ref = _reference_blur(x.double(), psf.double(), boundary)
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("boundary", IMAGE_BOUNDARIES)
@pytest.mark.parametrize("binning", [1, 2])
def test_form_image_gradcheck(boundary, binning, monkeypatch):
    monkeypatch.setattr(imaging, "_CPU_CHUNK_BYTES", 1)  # several chunks
    x = _rand(2, 2, 6, 8, seed=1).requires_grad_()
    psf = _rand(2, 2, 4, 3, seed=2).requires_grad_()
    s = SensorModel(boundary=boundary, binning=binning, response="gamma")
    assert torch.autograd.gradcheck(lambda a, b: form_image(a + 0.5, b, s, noise=False),
                                    (x, psf))


@pytest.mark.parametrize("boundary", IMAGE_BOUNDARIES)
def test_fused_binning_equals_bin_sensor_of_convolve(boundary, monkeypatch):
    monkeypatch.setattr(imaging, "_CPU_CHUNK_BYTES", 4000)
    x = _rand(4, 3, 24, 16, seed=5, dtype=torch.float32)
    psf = _rand(3, 6, 6, seed=6, dtype=torch.float32)
    s = SensorModel(boundary=boundary, binning=4, bit_depth=8)
    y = form_image(x, psf / psf.sum(), s, noise=False)
    assert torch.equal(y, quantize(bin_sensor(convolve(x, psf / psf.sum(), boundary), 4), 8))


def test_kernel_spectrum_is_cached_and_follows_the_psf():
    imaging._clear_spectrum_cache()
    x = _rand(2, 3, 16, 16)
    psf = _rand(3, 5, 5, seed=1)
    y0 = convolve(x, psf, "replicate")
    assert len(imaging._spectrum_cache) == 1
    spec = imaging._spectrum_cache[0][2]
    torch.testing.assert_close(convolve(x, psf, "replicate"), y0, rtol=0, atol=0)
    assert len(imaging._spectrum_cache) == 1 and imaging._spectrum_cache[0][2] is spec  # reused
    with torch.no_grad():
        psf[1, 2, 2] += 1.0  # in place: seen
    ref = _reference_blur(x, psf, "replicate")
    torch.testing.assert_close(convolve(x, psf, "replicate"), ref, rtol=0, atol=1e-12)
    psf.data.mul_(2.0)  # behind autograd's back (no version bump): still seen
    torch.testing.assert_close(convolve(x, psf, "replicate"),
                               _reference_blur(x, psf, "replicate"), rtol=0, atol=1e-12)
    other = _rand(3, 5, 5, seed=9)  # same shape, other values
    torch.testing.assert_close(convolve(x, other, "replicate"),
                               _reference_blur(x, other, "replicate"), rtol=0, atol=1e-12)
    assert len(imaging._spectrum_cache) <= imaging._SPECTRUM_CACHE_SIZE
    # a PSF that needs a gradient is never served from the cache, and receives its gradient
    n = len(imaging._spectrum_cache)
    p = psf.clone().requires_grad_()
    convolve(x, p, "replicate").sum().backward()
    assert len(imaging._spectrum_cache) == n and p.grad is not None and p.grad.abs().sum() > 0
    # ... but under no_grad it is (same values as psf: a cache hit, bit for bit)
    with torch.no_grad():
        torch.testing.assert_close(convolve(x, p, "replicate"), convolve(x, psf, "replicate"),
                                   rtol=0, atol=0)
    assert len(imaging._spectrum_cache) == n
    # a cached spectrum serves an image that needs a gradient
    xg = x.clone().requires_grad_()
    convolve(xg, psf, "linear").sum().backward()
    convolve(xg, psf, "linear").sum().backward()
    (rx,) = torch.autograd.grad(_reference_blur(xg, psf, "linear").sum(), (xg,))
    torch.testing.assert_close(xg.grad, 2 * rx, rtol=0, atol=1e-11)
    imaging._clear_spectrum_cache()
    assert imaging._spectrum_cache == []


def test_inference_mode_does_not_cache():
    imaging._clear_spectrum_cache()
    x = _rand(1, 2, 8, 8)
    psf = _rand(2, 3, 3, seed=2)
    with torch.inference_mode():
        y = convolve(x, psf)
    assert imaging._spectrum_cache == []
    torch.testing.assert_close(y, _reference_blur(x, psf, "linear"), rtol=0, atol=1e-12)


def test_second_derivatives_are_refused():
    x = _rand(1, 1, 6, 6).requires_grad_()
    psf = _rand(1, 3, 3, seed=1).requires_grad_()
    (g,) = torch.autograd.grad(convolve(x, psf).pow(2).sum(), (psf,), create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_quantize_exact_codes_and_inclusive_straight_through():
    x = torch.tensor([-0.1, 0.0, 0.3, 0.5, 1.0, 1.2, float("nan")], requires_grad=True)
    y = quantize(x, 8)
    codes = y.detach()[:-1] * 255
    assert torch.equal(codes, codes.round())  # exactly k / 255, no residue of x
    y.sum().backward()
    # the gradient of clamp(x, 0, 1): 1 on the closed interval [0, 1], 0 outside and for NaN
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]))
    assert quantize(torch.tensor([0, 1, 2]), 1).dtype == torch.get_default_dtype()


def test_camera_forward_gradients_reach_psf_and_image():
    from optics.camera import Camera
    from optics.presets import get_preset

    cam = Camera(get_preset("lopez2024").at_image_size(64))
    with torch.no_grad():
        h = cam.psf()
    psf = h.clone().requires_grad_()
    x = _rand(2, 3, 64, 64, dtype=torch.float32).requires_grad_()
    y = cam(x, psf=psf, generator=torch.Generator().manual_seed(0))
    assert y.shape == (2, 3, 64, 64)
    y.mean().backward()
    assert psf.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    cam(x.detach(), generator=torch.Generator().manual_seed(0)).mean().backward()
    assert cam.trainable_um.grad.abs().sum() > 0


def test_spectrum_cache_is_bounded_in_bytes(monkeypatch):
    imaging._clear_spectrum_cache()
    x = _rand(1, 2, 16, 16)
    psfs = [_rand(2, 3, 3, seed=s) for s in range(3)]
    for p in psfs:
        convolve(x, p)
    entry = sum(t.numel() * t.element_size() for t in imaging._spectrum_cache[0][1:])
    imaging._clear_spectrum_cache()
    monkeypatch.setattr(imaging, "_SPECTRUM_CACHE_BYTES", 2 * entry + 1)  # room for two
    for p in psfs:
        torch.testing.assert_close(convolve(x, p), _reference_blur(x, p, "linear"),
                                   rtol=0, atol=1e-12)
    assert len(imaging._spectrum_cache) == 2  # the oldest was evicted
    assert all(torch.equal(e[1], p) for e, p in zip(imaging._spectrum_cache, psfs[1:], strict=True))
    monkeypatch.setattr(imaging, "_SPECTRUM_CACHE_BYTES", entry)  # an entry over half: skipped
    imaging._clear_spectrum_cache()
    convolve(x, psfs[0])
    assert imaging._spectrum_cache == []


@pytest.mark.parametrize("k", [4, 5, 8, 9])
def test_replicate_keeps_a_flat_field_flat(k):
    """A uniform scene seen through any normalised PSF is uniform to the last row and column
    (an even kernel once read one dark row and column past the edge)."""
    x = torch.full((1, 3, 20, 17), 0.7, dtype=torch.float64)
    psf = torch.rand(3, k, k, dtype=torch.float64)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    y = convolve(x, psf, boundary="replicate")
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
