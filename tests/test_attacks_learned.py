"""The learned attack components: the inversion U-Net (an attacker owning the camera) and the
face denoiser for plug-and-play. Short trainings at 32 px on one core.

Faces come from the demo corpus (``deid fetch-demo-data``); on a machine without it, from
crops of scikit-image's bundled photographs, with a warning (never a silent skip).
"""

import warnings

import numpy as np
import pytest
import torch

from deid.attacks.denoisers import (
    FaceDenoiser,
    PnPDenoiser,
    gaussian_blur_denoiser,
    load_face_denoiser,
    train_face_denoiser,
)
from deid.attacks.inversion import (
    InversionConfig,
    InversionUNet,
    inversion_attack,
    load_inversion,
    psnr_db,
    train_inversion,
)
from optics.camera import Camera
from optics.presets import get_preset

SIZE = 32
#: a blurring lopez2024 plate: defocus, coma and trefoil (um of OPD)
BLUR_COEFFICIENTS_UM = {4: 0.6, 7: 0.3, 9: -0.2}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def photo_crops(size: int, per_image: int = 16, seed: int = 0):
    """Train and test sets of ``(N, 3, size, size)`` random crops of scikit-image's bundled
    colour photographs (every fourth crop is a test crop)."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry"):
        img = np.asarray(getattr(data, name)())[..., :3]
        h, w = img.shape[:2]
        for _ in range(per_image):
            side = int(rng.integers(min(h, w) // 3, 2 * min(h, w) // 3))
            top, left = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
            crop = Image.fromarray(img[top:top + side, left:left + side]).resize(
                (size, size), Image.Resampling.BILINEAR)
            out.append(torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1))
    images = torch.stack(out).float() / 255.0
    test = torch.arange(len(images)) % 4 == 3
    return images[~test], images[test]


@pytest.fixture(scope="module")
def faces():
    """``(train, test)`` faces at ``SIZE`` px."""
    from deid.faces.corpus import load_split

    try:
        train = load_split(None, "train", SIZE, landmark_key=None)[0]
        test = load_split(None, "test", SIZE, landmark_key=None)[0]
    except FileNotFoundError as e:
        warnings.warn(f"{e}; using crops of scikit-image photographs instead", stacklevel=1)
        return photo_crops(SIZE)
    return train, test


def blur_camera(size: int = SIZE) -> Camera:
    return Camera(get_preset("lopez2024").at_image_size(size), BLUR_COEFFICIENTS_UM)


def render(camera, x, seed=123):
    with torch.no_grad():
        return camera(x, noise=True, generator=torch.Generator(device=x.device).manual_seed(seed))


# ------------------------------------------------------------------------------ inversion

INV_CONFIG = InversionConfig(steps=500, batch_size=8, lr=2e-3, width=8, depth=2,
                             image_size=SIZE, seed=0, ckpt_every=200)


@pytest.fixture(scope="module")
def inversion(faces, tmp_path_factory):
    train, _ = faces
    out = tmp_path_factory.mktemp("inversion")
    camera = blur_camera()
    model = train_inversion(camera, train, INV_CONFIG, out_dir=out, progress=False)
    return camera, model, out


def test_inversion_beats_identity(faces, inversion):
    _, test = faces
    camera, model, _ = inversion
    y = render(camera, test)
    identity = psnr_db(y, test).mean()
    x_hat = inversion_attack(y, model=model)
    gain = float(psnr_db(x_hat, test).mean() - identity)
    assert x_hat.shape == test.shape and 0 <= x_hat.min() and x_hat.max() <= 1
    assert gain > 0.7, f"inversion gains only {gain:.2f} dB over x_hat = y"


def test_inversion_checkpoint_round_trip(faces, inversion):
    _, test = faces
    camera, model, out = inversion
    assert sorted(p.name for p in out.glob("ckpt_*.pt")) == \
        ["ckpt_200.pt", "ckpt_400.pt", "ckpt_500.pt"]
    assert not list(out.glob("*.tmp"))
    state = torch.load(out / "ckpt_500.pt", weights_only=True)
    assert state["step"] == 500 and state["camera_coefficients_um"] == pytest.approx(
        BLUR_COEFFICIENTS_UM)
    y = render(camera, test[:4])
    for path in (out, out / "ckpt_500.pt"):
        loaded = load_inversion(path)
        assert isinstance(loaded, InversionUNet) and not loaded.training
        assert torch.equal(inversion_attack(y, model=loaded), inversion_attack(y, model=model))
    with pytest.raises(ValueError, match="not an inversion checkpoint"):
        torch.save({"kind": "other"}, out.parent / "other.pt")
        load_inversion(out.parent / "other.pt")


def test_inversion_resume_is_exact(faces, tmp_path):
    train, _ = faces
    camera = blur_camera()
    cfg = InversionConfig(steps=6, batch_size=4, width=4, depth=1, image_size=SIZE,
                          ckpt_every=3)
    whole = train_inversion(camera, train, cfg, out_dir=tmp_path / "a", progress=False)
    train_inversion(camera, train, cfg, out_dir=tmp_path / "b", progress=False)
    (tmp_path / "b" / "ckpt_6.pt").unlink()  # as if killed after step 3
    resumed = train_inversion(camera, train, cfg, out_dir=tmp_path / "b", progress=False)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="another config"):
        train_inversion(camera, train, InversionConfig(steps=7, width=4, depth=1,
                                                       image_size=SIZE),
                        out_dir=tmp_path / "b", progress=False)


def test_inversion_binned_camera_out_size(faces, tmp_path):
    """lr16 keeps its 16x16 sensor at any scene size (at 64 px: binning 4); the U-Net
    upsamples its images to any ``out_size``."""
    train, test = faces
    camera = Camera(get_preset("lr16").at_image_size(64))
    big_train = torch.nn.functional.interpolate(train, size=64, mode="bilinear")
    y = render(camera, torch.nn.functional.interpolate(test[:3], size=64, mode="bilinear"))
    assert y.shape == (3, 3, 16, 16)
    cfg = InversionConfig(steps=2, batch_size=2, width=4, depth=2, image_size=64)
    model = train_inversion(camera, big_train, cfg, progress=False)
    assert inversion_attack(y, model=model).shape == (3, 3, 64, 64)
    assert inversion_attack(y, model=model, out_size=50).shape == (3, 3, 50, 50)
    # an untrained U-Net is y resized by the one resize policy (bicubic up, clamped)
    fresh = InversionUNet(width=4, depth=3, out_size=64)
    up = torch.nn.functional.interpolate(y, size=64, mode="bicubic", align_corners=False)
    torch.testing.assert_close(inversion_attack(y, model=fresh), up.clamp(0, 1))
    with pytest.raises(ValueError, match="at_image_size"):
        train_inversion(camera, train, InversionConfig(steps=1, image_size=SIZE), progress=False)


@pytest.mark.parametrize("device", DEVICES)
def test_inversion_attack_interface(device):
    torch.manual_seed(0)
    model = InversionUNet(width=4, depth=2, out_size=24)
    psf = torch.full((3, 5, 5), 1 / 25)
    for batch in (1, 3):
        y = torch.rand(batch, 3, 24, 24, dtype=torch.float64, device=device)
        x_hat = inversion_attack(y, psf, model=model)  # the PSF is ignored
        assert x_hat.shape == y.shape and x_hat.dtype == y.dtype and x_hat.device == y.device
        assert 0 <= x_hat.min() and x_hat.max() <= 1
    assert model.training  # the attack restores the mode it found
    with pytest.raises(TypeError, match="model="):
        inversion_attack(y, model)


# ------------------------------------------------------------------------------ denoiser

@pytest.fixture(scope="module")
def denoiser(faces, tmp_path_factory):
    train, _ = faces
    out = tmp_path_factory.mktemp("denoiser")
    den = train_face_denoiser(train, sigmas=(0.01, 0.2), steps=300, batch_size=16, lr=3e-3,
                              width=16, depth=5, seed=0, out_dir=out, progress=False)
    return den, out


@pytest.mark.parametrize("sigma", [0.05, 0.1])
def test_denoiser_beats_noisy_and_blur(faces, denoiser, sigma):
    _, test = faces
    den, _ = denoiser
    g = torch.Generator().manual_seed(5)
    noisy = test + sigma * torch.randn(test.shape, generator=g)
    base = float(psnr_db(noisy.clamp(0, 1), test).mean())
    ours = float(psnr_db(den(noisy, sigma), test).mean())
    blur = max(float(psnr_db(gaussian_blur_denoiser(noisy, sigma, b).clamp(0, 1), test).mean())
               for b in (0.5, 0.7, 1.0, 1.5, 2.0))  # the best blur, chosen on the test set
    assert ours > base + 2.0, f"sigma {sigma}: {ours:.2f} dB vs noisy {base:.2f} dB"
    assert ours > blur - 0.1, f"sigma {sigma}: {ours:.2f} dB vs best blur {blur:.2f} dB"


def test_denoiser_checkpoint_round_trip(faces, denoiser):
    _, test = faces
    den, out = denoiser
    state = torch.load(out / "denoiser.pt", weights_only=True)
    assert state["config"]["sigma_max"] == 0.2
    loaded = load_face_denoiser(out)
    x = test[:4] + 0.07 * torch.randn(test[:4].shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(x, 0.07), den(x, 0.07))
    assert loaded.sigma_range == (0.01, 0.2)


@pytest.mark.parametrize("device", DEVICES)
def test_denoiser_signature(device):
    torch.manual_seed(0)
    model = FaceDenoiser(width=8, depth=3)
    den = PnPDenoiser(model, sigma_range=(0.01, 0.2))
    x = torch.rand(2, 3, 20, 20, dtype=torch.float64, device=device)
    for sigma in (0.05, 0.0, 5.0, torch.tensor([0.02, 0.1])):  # out of range: clamped
        out = den(x, sigma)
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
        assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(den(x, 0.0), den(x, 0.01))
    # untrained (zero last layer) it is the identity; the sigma map does condition the output
    torch.testing.assert_close(den(x, 0.1), x, atol=1e-6, rtol=0)
    torch.nn.init.normal_(model.body[-1].weight, std=0.1)
    assert not torch.equal(model(x.float().cpu(), 0.02), model(x.float().cpu(), 0.2))
    with pytest.raises(ValueError, match="one per image"):
        model(x.float().cpu(), torch.tensor([0.1, 0.1, 0.1]))


def test_fallback_photo_crops():
    train, test = photo_crops(16, per_image=2)
    assert train.shape == (9, 3, 16, 16) and test.shape == (3, 3, 16, 16)
    assert 0 <= train.min() and train.max() <= 1 and train.std() > 0.05


# ------------------------------------------------------------------------------ bfloat16
def test_bf16_settings():
    from optics.kit.precision import native_bf16, resolve_bf16

    assert resolve_bf16("on", "cpu") and not resolve_bf16("off", "cpu")
    assert resolve_bf16("auto", "cpu") == native_bf16("cpu")
    with pytest.raises(ValueError, match="bf16 must be one of"):
        resolve_bf16("yes", "cpu")


def test_bf16_denoiser_stays_close_to_float32():
    """The face denoiser under bfloat16 autocast: the residual (noise estimate) carries
    bfloat16's ~3 significant digits, so the denoised image stays within ~1e-2 of float32."""
    torch.manual_seed(0)
    model = FaceDenoiser(width=8, depth=3)
    torch.nn.init.normal_(model.body[-1].weight, std=0.05)
    x = torch.rand(2, 3, 24, 24)
    ref = PnPDenoiser(model)(x, 0.05)
    half = PnPDenoiser(model, bf16=True)(x, 0.05)
    assert half.dtype == torch.float32
    gap = float((half - ref).abs().max())
    assert 0 < gap < 1e-2, gap  # not the same computation, and not far from it


def test_bf16_inversion_learns_as_float32_does(faces):
    """The inversion network trained under bfloat16 autocast: the same PSNR gain over the
    privacy image as float32 training, to 0.5 dB (a short run)."""
    train, test = faces
    camera = blur_camera()
    y = render(camera, test)
    base = float(psnr_db(y, test).mean())
    gains = {}
    for bf16 in (False, True):
        cfg = InversionConfig(steps=300, batch_size=8, width=8, image_size=SIZE, bf16=bf16)
        model = train_inversion(camera, train, cfg, progress=False)
        gains[bf16] = float(psnr_db(inversion_attack(y, model=model), test).mean()) - base
    assert gains[False] > 0.8, gains
    assert abs(gains[True] - gains[False]) < 0.5, gains


def test_bad_bf16_setting_is_refused_at_once():
    from deid.attacks.attacker import AttackConfig

    with pytest.raises(ValueError, match="bf16 must be one of auto, on, off"):
        AttackConfig(bf16="maybe")
