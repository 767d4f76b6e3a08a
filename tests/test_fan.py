"""Tests for the face-heatmap regressor: deid.faces.landmark_groups, deid.faces.heatmaps and
deid.faces.fan."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from deid.faces.fan import (
    FAN,
    FAN_PRESETS,
    AddCoords,
    ConvBlock,
    FANConfig,
    count_parameters,
    fan_preset,
)
from deid.faces.heatmaps import (
    adaptive_wing_loss,
    awing_weight_map,
    face_masks,
    gaussian_heatmaps,
    heatmaps_to_landmarks,
    nme,
    soft_argmax,
    taylor_peak,
)
from deid.faces.landmark_groups import (
    FLIP_68,
    GROUPS,
    OUTER_EYE_CORNERS,
    PARTS,
    group_of,
    hflip_landmarks,
    indices,
    schematic_face_68,
)
from optics.kit.config import load_config, save_config

NAN = math.nan


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny networks here run fastest single-threaded, even on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _interior_landmarks(b, k, size, margin, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return margin + torch.rand(b, k, 2, generator=g, dtype=dtype) * (size - 2 * margin)


# --------------------------------------------------------------------------------------------
# Landmark groups
# --------------------------------------------------------------------------------------------

def test_groups_partition_the_68_points():
    flat = [i for idx in GROUPS.values() for i in idx]
    assert flat == list(range(68))
    assert GROUPS["jaw"] == tuple(range(17)) and GROUPS["inner_lips"] == tuple(range(60, 68))
    assert indices("eyes") == tuple(range(36, 48))
    assert indices("face") == tuple(range(68))
    assert set(indices("inner_face")) == set(range(17, 68))
    assert group_of(45) == "left_eye" and group_of(33) == "nose_lower"
    with pytest.raises(KeyError):
        indices("ears")
    assert set(PARTS["mouth"]) == {"outer_lips", "inner_lips"}


def test_outer_eye_corners_are_the_iBUG_points():
    assert OUTER_EYE_CORNERS == (36, 45)
    face = schematic_face_68()
    right, left = face[36], face[45]
    assert right[0] < left[0]                       # subject's right eye is on the image left
    eye_x = face[list(indices("eyes")), 0]
    assert right[0] == eye_x.min() and left[0] == eye_x.max()   # they are the outer corners


def test_flip_permutation_is_an_involution_that_swaps_sides():
    perm = FLIP_68
    assert sorted(perm) == list(range(68))
    assert [perm[perm[i]] for i in range(68)] == list(range(68))
    assert {perm[i] for i in GROUPS["right_eye"]} == set(GROUPS["left_eye"])
    assert {perm[i] for i in GROUPS["right_brow"]} == set(GROUPS["left_brow"])
    assert perm[36] == 45 and perm[39] == 42            # outer and inner eye corners
    assert perm[0] == 16 and perm[8] == 8               # jaw ends swap, chin stays
    assert perm[48] == 54 and perm[51] == 51 and perm[57] == 57   # mouth corners, mid-line
    assert all(perm[i] == i for i in GROUPS["nose_bridge"])


def test_flip_permutation_maps_a_symmetric_face_onto_itself():
    face = schematic_face_68(dtype=torch.float64)      # drawn independently of FLIP_68
    assert torch.allclose(hflip_landmarks(face, 1.0), face, atol=1e-12)
    shuffled = list(FLIP_68)
    shuffled[40], shuffled[41] = shuffled[41], shuffled[40]   # a plausible slip
    assert not torch.allclose(hflip_landmarks(face, 1.0, shuffled), face, atol=1e-3)


def test_hflip_of_landmarks_matches_flipped_heatmaps():
    """Flipping the image flips the heatmaps: checks x -> W - x (pixel centres) and FLIP_68."""
    lm = _interior_landmarks(2, 68, 64, 2.0)
    heat = gaussian_heatmaps(lm, 64, 16, 1.0)
    flipped = gaussian_heatmaps(hflip_landmarks(lm, 64), 64, 16, 1.0)
    assert torch.allclose(flipped, torch.flip(heat, dims=[-1])[:, list(FLIP_68)], atol=1e-12)
    assert torch.allclose(hflip_landmarks(hflip_landmarks(lm, 64), 64), lm, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Heatmaps: targets and decoding
# --------------------------------------------------------------------------------------------

def test_gaussian_heatmaps_follow_the_pixel_centre_convention():
    # Same size: a landmark at the centre of pixel (col 10, row 20) peaks there at exactly 1.
    h = gaussian_heatmaps(torch.tensor([[[10.5, 20.5]]]), 32, 32, 1.0)[0, 0]
    assert h.shape == (32, 32)
    assert h[20, 10] == 1.0 and h.argmax() == 20 * 32 + 10
    assert h[20, 9] == h[20, 11] and h[19, 10] == h[21, 10]
    assert h[19, 10] == pytest.approx(math.exp(-0.5))
    # S = 4 H: heatmap pixel (row 5, col 7) covers image pixels 28..31 x 20..23, whose centre
    # is image point (4*7 + 2, 4*5 + 2).
    h = gaussian_heatmaps(torch.tensor([[[30.0, 22.0]]]), 256, 64, 1.0)[0, 0]
    assert h[5, 7] == 1.0 and h[5, 6] == h[5, 8] and h[4, 7] == h[6, 7]
    # The centre of image pixel 41 (41.5) is heatmap coordinate 41.5 / 4.
    h = gaussian_heatmaps(torch.tensor([[[41.5, 41.5]]], dtype=torch.float64), 256, 64, 1.0)
    assert torch.allclose(soft_argmax(h), torch.tensor([[[41.5 / 4, 41.5 / 4]]],
                                                      dtype=torch.float64), atol=1e-9)
    # Bilinear upsampling with align_corners=False (as in face_masks) keeps the peak in place.
    up = F.interpolate(gaussian_heatmaps(torch.tensor([[[30.0, 22.0]]]), 256, 64, 1.0),
                       size=(256, 256), mode="bilinear", align_corners=False)[0, 0]
    assert up[21, 29] == up[22, 30] == up[21, 30] == up[22, 29] == up.max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma", [1.0, 2.0])
@pytest.mark.parametrize("method", ["soft_argmax", "taylor"])
def test_heatmap_round_trip_is_exact_for_interior_points(dtype, sigma, method):
    lm = _interior_landmarks(3, 20, 256, 40.0, dtype=dtype)
    heat = gaussian_heatmaps(lm, 256, 64, sigma)
    assert heat.dtype == dtype and heat.shape == (3, 20, 64, 64)
    back = heatmaps_to_landmarks(heat, 256, method=method)
    assert back.dtype == dtype
    assert (back - lm).abs().max() < 1e-3


def test_soft_argmax_window_beta_and_background():
    lm = _interior_landmarks(2, 10, 64, 12.0)
    heat = gaussian_heatmaps(lm, 64, 64, 1.0)
    assert (soft_argmax(heat, window=4) - lm).abs().max() < 1e-3
    # A flat background of 0.02 drags the full-map centroid toward the map centre; a window
    # and the local Taylor peak are not fooled.
    noisy = heat + 0.02
    assert (soft_argmax(noisy) - lm).abs().max() > 2.0
    assert (soft_argmax(noisy, window=4) - lm).abs().max() < 0.1
    assert (taylor_peak(noisy) - lm).abs().max() < 0.1
    # Huge beta: no overflow, the result tends to the argmax pixel centre.
    sharp = soft_argmax(heat, beta=1e4)
    assert torch.isfinite(sharp).all()
    assert torch.allclose(sharp, lm.floor() + 0.5, atol=0.5)
    centres = torch.stack([heat.flatten(-2).argmax(-1) % 64,
                           heat.flatten(-2).argmax(-1) // 64], dim=-1) + 0.5
    assert torch.allclose(sharp, centres.to(sharp.dtype), atol=1e-6)


def test_decoders_are_differentiable():
    g = torch.Generator().manual_seed(1)
    heat = (0.1 + torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64))
    heat[0, :, 2, 3] += 2.0                                     # a clear, interior peak
    heat.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda h: soft_argmax(h, beta=2.0), (heat,))
    assert torch.autograd.gradcheck(lambda h: soft_argmax(h, window=1), (heat,))
    assert torch.autograd.gradcheck(taylor_peak, (heat,))
    lm = _interior_landmarks(1, 3, 32, 8.0).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: gaussian_heatmaps(p, 32, 8, 1.5), (lm,))


def test_missing_landmarks_give_zero_heatmaps_and_nan_peaks():
    lm = torch.tensor([[[20.0, 30.0], [NAN, 5.0], [NAN, NAN], [44.0, 36.0]]],
                      requires_grad=True)
    heat = gaussian_heatmaps(lm, 64, 16, 1.0)
    assert torch.isfinite(heat).all()
    assert heat[0, 1].abs().sum() == 0 and heat[0, 2].abs().sum() == 0
    ok = gaussian_heatmaps(lm[:, [0, 3]].detach(), 64, 16, 1.0)
    assert torch.equal(heat[:, [0, 3]], ok)
    heat.sum().backward()
    assert torch.isfinite(lm.grad).all() and (lm.grad[0, 1:3] == 0).all()
    for method in ("soft_argmax", "taylor"):
        back = heatmaps_to_landmarks(heat.detach(), 64, method=method)
        assert torch.isnan(back[0, 1:3]).all()
        assert torch.allclose(back[0, [0, 3]], lm[0, [0, 3]].detach(), atol=1e-3)


# --------------------------------------------------------------------------------------------
# Adaptive wing loss and NME
# --------------------------------------------------------------------------------------------

def _awing_by_hand(y, yhat, omega=14.0, theta=0.5, eps=1.0, alpha=2.1):
    d, p = abs(y - yhat), alpha - y
    if d < theta:
        return omega * math.log(1 + (d / eps) ** p)
    a = omega * (1 / (1 + (theta / eps) ** p)) * p * (theta / eps) ** (p - 1) / eps
    c = theta * a - omega * math.log(1 + (theta / eps) ** p)
    return a * d - c


def test_adaptive_wing_loss_values():
    target = gaussian_heatmaps(torch.tensor([[[20.0, 24.0], [40.0, 30.0]]]), 64, 16, 1.0)
    assert adaptive_wing_loss(target.clone(), target) == 0
    assert adaptive_wing_loss(target + 0.01, target) > 0
    assert adaptive_wing_loss(target - 0.01, target, weighted=True) > 0
    # Hand-computed single pixels on both pieces of the loss.
    for y, yhat in [(0.0, 0.25), (0.3, 0.1), (1.0, 0.0), (0.0, 0.9), (0.7, 1.6)]:
        got = adaptive_wing_loss(torch.tensor([[[[yhat]]]], dtype=torch.float64),
                                 torch.tensor([[[[y]]]], dtype=torch.float64))
        assert got.item() == pytest.approx(_awing_by_hand(y, yhat), rel=1e-12)
    assert _awing_by_hand(0.0, 0.25) == pytest.approx(14 * math.log(1 + 0.25**2.1))


def test_adaptive_wing_loss_is_smooth_at_theta():
    y = torch.full((1, 1, 1, 2), 0.4, dtype=torch.float64)
    pred = (y + torch.tensor([0.5 - 1e-9, 0.5 + 1e-9], dtype=torch.float64)).requires_grad_()
    loss = adaptive_wing_loss(pred, y, reduction="none")
    loss.sum().backward()
    assert loss[..., 0].item() == pytest.approx(loss[..., 1].item(), abs=1e-7)
    assert pred.grad[..., 0].item() == pytest.approx(pred.grad[..., 1].item(), rel=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_adaptive_wing_loss_gradcheck(weighted):
    g = torch.Generator().manual_seed(2)
    target = gaussian_heatmaps(torch.tensor([[[6.0, 7.0]]], dtype=torch.float64), 16, 8, 1.0)
    pred = (target + 0.8 * (torch.rand(target.shape, generator=g, dtype=torch.float64) - 0.5))
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: adaptive_wing_loss(p, target, weighted=weighted),
                                    (pred,))


def test_awing_weight_map_is_the_dilated_foreground():
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 4, 5] = 0.5
    target[0, 0, 0, 0] = 0.1                                    # below the 0.2 threshold
    w = awing_weight_map(target)
    expected = torch.ones(8, 8)
    expected[3:6, 4:7] = 11.0
    assert torch.equal(w[0, 0], expected)


def test_nme_known_cases():
    gt = schematic_face_68(100.0, dtype=torch.float64)         # outer corners 50 px apart
    assert (gt[36] - gt[45]).norm() == pytest.approx(50.0)
    shifted = gt + torch.tensor([3.0, 4.0], dtype=torch.float64)        # 5 px everywhere
    jaw_off = gt.clone()
    jaw_off[list(GROUPS["jaw"])] += torch.tensor([0.0, 10.0], dtype=torch.float64)
    pred = torch.stack([shifted, jaw_off, gt])
    gts = torch.stack([gt, gt, gt])
    out = nme(pred, gts)
    assert out.shape == (3,)
    assert out[0].item() == pytest.approx(5 / 50)
    assert out[1].item() == pytest.approx(17 * 10 / 68 / 50)
    assert out[2].item() == 0.0                                # exact: no epsilon added
    # inter-pupil: eye centroids 36 px apart in the schematic face.
    assert nme(shifted[None], gt[None], "inter_pupil").item() == pytest.approx(5 / 36)


def test_nme_ignores_missing_ground_truth_and_other_normalisers():
    gt = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [NAN, NAN], [0.0, 10.0]]],
                      dtype=torch.float64)
    pred = gt.nan_to_num(0.0).clone()
    pred[0, 2] += torch.tensor([0.0, 2.0], dtype=torch.float64)       # error 2 on point 2
    pred[0, 3] = torch.tensor([1e3, 1e3], dtype=torch.float64)        # unannotated: ignored
    pred.requires_grad_(True)
    out = nme(pred, gt, normalizer=(0, 1))                            # 4 valid points, d=10
    assert out.item() == pytest.approx(2 / 4 / 10)
    out.sum().backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[0, 3] == 0).all()
    assert nme(pred, gt, normalizer=4.0).item() == pytest.approx(2 / 4 / 4)
    assert nme(pred, gt, normalizer="box").item() == pytest.approx(2 / 4 / 10)
    bad = pred.detach().clone()
    bad[0, 2] = NAN                                                   # a failed prediction
    assert torch.isnan(nme(bad, gt, normalizer=(0, 1))).all()
    with pytest.raises(ValueError, match="68-point"):
        nme(pred, gt)


# --------------------------------------------------------------------------------------------
# Face masks
# --------------------------------------------------------------------------------------------

def test_face_masks_cover_the_parts_and_nothing_else():
    s = 256
    face = schematic_face_68(float(s))
    lm = torch.stack([face, face.clone()])
    lm[1, list(GROUPS["jaw"])] = NAN                                  # a face with no jaw
    heat = gaussian_heatmaps(lm, s, 64, 1.0).requires_grad_(True)
    coarse, fine = face_masks(heat, s)
    assert coarse.shape == fine.shape == (2, 1, s, s)
    for m in (coarse, fine):
        assert torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 1

    def at(mask, point):
        return mask[0, 0, int(point[1]), int(point[0])].item()

    for eye in ("right_eye", "left_eye"):
        pts = face[list(GROUPS[eye])]
        lo, hi = pts.amin(0).long(), pts.amax(0).long()
        assert fine[0, 0, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1].min() > 0.75   # the whole eye
    for part in ("nose_lower", "outer_lips"):
        assert at(fine, face[list(GROUPS[part])].mean(0)) > 0.75
    jaw = [face[i] for i in GROUPS["jaw"]]
    assert all(at(fine, p) < 1e-3 for p in jaw)                     # jaw line: off
    assert all(at(coarse, p) > 0.25 for p in jaw)                   # ... but in the coarse mask
    assert fine[0, 0, :40].max() == 0 and fine[0, 0, :, :20].max() == 0   # far from the face
    assert torch.equal(fine[0], fine[1])                            # jaw does not enter fine
    chin_x, chin_y = int(jaw[8][0]), int(jaw[8][1])
    assert coarse[1, 0, chin_y, chin_x] < 0.5 * coarse[0, 0, chin_y, chin_x]   # jaw -> coarse
    (fine.sum() + coarse.sum()).backward()
    assert torch.isfinite(heat.grad).all() and heat.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------

def test_add_coords_channels():
    add = AddCoords(with_radius=True, with_boundary=True)
    x = torch.zeros(2, 3, 4, 8)
    boundary = torch.zeros(2, 1, 4, 8)
    boundary[:, :, 1, 2] = 0.5
    out = add(x, boundary)
    assert out.shape == (2, 3 + 5, 4, 8)
    xx, yy, rr, bx, by = out[0, 3:]
    assert torch.allclose(xx[0], (2 * torch.arange(8) + 1) / 8 - 1)   # pixel centres in (-1, 1)
    assert torch.allclose(yy[:, 0], (2 * torch.arange(4) + 1) / 4 - 1)
    assert torch.allclose(xx, -xx.flip(-1)) and torch.allclose(yy, -yy.flip(-2))
    assert torch.allclose(rr, torch.sqrt(xx**2 + yy**2) / math.sqrt(2)) and rr.max() < 1
    assert bx[1, 2] == xx[1, 2] and by[1, 2] == yy[1, 2]
    assert bx.abs().sum() == abs(xx[1, 2]) and by.abs().sum() == abs(yy[1, 2])
    with pytest.raises(ValueError):
        add(x)


def test_conv_block_shapes_and_projection():
    assert ConvBlock(8, 16).project is not None and ConvBlock(16, 16).project is None
    assert ConvBlock(8, 16)(torch.rand(2, 8, 5, 7)).shape == (2, 16, 5, 7)
    for norm, kind in (("batch", torch.nn.BatchNorm2d), ("group", torch.nn.GroupNorm)):
        assert isinstance(ConvBlock(16, 16, norm).norm1, kind)


@pytest.mark.parametrize("input_size", [64, 128, 256])
@pytest.mark.parametrize("num_modules", [1, 2])
def test_fan_output_shapes(input_size, num_modules):
    fan = FAN(num_modules=num_modules, width=8, depth=4, num_landmarks=5, input_size=input_size)
    x = torch.rand(2, 3, input_size, input_size)
    with torch.no_grad():
        out = fan(x, return_all=True)
        last = fan(x)
    hm = input_size // 4
    assert len(out) == num_modules
    assert all(o.shape == (2, 5, hm, hm) for o in out)
    assert torch.equal(last, out[-1])
    assert fan.heatmap_size == hm and fan.config.heatmap_size == hm
    with torch.no_grad():
        assert fan.landmarks(x).shape == (2, 5, 2)


def test_fan_depth_is_capped_for_small_heatmaps():
    fan = FAN(width=8, depth=6, num_landmarks=3, input_size=64)    # 16 px heatmaps
    assert fan.config.depth == 6 and fan.config.effective_depth == 4
    assert all(h.depth == 4 for h in fan.hourglasses)
    assert FANConfig(input_size=80, depth=4).effective_depth == 2  # 20 px: 20 -> 10 -> 5
    assert FANConfig(input_size=256, depth=4).effective_depth == 4
    with torch.no_grad():
        assert fan(torch.rand(1, 3, 64, 64)).shape == (1, 3, 16, 16)
        assert FAN(width=8, input_size=80)(torch.rand(1, 3, 80, 80)).shape == (1, 68, 20, 20)


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_gradients_reach_every_parameter(norm):
    torch.manual_seed(0)
    fan = FAN(num_modules=2, width=16, depth=2, num_landmarks=4, input_size=64,
              with_boundary=True, norm=norm)
    outputs = fan(torch.rand(2, 3, 64, 64), return_all=True)
    assert [o.shape[1] for o in outputs] == [5, 5]                 # 4 landmarks + boundary
    sum((o * torch.randn_like(o)).sum() for o in outputs).backward()
    missing = [n for n, p in fan.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert missing == []


def test_fan_dtype_and_device_follow_the_module():
    fan = FAN(width=8, depth=2, num_landmarks=3, input_size=64).double()
    with torch.no_grad():
        out = fan(torch.rand(1, 3, 64, 64, dtype=torch.float64))
    assert out.dtype == torch.float64
    # Nothing is tied to the CPU: the network runs on the shape-only "meta" device.
    meta = FAN(width=8, depth=2, num_landmarks=3, input_size=64).to("meta")
    assert meta(torch.empty(2, 3, 64, 64, device="meta")).shape == (2, 3, 16, 16)
    if torch.cuda.is_available():
        gpu = FAN(width=8, depth=2, num_landmarks=3, input_size=64).cuda()
        assert gpu(torch.rand(1, 3, 64, 64, device="cuda")).is_cuda


def test_fan_input_checks():
    fan = FAN(width=8, depth=2, num_landmarks=3, input_size=64)
    with pytest.raises(ValueError, match="64"):
        fan(torch.rand(1, 3, 128, 128))
    for bad in (dict(width=12), dict(input_size=30), dict(norm="layer"), dict(num_modules=0)):
        with pytest.raises(ValueError):
            FANConfig(**bad)


def test_fan_config_round_trips_through_yaml(tmp_path):
    cfg = FANConfig(input_size=64, width=16, num_modules=2, depth=3, num_landmarks=98,
                    with_boundary=True, norm="batch")
    loaded = load_config(FANConfig, save_config(cfg, tmp_path / "fan.yaml"))
    assert loaded == cfg
    a, b = FAN.from_config(cfg), FAN.from_config(loaded)
    assert b.config == cfg
    assert {k: v.shape for k, v in a.state_dict().items()} == \
        {k: v.shape for k, v in b.state_dict().items()}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.width = 32


@pytest.mark.parametrize("name", sorted(FAN_PRESETS))
def test_every_preset_builds_and_runs(name):
    cfg = fan_preset(name)
    fan = FAN.from_config(cfg).eval()
    n = count_parameters(fan)
    s = cfg.input_size
    # Shapes through the whole network on the "meta" device (no arithmetic, so fast for the
    # 6 M-parameter preset too).
    out = fan.to("meta")(torch.empty(2, cfg.in_channels, s, s, device="meta"), return_all=True)
    assert [o.shape for o in out] == [(2, cfg.num_outputs, s // 4, s // 4)] * cfg.num_modules
    assert {"default": 300_000 < n < 600_000, "tiny": n < 50_000,
            "stargan_v2": 5_000_000 < n < 8_000_000}.get(name, n > 0)


def test_stargan_v2_preset_matches_its_layout():
    cfg = fan_preset("stargan_v2")
    assert (cfg.width, cfg.num_landmarks, cfg.num_outputs, cfg.heatmap_size) == (256, 98, 99, 64)
    with pytest.raises(KeyError):
        fan_preset("nope")


# --------------------------------------------------------------------------------------------
# Learning
# --------------------------------------------------------------------------------------------

def _synthetic_face(size=64):
    """One fixed cartoon face ``(1, 3, size, size)`` in [0, 1] and its 5 landmarks (eye
    centres, nose tip, mouth corners) in image pixels."""
    c = torch.arange(size) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    lm = torch.tensor([[22.0, 26.0], [42.0, 26.0], [32.0, 36.0], [24.0, 46.0], [40.0, 46.0]])

    def blob(p, r):
        return torch.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * r * r))

    background = torch.stack([0.2 + 0.5 * xx / size, 0.3 + 0 * xx, 0.7 - 0.4 * yy / size])
    skin = torch.tensor([0.85, 0.7, 0.6])[:, None, None].expand(3, size, size)
    inside = ((xx - 32) / 20) ** 2 + ((yy - 34) / 26) ** 2 < 1
    img = torch.where(inside, skin, background)
    mouth = torch.exp(-((yy - 46) ** 2) / 4.5) * ((xx > 24) & (xx < 40))
    dark = blob(lm[0], 2.5) + blob(lm[1], 2.5) + 0.6 * blob(lm[2], 2.0) + mouth
    return (img * (1 - 0.8 * dark.clamp(0, 1))).clamp(0, 1)[None], lm[None]


def test_tiny_fan_overfits_one_face():
    torch.manual_seed(0)
    img, lm = _synthetic_face()
    target = gaussian_heatmaps(lm, 64, 16, 1.0)
    fan = FAN(width=16, depth=2, num_landmarks=5, input_size=64)
    opt = torch.optim.Adam(fan.parameters(), lr=3e-3)
    with torch.no_grad():
        before = nme(fan.landmarks(img), lm, normalizer=(0, 1)).item()
    for _ in range(100):
        loss = adaptive_wing_loss(fan(img), target, weighted=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = nme(fan.landmarks(img), lm, normalizer=(0, 1)).item()
    assert before > 0.2
    assert after < 0.05
