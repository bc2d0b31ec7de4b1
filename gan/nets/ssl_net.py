"""The label-free judge's network: a small CNN encoder trained self-supervised.

What this module is: `SSLArch` (everything needed to rebuild the net; stored in the judge's
JSON) and `SSLNet`: a convolutional body → `feature_dim` features (the metric space, before the
head, as in SimCLR) and an MLP projection head for the contrastive loss. The channel count
comes from the data (C = 1 or 3).

What it is not: no training, augmentation or quality check (`gan.eval.ssl_train`,
`gan.eval.ssl_augment`, `gan.eval.ssl_judge`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gan.nets.judge_net import conv_features


@dataclass(frozen=True)
class SSLArch:
    """Everything needed to rebuild an `SSLNet`."""

    channels: int
    image_size: int
    width: int = 16
    feature_dim: int = 64
    proj_dim: int = 32


class SSLNet(nn.Module):
    """Conv body → `feature_dim` features (the metric space) → MLP projector → `proj_dim`."""

    def __init__(self, arch: SSLArch) -> None:
        super().__init__()
        if arch.channels not in (1, 3):
            raise ValueError(f"the label-free judge takes 1 or 3 channels, got {arch.channels}")
        self.arch = arch
        f = arch.feature_dim
        self.body = conv_features(arch.channels, arch.width, f)
        self.projector = nn.Sequential(  # SimCLR's head, with BatchNorm (their code's)
            nn.Linear(f, f, bias=False), nn.BatchNorm1d(f), nn.ReLU(),
            nn.Linear(f, arch.proj_dim),  # (B, P): where the contrastive loss is computed
        )
        # Set after training so that mean(f²) = 1 on the train split (as the classifier judge).
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] → (B, feature_dim), scaled by `feature_scale`."""
        return self.body(x) * self.feature_scale

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] → (B, proj_dim) projections (unnormalised)."""
        return self.projector(self.body(x))


class SSLFeatureExtractor(nn.Module):
    """The encoder's features as torchmetrics' custom `feature` module (see `FeatureExtractor`)."""

    def __init__(self, net: SSLNet) -> None:
        super().__init__()
        self.net = net
        self.num_features = net.arch.feature_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x.float())  # (B, F)
