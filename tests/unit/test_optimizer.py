"""gan.train.state.adam: fused Adam on CPU, the same updates as the foreach kernel, and
checkpoints from either kernel resume with the one this device has."""

from __future__ import annotations

import copy

import torch
from torch import nn

from gan.core.config import ModelConfig, TrainConfig
from gan.train.checkpoint import load_checkpoint, save_checkpoint, state_from_checkpoint
from gan.train.state import adam, make_state

torch.set_num_threads(1)

MLP = ModelConfig(arch="mlp", latent_dim=8, image_size=8, g_hidden=(16, 32), d_hidden=(32, 16))


def _grads(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.grad = torch.randn(p.shape, generator=g)


def test_make_state_uses_fused_adam_on_cpu() -> None:
    state = make_state(MLP, TrainConfig())
    assert state.opt_g.defaults["fused"] is True
    assert state.opt_d.defaults["fused"] is True


def test_fused_and_foreach_take_the_same_steps() -> None:
    a = nn.Sequential(nn.Linear(32, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
    b = copy.deepcopy(a)
    start = [p.detach().clone() for p in a.parameters()]
    fused = adam(a, lr=2e-4, betas=(0.5, 0.999))
    foreach = torch.optim.Adam(b.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=True)
    assert fused.defaults["fused"] is True
    for step in range(5):
        _grads(a, step)
        _grads(b, step)
        fused.step()
        foreach.step()
    for pa, pb, p0 in zip(a.parameters(), b.parameters(), start, strict=True):
        assert not torch.equal(pa, p0)  # it trained
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)  # different kernels, same maths


def test_checkpoint_from_the_foreach_kernel_resumes_fused_and_steps() -> None:
    state = make_state(MLP, TrainConfig())
    _grads(state.G, 0)
    state.opt_g.step()
    saved = load_checkpoint(save_checkpoint(state))
    for group in saved["opt_g"]["param_groups"]:  # as written before the optimiser was fused
        group["fused"], group["foreach"] = None, None
    resumed = state_from_checkpoint(saved)
    assert all(g["fused"] is True for g in resumed.opt_g.param_groups)
    first = next(iter(resumed.G.parameters()))
    assert float(resumed.opt_g.state[first]["step"]) == 1.0  # Adam's moments came with it
    before = first.detach().clone()
    _grads(resumed.G, 1)
    resumed.opt_g.step()
    assert not torch.equal(before, first)
