"""The stage-2 training config (a dataclass that loads from and saves to YAML)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Stage2Config", "EXPRESSION_FORMS"]

EXPRESSION_FORMS = ("heatmap", "pixel", "off")


@dataclass(frozen=True)
class Stage2Config:
    """Stage 2: a StarGAN v2-based generator behind a frozen stage-1 run.

    Paths: ``stage1`` (the stage-1 run folder: camera and regressor U, frozen); ``data``
    (``""``: the demo corpus; a StarGAN v2 ``{train,val}/{domain}`` folder; or a paired
    dataset from ``rig dataset``); ``teacher`` (the clean FAN U* of the heatmap expression
    loss; ``""``: the stage-1 run's teacher).

    Networks: ``img_size`` (px; 64, 128 or 256), ``base_width`` and ``max_width`` (channels
    at full resolution and the cap), ``style_dim``, ``latent_dim``, ``mapping_width``,
    ``w_hpf`` (high-pass skip strength), ``use_heatmap`` (U(y)'s masks into G).

    Optimisation (StarGAN v2's): Adam ``(beta1, beta2)``, ``lr`` (G, E, D), ``lr_mapping``
    (F), ``weight_decay``, ``ema_decay`` (EMA of G, F, E), ``batch_size`` (global, split
    over DDP processes), ``steps``.

    Loss weights (0 switches a term off): ``lambda_adv``, ``lambda_r1`` (R1 on the reference
    reals), ``lambda_sty``, ``lambda_ds`` (diversity, decaying linearly to 0 over
    ``ds_decay_steps``), ``lambda_cyc``, ``lambda_lpips`` (LPIPS(reference, output), in the
    reference step), ``expression`` (``heatmap``: ``|U*(x) - U*(G)|`` on the expression
    landmarks; ``pixel``: the paper's Eq. 12 on the eye and mouth regions; ``off``) with
    ``lambda_exp``, and the privacy dial ``privacy_weight * |cos(e(G), e(x)) - m|`` (dlib
    twin ``e``) with the margin ``m`` drawn per sample from ``privacy_margins`` and given to
    G, so ``deid anonymize --margin`` chooses it.

    Bookkeeping: ``seed`` (every random draw is a function of seed, step and sample, so a
    resumed run repeats an uninterrupted one), ``ckpt_every``, ``sample_every``,
    ``log_every`` (steps), ``keep_checkpoints``, ``tensorboard``, ``noise`` (sensor noise on
    the simulated y), ``reference_fraction`` (identities set aside as public references).
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
