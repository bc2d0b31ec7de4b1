"""Generators and discriminators as pure `nn.Module`s, and the builders that map a ModelConfig.

What this module is: the seed MLP GAN (exactly: G 100→256→512→1024→784 with LeakyReLU(0.2) and
tanh; D 784→1024→512→256→1 logits), a DCGAN for any H×W divisible by 4, and class-conditional
variants of both (G: label embedding concatenated to z, as in Mirza & Osindero 2014; D: the
projection discriminator of Miyato & Koyama 2018), and the SNGAN ResNet G and D of Miyato et
al. 2018 (their 32×32 CIFAR nets; 16-128 px by adding or removing blocks; a conditional G
concatenates the label embedding to z instead of the paper's conditional batch norm). Every
net takes C = 1 or 3 channels (`image_shape`). `build(cfg)` rebuilds any of them from the
model config a checkpoint stores. `sample_latent` and `sample_images` draw seeded latents and
images: the one sampling path of the evaluation and the applications.

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
from torch.nn.utils.parametrizations import spectral_norm

from gan.core.config import ModelConfig

EMBED_DIM = 50  # size of G's label embedding (conditional models)


def _sn(module: nn.Module, on: bool) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of one layer's weight, when asked."""
    return spectral_norm(module) if on else module


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al. 2016; pytorch/examples dcgan `weights_init`)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """Base of every G: holds the interface attributes and the optional label embedding."""

    def __init__(self, *, latent_dim: int, image_shape: tuple[int, int, int], num_classes: int,
                 conditional: bool) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.conditional = conditional
        self.embed = nn.Embedding(num_classes, EMBED_DIM) if conditional else None

    @property
    def input_dim(self) -> int:
        return self.latent_dim + (EMBED_DIM if self.conditional else 0)

    def _input(self, z: Tensor, y: Tensor | None) -> Tensor:
        """z (B, latent_dim) → (B, input_dim): z, or [z, embed(y)] when conditional."""
        if not self.conditional:
            return z
        if y is None:
            raise ValueError("this generator is conditional: pass class labels y (B,) int64")
        assert self.embed is not None
        return torch.cat([z, self.embed(y)], dim=1)


class Discriminator(nn.Module):
    """Base of every D: `features` is the body, `forward` adds the head and the projection.
    Subclasses build their body, then call `_add_head` (so modules list in forward order)."""

    def __init__(self, *, num_classes: int, conditional: bool) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conditional = conditional

    def _add_head(self, feature_dim: int, spectral: bool) -> None:
        self.feature_dim = feature_dim
        self.head = _sn(nn.Linear(feature_dim, 1), spectral)  # ψ: (B, F) → (B, 1)
        self.embed: nn.Module | None = None
        if self.conditional:
            emb = nn.Embedding(self.num_classes, feature_dim)
            nn.init.xavier_uniform_(emb.weight)  # N(0,1) rows would swamp the head at init
            self.embed = _sn(emb, spectral)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Penultimate features (B, F), independent of y (used for AnoGAN feature matching)."""
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.features(x)  # (B, F)
        out = self.head(h).squeeze(1)  # (B,)
        if self.conditional:
            if y is None:
                raise ValueError("this discriminator is conditional: pass class labels y (B,)")
            assert self.embed is not None
            # Projection (Miyato & Koyama 2018): D(x, y) = ψ(φ(x)) + <embed(y), φ(x)>.
            out = out + (self.embed(y) * h).sum(dim=1)
        return out


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


# --------------------------------------------------------------------------- SNGAN ResNet


def _resnet_blocks(size: int) -> int:
    """log2(size / 4): G's up-blocks from 4×4; sizes 16, 32, 64, 128 (D needs ≥ 16)."""
    if size not in (16, 32, 64, 128):
        raise ValueError(f"the ResNet nets need H = W in (16, 32, 64, 128), got {size}")
    return size.bit_length() - 3


def _xavier(conv: nn.Module, gain: float) -> nn.Module:
    nn.init.xavier_uniform_(conv.weight, gain)
    nn.init.zeros_(conv.bias)
    return conv


class _GBlock(nn.Module):
    """x (B, c, h, w) → (B, c, 2h, 2w): BN-ReLU-up-conv3-BN-ReLU-conv3 + up-conv1 shortcut."""

    def __init__(self, c: int) -> None:
        super().__init__()
        root2 = 2 ** 0.5
        self.residual = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(), nn.Upsample(scale_factor=2),
            _xavier(nn.Conv2d(c, c, 3, 1, 1), root2), nn.BatchNorm2d(c), nn.ReLU(),
            _xavier(nn.Conv2d(c, c, 3, 1, 1), root2))
        self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2),
                                      _xavier(nn.Conv2d(c, c, 1), 1.0))

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


class _DBlock(nn.Module):
    """x (B, c_in, h, w) → (B, c, h', w'), h' = h/2 when `down`; no batch norm (see DCGAN D).
    `first`: the "optimised" first block (no ReLU before the first conv, pool then 1×1)."""

    def __init__(self, c_in: int, c: int, *, down: bool, first: bool, spectral: bool) -> None:
        super().__init__()
        root2 = 2 ** 0.5
        body: list[nn.Module] = [] if first else [nn.ReLU()]
        body += [_sn(_xavier(nn.Conv2d(c_in, c, 3, 1, 1), root2), spectral), nn.ReLU(),
                 _sn(_xavier(nn.Conv2d(c, c, 3, 1, 1), root2), spectral)]
        if down:
            body.append(nn.AvgPool2d(2))
        self.residual = nn.Sequential(*body)
        short: list[nn.Module] = []
        if down or c_in != c:
            conv = _sn(_xavier(nn.Conv2d(c_in, c, 1), 1.0), spectral)
            # the optimised block pools first (cheaper); the others convolve, then pool
            short = [nn.AvgPool2d(2), conv] if first else [conv] + [nn.AvgPool2d(2)] * down
        self.shortcut = nn.Sequential(*short)

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


class ResNetGenerator(Generator):
    """SNGAN G: z → Linear → (c, 4, 4) → up-blocks → (c, H, W) → BN-ReLU-conv3 → tanh (C, H, W).
    At 32×32: three up-blocks, c = base_channels (the paper uses 256)."""

    def __init__(self, *, latent_dim: int = 128, image_shape: tuple[int, int, int] = (3, 32, 32),
                 base_channels: int = 256, num_classes: int = 10,
                 conditional: bool = False) -> None:
        super().__init__(latent_dim=latent_dim, image_shape=image_shape,
                         num_classes=num_classes, conditional=conditional)
        c_img, h, w = self.image_shape
        if h != w:
            raise ValueError(f"the ResNet nets need square images, got {h}×{w}")
        c = base_channels
        self.c = c
        self.fc = nn.Linear(self.input_dim, c * 4 * 4)
        nn.init.xavier_uniform_(self.fc.weight)
        self.blocks = nn.Sequential(*[_GBlock(c) for _ in range(_resnet_blocks(h))])
        self.out = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(),
                                 _xavier(nn.Conv2d(c, c_img, 3, 1, 1), 1.0), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.fc(self._input(z, y)).view(z.shape[0], self.c, 4, 4)  # (B, c, 4, 4)
        return self.out(self.blocks(h))  # (B, C, H, W)


class ResNetDiscriminator(Discriminator):
    """SNGAN D: (C, H, W) → optimised down-block → down-blocks to 8×8 → two blocks → ReLU →
    sum over H, W → (B, c) features → logit (+ projection). At 32×32 exactly the paper's D
    (c = base_channels; the paper uses 128)."""

    def __init__(self, *, image_shape: tuple[int, int, int] = (3, 32, 32),
                 base_channels: int = 128, spectral: bool = True, num_classes: int = 10,
                 conditional: bool = False) -> None:
        super().__init__(num_classes=num_classes, conditional=conditional)
        c_img, h, w = image_shape
        if h != w:
            raise ValueError(f"the ResNet nets need square images, got {h}×{w}")
        c = base_channels
        n_down = _resnet_blocks(h) - 1  # 32 → 16 → 8: two
        blocks = [_DBlock(c_img, c, down=True, first=True, spectral=spectral)]
        blocks += [_DBlock(c, c, down=True, first=False, spectral=spectral)
                   for _ in range(n_down - 1)]
        blocks += [_DBlock(c, c, down=False, first=False, spectral=spectral) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)  # (B, c, 8, 8)
        self._add_head(c, spectral)

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return torch.relu(self.blocks(x)).sum(dim=(2, 3))  # (B, c): global sum pooling


# --------------------------------------------------------------------------- builders


def _image_shape(cfg: ModelConfig) -> tuple[int, int, int]:
    return (cfg.channels, cfg.image_size, cfg.image_size)


def build_generator(cfg: ModelConfig) -> Generator:
    if cfg.arch == "mlp":
        return MLPGenerator(latent_dim=cfg.latent_dim, image_shape=_image_shape(cfg),
                            hidden=tuple(cfg.g_hidden), leaky_slope=cfg.leaky_slope,
                            num_classes=cfg.num_classes, conditional=cfg.conditional)
    if cfg.arch == "resnet":
        return ResNetGenerator(latent_dim=cfg.latent_dim, image_shape=_image_shape(cfg),
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
    if cfg.arch == "resnet":
        return ResNetDiscriminator(image_shape=_image_shape(cfg), base_channels=cfg.base_channels,
                                   spectral=cfg.spectral_norm, num_classes=cfg.num_classes,
                                   conditional=cfg.conditional)
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
    try:
        out = []
        for i in range(0, n, batch_size):
            zb = z[i:i + batch_size].to(device)
            if labels is None:
                out.append(generator(zb).float().cpu())
            else:
                out.append(generator(zb, labels[i:i + batch_size].to(device)).float().cpu())
    finally:
        generator.train(was_training)
    return torch.cat(out)
