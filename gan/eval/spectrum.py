"""Checkerboard artefacts as a number: the spectral peak at half the sampling frequency.

What this module is: `nyquist_ratio(images)`. A generator whose upsampling gives the four
sub-pixel phases of each 2× step different kernels (a learned transposed convolution, Odena
et al. 2016, "Deconvolution and Checkerboard Artifacts") draws a pattern of period 2 pixels,
i.e. energy at the Nyquist frequency (ky = H/2 or kx = W/2 of the 2-D DFT). The ratio compares
the mean power on those two Nyquist lines with the mean power on the lines one bin lower
(ky = H/2 - 1, kx = W/2 - 1; by the DFT's symmetry the bins one higher hold the same power):
below 1 for a spectrum that decays smoothly, well above 1 for a checkerboard. No window: the
DFT wraps around, so an image's border jumps leak power ∝ 1/k² into every bin, and an image
without a checkerboard scores about ((H/2 - 1)/(H/2))² ≈ 0.86 at 28 px (the bundled digits:
0.87) rather than ≈ 0. Each image channel's own mean is removed first (the DC bin is on
neither line; removing it only keeps float error out). Power is averaged over images and
channels before the ratio, so a few images with a strong pattern count by their energy.

What it is not: no judge, no threshold (the test that separates `dcgan` from the resize
architectures chooses its margin from measurements; docs/recipes.md has the numbers).
"""

from __future__ import annotations

import torch
from torch import Tensor


def mean_power_spectrum(images: Tensor) -> Tensor:
    """|DFT|² of each image channel minus its mean, averaged over images and channels:
    (N, C, H, W) → (H, W) float64."""
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    x = images.double()
    x = x - x.mean(dim=(2, 3), keepdim=True)  # (N, C, H, W), each channel zero-mean
    return torch.fft.fft2(x).abs().square().mean(dim=(0, 1))  # (H, W)


def nyquist_ratio(images: Tensor) -> float:
    """Mean power on the Nyquist lines (row H/2, column W/2) over that on the lines one bin
    below (row H/2 - 1, column W/2 - 1), for images (N, C, H, W) with even H and W ≥ 4."""
    h, w = images.shape[-2:]
    if h % 2 or w % 2 or h < 4 or w < 4:
        raise ValueError(f"nyquist_ratio needs even H and W >= 4, got {h}×{w}")
    p = mean_power_spectrum(images)  # (H, W)
    nyq = torch.cat([p[h // 2, :], p[:, w // 2]]).mean()
    near = torch.cat([p[h // 2 - 1, :], p[:, w // 2 - 1]]).mean()
    return float(nyq / near.clamp_min(1e-30))
