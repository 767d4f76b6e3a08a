"""The software-level peers: the differential-privacy noise (scales against their formulas and
against samples), Private-Encoder-style decoding from the noised code alone and its epsilon
direction, FALCO-style margin direction, schedule and block choice, and the generator's
per-block styles (on tiny random networks; the twin is a small stand-in)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from deid.judges.lpips import LPIPS
from deid.methods.software import falco as falco_mod
from deid.methods.software.dp import gaussian_sigma, laplace_scale, noise_scale, privatize
from deid.methods.software.falco import Falco, FalcoConfig, lr_factor, middle_blocks
from deid.methods.software.private_encoder import PrivateEncoder, PrivateEncoderAnonymizer
from deid.methods.stage2.nets import Generator, StyleEncoder
from optics.kit.resize import resize_to

S = 32


# ----------------------------------------------------------------------------- dp

def test_noise_scales_match_their_formulas():
    assert laplace_scale(1.0, 320, 10.0) == pytest.approx(2 * 1.0 * 320 / 10.0)
    assert laplace_scale(0.5, 7, 0.1) == pytest.approx(70.0)
    want = 2 * 1.5 * math.sqrt(64) * math.sqrt(2 * math.log(1.25 / 1e-5)) / 2.0
    assert gaussian_sigma(1.5, 64, 2.0, 1e-5) == pytest.approx(want)
    assert laplace_scale(1.0, 10, math.inf) == 0.0 == gaussian_sigma(1.0, 10, math.inf, 1e-3)
    for bad in (lambda: laplace_scale(0.0, 3, 1.0), lambda: laplace_scale(1.0, 3, 0.0),
                lambda: gaussian_sigma(1.0, 3, 1.0, 1.5),
                lambda: noise_scale("uniform", 1.0, 3, 1.0)):
        with pytest.raises(ValueError):
            bad()


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_drawn_noise_has_the_formula_spread(mechanism):
    """Laplace(b) has mean absolute deviation b; the Gaussian has standard deviation sigma."""
    code = torch.zeros(2000, 50)
    g = torch.Generator().manual_seed(0)
    eps, delta = 40.0, 1e-3
    noised = privatize(code, 0.25, eps, mechanism, delta, generator=g)
    scale = noise_scale(mechanism, 0.25, 50, eps, delta)
    spread = noised.abs().mean() if mechanism == "laplace" else noised.std()
    assert spread.item() == pytest.approx(scale, rel=0.02)
    assert noised.mean().abs().item() < 0.02 * scale
    # clipping first: a huge code is brought to [-C, C]; eps = inf adds nothing
    big = torch.full((3, 50), 9.0)
    assert torch.equal(privatize(big, 0.25, math.inf), torch.full((3, 50), 0.25))


# ----------------------------------------------------------------------------- generator

def test_per_block_styles_equal_a_shared_style_when_repeated():
    torch.manual_seed(0)
    g = Generator(S, style_dim=8, base_width=8, max_width=16)
    y = torch.rand(2, 3, S, S)
    masks = (torch.rand(2, 1, S, S), torch.rand(2, 1, S, S))
    s = torch.randn(2, 8)
    k = g.n_style_blocks
    per = s[:, None].repeat(1, k, 1)
    torch.testing.assert_close(g(y, per, masks), g(y, s, masks))
    per[:, k - 1] += 1.0  # a different last block changes the output
    assert not torch.allclose(g(y, per, masks), g(y, s, masks))
    with pytest.raises(ValueError, match="blocks"):
        g(y, per[:, :-1], masks)


# ----------------------------------------------------------------------------- private encoder

def _tiny_private_encoder(epsilon: float, mechanism: str = "laplace"):
    torch.manual_seed(0)
    gen = Generator(S, style_dim=8, base_width=8, max_width=16).eval().requires_grad_(False)
    model = PrivateEncoder(S, gen.n_style_blocks, 8, base_width=8, max_width=16).eval()
    anon = object.__new__(PrivateEncoderAnonymizer)
    anon.device = torch.device("cpu")
    anon.model = model
    anon.stage2 = SimpleNamespace(nets={"generator": gen})
    anon.epsilon, anon.mechanism, anon.delta = epsilon, mechanism, 1e-5
    anon.scale = noise_scale(mechanism, model.clip, model.dim, epsilon)
    anon.margin = None
    return anon


def test_the_noised_code_is_the_only_path_to_the_output(monkeypatch):
    anon = _tiny_private_encoder(10.0)
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, S, S, generator=g), torch.rand(2, 3, S, S, generator=g)
    assert not torch.allclose(anon.codes(a), anon.codes(b))
    fixed = torch.randn(2, anon.model.dim)
    monkeypatch.setattr(anon, "noised", lambda codes, seed=0, start=0: fixed)
    torch.testing.assert_close(anon.anonymize(a), anon.anonymize(b), rtol=0, atol=0)


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_smaller_epsilon_moves_the_output_further(mechanism):
    x = torch.rand(4, 3, S, S, generator=torch.Generator().manual_seed(2))
    clean = _tiny_private_encoder(math.inf, mechanism).anonymize(x, seed=5)
    dists = []
    for eps in (1e4, 1e3, 1e2, 1e1):  # the code saturates G beyond (the finding at demo scale)
        out = _tiny_private_encoder(eps, mechanism).anonymize(x, seed=5)
        dists.append((out - clean).abs().mean().item())
    assert dists[0] > 0
    assert dists == sorted(dists), dists
    # the same seed gives the same noise; another seed another
    a = _tiny_private_encoder(1.0, mechanism)
    torch.testing.assert_close(a.anonymize(x, seed=5), a.anonymize(x, seed=5))
    assert not torch.allclose(a.anonymize(x, seed=5), a.anonymize(x, seed=6))


# ----------------------------------------------------------------------------- falco

def test_falco_schedule_and_blocks():
    assert [lr_factor(s, 50) for s in (0, 37, 38, 44, 45, 49)] == \
        pytest.approx([1, 1, 0.8, 0.8, 0.64, 0.64])
    assert middle_blocks(5) == (1, 2, 3) and middle_blocks(2) == (0, 1)
    with pytest.raises(ValueError):
        FalcoConfig(margin=1.5)


class TinyTwin(nn.Module):
    """A small stand-in embedder on 150 px chips (FALCO's routing, not dlib's numbers)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.AvgPool2d(10), nn.Flatten(), nn.Linear(3 * 15 * 15, 16))

    def forward(self, chips):
        return self.net(chips)


def _fake_anonymizer():
    torch.manual_seed(0)
    gen = Generator(S, style_dim=8, base_width=8, max_width=16,
                    use_heatmap=False).eval().requires_grad_(False)
    enc = StyleEncoder(S, 8, 1, 8, 16).eval().requires_grad_(False)

    def privacy(chunk, captured=False, seed=0):
        return resize_to(chunk, S) * 0.8 + 0.1, None

    def reference_styles(refs):
        return enc(resize_to(refs, S), torch.zeros(len(refs), dtype=torch.long))

    return SimpleNamespace(device=torch.device("cpu"), margin=None, size=S,
                           model=SimpleNamespace(nets={"generator": gen, "style_encoder": enc},
                                                 identity_centre=None),
                           frozen=SimpleNamespace(stage1_size=S), privacy=privacy,
                           reference_styles=reference_styles)


def test_falco_margin_moves_the_identity_cosine(monkeypatch):
    chip = torch.tensor([[S / 150, 0.0, 0.0], [0.0, S / 150, 0.0]])
    monkeypatch.setattr(falco_mod.FrozenParts, "chip_affines",
                        staticmethod(lambda x: chip.expand(len(x), 2, 3).clone()))
    g = torch.Generator().manual_seed(4)
    faces, refs = torch.rand(4, 3, S, S, generator=g), torch.rand(6, 3, S, S, generator=g)
    lp = LPIPS(pretrained=False)
    res = {}
    for m in (1.0, 0.0):
        cfg = FalcoConfig(margin=m, steps=40, lr=0.05, invert_steps=5, batch=2)
        res[m] = Falco(_fake_anonymizer(), cfg, twin=TinyTwin(), lpips=lp).anonymize(
            faces, refs)
    hi, lo = res[1.0], res[0.0]
    assert hi.outputs.shape == (4, 3, S, S) and hi.blocks == (1,)
    torch.testing.assert_close(hi.identity_cosine_inverted, lo.identity_cosine_inverted)
    assert torch.equal(hi.reference_index, lo.reference_index)
    assert (hi.identity_cosine > lo.identity_cosine).all(), (hi.identity_cosine,
                                                             lo.identity_cosine)
    for m, r in res.items():  # each run ends nearer its margin than the pairing start
        assert (r.identity_cosine - m).abs().mean() < (r.identity_cosine_inverted - m).abs().mean()
