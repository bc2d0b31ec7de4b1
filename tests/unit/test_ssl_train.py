"""The label-free judge's training: the recipe sized by the data (enough steps for a small
set, cost growing with the set like a GAN's), the loss and the loop's determinism."""

from __future__ import annotations

import pytest
import torch

from gan.eval.ssl_train import (
    MAX_BATCH,
    MAX_EPOCHS,
    MIN_EPOCHS,
    MIN_STEPS_PER_EPOCH,
    TARGET_STEPS,
    SSLRecipe,
    fit_encoder,
    nt_xent,
    ssl_recipe,
)


@pytest.mark.parametrize("n", [16, 100, 480, 1440, 5000, 60_000])
def test_recipe_gives_every_set_enough_steps_within_the_epoch_budget(n: int):
    r = ssl_recipe(n, 3, 32)
    steps_per_epoch = n // r.batch_size
    assert 2 <= r.batch_size <= MAX_BATCH
    assert steps_per_epoch >= MIN_STEPS_PER_EPOCH
    assert MIN_EPOCHS <= r.epochs <= MAX_EPOCHS
    steps = r.epochs * steps_per_epoch
    # the target steps, unless the epoch budget stops a small set or the floor a big one
    assert steps >= TARGET_STEPS or r.epochs == MAX_EPOCHS
    assert steps <= TARGET_STEPS + steps_per_epoch or r.epochs == MIN_EPOCHS


def test_recipe_cost_per_image_never_grows_with_the_set():
    """Images seen per train image (epochs) fall or stay as the set grows: the judge's cost
    grows with the set no faster than a GAN's fixed-epoch training does."""
    epochs = [ssl_recipe(n, 1, 28).epochs for n in (50, 200, 800, 3200, 12_800, 51_200)]
    assert epochs == sorted(epochs, reverse=True) and epochs[0] > epochs[-1]


def test_recipe_takes_explicit_epochs_and_refuses_bad_input():
    assert ssl_recipe(1000, 1, 28, epochs=7).epochs == 7
    assert ssl_recipe(1000, 1, 28).arch(1, 28).channels == 1
    with pytest.raises(ValueError, match="at least one epoch"):
        ssl_recipe(1000, 1, 28, epochs=0)
    with pytest.raises(ValueError, match="at least 2 train images"):
        ssl_recipe(1, 1, 28)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        ssl_recipe(100, 4, 28)


def test_nt_xent_is_low_for_matching_views_and_high_for_random_ones():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 16, generator=g)
    same = nt_xent(z, z + 0.01 * torch.randn(32, 16, generator=g), temperature=0.2)
    other = nt_xent(z, torch.randn(32, 16, generator=g), temperature=0.2)
    assert same < 1.0 and other > 3.0  # chance: log(2B - 1) = log 63 ≈ 4.1


def test_fit_encoder_is_deterministic_and_leaves_the_global_rng_alone():
    x = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    recipe = SSLRecipe(epochs=1, batch_size=8)
    torch.manual_seed(11)
    expected = torch.rand(2)
    torch.manual_seed(11)
    a = fit_encoder(x, recipe, seed=3)
    assert torch.equal(torch.rand(2), expected)
    b = fit_encoder(x, recipe, seed=3)
    assert not a.training
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
