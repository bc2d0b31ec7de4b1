"""gan.train.steps: pinned seeded losses, one D forward per D step, gradient isolation, DDP, EMA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from gan.core.config import ModelConfig, TrainConfig
from gan.nets.models import build, sample_latent
from gan.train.steps import d_step, ema_update, frozen, g_step, make_ema, maybe_no_sync, unwrap

torch.set_num_threads(1)

MLP = {"arch": "mlp", "latent_dim": 8, "image_size": 8, "g_hidden": (16,), "d_hidden": (16,)}
DCGAN = {"arch": "dcgan", "conditional": True, "spectral_norm": True, "latent_dim": 8,
         "image_size": 8, "base_channels": 4, "num_classes": 3}


def d_kw(tc: TrainConfig) -> dict:
    """The TrainConfig fields a D step takes."""
    return {"loss": tc.loss, "real_label": tc.real_label, "gp_weight": tc.gp_weight}


def g_kw(tc: TrainConfig) -> dict:
    """The TrainConfig fields a G step takes."""
    return {"loss": tc.loss, "mode_seeking": tc.mode_seeking}


def three_steps(model_kw: dict, train_kw: dict, wrap=lambda m: m) -> list[dict[str, float]]:
    """3 × (D step, G step) of a tiny seeded model on seeded random data."""
    mc, tc = ModelConfig(**model_kw), TrainConfig(**train_kw)
    torch.manual_seed(0)
    G, D = build(mc)
    opt_g = torch.optim.Adam(G.parameters(), lr=tc.lr_g, betas=(tc.beta1, tc.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=tc.lr_d, betas=(tc.beta1, tc.beta2))
    G, D = wrap(G), wrap(D)
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(3):
        real = torch.rand(8, 1, mc.image_size, mc.image_size, generator=gen) * 2 - 1
        y = torch.randint(0, mc.num_classes, (8,), generator=gen)
        z = sample_latent(8, mc.latent_dim, gen)
        m = d_step(G, D, opt_d, real, y, z, **d_kw(tc), rng=gen)
        m.update(g_step(G, D, opt_g, z, y, **g_kw(tc)))
        out.append(m)
    return out


# Pinned reference values: produced once by `three_steps` (this file) with torch 2.13.0 on CPU
# (1 thread), printed with round(v, 6). They catch silent numerical changes in models, losses,
# steps or init. If a change is intended, recompute with the same call and update them.
PINNED = {
    "mlp-bce": (MLP, {"loss": "bce", "lr_g": 1e-3, "lr_d": 1e-3}, [
        {"loss_d": 1.366665, "d_real": 0.474318, "d_fake": 0.467634, "loss_g": 0.763908},
        {"loss_d": 1.383195, "d_real": 0.469368, "d_fake": 0.472008, "loss_g": 0.756229},
        {"loss_d": 1.364294, "d_real": 0.466456, "d_fake": 0.458929, "loss_g": 0.782817}]),
    "cdcgan-sn-wgan-gp": (DCGAN, {"loss": "wgan-gp", "lr_g": 1e-3, "lr_d": 1e-3, "beta1": 0.0,
                                  "beta2": 0.9}, [
        {"gp": 0.624365, "loss_d": 6.281695, "d_real": 0.475507, "d_fake": 0.484919,
         "loss_g": 0.062722},
        {"gp": 0.484304, "loss_d": 4.859185, "d_real": 0.481393, "d_fake": 0.485403,
         "loss_g": 0.061263},
        {"gp": 0.51459, "loss_d": 5.11808, "d_real": 0.492559, "d_fake": 0.485566,
         "loss_g": 0.060686}]),
    "cdcgan-sn-hinge": (DCGAN, {"loss": "hinge", "lr_g": 1e-3, "lr_d": 1e-3, "beta1": 0.0,
                                "beta2": 0.9}, [
        {"loss_d": 2.03804, "d_real": 0.475507, "d_fake": 0.484919, "loss_g": 0.060639},
        {"loss_d": 1.974384, "d_real": 0.492654, "d_fake": 0.486328, "loss_g": 0.055645},
        {"loss_d": 1.944065, "d_real": 0.500622, "d_fake": 0.486663, "loss_g": 0.055617}]),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_seeded_reference_losses(name: str) -> None:
    model_kw, train_kw, want = PINNED[name]
    got = three_steps(model_kw, train_kw)
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-5), (k, got)
        assert all(isinstance(v, float) for v in g.values())


@contextlib.contextmanager
def counting_forwards(module: nn.Module) -> Iterator[list[int]]:
    sizes: list[int] = []
    handle = module.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    try:
        yield sizes
    finally:
        handle.remove()


@pytest.mark.parametrize(("loss", "batch_factor"), [("hinge", 2), ("wgan-gp", 3)])
def test_one_d_forward_per_d_step_and_gradient_isolation(loss: str, batch_factor: int) -> None:
    mc, tc = ModelConfig(**DCGAN), TrainConfig(loss=loss)
    torch.manual_seed(0)
    G, D = build(mc)
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    real, y, z = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 0]), torch.randn(4, 8)
    g_before = [p.detach().clone() for p in G.parameters()]
    with counting_forwards(D) as sizes:
        d_step(G, D, opt_d, real, y, z, **d_kw(tc))
    assert sizes == [4 * batch_factor]  # real + fake (+ interpolates) in ONE forward
    # The D step used fake.detach(): G received no gradient and did not move.
    assert all(p.grad is None for p in G.parameters())
    assert all(torch.equal(a, b) for a, b in zip(g_before, G.parameters(), strict=True))
    opt_d.zero_grad(set_to_none=True)
    d_before = [p.detach().clone() for p in D.parameters()]
    g_step(G, D, opt_g, z, y, **g_kw(tc))
    # The G step computed no gradient for D, left it unchanged, and unfroze it afterwards.
    assert all(p.grad is None for p in D.parameters())
    assert all(torch.equal(a, b) for a, b in zip(d_before, D.parameters(), strict=True))
    assert all(p.requires_grad for p in D.parameters())
    assert all(p.grad is not None for p in G.parameters())


def test_conditional_step_without_labels_fails_clearly() -> None:
    mc, tc = ModelConfig(**DCGAN), TrainConfig()
    G, D = build(mc)
    with pytest.raises(ValueError, match="conditional"):
        g_step(G, D, torch.optim.Adam(G.parameters()), torch.randn(2, 8), None, **g_kw(tc))


def test_frozen_and_maybe_no_sync_helpers() -> None:
    lin = nn.Linear(2, 2)
    lin.bias.requires_grad_(False)
    with frozen(lin):
        assert not any(p.requires_grad for p in lin.parameters())
    assert lin.weight.requires_grad and not lin.bias.requires_grad  # restored as it was
    with maybe_no_sync(lin):  # a plain module: a no-op context
        pass
    assert unwrap(lin) is lin


@pytest.fixture
def gloo_group(tmp_path):
    """A real one-process gloo group (no ports: a file store)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


class CountingDDP(DDP):
    """Real DDP that counts how often `no_sync` is entered."""

    no_sync_calls = 0

    def no_sync(self):  # type: ignore[override]
        self.no_sync_calls += 1
        return super().no_sync()


# The wgan-gp head's (1, F) gradient has strides DDP calls unusual; same memory layout.
@pytest.mark.filterwarnings("ignore:Grad strides do not match")
@pytest.mark.parametrize("name", ["mlp-bce", "cdcgan-sn-wgan-gp"])
def test_steps_under_ddp_match_plain_modules(gloo_group: None, name: str) -> None:
    # With one rank, DDP's averaged gradients equal the plain ones, so the numbers must agree
    # (the gradient penalty's double backward included).
    model_kw, train_kw, _ = PINNED[name]
    plain = three_steps(model_kw, train_kw)
    wrapped_modules: list[CountingDDP] = []

    def wrap(m: nn.Module) -> CountingDDP:
        wrapped_modules.append(CountingDDP(m))
        return wrapped_modules[-1]

    wrapped = three_steps(model_kw, train_kw, wrap=wrap)
    for a, b in zip(plain, wrapped, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    ddp_g, ddp_d = wrapped_modules
    # D's gradients are not all-reduced during the 3 G steps; G's always are.
    assert (ddp_d.no_sync_calls, ddp_g.no_sync_calls) == (3, 0)
    ddp = DDP(nn.Linear(2, 2))
    assert unwrap(ddp) is ddp.module


def test_ema_warms_up_and_copies_buffers() -> None:
    torch.manual_seed(0)
    G, _ = build(ModelConfig(arch="dcgan", base_channels=8, latent_dim=8))
    ema = make_ema(G)
    assert not ema.training and not any(p.requires_grad for p in ema.parameters())
    old = [p.detach().clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    G.train()(torch.randn(4, 8))  # moves BatchNorm running statistics
    ema_update(ema, G, decay=0.999, num_updates=0)  # warm-up: d = min(0.999, 1/10)
    for e, o, g in zip(ema.parameters(), old, G.parameters(), strict=True):
        assert torch.allclose(e, 0.1 * o + 0.9 * g, atol=1e-6)
    for be, bg in zip(ema.buffers(), G.buffers(), strict=True):
        assert torch.equal(be, bg)
    late = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, G, decay=0.5, num_updates=10_000)  # past warm-up: d = decay
    for e, o, g in zip(ema.parameters(), late, G.parameters(), strict=True):
        assert torch.allclose(e, 0.5 * o + 0.5 * g, atol=1e-6)


# --------------------------------------------------------------------------- mode seeking


class IgnoresZ(nn.Module):
    """A conditional G collapsed within each class: the image depends on y only."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(3, 1 * 8 * 8))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.table[y] + 0 * z.sum(1, keepdim=True)).view(-1, 1, 8, 8)


def test_mode_seeking_term_punishes_a_g_that_ignores_z():
    from gan.train.steps import mode_seeking_term

    torch.manual_seed(0)
    G, _ = build(ModelConfig(**DCGAN))
    z, y = torch.randn(16, 8), torch.arange(16) % 3
    diverse = mode_seeking_term(G, G(z, y), z, y)
    collapsed_g = IgnoresZ()
    collapsed = mode_seeking_term(collapsed_g, collapsed_g(z, y), z, y)
    assert torch.isfinite(diverse) and collapsed > 100 * diverse


def test_mode_seeking_weight_adds_the_term_to_g_loss_and_reports_it():
    plain = three_steps(DCGAN, {"loss": "hinge"})
    seeking = three_steps(DCGAN, {"loss": "hinge", "mode_seeking": 1.0})
    assert "mode_seeking" not in plain[0]
    assert all(s["mode_seeking"] > 0 for s in seeking)
    # the first G loss differs by exactly the weighted term (same seeds, same D step)
    assert seeking[0]["loss_d"] == plain[0]["loss_d"]
    assert seeking[0]["loss_g"] == pytest.approx(plain[0]["loss_g"] + seeking[0]["mode_seeking"],
                                                 rel=1e-5)


def test_mode_seeking_second_batch_comes_from_the_given_generator_not_the_global_rng():
    """The trainer seeds its z generator and the global RNG alike; z' must still differ from z
    (a z' equal to z made 0/0 = NaN on CUDA, where nothing else draws from the global RNG)."""
    from gan.train.steps import mode_seeking_term

    torch.manual_seed(0)
    G, _ = build(ModelConfig(**DCGAN))
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)  # the global stream now repeats gen's
    z = sample_latent(16, 8, gen)
    y = torch.arange(16) % 3
    term = mode_seeking_term(G, G(z, y), z, y, rng=gen)
    assert torch.isfinite(term) and term < 1e4
    torch.manual_seed(5)
    same = mode_seeking_term(G, G(z, y), z, y, rng=torch.Generator().manual_seed(5))
    assert torch.isfinite(same)  # z' == z: no NaN, the clamp keeps it finite
