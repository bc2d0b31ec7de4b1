"""gan.eval.spectrum: the Nyquist ratio sees a checkerboard, and separates today's `dcgan`
(transposed convolutions) from the resize architectures `dcgan-up` and `r3gan` after a few
dozen training steps on the bundled digits (issue 25, item 2).

Measured when the margin was chosen (400 bundled digits, 325 train; width 16, batch 32,
unconditional, 0 or 4 epochs, seeds 0-2; 256 samples each): real digits 0.87; dcgan 4.1-10.9
at init and 6.1-14.1 after 40 steps; dcgan-up 0.19-0.68 at init, 0.23-0.46 after; r3gan
0.97-0.99 at init and after. The test asks dcgan > 2, the new G < 1.2 and a factor 3 between.
"""

from __future__ import annotations

import pytest
import torch

from gan.core.config import DataConfig, resolve_configs
from gan.data.prepare import PreparedData, prepare_arrays
from gan.eval.spectrum import mean_power_spectrum, nyquist_ratio
from gan.nets.models import sample_images
from gan.train.loop import train_local

torch.set_num_threads(1)


def test_a_checkerboard_scores_high_and_a_smooth_image_low() -> None:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    smooth = torch.sin(xx / 3 + torch.rand(8, 1, 1, 1, generator=g) * 6) * torch.cos(yy / 5)
    board = ((xx + yy) % 2) * 2 - 1  # (16, 16) ±1, period 2
    noisy = torch.randn(8, 1, 16, 16, generator=g)
    assert nyquist_ratio(smooth) < 1.0  # not ≈ 0: the DFT wraps, the edge jumps leak (∝ 1/k²)
    assert nyquist_ratio(noisy) == pytest.approx(1.0, abs=0.35)  # white noise: flat
    assert nyquist_ratio(smooth + 0.3 * board) > 50
    # Stronger artefact, higher ratio: the measure orders images by their checkerboard.
    ratios = [nyquist_ratio(smooth + a * board + 0.05 * noisy) for a in (0.0, 0.05, 0.2)]
    assert ratios == sorted(ratios) and ratios[0] < 1 < ratios[-1]
    assert mean_power_spectrum(torch.ones(2, 3, 8, 8)).abs().max() < 1e-20  # mean removed
    with pytest.raises(ValueError, match="even H and W"):
        nyquist_ratio(torch.zeros(1, 1, 7, 8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        mean_power_spectrum(torch.zeros(8, 8))


@pytest.fixture(scope="module")
def digits() -> PreparedData:
    return prepare_arrays(DataConfig(limit=400))  # 325 train images, 28 px grey


def _trained_ratio(data: PreparedData, arch: str, epochs: int, seed: int) -> float:
    model, train = resolve_configs(
        "default", {"arch": arch, "base_channels": 16, "conditional": False},
        {"epochs": epochs, "batch_size": 32, "seed": seed, "ema_decay": 0.0,
         "mode_seeking": 0.0})
    state = train_local(data, model, train)  # 10 steps per epoch
    return nyquist_ratio(sample_images(state.G, 256, seed=5))


def test_transposed_convolutions_draw_a_checkerboard_resize_does_not(digits: PreparedData
                                                                     ) -> None:
    real = nyquist_ratio(digits.x_train)
    dcgan = _trained_ratio(digits, "dcgan", 4, seed=0)
    up = _trained_ratio(digits, "dcgan-up", 4, seed=0)
    r3 = _trained_ratio(digits, "r3gan", 2, seed=0)
    assert real < 1.0
    assert dcgan > 2.0 and up < 1.2 and r3 < 1.2, (dcgan, up, r3)
    assert dcgan > 3 * max(up, r3), (dcgan, up, r3)
