"""gan.train.diffaug (DiffAugment, Zhao et al. 2020) and its use in the D and G steps."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from gan.apps.studies.demo_models import tiny_recipe
from gan.core.config import DataConfig, ModelConfig, RetrainParams, TrainConfig
from gan.data.prepare import prepare_arrays
from gan.nets.models import build, sample_latent
from gan.train.diffaug import color, cutout, diff_augment, parse_policy, translation
from gan.train.loop import train_local
from gan.train.steps import d_step, g_step

torch.set_num_threads(1)


def _x(b: int = 6, c: int = 3, s: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_policy_parsing_and_config() -> None:
    assert parse_policy("color,translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="unknown \\['blur'\\]"):
        parse_policy("color,blur")
    assert TrainConfig(diffaugment="translation,cutout").diffaugment == "translation,cutout"
    with pytest.raises(ValidationError, match="diffaugment"):
        TrainConfig(diffaugment="colour")
    _, _, train, _ = RetrainParams(diffaugment="color,cutout").resolve()
    assert train.diffaugment == "color,cutout"
    assert RetrainParams().resolve()[2].diffaugment == ""  # off unless asked


def test_translation_moves_whole_images_by_integers_with_zero_fill() -> None:
    x = _x()
    out = translation(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    for i in range(len(x)):  # each sample is x shifted by some (dy, dx) within ±2 px
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros_like(x[i])
                src = x[i][:, max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)]
                shifted[:, max(-dy, 0):16 + min(-dy, 0), max(-dx, 0):16 + min(-dx, 0)] = src
                found |= torch.equal(shifted, out[i])
        assert found, i


def test_cutout_zeroes_one_square_of_half_the_side() -> None:
    x = _x(b=64) * 0.5 + 0.6  # strictly positive: zeros are the cut
    out = cutout(x, torch.Generator().manual_seed(2))
    cut = (out == 0).all(dim=1)  # (B, H, W)
    areas = cut.sum(dim=(1, 2))
    assert int(areas.max()) == 64 and int(areas.min()) > 0  # 8×8 when inside, clipped at edges
    for m in cut:
        rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
        assert int(m.sum()) == len(rows) * len(cols)  # a rectangle
    assert torch.equal(out[~cut.unsqueeze(1).expand_as(out)], x[~cut.unsqueeze(1).expand_as(x)])


def test_color_is_per_sample_and_seeded() -> None:
    x = _x()
    a = color(x, torch.Generator().manual_seed(3))
    b = color(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, x)
    shift = (a - x).mean(dim=(1, 2, 3))
    assert shift.std() > 0  # different draws per sample


def test_gradients_flow_through_every_op() -> None:
    x = _x().requires_grad_(True)
    y = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(0))
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert diff_augment(x, "") is x


@pytest.mark.parametrize("loss", ["hinge", "wgan-gp"])
def test_steps_with_diffaugment_run_and_differ_from_without(loss: str) -> None:
    cfg = ModelConfig(arch="dcgan", conditional=True, image_size=16, channels=3,
                      base_channels=8, latent_dim=8, num_classes=3, spectral_norm=True)
    out = {}
    for policy in ((), ("color", "translation", "cutout")):
        torch.manual_seed(0)
        G, D = build(cfg)
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.9))
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.9))
        gen = torch.Generator().manual_seed(1)
        x, y = _x(b=8, s=16), torch.arange(8) % 3
        z = sample_latent(8, 8, gen)
        m = d_step(G, D, opt_d, x, y, z, loss=loss, real_label=1.0, gp_weight=10.0, rng=gen,
                   augment=policy)
        m.update(g_step(G, D, opt_g, z, y, loss=loss, mode_seeking=0.0, rng=gen,
                        augment=policy))
        assert all(torch.isfinite(torch.tensor(v)) for v in m.values())
        out[policy] = m
    assert out[()]["loss_d"] != out[("color", "translation", "cutout")]["loss_d"]


def test_training_loop_uses_the_recipe_option() -> None:
    """`train.diffaugment` reaches the steps of the epoch loop: same seed, other losses."""
    data = prepare_arrays(DataConfig(limit=64))
    model_cfg, train_cfg = tiny_recipe(conditional=True, epochs=1)
    plain = train_local(data, model_cfg, train_cfg)
    aug_cfg = train_cfg.model_copy(update={"diffaugment": "color,translation,cutout"})
    aug = train_local(data, model_cfg, aug_cfg)
    h0, h1 = plain.history[-1], aug.history[-1]
    assert torch.isfinite(torch.tensor([h1["loss_d"], h1["loss_g"]])).all()
    assert h0["loss_d"] != h1["loss_d"]
