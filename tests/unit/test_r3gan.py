"""The R3GAN option: RpGAN, R1 + R2, the cosine schedule, the r3gan and dcgan-up nets.

What it pins: rpgan's values on hand-computed logits; R1 and R2 equal ‖∇D‖² on a D whose
gradient is known in closed form; γ = 0 leaves a D step exactly as before; the schedule's
start, middle and end values, and that a resumed run continues it; shapes, ranges and
features of r3gan and dcgan-up at 28 and 32 px, grey and colour, conditional or not; a fresh
residual block is the identity and the fixed upsampler keeps a constant image constant; a
checkpoint rebuilds both nets through `build(ModelConfig(**cfg))`.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gan.core.config import PRESETS, ModelConfig, TrainConfig, resolve_configs
from gan.data.prepare import PreparedData
from gan.nets.models import build, sample_latent
from gan.nets.r3gan import Resample, ResidualBlock, stage_widths, start_side
from gan.train import losses
from gan.train.checkpoint import load_checkpoint, save_checkpoint, state_from_checkpoint
from gan.train.loop import train_local
from gan.train.schedule import horizon_images, knobs_at
from gan.train.steps import d_update, g_update

torch.set_num_threads(1)


# --------------------------------------------------------------------------- losses


def test_rpgan_values_on_hand_computed_logits() -> None:
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0])
    # D: mean softplus(-(r - f)) = (log(1 + e^-1) + log 2) / 2
    want_d = (math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2
    assert losses.d_loss("rpgan", real, fake).item() == pytest.approx(want_d, rel=1e-6)
    # G: mean softplus(-(f - r)) = (log(1 + e^1) + log 2) / 2
    want_g = (math.log1p(math.exp(1.0)) + math.log(2.0)) / 2
    assert losses.g_loss("rpgan", fake, real).item() == pytest.approx(want_g, rel=1e-6)
    # Relativistic: shifting every logit by the same constant changes nothing.
    assert losses.rpgan_d(real + 5, fake + 5).item() == pytest.approx(want_d, rel=1e-6)
    with pytest.raises(ValueError, match="needs D's logits on a real batch"):
        losses.g_loss("rpgan", fake)


class _Quadratic(nn.Module):
    """D(x) = <w, x> + ‖x‖²/2 per sample: ∇_x D = w + x, known in closed form."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1) + 0.5 * x.square().flatten(1).sum(1)  # (B,)


def test_r1_r2_are_squared_gradient_norms() -> None:
    shape = (2, 3, 3)
    D = _Quadratic(shape)
    g = torch.Generator().manual_seed(1)
    real = torch.randn(4, *shape, generator=g).requires_grad_(True)
    fake = torch.randn(4, *shape, generator=g).requires_grad_(True)
    r1, r2 = losses.r1r2_penalty(D(torch.cat([real, fake])), real, fake)
    w = D.w.detach()
    want_r1 = (w + real.detach()).square().flatten(1).sum(1).mean()
    want_r2 = (w + fake.detach()).square().flatten(1).sum(1).mean()
    torch.testing.assert_close(r1, want_r1)
    torch.testing.assert_close(r2, want_r2)
    (r1 + r2).backward()  # differentiable w.r.t. D's weights: d/dw = 2·mean(w + x), summed
    torch.testing.assert_close(D.w.grad, 2 * (w + real.detach()).mean(0)
                               + 2 * (w + fake.detach()).mean(0))


def _tiny_step(gamma: float, loss: str = "hinge") -> tuple[dict, nn.Module, torch.Tensor]:
    cfg = ModelConfig(arch="r3gan", image_size=8, channels=1, base_channels=16, latent_dim=4,
                      conditional=True, num_classes=3)
    torch.manual_seed(0)
    G, D = build(cfg)
    opt = torch.optim.SGD(D.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(2)
    real, y, z = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1, torch.arange(6) % 3, \
        torch.randn(6, 4, generator=g)
    with torch.no_grad():
        logits = D(torch.cat([real, G(z, y)]), y.repeat(2))
    m = d_update(G, D, opt, real, y, z, loss=loss, real_label=0.9, gp_weight=10.0,
                 r1r2_gamma=gamma)
    return m, D, logits


def test_gamma_zero_leaves_the_d_step_as_before() -> None:
    m0, d0, logits = _tiny_step(0.0)
    assert "r1" not in m0 and "r2" not in m0
    b = 6  # loss_d is exactly the hinge loss of the logits: no penalty term at all
    assert m0["loss_d"].item() == pytest.approx(losses.hinge_d(logits[:b], logits[b:]).item(),
                                                rel=1e-5)
    m1, d1, _ = _tiny_step(0.5)
    assert m1["r1"] > 0 and m1["r2"] > 0
    assert m1["loss_d"].item() == pytest.approx(
        m0["loss_d"].item() + 0.25 * (m1["r1"] + m1["r2"]).item(), rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(d0.state_dict().values(),
                                                     d1.state_dict().values(), strict=True))


def test_rpgan_g_step_needs_and_uses_the_real_batch() -> None:
    cfg = ModelConfig(arch="dcgan-up", image_size=8, base_channels=8, latent_dim=4)
    torch.manual_seed(0)
    G, D = build(cfg)
    opt = torch.optim.SGD(G.parameters(), lr=0.1)
    z, y = torch.randn(4, 4), torch.zeros(4, dtype=torch.long)
    real = torch.rand(4, 1, 8, 8) * 2 - 1
    with pytest.raises(ValueError, match="needs the real batch"):
        g_update(G, D, opt, z, y, loss="rpgan", mode_seeking=0.0)
    G0 = copy.deepcopy(G)
    with torch.no_grad():
        want = losses.rpgan_g(D(G(z, y)), D(real)).item()
    got = g_update(G, D, opt, z, y, loss="rpgan", mode_seeking=0.0, real=real)["loss_g"]
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert not torch.equal(G.up[1].weight, G0.up[1].weight)  # G learned
    assert all(p.grad is None for p in D.parameters())  # D frozen during G's step


# --------------------------------------------------------------------------- schedule


def test_cosine_schedule_start_middle_end() -> None:
    cfg = TrainConfig(schedule="r3gan-cosine", lr_g=2e-4, lr_d=4e-4, beta2=0.9,
                      r1r2_gamma=0.05, schedule_kimg=10)
    h = horizon_images(cfg, None)
    assert h == 10_000
    start, mid, end, past = (knobs_at(cfg, i, h) for i in (0, 5_000, 10_000, 15_000))
    assert (start.lr_g, start.lr_d, start.beta2_g, start.r1r2_gamma) == (2e-4, 4e-4, 0.9, 0.05)
    assert mid.lr_g == pytest.approx((2e-4 + 5e-5) / 2) and mid.lr_d == pytest.approx(2.5e-4)
    assert mid.beta2_d == pytest.approx(0.945) and mid.r1r2_gamma == pytest.approx(0.0275)
    assert end.lr_g == pytest.approx(5e-5) and end.beta2_g == pytest.approx(0.99)
    assert end.r1r2_gamma == pytest.approx(0.005)
    assert past == end  # clamped: the official formula would swing back up
    quarter = knobs_at(cfg, 2_500, h).lr_g  # cosine, not linear: 2e-4 - 1.5e-4·(1-cos(π/4))/2
    assert quarter == pytest.approx(2e-4 - 1.5e-4 * (1 - math.cos(math.pi / 4)) / 2)
    const = TrainConfig(r1r2_gamma=0.05)
    assert horizon_images(const, 100) is None and knobs_at(const, 10**9, None).lr_g == 2e-4
    # Without schedule_kimg the horizon is the run's planned images, which must be known.
    planned = TrainConfig(schedule="r3gan-cosine", epochs=3)
    assert horizon_images(planned, 1000) == 3000
    with pytest.raises(ValueError, match="train.schedule_kimg"):
        horizon_images(planned, None)


def _digits8(n: int = 48) -> PreparedData:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    y = torch.arange(n) % 3
    return PreparedData(x, y, x[:6], y[:6], num_classes=3, name="t", version="v")


R3_TINY = ModelConfig(arch="r3gan", image_size=8, channels=1, base_channels=16, latent_dim=4,
                      conditional=True, num_classes=3)


def test_schedule_is_applied_and_a_resumed_run_continues_it() -> None:
    data = _digits8()
    tc = TrainConfig(epochs=2, batch_size=16, loss="rpgan", r1r2_gamma=0.1, beta1=0.0,
                     beta2=0.9, schedule="r3gan-cosine", schedule_kimg=0.096, ema_decay=0.9)
    straight = train_local(data, R3_TINY, tc)
    # 6 steps of 16 images over a 96-image horizon: the last step ran at t = 5/6.
    want = knobs_at(tc, 5 * 16, 96.0)
    group = straight.opt_d.param_groups[0]
    assert group["lr"] == pytest.approx(want.lr_d) and group["betas"][1] == pytest.approx(
        want.beta2_d)
    assert straight.history[-1]["r1"] > 0 and straight.history[-1]["r2"] > 0
    first = train_local(data, R3_TINY, tc.model_copy(update={"epochs": 1}))
    resumed = state_from_checkpoint(load_checkpoint(save_checkpoint(first)), "cpu", train_cfg=tc)
    resumed = train_local(data, R3_TINY, tc, state=resumed)
    for a, b in ((straight.G, resumed.G), (straight.D, resumed.D)):
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k


# --------------------------------------------------------------------------- nets


@pytest.mark.parametrize("arch", ["r3gan", "dcgan-up"])
@pytest.mark.parametrize(("size", "channels"), [(28, 1), (32, 3), (28, 3), (32, 1)])
@pytest.mark.parametrize("conditional", [True, False])
def test_shapes_and_range(arch: str, size: int, channels: int, conditional: bool) -> None:
    cfg = ModelConfig(arch=arch, image_size=size, channels=channels, conditional=conditional,
                      base_channels=16, latent_dim=8)
    torch.manual_seed(0)
    G, D = build(cfg)
    z, y = torch.randn(3, 8), torch.tensor([0, 4, 9])
    x = G(z, y)  # train mode
    assert x.shape == (3, channels, size, size)
    assert D(x, y).shape == (3,) and D.features(x, y).shape[0] == 3
    G.eval()
    with torch.no_grad():
        xe = G(z, y)
    assert xe.min() >= -1.0 and xe.max() <= 1.0  # r3gan: clamped in eval mode (no tanh)
    if conditional:
        with pytest.raises(ValueError, match="conditional"):
            G(z)


def test_r3gan_sizes_and_widths() -> None:
    assert [start_side(s) for s in (8, 16, 28, 32, 48, 64, 128)] == [4, 4, 7, 4, 6, 4, 4]
    with pytest.raises(ValueError, match="s·2\\^k with s in 4..7"):
        start_side(36)
    with pytest.raises(ValueError, match="must be s·2\\^k with s in 4..7 for r3gan"):
        ModelConfig(arch="r3gan", image_size=36)
    with pytest.raises(ValueError, match="divisible by 4 for dcgan-up"):
        ModelConfig(arch="dcgan-up", image_size=30)
    assert stage_widths(32, 4) == [32, 32, 16, 16] and stage_widths(256, 4) == [256, 256, 128, 64]
    assert stage_widths(8, 3) == [8, 8, 8]
    D = build(ModelConfig(arch="r3gan", image_size=32, channels=3, base_channels=32))[1]
    assert D.features(torch.zeros(2, 3, 32, 32)).shape == (2, 32)  # the basis: coarsest width


def test_fresh_residual_block_is_the_identity_and_upsampling_keeps_constants() -> None:
    block = ResidualBlock(32, n_blocks=4)
    x = torch.randn(2, 32, 5, 5)
    assert torch.equal(block(x), x)
    assert block.body[-1].weight.abs().sum() == 0 and block.body[0].weight.std() > 0
    # MSR init: std gain/√fan_in, gain = √(2/1.04)·4^(-1/4)
    want = math.sqrt(2 / 1.04) * 4 ** -0.25 / math.sqrt(32)
    assert block.body[0].weight.std().item() == pytest.approx(want, rel=0.1)
    up, down = Resample("up"), Resample("down")
    const = torch.full((1, 3, 6, 6), 0.7)
    torch.testing.assert_close(up(const)[..., 1:-1, 1:-1], torch.full((1, 3, 10, 10), 0.7))
    torch.testing.assert_close(down(up(const))[..., 1:-1, 1:-1], torch.full((1, 3, 4, 4), 0.7))
    # Bilinear: a ramp stays a ramp inside the border (no phase-dependent pattern).
    ramp = torch.arange(6.0).expand(1, 1, 6, 6)
    out = up(ramp)[0, 0, 3, 2:-2]
    torch.testing.assert_close(out.diff(), torch.full_like(out.diff(), 0.5))
    assert F.leaky_relu(torch.tensor(-1.0), 0.2) == -0.2  # the activation's slope


def test_checkpoint_rebuilds_the_new_nets() -> None:
    data = _digits8()
    for model in (R3_TINY, R3_TINY.model_copy(update={"arch": "dcgan-up", "base_channels": 8})):
        state = train_local(data, model, TrainConfig(epochs=1, batch_size=16, ema_decay=0.0))
        ckpt = load_checkpoint(save_checkpoint(state))
        assert ModelConfig(**ckpt["model_config"]) == model
        G, D = build(ModelConfig(**ckpt["model_config"]))
        G.load_state_dict(ckpt["generator"])
        D.load_state_dict(ckpt["discriminator"])
        z, y = sample_latent(4, 4, torch.Generator().manual_seed(1)), torch.arange(4) % 3
        with torch.no_grad():
            assert torch.equal(G.eval()(z, y), state.G.eval()(z, y))
            x = G(z, y)
            assert torch.equal(D.eval()(x, y), state.D.eval()(x, y))


def test_r3gan_preset_resolves() -> None:
    model, train = resolve_configs("r3gan")
    assert model.arch == "r3gan" and train.loss == "rpgan" and train.r1r2_gamma > 0
    assert train.schedule == "r3gan-cosine" and train.betas_d == (0.0, 0.9)
    assert PRESETS["r3gan"]["model"]["spectral_norm"] is False


def test_gpu_sizing_and_budget_runs_need_a_horizon() -> None:
    from gan.tools.gpu_check import _configs
    from gan.train.budget import train_for_budget

    model, train = _configs("cpu", True, "r3gan")
    assert (model.arch, model.base_channels, model.blocks_per_stage) == ("r3gan", 256, 2)
    assert train.batch_size == 256 and train.loss == "rpgan" and not train.bf16  # CPU: no bf16
    with torch.device("meta"):
        G, D = build(model)
    assert sum(p.numel() for p in G.parameters()) > 1_000_000
    tc = TrainConfig(schedule="r3gan-cosine", epochs=5, batch_size=16)
    with pytest.raises(ValueError, match="needs train.schedule_kimg"):
        train_for_budget(_digits8(), R3_TINY, tc, time_budget_s=1.0)
