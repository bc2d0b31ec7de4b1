"""Generators and discriminators as pure `nn.Module`s, and the builders that map a ModelConfig.

What this module is: the seed MLP GAN (exactly: G 100→256→512→1024→784 with LeakyReLU(0.2) and
tanh; D 784→1024→512→256→1 logits), a DCGAN for any H×W divisible by 4 (two doublings from
H/4), the deeper DCGAN of Radford et al. 2016 (`dcgan-deep`: from 4×4, one doubling per
octave, for 32 and 64 px colour), class-conditional variants of all (G: label embedding
concatenated to z, as in Mirza & Osindero 2014; D: the projection discriminator of Miyato &
Koyama 2018), `dcgan-up` (dcgan's G with resize-convolutions instead of transposed ones:
no checkerboard; dcgan's D), and the builders, which also build the SNGAN ResNet nets of
`gan.nets.resnet` and the R3GAN nets of `gan.nets.r3gan`.
Every net takes C = 1 or 3 channels (`image_shape`); the base classes are `gan.nets.base`'s
(re-exported here). `build(cfg)` rebuilds any of them from the model config a checkpoint
stores. `sample_latent` and `sample_images` draw seeded latents and images: the one sampling
path of the evaluation and the applications.

What it is not: no I/O, no DDP, no printing, no losses.

Interface every model keeps (the trainer, evaluation and serving rely on it):
  G(z: (B, latent_dim) float, y: (B,) int64 | None) -> (B, C, H, W) in [-1, 1]
  D(x: (B, C, H, W), y: (B,) int64 | None) -> (B,) logits;  D.features(x, y) -> (B, F)
Conditional models raise ValueError when `y` is missing; unconditional ones accept and ignore
`y`, so a training loop can always pass the batch labels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gan.core.config import ModelConfig
from gan.nets.base import EMBED_DIM, Discriminator, Generator, _dcgan_init, _sn
from gan.nets.r3gan import R3GANDiscriminator, R3GANGenerator
from gan.nets.resnet import ResNetDiscriminator, ResNetGenerator

__all__ = ["EMBED_DIM", "DCGANDiscriminator", "DCGANGenerator", "Discriminator", "Generator",
           "MLPDiscriminator", "MLPGenerator", "ResNetDiscriminator", "ResNetGenerator", "build",
           "build_discriminator", "build_generator", "sample_images", "sample_latent",
           "DeepDCGANGenerator", "DeepDCGANDiscriminator", "DCGANUpGenerator",
           "R3GANDiscriminator", "R3GANGenerator"]


# --------------------------------------------------------------------------- MLP (the seed)


class MLPGenerator(Generator):
    """The seed G: z → 256 → 512 → 1024 → C·H·W, LeakyReLU between, tanh at the end."""

    def __init__(self, *, latent_dim: int = 100, image_shape: tuple[int, int, int] = (1, 28, 28),
                 hidden: tuple[int, ...] = (256, 512, 1024), leaky_slope: float = 0.2,
                 num_classes: int = 10, conditional: bool = False) -> None:
        super().__init__(latent_dim=latent_dim, image_shape=image_shape,
                         num_classes=num_classes, conditional=conditional)
        layers: list[nn.Module] = []
        width = self.input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(leaky_slope)]
            width = h
        c, hh, ww = self.image_shape
        layers += [nn.Linear(width, c * hh * ww), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(self._input(z, y)).view(z.shape[0], *self.image_shape)  # (B, C, H, W)


class MLPDiscriminator(Discriminator):
    """The seed D: C·H·W → 1024 → 512 → 256 → 1 logit (the sigmoid lives in the loss)."""

    def __init__(self, *, image_shape: tuple[int, int, int] = (1, 28, 28),
                 hidden: tuple[int, ...] = (1024, 512, 256), leaky_slope: float = 0.2,
                 dropout: float = 0.0, spectral: bool = False, num_classes: int = 10,
                 conditional: bool = False) -> None:
        super().__init__(num_classes=num_classes, conditional=conditional)
        c, h, w = image_shape
        layers: list[nn.Module] = [nn.Flatten()]
        width = c * h * w
        for hid in hidden:
            layers += [_sn(nn.Linear(width, hid), spectral), nn.LeakyReLU(leaky_slope)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hid
        self.body = nn.Sequential(*layers)
        self._add_head(hidden[-1], spectral)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.body(x)  # (B, hidden[-1])


# --------------------------------------------------------------------------- DCGAN


class DCGANGenerator(Generator):
    """z → Linear → (c, H/4, W/4) → ConvT → (c/2, H/2, W/2) → ConvT → (C, H, W), BN + ReLU."""

    def __init__(self, *, latent_dim: int = 100, image_shape: tuple[int, int, int] = (1, 28, 28),
                 base_channels: int = 64, num_classes: int = 10, conditional: bool = False) -> None:
        super().__init__(latent_dim=latent_dim, image_shape=image_shape,
                         num_classes=num_classes, conditional=conditional)
        c_img, h, w = self.image_shape
        if h % 4 or w % 4:
            raise ValueError(f"DCGAN needs H and W divisible by 4, got {h}×{w}")
        c = base_channels
        self.start = (c, h // 4, w // 4)
        self.fc = nn.Sequential(
            nn.Linear(self.input_dim, c * (h // 4) * (w // 4), bias=False),
            nn.BatchNorm1d(c * (h // 4) * (w // 4)),
            nn.ReLU(True),
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False),  # (B, c/2, H/2, W/2)
            nn.BatchNorm2d(c // 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(c // 2, c_img, 4, 2, 1),  # (B, C, H, W)
            nn.Tanh(),
        )
        self.apply(_dcgan_init)  # the label embedding keeps its N(0, 1) init: z's scale

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.fc(self._input(z, y)).view(z.shape[0], *self.start)  # (B, c, H/4, W/4)
        return self.up(h)


class DCGANDiscriminator(Discriminator):
    """(C, H, W) → Conv → (c/2, H/2, W/2) → Conv → (c, H/4, W/4) → flatten → 1 logit.

    No batch norm: samples never interact, so one forward over real+fake (+interpolates)
    together gives the same logits as separate forwards, and the gradient penalty is per sample.
    """

    def __init__(self, *, image_shape: tuple[int, int, int] = (1, 28, 28), base_channels: int = 64,
                 leaky_slope: float = 0.2, spectral: bool = False, num_classes: int = 10,
                 conditional: bool = False) -> None:
        c_img, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"DCGAN needs H and W divisible by 4, got {h}×{w}")
        c = base_channels
        super().__init__(num_classes=num_classes, conditional=conditional)
        convs = [nn.Conv2d(c_img, c // 2, 4, 2, 1), nn.Conv2d(c // 2, c, 4, 2, 1)]
        for conv in convs:  # init before spectral_norm wraps the weight
            _dcgan_init(conv)
        self.body = nn.Sequential(
            _sn(convs[0], spectral), nn.LeakyReLU(leaky_slope),  # (B, c/2, H/2, W/2)
            _sn(convs[1], spectral), nn.LeakyReLU(leaky_slope),  # (B, c, H/4, W/4)
            nn.Flatten(),  # (B, c·H/4·W/4)
        )
        self._add_head(c * (h // 4) * (w // 4), spectral)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.body(x)


class DCGANUpGenerator(DCGANGenerator):
    """`dcgan-up`: DCGANGenerator with each ConvTranspose2d(4, 2, 1) replaced by a nearest
    2× upsample + Conv2d(3×3) (Odena, Dumoulin & Olah 2016, "Deconvolution and Checkerboard
    Artifacts": resize-convolution). A transposed conv gives each of the four output phases
    its own kernel, so they drift apart and draw a checkerboard; after a nearest resize all
    four see one kernel. Same widths, BN + ReLU, tanh and D (`DCGANDiscriminator`) as dcgan."""

    def __init__(self, *, latent_dim: int = 100, image_shape: tuple[int, int, int] = (1, 28, 28),
                 base_channels: int = 64, num_classes: int = 10, conditional: bool = False) -> None:
        super().__init__(latent_dim=latent_dim, image_shape=image_shape,
                         base_channels=base_channels, num_classes=num_classes,
                         conditional=conditional)
        c_img, c = self.image_shape[0], base_channels
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c, c // 2, 3, 1, 1, bias=False),  # (B, c/2, H/2, W/2)
            nn.BatchNorm2d(c // 2),
            nn.ReLU(True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c // 2, c_img, 3, 1, 1),  # (B, C, H, W)
            nn.Tanh(),
        )
        self.up.apply(_dcgan_init)


def _doublings(size: int) -> int:
    """log2(size / 4) for the 4×4-based DCGAN; sizes 8, 16, 32, 64, 128."""
    if size not in (8, 16, 32, 64, 128):
        raise ValueError(f"dcgan-deep needs H = W in (8, 16, 32, 64, 128), got {size}")
    return size.bit_length() - 3


class DeepDCGANGenerator(Generator):
    """Radford et al. 2016's layout: z → (c·2^(k-1), 4, 4) → k ConvT doublings, channels halved
    each time → (C, H, W), BN + ReLU, tanh; k = log2(H/4) (32 px: 3, 64 px: 4)."""

    def __init__(self, *, latent_dim: int = 100, image_shape: tuple[int, int, int] = (3, 32, 32),
                 base_channels: int = 64, num_classes: int = 10, conditional: bool = False) -> None:
        super().__init__(latent_dim=latent_dim, image_shape=image_shape,
                         num_classes=num_classes, conditional=conditional)
        c_img, h, w = self.image_shape
        if h != w:
            raise ValueError(f"dcgan-deep needs square images, got {h}×{w}")
        k = _doublings(h)
        widths = [base_channels * 2 ** i for i in reversed(range(k))]  # e.g. [4c, 2c, c]
        self.start = (widths[0], 4, 4)
        self.fc = nn.Sequential(nn.Linear(self.input_dim, widths[0] * 16, bias=False),
                                nn.BatchNorm1d(widths[0] * 16), nn.ReLU(True))
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths, widths[1:], strict=False):  # (B, c_in, s, s) → 2s
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], c_img, 4, 2, 1), nn.Tanh()]  # (B, C, H, W)
        self.up = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.up(self.fc(self._input(z, y)).view(z.shape[0], *self.start))


class DeepDCGANDiscriminator(Discriminator):
    """The mirror of `DeepDCGANGenerator`: k stride-2 convs c, 2c, … down to (c·2^(k-1), 4, 4),
    LeakyReLU, flatten → logit. No batch norm (as `DCGANDiscriminator`: per-sample logits)."""

    def __init__(self, *, image_shape: tuple[int, int, int] = (3, 32, 32), base_channels: int = 64,
                 leaky_slope: float = 0.2, spectral: bool = False, num_classes: int = 10,
                 conditional: bool = False) -> None:
        super().__init__(num_classes=num_classes, conditional=conditional)
        c_img, h, w = image_shape
        if h != w:
            raise ValueError(f"dcgan-deep needs square images, got {h}×{w}")
        widths = [base_channels * 2 ** i for i in range(_doublings(h))]  # e.g. [c, 2c, 4c]
        layers: list[nn.Module] = []
        for c_in, c_out in zip([c_img, *widths], widths, strict=False):  # (B, c_in, s, s) → s/2
            conv = nn.Conv2d(c_in, c_out, 4, 2, 1)
            _dcgan_init(conv)  # before spectral_norm wraps the weight
            layers += [_sn(conv, spectral), nn.LeakyReLU(leaky_slope)]
        self.body = nn.Sequential(*layers, nn.Flatten())  # (B, 4c·4·4)
        self._add_head(widths[-1] * 16, spectral)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.body(x)


# --------------------------------------------------------------------------- builders


def _image_shape(cfg: ModelConfig) -> tuple[int, int, int]:
    return (cfg.channels, cfg.image_size, cfg.image_size)


def build_generator(cfg: ModelConfig) -> Generator:
    if cfg.arch == "mlp":
        return MLPGenerator(latent_dim=cfg.latent_dim, image_shape=_image_shape(cfg),
                            hidden=tuple(cfg.g_hidden), leaky_slope=cfg.leaky_slope,
                            num_classes=cfg.num_classes, conditional=cfg.conditional)
    if cfg.arch == "dcgan-deep":
        return DeepDCGANGenerator(latent_dim=cfg.latent_dim, image_shape=_image_shape(cfg),
                                  base_channels=cfg.base_channels, num_classes=cfg.num_classes,
                                  conditional=cfg.conditional)
    if cfg.arch == "resnet":
        return ResNetGenerator(latent_dim=cfg.latent_dim, image_shape=_image_shape(cfg),
                               base_channels=cfg.base_channels, num_classes=cfg.num_classes,
                               conditional=cfg.conditional)
    if cfg.arch == "r3gan":
        return R3GANGenerator(latent_dim=cfg.latent_dim, image_shape=_image_shape(cfg),
                              base_channels=cfg.base_channels,
                              blocks_per_stage=cfg.blocks_per_stage,
                              num_classes=cfg.num_classes, conditional=cfg.conditional)
    if cfg.arch == "dcgan-up":
        return DCGANUpGenerator(latent_dim=cfg.latent_dim, image_shape=_image_shape(cfg),
                                base_channels=cfg.base_channels, num_classes=cfg.num_classes,
                                conditional=cfg.conditional)
    return DCGANGenerator(latent_dim=cfg.latent_dim, image_shape=_image_shape(cfg),
                          base_channels=cfg.base_channels, num_classes=cfg.num_classes,
                          conditional=cfg.conditional)


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    if cfg.arch == "mlp":
        return MLPDiscriminator(image_shape=_image_shape(cfg), hidden=tuple(cfg.d_hidden),
                                leaky_slope=cfg.leaky_slope, dropout=cfg.d_dropout,
                                spectral=cfg.spectral_norm, num_classes=cfg.num_classes,
                                conditional=cfg.conditional)
    if cfg.arch == "dcgan-deep":
        return DeepDCGANDiscriminator(image_shape=_image_shape(cfg),
                                      base_channels=cfg.base_channels,
                                      leaky_slope=cfg.leaky_slope, spectral=cfg.spectral_norm,
                                      num_classes=cfg.num_classes, conditional=cfg.conditional)
    if cfg.arch == "resnet":
        return ResNetDiscriminator(image_shape=_image_shape(cfg), base_channels=cfg.base_channels,
                                   spectral=cfg.spectral_norm, num_classes=cfg.num_classes,
                                   conditional=cfg.conditional)
    if cfg.arch == "r3gan":
        return R3GANDiscriminator(image_shape=_image_shape(cfg), base_channels=cfg.base_channels,
                                  blocks_per_stage=cfg.blocks_per_stage,
                                  spectral=cfg.spectral_norm, num_classes=cfg.num_classes,
                                  conditional=cfg.conditional)
    # dcgan and dcgan-up share D: only G's upsampling differs
    return DCGANDiscriminator(image_shape=_image_shape(cfg), base_channels=cfg.base_channels,
                              leaky_slope=cfg.leaky_slope, spectral=cfg.spectral_norm,
                              num_classes=cfg.num_classes, conditional=cfg.conditional)


def build(cfg: ModelConfig) -> tuple[Generator, Discriminator]:
    """(G, D) for a model config; seed torch beforehand for reproducible weights."""
    return build_generator(cfg), build_discriminator(cfg)


def sample_latent(n: int, latent_dim: int, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> Tensor:
    """z ~ N(0, I): (n, latent_dim) on `device`, drawn from `generator` when given."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if generator is not None and generator.device.type != dev.type:
        # Draw where the generator lives, then move: keeps seeded streams device-independent.
        return torch.randn(n, latent_dim, generator=generator, device=generator.device).to(dev)
    return torch.randn(n, latent_dim, generator=generator, device=dev)


@torch.no_grad()
def sample_images(generator: nn.Module, n: int, seed: int, labels: Tensor | None = None,
                  batch_size: int = 256) -> Tensor:
    """n images (n, C, H, W) float32 on CPU from G(z, labels), z ~ N(0, I) seeded by `seed`.

    The one way the evaluation and the applications draw from a generator: z is drawn on the
    CPU (the same samples on any device) and fed to G on its own device in batches of
    `batch_size`, in eval mode (G's train/eval mode is restored afterwards). `labels` (n,) int64
    for a conditional G, None for an unconditional one.
    """
    latent_dim = getattr(generator, "latent_dim", None)
    if not isinstance(latent_dim, int):
        raise ValueError(f"generator {type(generator).__name__} has no int `latent_dim`")
    z = sample_latent(n, latent_dim, torch.Generator().manual_seed(seed))  # (n, Z) on CPU
    param = next(generator.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = generator.training
    generator.eval()
    out: Tensor | None = None  # (n, C, H, W), filled batch by batch: no second copy
    try:
        for i in range(0, n, batch_size):
            zb = z[i:i + batch_size].to(device)
            yb = None if labels is None else labels[i:i + batch_size].to(device)
            x = (generator(zb) if yb is None else generator(zb, yb)).float().cpu()
            if out is None:
                out = torch.empty(n, *x.shape[1:])
            out[i:i + batch_size] = x
    finally:
        generator.train(was_training)
    if out is None:
        raise ValueError(f"sample_images: n must be >= 1, got {n}")
    return out
