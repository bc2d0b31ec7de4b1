"""gan.nets.models: shapes, interface, conditioning, spectral norm, the exact seed nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan.core.config import ModelConfig
from gan.nets.models import (
    DCGANDiscriminator,
    build,
    build_discriminator,
    build_generator,
    sample_latent,
)

torch.set_num_threads(1)

TINY = {"g_hidden": (16, 32), "d_hidden": (32, 16), "base_channels": 8, "latent_dim": 12}


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("spectral", [False, True])
def test_shapes_and_interface(arch: str, conditional: bool, size: int, spectral: bool) -> None:
    cfg = ModelConfig(arch=arch, conditional=conditional, image_size=size, num_classes=7,
                      spectral_norm=spectral, **TINY)
    torch.manual_seed(0)
    G, D = build(cfg)
    z = sample_latent(5, cfg.latent_dim)
    y = torch.arange(5) % 7
    x = G(z, y)
    assert x.shape == (5, 1, size, size) and x.dtype == torch.float32
    assert float(x.detach().abs().max()) <= 1.0  # tanh
    assert (G.latent_dim, G.num_classes, G.conditional, G.image_shape) == (
        12, 7, conditional, (1, size, size))
    logits = D(x, y)
    assert logits.shape == (5,)
    feats = D.features(x, y)
    assert feats.ndim == 2 and feats.shape[0] == 5
    if conditional:
        # The label matters: same z, other labels → other images and other logits.
        assert not torch.allclose(G(z, (y + 1) % 7), x)
        assert not torch.allclose(D(x, (y + 1) % 7), logits)
        with pytest.raises(ValueError, match="conditional"):
            G(z)
        with pytest.raises(ValueError, match="conditional"):
            D(x)
    else:
        # Unconditional models accept and ignore labels (eval: spectral norm's power
        # iteration would otherwise move between the two calls).
        G.eval(), D.eval()
        assert torch.equal(G(z, y), G(z)) and torch.equal(D(x, y), D(x))


def test_seed_mlp_is_exactly_the_seed_architecture() -> None:
    G, D = build(ModelConfig(arch="mlp"))
    g_lin = [m for m in G.modules() if isinstance(m, nn.Linear)]
    d_lin = [m for m in D.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in g_lin] == [
        (100, 256), (256, 512), (512, 1024), (1024, 784)]
    assert [(m.in_features, m.out_features) for m in d_lin] == [
        (784, 1024), (1024, 512), (512, 256), (256, 1)]
    acts = [m for m in G.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 3 and all(a.negative_slope == 0.2 for a in acts)
    assert isinstance(list(G.modules())[-1], nn.Tanh)
    assert not any(isinstance(m, nn.Sigmoid) for m in D.modules())  # logits; σ in the loss


def test_dcgan_discriminator_has_no_batchnorm_and_batch_independent_logits() -> None:
    torch.manual_seed(0)
    D = build_discriminator(ModelConfig(arch="dcgan", base_channels=8))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    x = torch.randn(6, 1, 28, 28)
    D.eval()  # fixed spectral-norm vectors aside, one joint forward = separate forwards
    assert torch.allclose(D(x), torch.cat([D(x[:3]), D(x[3:])]), atol=1e-6)


def test_spectral_norm_bounds_d_layers() -> None:
    torch.manual_seed(0)
    D = build_discriminator(ModelConfig(arch="mlp", spectral_norm=True, d_hidden=(64, 32)))
    D.train()
    x = torch.randn(8, 1, 28, 28)
    for _ in range(30):  # power iterations converge during forwards in train mode
        D(x)
    lin = [m for m in D.modules() if isinstance(m, nn.Linear)]
    assert all(hasattr(m, "parametrizations") for m in lin)
    for m in lin:
        assert torch.linalg.matrix_norm(m.weight.detach(), ord=2) == pytest.approx(1.0, abs=0.05)


def test_builders_validate_and_seed_reproducibly() -> None:
    cfg = ModelConfig(arch="dcgan", base_channels=8)
    torch.manual_seed(3)
    a = build_generator(cfg).state_dict()
    torch.manual_seed(3)
    b = build_generator(cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="divisible by 4"):
        DCGANDiscriminator(image_shape=(1, 30, 30))


def test_sample_latent_seeded_and_on_device() -> None:
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = sample_latent(4, 10, g1, "cpu"), sample_latent(4, 10, g2, torch.device("cpu"))
    assert a.shape == (4, 10) and torch.equal(a, b)
