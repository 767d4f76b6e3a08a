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


# ------------------------------------------------------------- the attack term's fast paths
def _y_psf(per_image: bool, dtype=torch.float64, size=(36, 30), k=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(3, 3, *size, generator=g, dtype=dtype) * 1.2 - 0.1  # some pixels get clipped
    psf = torch.rand(3 if per_image else 1, 3, k, k, generator=g, dtype=dtype)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    return y, (psf if per_image else psf[0])


def test_wiener_restore_equals_wiener_with_its_gradients():
    """Shared spectra: the restoration equals wiener() at that balance, and the hand-written
    backward gives autograd's gradients to y and to the PSF (float64, every boundary, a
    shared and a per-image PSF, odd and even grids, with and without the clip)."""
    import pytest

    from optics.deconv import wiener, wiener_balances, wiener_restore, wiener_spectra

    for per_image in (False, True):
        for size, k in (((36, 30), 9), ((33, 27), 8)):
            y, psf = _y_psf(per_image, size=size, k=k)
            w = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)
            for boundary in ("replicate", "reflect", "circular"):
                for balance, clip in ((1e-3, True), (0.3, False)):
                    y1, p1 = y.clone().requires_grad_(), psf.clone().requires_grad_()
                    ref = wiener_balances(y1, p1, [balance], boundary=boundary, clip=clip)[0]
                    (ref * w).sum().backward()
                    y2, p2 = y.clone().requires_grad_(), psf.clone().requires_grad_()
                    out = wiener_restore(wiener_spectra(y2, p2, boundary=boundary), balance,
                                         clip=clip)
                    (out * w).sum().backward()
                    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
                    assert torch.allclose(out, wiener(y, psf, reg=balance, boundary=boundary,
                                                      clip=clip), rtol=0, atol=1e-12)
                    assert torch.allclose(y2.grad, y1.grad, rtol=1e-9, atol=1e-12)
                    assert torch.allclose(p2.grad, p1.grad, rtol=1e-9, atol=1e-12)
    # images without a gradient get exactly zero
    y, psf = _y_psf(False)
    sp = wiener_spectra(y, psf)
    yg = y.clone().requires_grad_()
    out = wiener_restore(wiener_spectra(yg, psf), 0.01)
    (out[1] * 2).sum().backward()
    assert float(yg.grad[[0, 2]].abs().max()) == 0 and float(yg.grad[1].abs().max()) > 0
    with pytest.raises(ValueError, match="balance"):
        wiener_restore(sp, -1.0)


def test_wiener_balance_errors_equal_the_restorations_errors():
    """The search's per-balance MSE (clipped, cropped restorations against the target)
    equals wiener()'s, with and without the clip, for chunks of 1, 2 and all images; a
    restoration shifted by one pixel would not match."""
    import pytest

    from optics.deconv import wiener, wiener_balance_errors, wiener_spectra

    balances = (1e-4, 1e-2, 1.0, 3.0)
    for per_image in (False, True):
        y, psf = _y_psf(per_image, seed=2)
        x = torch.rand(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
        sp = wiener_spectra(y, psf)
        for clip in (True, False):
            ref = torch.stack([(wiener(y, psf, reg=b, clip=clip) - x).pow(2).mean()
                               for b in balances])
            for chunk in (1, 2, 3):
                errors = wiener_balance_errors(sp, balances, x, clip=clip, chunk=chunk)
                assert errors.dtype == torch.float64 and errors.shape == (4,)
                assert torch.allclose(errors, ref, rtol=1e-10, atol=0)
        shifted = torch.stack([(wiener(y, psf, reg=b).roll(1, -1) - x).pow(2).mean()
                               for b in balances])
        assert not torch.allclose(wiener_balance_errors(sp, balances, x), shifted, rtol=1e-3)
    # float32, the trainer's case: float rounding only
    y32, psf32, x32 = y.float(), psf.float(), x.float()
    ref = torch.stack([(wiener(y32, psf32, reg=b) - x32).double().pow(2).mean() for b in balances])
    errors = wiener_balance_errors(wiener_spectra(y32, psf32), balances, x32)
    assert torch.allclose(errors, ref, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="target"):
        wiener_balance_errors(sp, balances, x[:, :, :-1])
    with pytest.raises(ValueError, match="balances"):
        wiener_balance_errors(sp, (), x)


def _identity_net_or_skip():
    import pytest

    from deid.judges import identity_net

    try:
        weights = identity_net.fetch_identity_weights()
    except identity_net.WeightsUnavailable as e:
        pytest.skip(f"face-api weights unavailable: {e}")
    return identity_net.IdentityNet.load(weights.parent)


def test_training_twin_is_the_identity_net():
    """The training step's twin (folded convolutions, channels_last, hand-written backward on
    the rows with a gradient) equals IdentityNet: embeddings and gradients to the images
    through the chip warp, float64; rows without an embedding gradient get exactly zero."""
    from deid.judges.identity_net import warp_to_chips
    from deid.judges.identity_twin import DlibTwin, training_twin, twin_embed

    net32 = _identity_net_or_skip()
    assert isinstance(training_twin(net32), DlibTwin)
    other = torch.nn.Linear(2, 2)
    assert training_twin(other) is other
    net = net32.double()
    twin = DlibTwin(net)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 96, 96, generator=g, dtype=torch.float64)
    aff = torch.tensor([[0.5, 0.04, 8.0], [-0.04, 0.5, 10.0]], dtype=torch.float64).repeat(6, 1, 1)
    aff[:, :, 2] += torch.randn(6, 2, generator=g, dtype=torch.float64) * 2
    w = torch.randn(6, 128, generator=g, dtype=torch.float64)
    for zero_rows in ([], [1, 4], [0, 1, 2], list(range(6))):
        w[zero_rows] = 0
        a = x.clone().requires_grad_()
        e1 = net(warp_to_chips(a, aff))
        (e1 * w).sum().backward()
        b = x.clone().requires_grad_()
        e2 = twin_embed(twin, b, aff)
        (e2 * w).sum().backward()
        assert torch.allclose(e2, e1, rtol=0, atol=1e-12)
        assert torch.allclose(b.grad, a.grad, rtol=1e-9, atol=1e-14)
        if zero_rows:
            assert float(b.grad[zero_rows].abs().max()) == 0
    with torch.no_grad():
        assert torch.allclose(twin_embed(twin, x, aff), net(warp_to_chips(x, aff)), atol=1e-12)
