"""The simplified R3GAN ResNet G and D (Huang, Gokaslan, Kuleshov, Tompkin, NeurIPS 2024,
"The GAN is dead; long live the GAN! A Modern GAN Baseline"), written for this project.

What this module is: `R3GANGenerator` and `R3GANDiscriminator` for `model.arch = "r3gan"`,
from the paper's §3 and its official code (github.com/brownvc/R3GAN, `R3GAN/Networks.py`),
re-written here, not copied:
  * no normalisation layer anywhere; convolutions carry no bias, the activation does
    (a LeakyReLU(0.2) with a learned per-channel bias);
  * residual blocks 1×1 conv (width ×2) → act → grouped 3×3 conv → act → 1×1 conv back, the
    last conv initialised to zero, so a fresh block is the identity; the other two are MSR
    (He) initialised, N(0, gain/√fan_in) with gain = √(2/(1+0.2²)) · L^(-1/4), L the number
    of residual blocks in the net (the paper's "fix-up" variance scaling, 3 layers per block);
  * resampling by the fixed [1, 2, 1] low-pass filter: up = 1×1 conv (when the width changes)
    then a stride-2 transposed conv of the fixed filter (bilinear interpolation, depthwise);
    down = filter + stride 2, then the 1×1 conv. No learned transposed convolution: nothing
    gives the four sub-pixel phases different kernels, the source of checkerboard artefacts;
  * G starts from a learned (w, s, s) "generative basis" modulated per channel by a linear map
    of z (s = H/2^n, the start side, 4..7: 4 for 32/64 px, 7 for 28 px); D ends with the
    mirror "discriminative basis", a depthwise s×s conv to (B, w): its `features`.
Deviations (documented in docs/recipes.md): stage widths `base_channels` at the two coarsest
resolutions, then halved per doubling (`stage_widths`), `blocks_per_stage` blocks per stage;
conditioning is the project's (G: a label embedding concatenated to z; D: the projection
head of `gan.nets.base.Discriminator`, spectral norm on that head only when asked); G's last
layer is a 1×1 conv with no tanh, as the paper's, so in eval mode its output is clamped to
[-1, 1] (the interface's range); in train mode D sees it unclamped.

What it is not: no losses (RpGAN and R1/R2 are `gan.train.losses`), no builder
(`gan.nets.models.build`), no I/O.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.nets.base import Discriminator, Generator

SLOPE = 0.2
ACT_GAIN = math.sqrt(2.0 / (1.0 + SLOPE ** 2))  # He gain of LeakyReLU(0.2)
EXPANSION = 2  # a block's inner width: 2 × the stage width
GROUP_WIDTH = 16  # channels per group of the 3×3 conv (CIFAR preset: 1536 / 96)
MIN_WIDTH = 16  # the narrowest stage (`stage_widths`)


def start_side(size: int) -> int:
    """The basis side s: `size` halved while it stays even and ≥ 4 (32 → 4, 28 → 7, 48 → 6).
    ValueError unless s lies in 4..7 (e.g. 36 → 9)."""
    s = size
    while s % 2 == 0 and s // 2 >= 4:
        s //= 2
    if not 4 <= s <= 7:
        raise ValueError(f"r3gan needs image_size = s·2^k with s in 4..7 (e.g. 28, 32, 64), "
                         f"got {size}")
    return s


def stage_widths(base: int, n_stages: int) -> list[int]:
    """Widths from the basis stage up: `base` for the first two, then halved per doubling,
    never under min(base, MIN_WIDTH) (32 px, base 32: [32, 32, 16, 16]). The paper's larger
    presets taper the same way (FFHQ-256: 768 ×4, 384, 192, 96); its CIFAR-10 one does not.
    Why here: a full-resolution block costs ∝ width² × H·W, and on a CPU it dominates."""
    floor = min(base, MIN_WIDTH)
    return [max(base >> max(0, i - 1), floor) for i in range(n_stages)]


def _msr(layer: nn.Conv2d | nn.Linear, gain: float) -> None:
    """MSR (He) init N(0, gain/√fan_in); fan_in = weight.size(1)·kernel area (per group)."""
    fan_in = layer.weight[0].numel()
    nn.init.normal_(layer.weight, 0.0, gain / math.sqrt(fan_in))


def _conv(c_in: int, c_out: int, k: int = 1, groups: int = 1, gain: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, k, padding=(k - 1) // 2, groups=groups, bias=False)
    _msr(conv, gain)
    return conv


class BiasedLeakyReLU(nn.Module):
    """LeakyReLU(0.2)(x + b), b a learned per-channel bias (zeros at init)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), SLOPE)


class ResidualBlock(nn.Module):
    """x (B, w, h, h) → x + conv1(act(conv3_grouped(act(conv1(x))))); zero at init."""

    def __init__(self, width: int, n_blocks: int) -> None:
        super().__init__()
        inner = width * EXPANSION
        gain = ACT_GAIN * n_blocks ** (-1.0 / (2 * 3 - 2))  # 3 layers per block
        self.body = nn.Sequential(
            _conv(width, inner, 1, gain=gain), BiasedLeakyReLU(inner),  # (B, 2w, h, h)
            _conv(inner, inner, 3, groups=max(1, inner // GROUP_WIDTH), gain=gain),
            BiasedLeakyReLU(inner),
            _conv(inner, width, 1, gain=0.0),  # zero: the block starts as the identity
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _lowpass() -> Tensor:
    """The 4×4 kernel of the [1, 2, 1] filter for stride-2 resampling: [1,3,3,1]ᵀ[1,3,3,1]/64."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k2 = torch.outer(k, k)
    return k2 / k2.sum()  # (4, 4), sums to 1


class Resample(nn.Module):
    """Depthwise stride-2 resampling by the fixed low-pass kernel: "up" (B, c, h, h) →
    (B, c, 2h, 2h) (bilinear interpolation: each output phase's taps sum to 1), or "down"
    (B, c, h, h) → (B, c, h/2, h/2) (blur, then every second pixel)."""

    def __init__(self, direction: str) -> None:
        super().__init__()
        self.up = direction == "up"
        self.register_buffer("kernel", _lowpass()[None, None], persistent=False)  # (1,1,4,4)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        if self.up:
            w = (4.0 * self.kernel).to(x.dtype).expand(c, 1, 4, 4)
            return F.conv_transpose2d(x, w, stride=2, padding=1, groups=c)
        w = self.kernel.to(x.dtype).expand(c, 1, 4, 4)
        return F.conv2d(x, w, stride=2, padding=1, groups=c)


class R3GANGenerator(Generator):
    """z (+ label embedding) → basis (w, s, s) → blocks → [up → blocks] × n → 1×1 conv →
    (C, H, W); n = log2(H/s). Eval mode clamps the output to [-1, 1] (no tanh)."""

    def __init__(self, *, latent_dim: int = 100, image_shape: tuple[int, int, int] = (3, 32, 32),
                 base_channels: int = 32, blocks_per_stage: int = 1, num_classes: int = 10,
                 conditional: bool = False) -> None:
        super().__init__(latent_dim=latent_dim, image_shape=image_shape,
                         num_classes=num_classes, conditional=conditional)
        c_img, h, w = self.image_shape
        if h != w:
            raise ValueError(f"r3gan needs square images, got {h}×{w}")
        s = start_side(h)
        widths = stage_widths(base_channels, (h // s).bit_length())  # e.g. [32, 32, 16, 16]
        total = blocks_per_stage * len(widths)
        self.start = (widths[0], s, s)
        self.basis = nn.Parameter(torch.randn(widths[0], s, s))  # the generative basis
        self.to_basis = nn.Linear(self.input_dim, widths[0], bias=False)
        _msr(self.to_basis, 1.0)
        stages: list[nn.Module] = [self._blocks(widths[0], blocks_per_stage, total)]
        for w_in, w_out in zip(widths, widths[1:], strict=False):  # (B, w_in, r, r) → 2r
            width_change = [_conv(w_in, w_out, 1)] if w_in != w_out else []
            stages.append(nn.Sequential(*width_change, Resample("up"),
                                        *self._blocks(w_out, blocks_per_stage, total)))
        self.stages = nn.Sequential(*stages)
        self.to_image = _conv(widths[-1], c_img, 1)  # (B, C, H, W), no tanh

    @staticmethod
    def _blocks(width: int, n: int, total: int) -> nn.Sequential:
        return nn.Sequential(*[ResidualBlock(width, total) for _ in range(n)])

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        a = self.to_basis(self._input(z, y))  # (B, w)
        h = self.basis[None] * a[:, :, None, None]  # (B, w, s, s)
        x = self.to_image(self.stages(h))  # (B, C, H, W)
        return x if self.training else x.clamp(-1.0, 1.0)


class R3GANDiscriminator(Discriminator):
    """(C, H, W) → 1×1 conv → [blocks → down] × n → blocks → depthwise s×s basis → (B, w)
    features → linear head (+ projection when conditional)."""

    def __init__(self, *, image_shape: tuple[int, int, int] = (3, 32, 32), base_channels: int = 32,
                 blocks_per_stage: int = 1, spectral: bool = False, num_classes: int = 10,
                 conditional: bool = False) -> None:
        super().__init__(num_classes=num_classes, conditional=conditional)
        c_img, h, w = image_shape
        if h != w:
            raise ValueError(f"r3gan needs square images, got {h}×{w}")
        s = start_side(h)
        widths = stage_widths(base_channels, (h // s).bit_length())[::-1]  # full res first
        total = blocks_per_stage * len(widths)
        stages: list[nn.Module] = [_conv(c_img, widths[0], 1)]  # (B, w0, H, W)
        for w_in, w_out in zip(widths, widths[1:], strict=False):  # (B, w_in, r, r) → r/2
            stages += [*R3GANGenerator._blocks(w_in, blocks_per_stage, total), Resample("down")]
            stages += [_conv(w_in, w_out, 1)] if w_in != w_out else []
        stages += [*R3GANGenerator._blocks(widths[-1], blocks_per_stage, total)]
        width = widths[-1]
        basis = nn.Conv2d(width, width, s, groups=width, bias=False)  # (B, w, 1, 1)
        _msr(basis, 1.0)
        self.body = nn.Sequential(*stages, basis, nn.Flatten())  # (B, w)
        self._add_head(width, spectral)  # spectral norm, when asked, on the head only

    def features(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.body(x)  # (B, w): the discriminative basis' output
