"""The stage-2 training config (a dataclass that loads from and saves to YAML)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Stage2Config", "EXPRESSION_FORMS"]

EXPRESSION_FORMS = ("heatmap", "pixel", "off")


@dataclass(frozen=True)
class Stage2Config:
    """Stage 2: a StarGAN v2-based generator behind a frozen stage-1 run. Every random draw
    is a function of (seed, step, sample), so a resumed run repeats an uninterrupted one.

    Fields:
        stage1: the stage-1 run folder (camera and regressor U, kept frozen)
        data: "" for the demo corpus, a StarGAN v2 {train,val}/{domain} folder, or a paired
            dataset from rig dataset (y is then the captured privacy frame)
        teacher: the clean FAN U* of the heatmap expression loss ("" = the stage-1 run's)
        img_size: generator side in pixels (64, 128 or 256)
        base_width: generator/encoder/discriminator channels at full resolution
        max_width: cap on the channels (doubled per down block)
        style_dim: style code length
        latent_dim: latent code length of the mapping network
        mapping_width: hidden width of the mapping network
        w_hpf: strength of the mask-gated high-pass skips (0 = none)
        use_heatmap: give U(y)'s face-part masks to the generator
        batch_size: global batch (split over torchrun processes; 8 or more is stable)
        steps: training steps
        lr: Adam learning rate of G, E and D
        lr_mapping: Adam learning rate of the mapping network F
        beta1: Adam beta1
        beta2: Adam beta2
        weight_decay: Adam weight decay
        ema_decay: EMA of G, F and E
        lambda_adv: adversarial weight (non-saturating)
        lambda_r1: R1 weight on the reference reals
        lambda_sty: style reconstruction weight
        lambda_ds: diversity weight at step 0 (decays linearly)
        ds_decay_steps: steps over which the diversity weight decays to 0
        lambda_cyc: cycle weight (reconstruct y from the output with y's style)
        lambda_lpips: LPIPS(reference, output) weight, reference step only
        expression: heatmap (|U*(x) - U*(G)| on expression landmarks), pixel (Eq. 12 on eyes
            and mouth) or off
        lambda_exp: expression weight
        privacy_weight: weight of the privacy dial |cos(e(G), e(x)) - margin| (dlib twin)
        privacy_margins: margins drawn per sample in training; G takes the margin as input
        reference_fraction: share of the images set aside as public references
        noise: sensor noise on the simulated privacy image
        seed: seed of every random draw
        ckpt_every: steps between checkpoints (0 = only at the end)
        sample_every: steps between sample grids (0 = only at the end)
        log_every: steps between log.csv rows
        keep_checkpoints: checkpoints kept (the newest)
        tensorboard: also log to TensorBoard (needs the tensorboard package)
        device: auto (the local GPU if any, else CPU) or a torch device
    """

    stage1: str = ""
    data: str = ""
    teacher: str = ""
    img_size: int = 64
    base_width: int = 32
    max_width: int = 256
    style_dim: int = 64
    latent_dim: int = 16
    mapping_width: int = 512
    w_hpf: float = 1.0
    use_heatmap: bool = True
    batch_size: int = 8
    steps: int = 100000
    lr: float = 1e-4
    lr_mapping: float = 1e-6
    beta1: float = 0.0
    beta2: float = 0.99
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    lambda_adv: float = 1.0
    lambda_r1: float = 1.0
    lambda_sty: float = 1.0
    lambda_ds: float = 1.0
    ds_decay_steps: int = 100000
    lambda_cyc: float = 1.0
    lambda_lpips: float = 1.0
    expression: str = "heatmap"
    lambda_exp: float = 1.0
    privacy_weight: float = 1.0
    privacy_margins: tuple[float, ...] = (0.6, 0.3, 0.0)
    reference_fraction: float = 0.5
    noise: bool = True
    seed: int = 0
    ckpt_every: int = 1000
    sample_every: int = 1000
    log_every: int = 10
    keep_checkpoints: int = 2
    tensorboard: bool = False
    device: str = "auto"

    def __post_init__(self):
        if self.img_size not in (32, 64, 128, 256, 512):
            raise ValueError(f"img_size must be 32, 64, 128, 256 or 512, got {self.img_size}")
        if self.expression not in EXPRESSION_FORMS:
            raise ValueError(f"expression must be one of {', '.join(EXPRESSION_FORMS)}, "
                             f"got {self.expression!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.steps < 0 or self.ds_decay_steps < 0:
            raise ValueError("steps and ds_decay_steps must be >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.privacy_weight > 0 and not self.privacy_margins:
            raise ValueError("the privacy dial needs at least one margin")
        if any(not -1.0 <= m <= 1.0 for m in self.privacy_margins):
            raise ValueError("privacy margins are cosines: each must be in [-1, 1]")
        if not 0.0 < self.reference_fraction < 1.0:
            raise ValueError("reference_fraction must be in (0, 1)")
        for name in ("lambda_adv", "lambda_r1", "lambda_sty", "lambda_ds", "lambda_cyc",
                     "lambda_lpips", "lambda_exp", "privacy_weight", "lr", "lr_mapping"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def dial(self) -> bool:
        """Whether G takes a margin input (the privacy dial is trained)."""
        return self.privacy_weight > 0

    def diversity_weight(self, step: int) -> float:
        """``lambda_ds`` decayed linearly to 0 over ``ds_decay_steps`` (a function of the
        step, so resume repeats it)."""
        if self.ds_decay_steps == 0:
            return 0.0
        return self.lambda_ds * max(0.0, 1.0 - step / self.ds_decay_steps)
