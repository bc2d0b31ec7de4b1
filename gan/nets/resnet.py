"""The SNGAN ResNet generator and discriminator (Miyato et al. 2018), for colour at 32×32.

What this module is: `ResNetGenerator` and `ResNetDiscriminator`, the paper's CIFAR-10 nets
(G: z → 4×4 → three up-blocks → 32×32; D: an optimised down-block, a down-block, two plain
blocks, ReLU, global sum pooling, spectral norm on every layer) for C = 1 or 3; 16, 64 and 128
px by removing or adding blocks. A conditional G concatenates the label embedding to z (as the
other nets here) instead of the paper's conditional batch norm; a conditional D is the
projection discriminator (`gan.nets.base.Discriminator`). Built by `gan.nets.models.build`
for `model.arch = "resnet"`.

What it is not: no builder, no training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gan.nets.base import Discriminator, Generator, _sn


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
