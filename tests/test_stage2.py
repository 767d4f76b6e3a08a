"""Stage 2: network shapes, gradient routing of every loss, the reference-only discriminator,
exact resume and the atomic checkpoint (on a tiny set-up: a real camera and FANs at 32 px,
small random networks)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from deid.faces.fan import FAN, FANConfig
from deid.judges.lpips import LPIPS
from deid.methods.stage2.config import Stage2Config
from deid.methods.stage2.data import Stage2Data
from deid.methods.stage2.frozen import FrozenParts
from deid.methods.stage2.nets import (
    Discriminator,
    Generator,
    MappingNetwork,
    StyleEncoder,
    count_parameters,
)
from deid.methods.stage2.solver import SUB_STEPS, Stage2Solver
from optics.camera import Camera
from optics.kit.resize import resize_to
from optics.presets import get_preset

S = 32


class TinyTwin(nn.Module):
    """A small stand-in embedder on 150 px chips (the dial's routing, not dlib's numbers)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.AvgPool2d(10), nn.Flatten(), nn.Linear(3 * 15 * 15, 8))

    def forward(self, chips):
        return self.net(chips)


def tiny_frozen(seed: int = 0) -> FrozenParts:
    torch.manual_seed(seed)
    camera = Camera(get_preset("lopez2024").at_image_size(S)).requires_grad_(False)
    fan = FANConfig(input_size=S, width=8, depth=2)
    return FrozenParts(camera, FAN.from_config(fan), S, teacher=FAN.from_config(fan),
                       twin=TinyTwin(), lpips=LPIPS(pretrained=False))


def tiny_data(domains=("a", "b"), n: int = 12) -> Stage2Data:
    g = torch.Generator().manual_seed(1)
    k = len(domains)
    return Stage2Data(
        sources=torch.rand(n, 3, S, S, generator=g),
        source_domains=torch.arange(n) % k,
        source_identities=[f"s{i}" for i in range(n)],
        references=torch.rand(n, 3, S, S, generator=g) * 0.5 + 0.5,
        reference_domains=torch.arange(n) % k,
        reference_identities=[f"r{i}" for i in range(n)],
        domains=list(domains), kind="demo")


def tiny_config(**kw) -> Stage2Config:
    base = dict(img_size=S, base_width=8, max_width=16, style_dim=8, latent_dim=4,
                mapping_width=16, batch_size=4, steps=4, ckpt_every=0, sample_every=0,
                log_every=1, lambda_lpips=1.0, privacy_weight=1.0)
    base.update(kw)
    return Stage2Config(**base)


@pytest.fixture
def solver(tmp_path, monkeypatch):
    monkeypatch.setattr(FrozenParts, "chip_affines", staticmethod(_affines))
    return Stage2Solver(tiny_config(), tiny_data(), tiny_frozen(), tmp_path)


def _affines(images):
    """Chip pixel -> image pixel maps that cut the whole image."""
    n, s = len(images), images.shape[-1]
    a = torch.zeros(n, 2, 3)
    a[:, 0, 0] = a[:, 1, 1] = s / 150
    return a


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size", [64, 128, 256])
def test_shapes_at_each_size(size):
    g = Generator(size, 65, base_width=8, max_width=32)
    e = StyleEncoder(size, 64, 2, base_width=8, max_width=32)
    d = Discriminator(size, 2, base_width=8, max_width=32)
    f = MappingNetwork(16, 64, 2, hidden=32)
    y = torch.rand(2, 3, size, size)
    masks = (torch.rand(2, 1, size, size), torch.rand(2, 1, size, size))
    dom = torch.tensor([0, 1])
    s = torch.cat([f(torch.randn(2, 16), dom), torch.zeros(2, 1)], 1)
    out = g(y, s, masks)
    assert out.shape == (2, 3, size, size)
    assert e(out, dom).shape == (2, 64) and d(out, dom).shape == (2,)
    # the skips sit at S/2, S/4, S/8 above the 8 px bottleneck
    assert g.skip_sizes == tuple(r for r in (size // 2, size // 4, size // 8) if r > 8)


def test_widths_match_the_published_counts():
    """Base 32, cap 256 at 64 px: G about 6.2 M, E and D about 2.9 M; upstream's widths at
    64 px (2**14 // 64 = 256, cap 512): G about 42 M; F about 2.4 M."""
    assert count_parameters(Generator(64, 64, 32, 256)) == pytest.approx(6.2e6, rel=0.02)
    assert count_parameters(StyleEncoder(64, 64, 2, 32, 256)) == pytest.approx(2.9e6, rel=0.02)
    assert count_parameters(Discriminator(64, 2, 32, 256)) == pytest.approx(2.9e6, rel=0.03)
    assert count_parameters(Generator(64, 64, 256, 512)) == pytest.approx(42e6, rel=0.01)
    assert count_parameters(MappingNetwork(16, 64, 2)) == pytest.approx(2.4e6, rel=0.02)


def test_generator_refuses_wrong_sizes_and_missing_masks():
    g = Generator(64, 8, 8, 16)
    with pytest.raises(ValueError, match="64 px"):
        g(torch.rand(1, 3, 32, 32), torch.zeros(1, 8), None)
    with pytest.raises(ValueError, match="masks"):
        g(torch.rand(1, 3, 64, 64), torch.zeros(1, 8), None)
    with pytest.raises(ValueError, match="power of two"):
        Generator(48)


def test_masks_gate_the_high_pass_skips():
    """With the masks off, the skips add nothing: the output then ignores where the mask was,
    and turning the mask on changes it."""
    torch.manual_seed(0)
    g = Generator(64, 8, 8, 16).eval()
    y, s = torch.rand(1, 3, 64, 64), torch.randn(1, 8)
    zero = torch.zeros(1, 1, 64, 64)
    one = torch.ones(1, 1, 64, 64)
    a = g(y, s, (zero, zero))
    b = g(y, s, (zero, one))
    assert not torch.allclose(a, b)


# ----------------------------------------------------------------------------- routing
LATENT = {"adv": {"generator", "mapping"}, "sty": {"generator", "mapping", "style_encoder"},
          "ds": {"generator", "mapping"}, "cyc": {"generator", "mapping", "style_encoder"},
          "exp": {"generator", "mapping"}, "dial": {"generator", "mapping"}}
REFERENCE = {k: {"generator"} for k in (*LATENT, "lpips")}


def _grads(solver) -> set:
    return {k for k, net in solver.nets.items()
            if any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())}


@pytest.mark.parametrize("mode,term", [("latent", t) for t in LATENT] +
                         [("reference", t) for t in REFERENCE] +
                         [("d", "real"), ("d", "fake"), ("d", "r1")])
def test_each_loss_reaches_its_networks_and_no_others(solver, mode, term):
    name = {"latent": "g_latent", "reference": "g_reference", "d": "d_latent"}[mode]
    b = solver.batch(0)
    solver._only(SUB_STEPS[name])
    for net in solver.nets.values():
        net.zero_grad(set_to_none=True)
    if mode == "d":
        terms = solver.d_losses(b, "latent")
    else:
        terms = solver.g_losses(b, mode, step=0)
    terms[term].backward()
    want = {"discriminator"} if mode == "d" else (LATENT if mode == "latent" else REFERENCE)[term]
    assert _grads(solver) == want
    assert all(p.grad is None for p in solver.frozen.parameters())


def test_sub_steps_step_only_their_networks(solver):
    b = solver.batch(0)
    for name, stepped in SUB_STEPS.items():
        before = {k: [p.clone() for p in net.parameters()] for k, net in solver.nets.items()}
        solver.sub_step(name, b)
        for k, net in solver.nets.items():
            moved = any(not torch.equal(p, q) for p, q in zip(net.parameters(), before[k],
                                                               strict=True))
            assert moved == (k in stepped), (name, k)


def test_the_discriminator_sees_references_and_fakes_never_sources(solver):
    seen = []
    d = solver.nets["discriminator"]
    d.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    b = solver.batch(0)
    solver.train_step()
    sources = torch.cat([resize_to(solver.data.sources, S), b.x, b.y])
    refs = resize_to(solver.data.references, S)
    assert seen
    for batch in seen:
        for img in batch:
            assert not any(torch.allclose(img, s_, atol=1e-6) for s_ in sources)
    # the reals of both D sub-steps are rows of the reference set
    for batch in (seen[0], seen[2]):
        assert all(any(torch.equal(img, r) for r in refs) for img in batch)


def test_privacy_margin_is_a_generator_input(solver):
    """The dial's margin enters G: two margins give two outputs."""
    b = solver.batch(0)
    g = solver.nets["generator"]
    s = solver.nets["mapping"](b.z1, b.ref_domain)
    from deid.methods.stage2.solver import with_margin
    one = g(b.y, with_margin(s, torch.ones(len(s))), b.masks)
    zero = g(b.y, with_margin(s, torch.zeros(len(s))), b.masks)
    assert not torch.allclose(one, zero)


# ----------------------------------------------------------------------------- resume
def _state(solver):
    out = {}
    for k, net in solver.nets.items():
        out.update({f"{k}.{n}": t for n, t in net.state_dict().items()})
    for k, net in solver.ema.items():
        out.update({f"ema.{k}.{n}": t for n, t in net.state_dict().items()})
    for k, opt in solver.optims.items():
        for i, st in opt.state_dict()["state"].items():
            out.update({f"opt.{k}.{i}.{n}": t for n, t in st.items()
                        if isinstance(t, torch.Tensor)})
    return out


def test_resume_is_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(FrozenParts, "chip_affines", staticmethod(_affines))
    cfg = tiny_config(steps=4, ds_decay_steps=6)
    full = Stage2Solver(cfg, tiny_data(), tiny_frozen(), tmp_path / "full")
    full.run(progress=False)
    half = Stage2Solver(dataclasses.replace(cfg, steps=2), tiny_data(), tiny_frozen(),
                        tmp_path / "half")
    half.run(progress=False)
    other = Stage2Solver(dataclasses.replace(cfg, lr=2e-4), tiny_data(), tiny_frozen(),
                         tmp_path / "half")
    with pytest.raises(ValueError, match="another config"):
        other.resume_from(tmp_path / "half")
    again = Stage2Solver(cfg, tiny_data(), tiny_frozen(), tmp_path / "half")
    assert again.resume_from(tmp_path / "half") and again.step == 2  # steps may change
    again.run(progress=False)
    a, b = _state(full), _state(again)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_checkpoint_is_atomic(solver, monkeypatch):
    solver.train_step()
    first = solver.save()
    solver.train_step()

    def torn(obj, f, *a, **kw):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        solver.save()
    monkeypatch.undo()
    files = sorted(p.name for p in solver.out.glob("ckpt_*"))
    assert files == [first.name]  # no torn ckpt_2.pt, the previous one intact
    assert torch.load(first, weights_only=True)["step"] == 1


def test_sources_and_references_must_be_disjoint(tmp_path, monkeypatch):
    monkeypatch.setattr(FrozenParts, "chip_affines", staticmethod(_affines))
    data = tiny_data()
    data.reference_identities[3] = data.source_identities[5]
    with pytest.raises(ValueError, match="s5"):
        Stage2Solver(tiny_config(), data, tiny_frozen(), tmp_path)


# ----------------------------------------------------------------------------- loss values
def test_privacy_dial_is_centred_and_hits_its_margin():
    from deid.methods.stage2.losses import privacy_dial_loss

    c = torch.tensor([5.0, 5.0, 0.0])
    e_x = c + torch.tensor([[1.0, 0.0, 0.0]])
    same, orth = e_x.clone(), c + torch.tensor([[0.0, 1.0, 0.0]])
    assert float(privacy_dial_loss(same, e_x, 1.0, c)) == pytest.approx(0.0, abs=1e-6)
    assert float(privacy_dial_loss(orth, e_x, 0.0, c)) == pytest.approx(0.0, abs=1e-6)
    assert float(privacy_dial_loss(orth, e_x, 0.6, c)) == pytest.approx(0.6, abs=1e-6)
    # uncentred, the two differ little: both lie near the common offset c
    assert float(privacy_dial_loss(orth, e_x, 0.0)) > 0.9


def test_expression_losses_look_only_at_expression():
    from deid.faces.landmark_groups import indices
    from deid.methods.stage2.losses import (
        expression_heatmap_loss,
        expression_mask,
        expression_pixel_loss,
    )

    t = torch.rand(2, 68, 16, 16)
    u = t.clone()
    u[:, list(indices("jaw"))] += 1.0  # pose/identity channels: ignored
    assert float(expression_heatmap_loss(t, u)) == 0.0
    u[:, list(indices("mouth"))] += 1.0
    assert float(expression_heatmap_loss(t, u)) > 0
    heat = torch.zeros(1, 68, 16, 16)
    for i in indices("eyes"):
        heat[0, i, 5, 4 + (i % 6)] = 1.0
    mask = expression_mask(heat, 64)
    assert mask.shape == (1, 1, 64, 64) and mask[0, 0, 22, 24] > 0.5 and mask[0, 0, 60, 5] == 0
    x, out = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    far = out.clone()
    far[..., 50:, :] = 1 - far[..., 50:, :]  # change only outside the eyes
    assert float(expression_pixel_loss(x, out, mask)) == pytest.approx(
        float(expression_pixel_loss(x, far, mask)), abs=1e-6)
