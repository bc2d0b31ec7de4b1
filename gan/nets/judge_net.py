"""The judge's network: a small CNN classifier whose penultimate layer is the metric feature space.

What this module is: `JudgeArch` (everything needed to rebuild the net; stored in judge.json),
`JudgeNet` and the two torchmetrics `feature` modules built on it (`FeatureExtractor`,
`LogitsExtractor`). Pure nn.Modules: training, the accuracy check and the cache live in
`gan.eval.judge`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class JudgeArch:
    """Everything needed to rebuild a `JudgeNet`; stored in judge.json."""

    channels: int
    image_size: int
    num_classes: int
    width: int = 16
    feature_dim: int = 64


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    # BatchNorm makes the judge converge in few epochs and much less seed-dependent.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def conv_features(channels: int, width: int, feature_dim: int) -> nn.Sequential:
    """The judges' feature body: (B, channels, H, W) → (B, feature_dim), any H = W ≥ 4.

    Shared by the classifier judge and the self-supervised one (`gan.nets.ssl_net`).
    """
    w = width
    return nn.Sequential(
        *_conv(channels, w), nn.MaxPool2d(2),  # (B, w, H/2, W/2)
        *_conv(w, 2 * w), nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
        *_conv(2 * w, 4 * w), nn.AdaptiveAvgPool2d(4),  # (B, 4w, 4, 4)
        nn.Flatten(),  # (B, 64w)
        nn.Linear(64 * w, feature_dim), nn.ReLU(),  # (B, F): the metric feature space
    )


class JudgeNet(nn.Module):
    """Three conv blocks → 4×4 pooled map → `feature_dim` features (ReLU) → class logits.

    Kept small on purpose (≈2 M multiply-adds per 28×28 image) so it trains in seconds on
    two CPU cores; the adaptive pool lets the same net take any `image_size`.
    """

    def __init__(self, arch: JudgeArch) -> None:
        super().__init__()
        self.arch = arch
        self.body = conv_features(arch.channels, arch.width, arch.feature_dim)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(arch.feature_dim, arch.num_classes))
        # Set after training so that mean(f²) = 1 on the train split: KID's polynomial kernel
        # (f·g/F + 1)³ is then well conditioned (raw activations made it vary by ±10 per subset).
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] → (B, feature_dim), scaled by `feature_scale`."""
        return self.body(x) * self.feature_scale

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] → (B, num_classes) logits."""
        return self.head(self.body(x))


class FeatureExtractor(nn.Module):
    """The judge's penultimate layer as torchmetrics' custom `feature` module.

    torchmetrics reads `num_features` instead of probing with a dummy uint8 image, and passes
    our float images in [-1, 1] through unchanged when a custom module is used.
    """

    def __init__(self, net: JudgeNet) -> None:
        super().__init__()
        self.net = net
        self.num_features = net.arch.feature_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x.float())  # (B, F)


class LogitsExtractor(nn.Module):
    """The judge's logits, the `feature` module of torchmetrics' InceptionScore."""

    def __init__(self, net: JudgeNet) -> None:
        super().__init__()
        self.net = net
        self.num_features = net.arch.num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.float())  # (B, K)
