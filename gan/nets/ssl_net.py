"""The label-free judge's network: a small CNN encoder trained self-supervised.

What this module is: `SSLArch` (everything needed to rebuild the net; stored in the judge's
JSON) and `SSLNet`: a convolutional body → `feature_dim` features (the embedding, before the
head, as in SimCLR) and an MLP projection head for the contrastive loss. The channel count
comes from the data (C = 1 or 3).

The metric space (`features`, what FID/KID and the gate see) is wider than the embedding: the
embedding beside each conv block's pooled activations, each block scaled to mean square 1
on the train split. Why: the contrastive objective makes the embedding *invariant* to what
its views vary — blur, colour, small shifts — so FID in the embedding alone ranked a blurred
generator level with its sharp original and a swirled one above early checkpoints (Kendall τ
0.56 against a reference classifier on the digits' checkpoint ladder); the earlier blocks
still see edges and local detail (τ 1.00 on the same ladder; `gan.tools.judge_study`,
docs/judge.md). The same idea as LPIPS's multi-layer distance.

What it is not: no training, augmentation or quality check (`gan.eval.ssl_train`,
`gan.eval.ssl_augment`, `gan.eval.ssl_judge`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan.nets.judge_net import conv_features

METRIC_POOLS = (2, 2, 1)  # blocks 1, 2, 3 of the body pooled to k×k in the metric space


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
        # Set after training so that mean(f²) = 1 on the train split for each metric block
        # (embedding, block 1, 2, 3; as the classifier judge's one scale). [0] scales `embed`.
        self.register_buffer("block_scales", torch.ones(len(METRIC_POOLS) + 1))

    @property
    def metric_dim(self) -> int:
        """Width of `features`: F + 4w + 8w + 4w (2×2-pooled blocks 1 and 2, global block 3)."""
        if not isinstance(self.body, nn.Sequential):  # a swapped-in control body: one block
            return self.arch.feature_dim
        w = self.arch.width
        pooled = zip((1, 2, 4), METRIC_POOLS, strict=True)  # (channels / w, pool side)
        return self.arch.feature_dim + sum(c * w * k * k for c, k in pooled)

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] → (B, feature_dim): the contrastive embedding, scaled by
        `block_scales[0]` (what view retrieval checks)."""
        return self.body(x) * self.block_scales[0]

    def blocks(self, x: Tensor) -> list[Tensor]:
        """Unscaled metric blocks: [(B, F) embedding, (B, 4w) block 1 pooled 2×2,
        (B, 8w) block 2 pooled 2×2, (B, 4w) block 3 pooled 1×1]."""
        if not isinstance(self.body, nn.Sequential):  # a control body (`gan.tools.ssl_study`)
            return [self.body(x)]
        maps, h = [], x
        for layer in self.body:
            h = layer(h)
            if isinstance(layer, (nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
                maps.append(h)  # after blocks 1, 2, 3: (B, w·2^i, ·, ·)
        pooled = [F.adaptive_avg_pool2d(m, k).flatten(1)
                  for m, k in zip(maps, METRIC_POOLS, strict=True)]
        return [h, *pooled]

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] → (B, metric_dim): the metric space (module docstring)."""
        # strict=False: a swapped-in control body gives one block for the four scales
        scaled = [b * s for b, s in zip(self.blocks(x), self.block_scales, strict=False)]
        return torch.cat(scaled, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] → (B, proj_dim) projections (unnormalised)."""
        return self.projector(self.body(x))


class SSLFeatureExtractor(nn.Module):
    """The encoder's features as torchmetrics' custom `feature` module (see `FeatureExtractor`)."""

    def __init__(self, net: SSLNet) -> None:
        super().__init__()
        self.net = net
        self.num_features = net.metric_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x.float())  # (B, F)
