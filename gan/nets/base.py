"""The base classes every G and D derives from, and the layer helpers they share.

What this module is: `Generator` (interface attributes latent_dim, image_shape (C, H, W),
num_classes, conditional; the optional label embedding concatenated to z) and `Discriminator`
(`features` body, linear head, projection for conditional models), spectral normalisation
when asked, the DCGAN initialisation. The concrete nets are in `gan.nets.models` (MLP, DCGAN)
and `gan.nets.resnet` (SNGAN ResNet); `gan.nets.models` re-exports these names.

What it is not: no concrete architecture, no builder, no I/O.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

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
