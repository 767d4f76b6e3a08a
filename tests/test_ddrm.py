"""DDRM with a circulant blur (deid.attacks.ddrm) and the DDPM UNet (deid.attacks.ddpm_unet).

What is exact and what is approximate
-------------------------------------
- Exact (to float64 rounding): the spectral SVD of the circular convolution, its pseudo-
  inverse, the Gaussian prior's noise prediction ``E[eps | x_t]`` (checked against a dense
  matrix solve derived independently here) and its posterior mean (a Wiener filter, checked
  against the dense Gaussian conditioning formula).
- Exact in law: the sampler is affine in ``y`` and its injected noises when the model is
  the (linear) Gaussian prior, so its expectation over the sampler noise is the same run with
  every injected noise set to 0. The mean of N samples must approach that at ``1/sqrt(N)``.
- Approximate: DDRM (20 steps, eta = 0.85, eta_b = 1) is a variational sampler, not the exact
  posterior even with the exact prior. Its mean is close to the posterior mean (much closer
  than ``y``, the prior mean or the naive inverse are) and its spread is of the right order but
  smaller than the posterior's (the "less noisy than y" update pulls toward ``ybar``).
"""

import math

import pytest
import torch

import deid.attacks.ddrm as ddrm_mod
from deid.attacks.ddpm_unet import CELEBA_HQ_256, DDPMUNet, DDPMUNetConfig, load_ddpm_unet
from deid.attacks.ddrm import CirculantBlur, GaussianPrior, ddrm, linear_betas, otf
from optics.imaging import convolve

torch.set_num_threads(1)


def _psf(c: int = 3, k: int = 5, dtype=torch.float64) -> torch.Tensor:
    """A chromatic, asymmetric PSF (non-trivial OTF phase), each channel summing to 1."""
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(k, dtype=dtype), torch.arange(k, dtype=dtype),
                            indexing="ij")
    out = []
    for ci in range(c):
        w = 0.8 + 0.4 * ci
        p = torch.exp(-((yy - k // 2) ** 2 + (xx - k // 2 - 0.5 * ci) ** 2) / (2 * w * w))
        p = p + 0.05 * torch.rand(k, k, generator=g, dtype=dtype)
        out.append(p / p.sum())
    return torch.stack(out)


def _stationary_prior(c: int, n: int) -> GaussianPrior:
    """A 1/f^2.4-like power spectrum and a smooth mean image, model units."""
    f = torch.fft.fftfreq(n, dtype=torch.float64) * n
    f2 = f.view(-1, 1) ** 2 + f.view(1, -1) ** 2
    power = torch.stack([0.3 * (1 + ci) / (1 + f2) ** 1.2 for ci in range(c)])
    yy = torch.linspace(-1, 1, n, dtype=torch.float64).view(-1, 1)
    mean = (0.2 * torch.cos(2 * yy) * torch.ones(n, dtype=torch.float64)).expand(c, n, n)
    return GaussianPrior(mean.contiguous(), power)


def _dense_dft(n: int) -> torch.Tensor:
    """Unitary 2-D DFT matrix on flattened n x n images (row-major)."""
    f1 = torch.fft.fft(torch.eye(n, dtype=torch.complex128), norm="ortho")
    return torch.kron(f1, f1)


# --------------------------------------------------------------------------------------------
# The circulant operator
# --------------------------------------------------------------------------------------------


def test_spectral_svd_equals_circular_convolution():
    torch.manual_seed(0)
    psf = _psf(3, 7)
    x = torch.rand(2, 3, 20, 24, dtype=torch.float64)
    op = CirculantBlur(psf, 20, 24)
    direct = convolve(x, psf, boundary="circular")
    assert torch.allclose(op.H(x), direct, atol=1e-10, rtol=0)
    # U, V unitary (real round trips); H^T is the adjoint; phase is not trivial here
    assert torch.allclose(op.V(op.Vt(x)), x, atol=1e-12)
    assert torch.allclose(op.U(op.Ut(x)), x, atol=1e-12)
    yv = torch.rand_like(x)
    assert torch.allclose((op.H(x) * yv).sum(), (x * op.Ht(yv)).sum(), rtol=1e-12)
    assert (op.phase.angle().abs() > 0.1).any()
    # singular values: |OTF|, Hermitian-symmetric, DC = sum(psf) = 1
    s = op.singulars()
    assert torch.allclose(s[..., 0, 0], torch.ones(3, dtype=torch.float64))
    s_neg = torch.roll(torch.flip(s, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
    assert torch.allclose(s, s_neg, atol=1e-12)


def test_pinv_inverts_where_singulars_are_kept():
    torch.manual_seed(1)
    psf = _psf(3, 5)
    op = CirculantBlur(psf, 16, 16)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    s_min = 0.05
    kept = op.singulars() > s_min
    assert kept.any() and (~kept).any()  # the test covers both branches
    xr = op.H_pinv(op.H(x), s_min=s_min)
    proj = op.V(torch.where(kept, op.Vt(x), torch.zeros_like(op.Vt(x))))  # x on kept rows of V
    assert torch.allclose(xr, proj, atol=1e-10)
    all_kept = op.H_pinv(op.H(x), s_min=0.0)
    assert torch.allclose(all_kept, x, atol=1e-8)


def test_white_pixel_noise_is_white_in_the_spectrum():
    """F of real white noise: E|Z_k|^2 = 1 at every k; Re, Im each carry 1/2 off the
    self-conjugate frequencies, and Z[0, 0] is real."""
    g = torch.Generator().manual_seed(2)
    z = torch.fft.fft2(torch.randn(4000, 1, 8, 8, generator=g, dtype=torch.float64),
                       norm="ortho")
    power = z.abs().square().mean(0)
    assert torch.allclose(power, torch.ones_like(power), atol=0.1)
    assert z[..., 0, 0].imag.abs().max() < 1e-12
    assert abs(z[..., 1, 2].real.var().item() - 0.5) < 0.05


# --------------------------------------------------------------------------------------------
# Gaussian prior: exact noise prediction and posterior mean
# --------------------------------------------------------------------------------------------


def test_gaussian_eps_is_the_exact_mmse_noise_prediction():
    """Compared with ``E[eps | x_t] = b (a^2 Sigma + b^2 I)^{-1} (x_t - a mu)`` from a dense
    covariance ``Sigma = F^* diag(P) F`` built here (exact), then by Monte Carlo: the residual
    is uncorrelated with ``x_t`` (orthogonality principle, exact for jointly Gaussian)."""
    n, c = 6, 2
    prior = _stationary_prior(c, n)
    fm = _dense_dft(n)
    abar = ddrm_mod.alphas_cumprod(linear_betas())
    g = torch.Generator().manual_seed(5)
    for t in (0, 250, 700):
        a, b = abar[t].sqrt(), (1 - abar[t]).sqrt()
        x_t = torch.randn(3, c, n, n, generator=g, dtype=torch.float64)
        got = prior.eps(x_t, t)
        for ci in range(c):
            sigma = (fm.conj().T @ torch.diag(prior.power[ci].flatten().to(fm.dtype)) @ fm).real
            m = a**2 * sigma + b**2 * torch.eye(n * n, dtype=torch.float64)
            rhs = (x_t[:, ci] - a * prior.mean[ci]).reshape(3, -1).T
            want = (b * torch.linalg.solve(m, rhs)).T.reshape(3, n, n)
            assert torch.allclose(got[:, ci], want, atol=1e-10)
    # Monte Carlo: x_t from the forward process; residual eps - eps_hat orthogonal to x_t
    t = 300
    a, b = abar[t].sqrt().item(), (1 - abar[t]).sqrt().item()
    x0 = 2 * prior.sample(20000, generator=g) - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = a * x0 + b * eps
    res = (eps - prior.eps(x_t, torch.full((x0.shape[0],), t))).flatten(1)
    xc = (x_t - x_t.mean(0)).flatten(1)
    corr = (res.T @ xc) / x0.shape[0] / (res.std(0)[:, None] * xc.std(0)[None, :])
    assert corr.abs().max() < 5 / math.sqrt(x0.shape[0]) * 1.6  # max over 72^2 entries
    # and its MSE is the Bayes error sum_k a^2 P / (a^2 P + b^2)
    bayes = (a**2 * prior.power / (a**2 * prior.power + b**2)).sum()
    assert abs(res.square().sum(1).mean() / bayes - 1) < 0.02


def test_gaussian_posterior_mean_is_the_dense_conditional_mean():
    n, c = 6, 2
    prior = _stationary_prior(c, n)
    psf = _psf(c, 3)
    fm = _dense_dft(n)
    g = torch.Generator().manual_seed(6)
    x = prior.sample(2, generator=g)
    sigma_0 = 0.03
    y = convolve(x, psf, "circular") + sigma_0 * torch.randn(x.shape, generator=g,
                                                             dtype=torch.float64)
    got, var = prior.posterior(y, psf, sigma_0)
    op = CirculantBlur(psf, n, n)
    for ci in range(c):
        sigma = (fm.conj().T @ torch.diag(prior.power[ci].flatten().to(fm.dtype)) @ fm).real
        hm = op.H(torch.eye(n * n, dtype=torch.float64).reshape(n * n, 1, n, n)
                  .expand(-1, c, -1, -1))[:, ci].reshape(n * n, n * n).T  # column j = H e_j
        mu = prior.mean[ci].flatten()
        yp = (2 * y[:, ci] - 1).reshape(2, -1).T
        s_y = hm @ sigma @ hm.T + (2 * sigma_0) ** 2 * torch.eye(n * n, dtype=torch.float64)
        want = mu[:, None] + sigma @ hm.T @ torch.linalg.solve(s_y, yp - (hm @ mu)[:, None])
        assert torch.allclose(got[:, ci], ((want.T.reshape(2, n, n)) + 1) / 2, atol=1e-10)
        post_cov = sigma - sigma @ hm.T @ torch.linalg.solve(s_y, hm @ sigma)
        assert torch.allclose(var[0, ci].sum(), torch.trace(post_cov) / 4, rtol=1e-9)


# --------------------------------------------------------------------------------------------
# DDRM against the exact Gaussian posterior
# --------------------------------------------------------------------------------------------


def test_ddrm_samples_with_the_gaussian_prior(monkeypatch):
    n, c, n_samples, sigma_0 = 16, 3, 256, 0.02
    prior = _stationary_prior(c, n)
    psf = _psf(c, 5)
    g = torch.Generator().manual_seed(7)
    x = prior.sample(1, generator=g)
    y = convolve(x, psf, "circular") + sigma_0 * torch.randn(x.shape, generator=g,
                                                             dtype=torch.float64)
    post_mean, post_var = prior.posterior(y, psf, sigma_0)
    kw = dict(pad_px=0, clip=False, steps=20, eta=0.85, eta_b=1.0)
    samples = ddrm(y.expand(n_samples, -1, -1, -1), psf, prior, sigma_0, seed=0, **kw)
    assert samples.dtype == torch.float64

    # exact in law: the sampler's own mean is the noise-free run (affine in the noises)
    with monkeypatch.context() as m:
        m.setattr(ddrm_mod.torch, "randn", lambda shape, **k: torch.zeros(
            shape, dtype=k.get("dtype"), device=k.get("device")))
        sampler_mean = ddrm(y, psf, prior, sigma_0, **kw)
    spread = samples.var(0).sum().sqrt()  # sqrt(trace Cov), per single sample
    err = {k: (samples[:k].mean(0) - sampler_mean[0]).norm() for k in (16, 64, 256)}
    for k, e in err.items():  # E|mean_k - mean|^2 = trace(Cov) / k
        assert 0.6 < e / (spread / math.sqrt(k)) < 1.4, (k, e, spread)
    assert 1.4 < err[16] / err[64] < 2.8 and 1.4 < err[64] / err[256] < 2.8

    # approximate: DDRM's mean vs the exact posterior mean, on the scale of the alternatives
    bias = (sampler_mean - post_mean).norm()
    naive = (ddrm_mod.CirculantBlur(psf, n, n).H_pinv(2 * y - 1, s_min=0.0) + 1) / 2
    prior_mean = (prior.mean + 1) / 2
    scales = {"y": (y - post_mean).norm(), "prior mean": (prior_mean - post_mean).norm(),
              "naive inverse": (naive - post_mean).norm(), "truth": (x - post_mean).norm()}
    # measured: bias 0.39; y 0.82, prior mean 1.71, truth 1.14, naive inverse 63.8
    limits = {"y": 0.65, "prior mean": 0.4, "truth": 0.5, "naive inverse": 0.02}
    for name, limit in limits.items():
        assert bias < limit * scales[name], (name, bias, scales)
    assert (samples.mean(0) - post_mean[0]).norm() < 0.65 * scales["y"]

    # approximate: per-frequency spread of the right order (DDRM under-disperses)
    sample_var = torch.fft.fft2(samples - samples.mean(0), norm="ortho").abs().square()
    sample_var = sample_var.sum(0) / (n_samples - 1)
    ratio = sample_var.sum() / post_var.sum()
    assert 0.1 < ratio < 1.2, ratio  # measured 0.34 (per-frequency median 0.11)
    per_freq = (sample_var / post_var[0]).flatten()
    assert 0.05 < per_freq.median() < 2.0


def test_samples_average_in_one_run_with_an_affine_prior(monkeypatch):
    """``samples=k``: the mean of k posterior samples. With the Gaussian (affine) prior it is
    one run with the noises scaled by 1/sqrt(k): the same noise-free part, and the spread of
    k-sample means (trace of the covariance / k), as the pixel path that really averages k
    runs."""
    n, c, sigma_0, k = 16, 3, 0.02, 4
    prior = _stationary_prior(c, n)
    psf = _psf(c, 5)
    g = torch.Generator().manual_seed(3)
    x = prior.sample(1, generator=g)
    y = convolve(x, psf, "circular") + sigma_0 * torch.randn(x.shape, generator=g,
                                                             dtype=torch.float64)
    kw = dict(pad_px=0, clip=False, steps=10)
    with monkeypatch.context() as m:
        m.setattr(ddrm_mod.torch, "randn", lambda shape, **kk: torch.zeros(
            shape, dtype=kk.get("dtype"), device=kk.get("device")))
        plain = ddrm(y, psf, prior, sigma_0, **kw)
        assert torch.allclose(ddrm(y, psf, prior, sigma_0, samples=k, **kw), plain,
                              atol=1e-12)
    batch = y.expand(128, -1, -1, -1)
    single = ddrm(batch, psf, prior, sigma_0, seed=0, **kw)
    folded = ddrm(batch, psf, prior, sigma_0, seed=1, samples=k, **kw)
    averaged = ddrm(batch, psf, lambda z, t: prior(z, t), sigma_0, seed=2, samples=k, **kw)
    spread = {name: float(v.var(0).sum()) for name, v in
              (("single", single), ("folded", folded), ("averaged", averaged))}
    assert 0.75 < spread["folded"] * k / spread["single"] < 1.33, spread
    assert 0.75 < spread["averaged"] * k / spread["single"] < 1.33, spread
    for v in (folded, averaged):  # centred on the noise-free run, to sampling error
        assert (v.mean(0) - plain[0]).norm() < 3 * math.sqrt(spread["single"] / k / 128)
    with pytest.raises(ValueError, match="samples"):
        ddrm(y, psf, prior, sigma_0, samples=0, **kw)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_spectral_path_equals_the_pixel_path(dtype, tol):
    """With a :class:`GaussianPrior` the sampler keeps its state in the spectral domain
    (``eps_spectral``); the same prior behind a plain callable takes the pixel path (model
    on ``x_t``, then ``V^T``). Same seed, same samples to float rounding, with noise, padding
    and a singular value below ``s_min``; and ``eps_spectral`` is ``F eps``."""
    n, c, k, sigma_0 = 24, 3, 5, 0.01
    prior = _stationary_prior(c, n + 2 * (k // 2))
    psf = _psf(c, k)
    g = torch.Generator().manual_seed(5)
    y = ((prior.sample(3, generator=g)[..., 2:-2, 2:-2] + 1) / 2).clamp(0, 1)
    y = (convolve(y, psf, "replicate") + sigma_0 * torch.randn(y.shape, generator=g,
                                                               dtype=torch.float64))
    y, psf = y.to(dtype), psf.to(dtype)
    x_t = torch.randn((2, c, n + 4, n + 4), generator=g, dtype=torch.float64)
    e = prior.eps_spectral(torch.fft.fft2(x_t, norm="ortho"), 300)
    assert torch.allclose(e, torch.fft.fft2(prior.eps(x_t, 300), norm="ortho"), atol=1e-12)
    for s_min in (1e-3, 0.05):
        fast = ddrm(y, psf, prior, sigma_0, seed=1, s_min=s_min, clip=False)
        slow = ddrm(y, psf, lambda x, t: prior(x, t), sigma_0, seed=1, s_min=s_min,
                    clip=False)
        assert fast.dtype == dtype
        assert (fast - slow).abs().max() < tol * max(1.0, float(slow.abs().max()))


def test_ddrm_improves_psnr_on_a_blurred_face_like_image():
    """A real-attack setting: replicate boundaries (not circulant), padding by K // 2, a
    Gaussian prior fitted on a few face-like images of the padded size, default DDRM."""
    c, n, k, sigma_0 = 3, 32, 7, 0.01
    pad = k // 2
    g = torch.Generator().manual_seed(8)

    def faces(m):  # ellipse head, eyes, mouth; random placement and tone
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, n + 2 * pad),
                                torch.linspace(-1, 1, n + 2 * pad), indexing="ij")
        out = []
        for _ in range(m):
            r = torch.rand(6, generator=g)
            cx, cy = 0.15 * (r[0] - 0.5), 0.15 * (r[1] - 0.5)
            head = (((xx - cx) / (0.55 + 0.1 * r[2])) ** 2 + ((yy - cy) / 0.75) ** 2 < 1)
            eyes = sum(((xx - cx - dx) ** 2 + (yy - cy + 0.2) ** 2) < 0.012 for dx in (-.25, .25))
            mouth = (((xx - cx) / 0.25) ** 2 + ((yy - cy - 0.35) / 0.06) ** 2) < 1
            img = 0.2 + 0.5 * head.float() * (0.8 + 0.4 * r[3]) - 0.35 * (eyes + mouth).float()
            tone = torch.tensor([1.0, 0.8, 0.65]) * (0.9 + 0.2 * r[4])
            out.append(img[None] * tone[:, None, None])
        return torch.stack(out).clamp(0, 1).to(torch.float64)

    train = faces(24)
    prior = GaussianPrior.fit(train)
    x = faces(2)[..., pad:-pad, pad:-pad]
    psf = _psf(c, k)
    y = convolve(x, psf, "replicate") + sigma_0 * torch.randn(x.shape, generator=g,
                                                              dtype=torch.float64)
    y = y.float()  # the attack keeps y's dtype and device
    x_hat = ddrm(y, psf.float(), prior, sigma_0, seed=1)
    assert x_hat.shape == y.shape and x_hat.dtype == torch.float32
    assert x_hat.min() >= 0 and x_hat.max() <= 1

    def psnr(a, b):
        return (10 * torch.log10(1 / (a.double() - b).square().mean(dim=(1, 2, 3)))).min()

    p_y, p_one = psnr(y, x), psnr(x_hat, x)
    many = ddrm(y.repeat(8, 1, 1, 1), psf.float(), prior, sigma_0, seed=1)
    p_mean = psnr(many.reshape(8, 2, c, n, n).mean(0), x)  # 8-sample posterior-mean estimate
    assert p_one > p_y + 1.5 and p_mean > p_y + 2.5, (p_y, p_one, p_mean)  # 21.7, 23.9, 24.7
    # same seed, same result; a different seed gives a different sample
    assert torch.equal(ddrm(y, psf.float(), prior, sigma_0, seed=1), x_hat)
    assert not torch.equal(ddrm(y, psf.float(), prior, sigma_0, seed=2), x_hat)


def test_prior_size_mismatch_is_a_clear_error():
    prior = _stationary_prior(3, 16)
    y = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="padded size"):
        ddrm(y, _psf(3, 5), prior, 0.01, steps=2)  # pads to 20 x 20
    assert otf(_psf(3, 5), 16, 16).shape == (1, 3, 16, 16)


# --------------------------------------------------------------------------------------------
# The DDPM UNet
# --------------------------------------------------------------------------------------------


def _expected_keys(ch_mult=(1, 1, 2, 2, 4, 4), nrb=2, attn_levels=(4,)) -> list[str]:
    """Parameter names of the public ``simple`` DDPM (DDIM/DDRM ``models/diffusion.py``),
    written out from its layout rules: resolution level i has ``nrb`` res blocks down and
    ``nrb + 1`` up, attention blocks at the 16x16 level (level 4 of 6 at 256 px), a 1x1
    ``nin_shortcut`` where a block changes channel count (every up block, since skip features
    are concatenated), a strided conv below each level but the last and an upsampling conv
    above each level but the first."""
    res = ["norm1", "conv1", "temb_proj", "norm2", "conv2"]
    att = ["norm", "q", "k", "v", "proj_out"]

    def wb(prefix, names):
        return [f"{prefix}.{m}.{p}" for m in names for p in ("weight", "bias")]

    keys = wb("temb", ["dense.0", "dense.1"]) + wb("", ["conv_in"])
    in_mult = (1, *ch_mult)
    for i, m in enumerate(ch_mult):
        for j in range(nrb):
            c_in = in_mult[i] if j == 0 else m
            keys += wb(f"down.{i}.block.{j}", res + (["nin_shortcut"] if c_in != m else []))
        for j in range(nrb if i in attn_levels else 0):
            keys += wb(f"down.{i}.attn.{j}", att)
        if i < len(ch_mult) - 1:
            keys += wb(f"down.{i}", ["downsample.conv"])
    keys += wb("mid", [f"block_1.{r}" for r in res] + [f"attn_1.{a}" for a in att]
               + [f"block_2.{r}" for r in res])
    for i in range(len(ch_mult)):  # state dict order: up.0 first (the list is prepended)
        for j in range(nrb + 1):
            keys += wb(f"up.{i}.block.{j}", res + ["nin_shortcut"])
        for j in range(nrb + 1 if i in attn_levels else 0):
            keys += wb(f"up.{i}.attn.{j}", att)
        if i > 0:
            keys += wb(f"up.{i}", ["upsample.conv"])
    keys += wb("", ["norm_out", "conv_out"])
    return [k.lstrip(".") for k in keys]


def test_unet_key_layout_matches_the_public_celeba_hq_checkpoint():
    with torch.device("meta"):
        net = DDPMUNet(CELEBA_HQ_256)
    sd = net.state_dict()
    assert len(sd) == 450
    for name in ["temb.dense.0.weight", "down.0.block.0.norm1.weight", "mid.attn_1.q.weight",
                 "up.5.upsample.conv.weight", "norm_out.weight", "conv_out.weight",
                 "down.4.attn.1.proj_out.bias", "up.4.attn.2.k.weight",
                 "down.2.block.0.nin_shortcut.weight", "down.4.downsample.conv.bias"]:
        assert name in sd, name
    for absent in ["down.5.downsample.conv.weight", "up.0.upsample.conv.weight",
                   "down.0.block.0.nin_shortcut.weight", "down.3.attn.0.q.weight"]:
        assert absent not in sd, absent
    assert sorted(sd) == sorted(_expected_keys())
    shapes = {"conv_in.weight": (128, 3, 3, 3), "temb.dense.0.weight": (512, 128),
              "temb.dense.1.weight": (512, 512), "down.2.block.0.nin_shortcut.weight":
              (256, 128, 1, 1), "up.5.block.0.conv1.weight": (512, 1024, 3, 3),
              "up.0.block.2.nin_shortcut.weight": (128, 256, 1, 1),
              "mid.attn_1.q.weight": (512, 512, 1, 1), "conv_out.weight": (3, 128, 3, 3)}
    for name, shape in shapes.items():
        assert tuple(sd[name].shape) == shape, name
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(113.67e6, rel=0.01)


def test_tiny_unet_forward_and_local_load(tmp_path):
    torch.manual_seed(0)
    cfg = DDPMUNetConfig(resolution=16, ch=32, ch_mult=(1, 2), attn_resolutions=(8,))
    net = DDPMUNet(cfg).eval()
    assert sorted(net.state_dict()) == sorted(_expected_keys((1, 2), 2, (1,)))
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([3.0, 900.0])
    with torch.no_grad():
        eps = net(x, t)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    path = tmp_path / "ddpm.ckpt"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    loaded = load_ddpm_unet(path, cfg)
    with torch.no_grad():
        assert torch.equal(loaded(x, t), eps)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_ddpm_unet(tmp_path / "missing.ckpt", cfg)
    with pytest.raises(ValueError, match="16x16"):
        net(torch.randn(1, 3, 8, 8), torch.tensor([1.0]))
    # it plugs into DDRM as the noise model (float64 y, float32 weights)
    y = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    out = ddrm(y, _psf(3, 5), net, 0.05, steps=3, seed=0, pad_px=2)
    assert out.shape == y.shape and out.dtype == torch.float64
