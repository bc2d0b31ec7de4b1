"""gan.apps.latent_search: the shared z search lowers its objective, is batch-independent, tries
every class of a conditional generator and keeps the best, and leaves G as it found it."""

from __future__ import annotations

import pytest
import torch

from gan.apps import latent_search as ls
from gan.apps.studies.demo_models import tiny_recipe
from gan.core.config import DataConfig
from gan.data.prepare import prepare_arrays
from gan.train.loop import train_local

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained():
    """A tiny conditional DCGAN trained for a few epochs on a digits subset, and its data."""
    data = prepare_arrays(DataConfig(limit=200))
    model_cfg, train_cfg = tiny_recipe(conditional=True, epochs=2)
    state = train_local(data, model_cfg, train_cfg)
    return state.generator.eval(), data


class L1:
    """Objective: L1 distance of G(z) to target images (plus an optional label penalty)."""

    def __init__(self, x: torch.Tensor, bad_label_cost: float = 0.0, good: int = 3) -> None:
        self.x, self.cost, self.good = x, bad_label_cost, good

    def __call__(self, gz, rows, z, y):
        loss = (gz - self.x[rows]).abs().flatten(1).sum(1)
        if y is not None and self.cost:
            loss = loss + self.cost * (y != self.good).float()
        return loss


def test_search_lowers_its_loss(trained) -> None:
    """Targets G can reach exactly (its own outputs at unknown z): the search closes in."""
    G, data = trained
    y = data.y_holdout[:12]
    with torch.no_grad():
        x = G(torch.randn(12, G.latent_dim, generator=torch.Generator().manual_seed(5)), y)
    res = ls.search(G, L1(x), len(x), labels=y, cfg=ls.SearchConfig(steps=40, lr=0.1))
    assert len(res.history) == 41
    assert res.history[-1] < 0.5 * res.history[0]
    assert all(b <= a * 1.05 for a, b in zip(res.history, res.history[1:], strict=False))
    # the returned loss is the objective at the returned z (recomputed independently)
    with torch.no_grad():
        again = L1(x)(ls.render(G, res), torch.arange(12), res.z, res.y)
    torch.testing.assert_close(again, res.loss, rtol=1e-4, atol=1e-4)


def test_batch_size_changes_nothing_but_speed(trained) -> None:
    G, data = trained
    x = data.x_holdout[:6]
    a = ls.search(G, L1(x), 6, cfg=ls.SearchConfig(steps=5, batch_size=7))  # 60 candidates
    b = ls.search(G, L1(x), 6, cfg=ls.SearchConfig(steps=5, batch_size=512))
    assert torch.equal(a.y, b.y)
    torch.testing.assert_close(a.z, b.z, rtol=1e-4, atol=1e-4)


def test_every_class_tried_and_best_kept(trained) -> None:
    G, data = trained
    x = data.x_holdout[:5]
    res = ls.search(G, L1(x, bad_label_cost=1e4, good=3), 5, cfg=ls.SearchConfig(steps=3))
    assert res.y.tolist() == [3] * 5  # every other class costs 1e4 more
    assert float(res.loss.max()) < 1e4
    given = torch.tensor([1, 2, 3, 4, 5])
    res = ls.search(G, L1(x), 5, labels=given, cfg=ls.SearchConfig(steps=2, restarts=3))
    assert torch.equal(res.y, given)


def test_restarts_keep_the_lowest(trained) -> None:
    """Objective ||z||² with a negligible step: the winner is the start latent of least norm."""
    G, data = trained
    y = data.y_holdout[:4]

    def norm(gz, rows, z, y_):
        return (z * z).sum(1)

    cfg = ls.SearchConfig(steps=1, lr=1e-9, restarts=5, seed=7)
    res = ls.search(G, norm, 4, labels=y, cfg=cfg)
    z0 = torch.randn(20, G.latent_dim, generator=torch.Generator().manual_seed(ls.search_seed(7)))
    best = (z0 * z0).sum(1).view(4, 5).min(1)
    torch.testing.assert_close(res.loss, best.values, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.z, z0.view(4, 5, -1)[torch.arange(4), best.indices],
                               rtol=1e-5, atol=1e-5)


def test_unconditional_and_frozen_restored() -> None:
    model_cfg, _ = tiny_recipe(conditional=False)
    from gan.nets.models import build_generator

    torch.manual_seed(0)
    G = build_generator(model_cfg).train()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    res = ls.search(G, L1(x), 3, cfg=ls.SearchConfig(steps=2))
    assert res.y is None and res.z.shape == (3, 16)
    assert G.training and all(p.requires_grad for p in G.parameters())
    assert all(p.grad is None for p in G.parameters())  # G itself was never optimised


def test_bad_requests(trained) -> None:
    G, data = trained
    x = data.x_holdout[:2]
    with pytest.raises(ValueError, match="at least one image"):
        ls.search(G, L1(x), 0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ls.search(G, L1(x), 2, labels=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        ls.search(G, L1(x), 2, labels=torch.tensor([1, 12]))
    with pytest.raises(ValueError, match="steps"):
        ls.SearchConfig(steps=0)
    assert ls.total_steps(G, 3, None, ls.SearchConfig(steps=4, batch_size=10)) == 4 * 3


def test_search_does_not_start_from_the_samples_own_latents() -> None:
    """`gan sample --seed s` draws from torch's stream seeded with s; the search must not (it
    would start at the answer and score the samples 0.0)."""
    for seed in (0, 1, 7):
        assert ls.search_seed(seed) != seed
        a = torch.randn(4, 8, generator=torch.Generator().manual_seed(seed))
        b = torch.randn(4, 8, generator=torch.Generator().manual_seed(ls.search_seed(seed)))
        assert not torch.allclose(a, b)
