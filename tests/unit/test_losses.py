"""gan.train.losses against values computed by hand (python math, not torch)."""

from __future__ import annotations

import math

import pytest
import torch

from gan.train import losses

torch.set_num_threads(1)

REAL = [0.0, 2.0, -1.0]
FAKE = [-3.0, 0.5]


def sig(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def mean(v: list[float]) -> float:
    return sum(v) / len(v)


def t(v: list[float]) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


def test_bce_with_one_sided_label_smoothing() -> None:
    s = 0.9
    want_d = mean([-(s * math.log(sig(r)) + (1 - s) * math.log(1 - sig(r))) for r in REAL]) + mean(
        [-math.log(1 - sig(f)) for f in FAKE])
    want_g = mean([-math.log(sig(f)) for f in FAKE])
    assert losses.d_loss("bce", t(REAL), t(FAKE), real_label=s).item() == pytest.approx(want_d)
    assert losses.g_loss("bce", t(FAKE)).item() == pytest.approx(want_g)


def test_non_saturating() -> None:
    want_d = mean([-math.log(sig(r)) for r in REAL]) + mean([-math.log(1 - sig(f)) for f in FAKE])
    assert losses.d_loss("ns", t(REAL), t(FAKE)).item() == pytest.approx(want_d)
    assert losses.g_loss("ns", t(FAKE)).item() == pytest.approx(mean([-math.log(sig(f))
                                                                      for f in FAKE]))
    # With real_label 1 the seed's BCE is the non-saturating loss.
    assert losses.d_loss("bce", t(REAL), t(FAKE), real_label=1.0).item() == pytest.approx(want_d)


def test_hinge() -> None:
    want_d = mean([max(0.0, 1 - r) for r in REAL]) + mean([max(0.0, 1 + f) for f in FAKE])
    assert want_d == pytest.approx((1 + 0 + 2) / 3 + (0 + 1.5) / 2)
    assert losses.d_loss("hinge", t(REAL), t(FAKE)).item() == pytest.approx(want_d)
    assert losses.g_loss("hinge", t(FAKE)).item() == pytest.approx(1.25)


def test_wasserstein_and_gradient_penalty() -> None:
    assert losses.d_loss("wgan-gp", t(REAL), t(FAKE)).item() == pytest.approx(-1.25 - 1 / 3)
    assert losses.g_loss("wgan-gp", t(FAKE)).item() == pytest.approx(1.25)
    # A linear critic D(x) = <w, x> has gradient w everywhere: penalty (‖w‖ - 1)², ‖w‖ = 5.
    w = torch.tensor([3.0, 0.0, 4.0, 0.0]).view(1, 1, 2, 2)
    x_hat = torch.randn(6, 1, 2, 2, requires_grad=True)
    out = (x_hat * w).flatten(1).sum(1)
    assert losses.gradient_penalty(out, x_hat).item() == pytest.approx(16.0)
    # ... and the penalty is differentiable w.r.t. the critic's weights (create_graph).
    wp = w.clone().requires_grad_(True)
    gp = losses.gradient_penalty((x_hat * wp).flatten(1).sum(1), x_hat)
    (grad,) = torch.autograd.grad(gp, wp)
    assert torch.allclose(grad, 2 * (5 - 1) * w / 5)  # d/dw (‖w‖-1)² = 2(‖w‖-1) w/‖w‖


def test_stable_for_extreme_logits() -> None:
    big = t([1e4, -1e4])
    for name in ("bce", "ns", "hinge", "wgan-gp"):
        assert torch.isfinite(losses.d_loss(name, big, big)) and torch.isfinite(
            losses.g_loss(name, big))


def test_unknown_loss_is_named() -> None:
    with pytest.raises(ValueError, match="unknown loss 'lsgan'"):
        losses.d_loss("lsgan", t(REAL), t(FAKE))
    with pytest.raises(ValueError, match="unknown loss 'lsgan'"):
        losses.g_loss("lsgan", t(FAKE))
