"""Stage-1 loss terms on hand-checkable cases."""

import torch

from deid.methods.stage1.losses import (
    heatmap_loss,
    identity_loss,
    identity_spread_loss,
    image_distance_loss,
    psf_target_loss,
    window_energy_loss,
)
from optics.kit.schedule import global_batch, rank_slice


def test_image_distance():
    x = torch.zeros(2, 3, 8, 8)
    assert float(image_distance_loss(x, x)) == 1.0
    assert float(image_distance_loss(x, torch.full_like(x, 0.5))) == 0.75
    # a low-resolution y is upsampled: a constant stays constant
    assert float(image_distance_loss(x, torch.full((2, 3, 2, 2), 0.5))) == 0.75


def test_psf_target_is_relative():
    t = torch.rand(3, 16, 16)
    assert float(psf_target_loss(t, t)) == 0.0
    assert abs(float(psf_target_loss(2 * t, t)) - 1.0) < 1e-6
    assert abs(float(psf_target_loss(10 * t, 5 * t)) - 1.0) < 1e-6


def test_heatmap_and_identity_terms():
    a, b = torch.zeros(1, 68, 4, 4), torch.full((1, 68, 4, 4), 0.25)
    assert float(heatmap_loss(a, b)) == 0.25
    e = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    zero = torch.zeros(2, 2)
    # distances 5 and 0: hinge at 0.6 gives 0 and 0.6
    assert abs(float(identity_loss(e, zero, 0.6)) - 0.3) < 1e-6
    assert float(identity_spread_loss(torch.ones(4, 8))) == 0.0
    assert abs(float(identity_spread_loss(torch.tensor([[1.0, 0], [-1.0, 0]]))) - 1.0) < 1e-6


def test_window_energy_term():
    assert float(window_energy_loss(torch.tensor([1.0, 0.96, 0.95]), 0.95)) == 0.0
    assert abs(float(window_energy_loss(torch.tensor([0.9, 0.8, 1.0]), 0.95)) - 0.2) < 1e-6


def test_window_energy_gradient_shrinks_an_outgrown_psf():
    """A defocus too large for the window: the term's gradient lowers |Z4|, which puts the
    light back into the window (checked by taking the step)."""
    from optics.camera import Camera
    from optics.presets import get_preset

    cfg = get_preset("lopez2024").at_image_size(64).replace(n_modes=4, psf_size_px=24)
    cam = Camera(cfg, {4: 1.0}).double()
    before = cam.psf(normalize=False).sum(dim=(-2, -1))
    assert float(before.detach().min()) < 0.95
    loss = window_energy_loss(before, 0.95)
    loss.backward()
    with torch.no_grad():
        for p in cam.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad / p.grad.norm()
        after = cam.psf(normalize=False).sum(dim=(-2, -1))
    assert float(window_energy_loss(after, 0.95)) < float(loss.detach())


def test_schedule_epochs_and_ranks():
    n, b = 10, 4
    seen = torch.cat([global_batch(s, n, b, seed=3) for s in range(5)])  # 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:20].tolist()) == list(range(10))
    assert torch.equal(global_batch(2, n, b, 3), global_batch(2, n, b, 3))
    batch = global_batch(0, n, b, 3)
    parts = [rank_slice(batch, r, 2) for r in range(2)]
    assert sorted(torch.cat(parts).tolist()) == sorted(batch.tolist())
