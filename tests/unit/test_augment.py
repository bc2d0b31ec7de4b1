"""gan.apps.augment / `gan augment-eval`: labelled samples, the stratified subset, step-matched
arms on the same subset and holdout, and errors for impossible requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gan.apps import augment
from gan.apps.studies.demo_models import save_model_dir, tiny_recipe
from gan.core.config import DataConfig
from gan.data.prepare import prepare_arrays
from gan.nets.models import build_generator
from gan.train.loop import train_local

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    return prepare_arrays(DataConfig(limit=300))


@pytest.fixture(scope="module")
def state(data):
    model_cfg, train_cfg = tiny_recipe(conditional=True, epochs=2)
    return train_local(data, model_cfg, train_cfg)


def test_labelled_samples_balanced(state) -> None:
    x, y = augment.labelled_samples(state.generator, 3, seed=1)
    assert x.shape == (30, 1, 28, 28) and torch.bincount(y).tolist() == [3] * 10
    x2, _ = augment.labelled_samples(state.generator, 3, seed=1)
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match=">= 1"):
        augment.labelled_samples(state.generator, 0)
    G = build_generator(tiny_recipe(conditional=False)[0])
    with pytest.raises(ValueError, match="conditional"):
        augment.labelled_samples(G, 2)


def test_small_subset_stratified_and_seeded(data) -> None:
    a = augment.small_subset(data.y_train, 0.1, seed=0)
    assert len(a) == 24 and set(data.y_train[a].tolist()) == set(range(10))
    assert np.array_equal(a, augment.small_subset(data.y_train, 0.1, seed=0))
    assert not np.array_equal(a, augment.small_subset(data.y_train, 0.1, seed=1))
    with pytest.raises(ValueError, match="fraction"):
        augment.small_subset(data.y_train, 1.5, seed=0)


def test_matched_epochs() -> None:
    # real+gen: 144 + 1000 images → 18 steps/epoch; 15 epochs = 270 steps
    assert augment.matched_epochs(15, 1144, 1144) == 15
    assert augment.matched_epochs(15, 1144, 144) == 90  # 3 steps/epoch
    assert augment.matched_epochs(15, 1144, 10) == 200  # capped at EvalConfig's maximum


def test_evaluation_arms_share_subset_and_holdout(data, state) -> None:
    runs = []
    res = augment.evaluate_augmentation(data, state.generator, fraction=0.1, k_per_class=2,
                                        seeds=(0, 1), judge_epochs=1,
                                        on_run=lambda s, a, acc: runs.append((s, a)))
    assert res.seeds == [0, 1] and [r[0] for r in runs] == [0] * 4 + [1] * 4
    for arm, accs in res.accuracy.items():
        assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs), arm
    for seed in (0, 1):
        np.testing.assert_array_equal(res.subset_idx[seed],
                                      augment.small_subset(data.y_train, 0.1, seed))
    # 300 digits split by pixel hash: 243 train (binomial 240 ± 7)
    assert res.n_train == {"real": 24, "real+gen": 44, "gen": 20, "full": len(data.y_train)}
    assert len(data.y_train) == 243
    assert res.settings["n_holdout"] == len(data.y_holdout)
    summ = res.summary()
    assert summ["real"]["std"] >= 0 and summ["real"]["min"] <= summ["real"]["mean"]
    with pytest.raises(ValueError, match="arms"):
        augment.evaluate_augmentation(data, state.generator, arms=("gen",))


def test_cli_augment_eval(data, state, tmp_path: Path, settings_env, monkeypatch) -> None:
    """The command on a local model dir; the digits are replaced by the small subset so the
    test stays fast (the command itself always evaluates on the default digits split)."""
    from gan.apps.studies import runs as apps_eval
    from gan.cli.main import app

    monkeypatch.setattr(apps_eval, "prepare_arrays", lambda cfg: data)
    model = save_model_dir(tmp_path / "model", state)
    r = CliRunner().invoke(app, ["augment-eval", "--model", str(model), "--quick", "--seeds",
                                 "2", "--k-per-class", "2", "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert "| real+gen |" in r.output and "holdout accuracy" in r.output
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["command"].startswith("gan ") and len(out["accuracy"]["real"]) == 2
    assert "same split" in out["data_note"]
