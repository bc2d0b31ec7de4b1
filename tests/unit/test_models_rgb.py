"""gan.nets.models on colour and size: DCGAN at C = 3 and 32/64 px, the SNGAN ResNet nets,
their conditional variants, and a few seeded training steps of each."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan.core.config import ModelConfig
from gan.nets.models import (
    DeepDCGANDiscriminator,
    DeepDCGANGenerator,
    ResNetDiscriminator,
    ResNetGenerator,
    build,
    build_discriminator,
    sample_latent,
)
from gan.train.steps import d_step, g_step

torch.set_num_threads(1)

TINY = {"base_channels": 8, "latent_dim": 12, "num_classes": 5, "channels": 3}


@pytest.mark.parametrize(("arch", "size"), [("dcgan", 32), ("dcgan", 64), ("dcgan-deep", 32),
                                            ("dcgan-deep", 64), ("resnet", 32),
                                            ("resnet", 16), ("resnet", 64)])
@pytest.mark.parametrize("conditional", [False, True])
def test_rgb_shapes_and_interface(arch: str, size: int, conditional: bool) -> None:
    cfg = ModelConfig(arch=arch, conditional=conditional, image_size=size, spectral_norm=True,
                      **TINY)
    torch.manual_seed(0)
    G, D = build(cfg)
    z = sample_latent(4, cfg.latent_dim)
    y = torch.arange(4) % 5
    x = G(z, y)
    assert x.shape == (4, 3, size, size) and G.image_shape == (3, size, size)
    assert float(x.detach().abs().max()) <= 1.0
    assert D(x, y).shape == (4,)
    assert D.features(x).shape[0] == 4 and D.features(x).ndim == 2
    if conditional:
        assert not torch.allclose(G(z, (y + 1) % 5), x)
        with pytest.raises(ValueError, match="conditional"):
            G(z)
    else:
        G.eval(), D.eval()
        assert torch.equal(G(z, y), G(z)) and torch.equal(D(x, y), D(x))


def test_resnet_is_the_sngan_layout_at_32() -> None:
    """Miyato et al. 2018 (CIFAR ResNet): G 4→8→16→32 with three up-blocks, D two down-blocks
    (32→16→8) then two plain blocks, global sum pooling, spectral norm on every D layer."""
    G = ResNetGenerator(latent_dim=128, image_shape=(3, 32, 32), base_channels=16)
    D = ResNetDiscriminator(image_shape=(3, 32, 32), base_channels=16)
    assert len(G.blocks) == 3 and len(D.blocks) == 4
    assert [isinstance(b.residual[-1], nn.AvgPool2d) for b in D.blocks] == [True, True,
                                                                           False, False]
    convs = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    x = torch.randn(6, 3, 32, 32)
    D.eval()  # no batch norm: logits do not depend on the batch
    assert torch.allclose(D(x), torch.cat([D(x[:2]), D(x[2:])]), atol=1e-5)


def test_deep_dcgan_is_radfords_layout() -> None:
    """Radford et al. 2016: G from 4×4 doubling to 64 with widths 8c, 4c, 2c, c; D mirrored."""
    G = DeepDCGANGenerator(image_shape=(3, 64, 64), base_channels=8)
    D = DeepDCGANDiscriminator(image_shape=(3, 64, 64), base_channels=8)
    convt = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in convt] == [(64, 32), (32, 16), (16, 8),
                                                               (8, 3)]
    conv = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in conv] == [(3, 8), (8, 16), (16, 32),
                                                              (32, 64)]
    assert D.feature_dim == 64 * 4 * 4
    with pytest.raises(ValueError, match="8, 16, 32, 64 or 128 for dcgan-deep"):
        ModelConfig(arch="dcgan-deep", image_size=28)


def test_resnet_refuses_sizes_it_cannot_build() -> None:
    with pytest.raises(ValueError, match="16, 32, 64 or 128 for resnet"):
        ModelConfig(arch="resnet", image_size=28)
    with pytest.raises(ValueError, match=r"\(16, 32, 64, 128\)"):
        ResNetGenerator(image_shape=(3, 24, 24))
    with pytest.raises(ValueError, match="square"):
        ResNetDiscriminator(image_shape=(3, 32, 16))


@pytest.mark.parametrize("arch", ["dcgan", "dcgan-deep", "resnet"])
@pytest.mark.parametrize("conditional", [False, True])
def test_a_few_training_steps_on_rgb_run_and_stay_finite(arch: str, conditional: bool) -> None:
    """Hinge loss, 5 × (D step, G step) on a fixed RGB batch: losses finite, weights move,
    and D learns to tell this real batch from G's (its hinge loss falls from the start)."""
    cfg = ModelConfig(arch=arch, conditional=conditional, image_size=16, spectral_norm=True,
                      **TINY)
    torch.manual_seed(0)
    G, D = build(cfg)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.9))
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(16, 3, 16, 16, generator=gen) * 2 - 1
    real[:, 0] = 0.8  # a colour G has to learn: the red channel is constant
    y = torch.randint(0, 5, (16,), generator=gen)
    before = [p.detach().clone() for p in G.parameters()]
    losses = []
    for _ in range(5):
        z = sample_latent(16, cfg.latent_dim, gen)
        m = d_step(G, D, opt_d, real, y, z, loss="hinge", real_label=1.0, gp_weight=0.0,
                   rng=gen)
        m.update(g_step(G, D, opt_g, z, y, loss="hinge", mode_seeking=0.0))
        losses.append(m)
    assert all(torch.isfinite(torch.tensor(v)) for m in losses for v in m.values())
    assert losses[-1]["loss_d"] < losses[0]["loss_d"]
    assert any(not torch.equal(a, b) for a, b in zip(before, G.parameters(), strict=True))


def test_builders_dispatch_resnet() -> None:
    D = build_discriminator(ModelConfig(arch="resnet", image_size=32, base_channels=8,
                                        channels=3))
    assert isinstance(D, ResNetDiscriminator)
