"""The pieces of judge validation, on small synthetic inputs (seconds): the disturbances and
their strength knobs, the sweep's monotonicity and noise rules, FID on precomputed features,
the rank agreement against scipy's Kendall τ, the in-memory datasets and the colour-only
control judge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau
from torch import nn

from gan.eval import disturb as D
from gan.eval import metrics as M
from gan.eval.ordering import Score, blurred, collapsed, rank_agreement
from gan.eval.validation import (
    ColourOnlyJudge,
    Sweep,
    fid_of_features,
    prepared_from_arrays,
    sweep,
)


def _images(n: int = 8, c: int = 3, s: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, s, s, generator=g) * 2 - 1  # (n, c, s, s) in [-1, 1]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(D.IMAGE_DISTURBANCES))
def test_image_disturbances_keep_shape_range_and_leave_images_alone_at_strength_zero(name):
    fn, strengths = D.IMAGE_DISTURBANCES[name]
    x = _images()
    assert strengths[0] == 0 and list(strengths) == sorted(strengths)
    assert torch.allclose(fn(x, 0.0, _gen()), x, atol=1e-5)
    for s in strengths[1:]:
        y = fn(x, s, _gen())
        assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
        assert not torch.allclose(y, x, atol=1e-3), (name, s)
        assert torch.equal(fn(x, s, _gen(3)), fn(x, s, _gen(3)))  # seeded
    with pytest.raises(ValueError, match="strength must be ≥ 0"):
        fn(x, -1.0, _gen())


def test_blur_smooths_more_with_sigma_and_keeps_a_flat_image_flat():
    x = _images(4, 1, 28)
    rough = [float((D.blur(x, s).diff(dim=-1)).abs().mean()) for s in (0.0, 0.6, 1.0, 2.5)]
    assert rough == sorted(rough, reverse=True)
    flat = torch.full((2, 3, 8, 8), 0.3)
    assert torch.allclose(D.blur(flat, 2.0), flat, atol=1e-6)


def test_noise_has_the_asked_std_and_colour_cast_shifts_each_channel():
    grey = torch.zeros(64, 1, 16, 16)
    assert float((D.noise(grey, 0.2, _gen()) - grey).std()) == pytest.approx(0.2, rel=0.05)
    assert torch.allclose(D.colour_cast(grey, 0.3), grey + 0.3)
    rgb = torch.zeros(2, 3, 4, 4)
    shifted = D.colour_cast(rgb, 0.25)
    assert shifted[:, 0].eq(0.25).all() and shifted[:, 1].eq(0).all()
    assert shifted[:, 2].eq(-0.25).all()
    with pytest.raises(ValueError, match="1 or 3 channels"):
        D.colour_cast(torch.zeros(1, 2, 4, 4), 0.1)


def test_swirl_twists_shapes_but_keeps_the_colours():
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, 12:20, 4:28] = 1.0  # a horizontal bar
    y = D.swirl(x, 3.0)
    assert (y - x).abs().mean() > 0.05  # the bar is bent
    assert y.mean() == pytest.approx(float(x.mean()), abs=0.05)  # about as much paint


def test_drop_classes_keeps_only_the_asked_number_of_classes():
    y = torch.arange(100) % 10
    x = y.float().view(-1, 1, 1, 1).expand(100, 1, 2, 2).clone()  # an image's value = class
    out = D.drop_classes(x, y, 3, 60, _gen())
    assert out.shape == (60, 1, 2, 2) and len(torch.unique(out[:, 0, 0, 0])) == 3
    assert D.kept_classes(10) == (10, 8, 6, 4, 2) and D.kept_classes(4) == (4, 3, 2, 1)
    with pytest.raises(ValueError, match="keep must be 1..10"):
        D.drop_classes(x, y, 0, 10, _gen())


def test_collapse_repeats_a_shrinking_pool_evenly():
    x = torch.arange(300).float().view(-1, 1, 1, 1)  # image i has value i
    for s, pool in ((0.0, 300), (0.5, 17), (1.0, 1)):
        assert D.collapse_pool(300, s) == pool
        out = D.collapse(x, s, 300, _gen()).flatten()
        counts = torch.unique(out, return_counts=True)[1]
        assert len(counts) == pool and counts.max() - counts.min() <= 1


def test_with_copies_replaces_the_asked_share_by_distinct_training_images():
    fresh, train = torch.full((40, 1, 2, 2), -1.0), torch.arange(100).float().view(-1, 1, 1, 1)
    train = train.expand(100, 1, 2, 2) / 100
    out = D.with_copies(fresh, train, 0.25, _gen())
    copied = out[out[:, 0, 0, 0] >= 0]
    assert len(copied) == 10 and len(torch.unique(copied[:, 0, 0, 0])) == 10
    with pytest.raises(ValueError, match="only 100 training images"):
        D.with_copies(torch.zeros(200, 1, 2, 2), train, 1.0, _gen())


def test_sweep_rules_monotone_and_beyond_noise():
    rising = Sweep("x", "fid", (0, 1, 2), ((1.0, 1.2), (3.0, 3.2), (9.0, 9.4)))
    assert rising.monotone() and rising.separated(2) and rising.problems(2) == []
    close = Sweep("x", "fid", (0, 1, 2), ((1.0, 2.0), (1.6, 2.6), (9.0, 9.4)))
    assert close.monotone() and not close.separated(1)
    assert "0 → 1" in close.problems(1)[0]
    falling = Sweep("x", "fid", (0, 1), ((2.0, 2.0), (1.0, 1.0)))
    assert not falling.monotone() and falling.steps()[0].z == -math.inf


def test_sweep_draws_independently_per_strength_and_repeat():
    seen = []
    s = sweep("x", (0.0, 1.0), lambda st, g: torch.rand(3, generator=g) + st,
              lambda t: seen.append(t) or float(t.sum()), repeats=3, seed=5)
    assert len(s.values) == 2 and all(len(v) == 3 for v in s.values)
    assert len({tuple(t.tolist()) for t in seen}) == 6  # every draw its own randomness
    with pytest.raises(ValueError, match="at least 2 repeats"):
        sweep("x", (0.0,), lambda st, g: torch.zeros(1), float, repeats=1, seed=0)


def test_fid_of_features_equals_the_metric_on_images():
    proj = nn.Linear(48, 8, bias=False)
    proj.num_features = 8  # type: ignore[assignment]

    class Feat(nn.Module):
        num_features = 8

        def forward(self, x):
            return proj(x.flatten(1))

    a, b = _images(200, 3, 4, 1), _images(200, 3, 4, 2) * 0.5
    with torch.no_grad():
        direct = M.fid(Feat(), a, b)
        via = fid_of_features(proj(a.flatten(1)), proj(b.flatten(1)))
    assert via == pytest.approx(direct, rel=1e-5)


def _scores(means: dict[str, float], std: float = 0.1) -> dict[str, Score]:
    return {k: Score((m - std, m + std)) for k, m in means.items()}


def test_rank_agreement_equals_scipy_tau_when_every_pair_is_separated():
    ref = _scores({"a": 1, "b": 5, "c": 9, "d": 20})
    judge = _scores({"a": 2, "b": 1, "c": 30, "d": 40})  # a, b swapped
    ag = rank_agreement(ref, judge)
    assert ag.kept == ag.pairs == 6 and ag.discordant == (("a", "b"),)
    names = sorted(ref)
    assert ag.tau == pytest.approx(kendalltau([ref[n].mean for n in names],
                                              [judge[n].mean for n in names]).statistic)


def test_rank_agreement_ignores_pairs_the_reference_cannot_separate():
    ref = _scores({"a": 1.0, "b": 1.1, "c": 9.0}, std=0.5)  # a, b within the reference's noise
    judge = _scores({"a": 2.0, "b": 1.0, "c": 30.0})
    ag = rank_agreement(ref, judge)
    assert ag.kept == 2 and ag.tau == 1.0 and ag.tau_b_all < 1.0
    with pytest.raises(ValueError, match="same ≥ 2 generators"):
        rank_agreement(ref, _scores({"a": 1.0}))


def test_blurred_and_collapsed_generators():
    def base(n: int, seed: int) -> torch.Tensor:
        return _images(n, 1, 8, seed)

    assert torch.allclose(blurred(base, 1.0)(5, 3), D.blur(base(5, 3), 1.0))
    out = collapsed(base, pool=4)(50, 1)
    assert len(torch.unique(out.flatten(1), dim=0)) == 4
    assert torch.equal(torch.unique(out.flatten(1), dim=0),
                       torch.unique(collapsed(base, pool=4)(50, 2).flatten(1), dim=0))


def test_prepared_from_arrays_splits_stratified_in_model_range():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(100, 8, 8, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 25)
    data = prepared_from_arrays(images, labels, name="t", holdout_fraction=0.2)
    assert data.x_train.shape == (80, 3, 8, 8) and len(data.x_holdout) == 20
    assert data.class_hist("holdout") == [5, 5, 5, 5] and data.num_classes == 4
    assert data.x_train.min() >= -1 and data.x_train.max() <= 1
    with pytest.raises(ValueError, match="uint8"):
        prepared_from_arrays(images.astype(np.float32), labels, name="t")


def test_colour_only_control_cannot_see_where_the_pixels_are():
    x = _images(6, 3, 16)
    shuffled = x.flatten(2)[:, :, torch.randperm(256, generator=_gen())].view_as(x)
    judge = ColourOnlyJudge()
    assert torch.allclose(judge.features(x), judge.features(shuffled))
    assert not torch.allclose(judge.features(x), judge.features(D.colour_cast(x, 0.3)))
