"""f-AnoGAN's encoder network: images → latents, trained after the GAN (see `gan.apps.fanogan`).

A small DCGAN-style conv net; no tanh on the output: our latents are N(0, 1), not the paper's
U(−1, 1). A pure nn.Module: its training (izi_f) and the scores live in `gan.apps.fanogan`.
"""

from __future__ import annotations

from torch import Tensor, nn


class Encoder(nn.Module):
    """(C, H, W) → Conv → (c, H/2, W/2) → Conv → (2c, H/4, W/4) → Linear → latent_dim."""

    def __init__(self, *, image_shape: tuple[int, int, int], latent_dim: int,
                 base_channels: int = 32) -> None:
        super().__init__()
        c_img, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"the encoder needs H and W divisible by 4, got {h}×{w}")
        c = base_channels
        self.net = nn.Sequential(
            nn.Conv2d(c_img, c, 4, 2, 1), nn.LeakyReLU(0.2),  # (B, c, H/2, W/2)
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2),
            nn.Flatten(),  # (B, 2c·H/4·W/4)
            nn.Linear(2 * c * (h // 4) * (w // 4), latent_dim),  # (B, latent_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
