"""The recipe runner (`gan.tools.recipes`) on the smoke preset: trains, evaluates, writes tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gan.core.config import PRESETS, DataConfig, EvalConfig
from gan.data.prepare import prepare_arrays
from gan.tools import recipes
from gan.train.budget import epochs_for_budget
from gan.train.checkpoint import load_checkpoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def smoke_data():
    return prepare_arrays(DataConfig(**PRESETS["smoke"]["data"]))


def test_every_candidate_resolves_to_valid_configs():
    # A typo in a candidate's overrides (unknown field, bad value) must fail here, not after
    # minutes of training the others.
    for cand in recipes.candidates().values():
        model_cfg, train_cfg = cand.configs()
        assert train_cfg.epochs >= 1, cand.name
        assert model_cfg.arch in ("mlp", "dcgan"), cand.name


def test_seed_and_default_candidates_are_the_live_presets():
    cands = recipes.candidates()
    for name in ("seed", "default"):
        m, t = cands[name].configs()
        for key, value in PRESETS[name]["model"].items():
            assert getattr(m, key) == value, (name, key)
        for key, value in PRESETS[name]["train"].items():
            assert getattr(t, key) == value, (name, key)


def test_pick_rejects_unknown_names():
    assert [c.name for c in recipes.pick("seed, default")] == ["seed", "default"]
    with pytest.raises(ValueError, match="nope"):
        recipes.pick("seed,nope")
    with pytest.raises(ValueError, match="unknown candidate"):
        recipes.pick("")


def test_epochs_for_budget():
    # 1437 images, batch 64 → 22 whole batches = 1408 images per epoch.
    assert epochs_for_budget(300, 1000, 1437, 64) == 213
    assert epochs_for_budget(1, 10, 1437, 64) == 1  # never zero epochs
    with pytest.raises(ValueError, match="images_per_s"):
        epochs_for_budget(300, 0, 1437, 64)


def test_compare_smoke_writes_results_tables_and_grids(smoke_data, tmp_path: Path):
    cfg = EvalConfig(**PRESETS["smoke"]["eval"])
    logs: list[str] = []
    rows = recipes.compare(recipes.pick("smoke"), smoke_data, cfg, tmp_path, epochs=1,
                           log=logs.append)
    # The smoke preset keeps EMA on, so its raw G is scored too, from the same run.
    assert [r["name"] for r in rows] == ["smoke", "smoke-raw"]
    row, raw = rows
    assert raw["metrics"] != row["metrics"] and raw["epochs"] == row["epochs"]
    ckpt = load_checkpoint((tmp_path / "smoke" / recipes.CHECKPOINT_FILE).read_bytes())
    assert ckpt["epoch"] == 1 and ckpt["model_config"] == row["model_config"]
    assert row["name"] == "smoke" and row["epochs"] == 1 and row["diverged"] is None
    for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage",
                "class_kl", "inception_score"):
        assert torch.isfinite(torch.tensor(row["metrics"][key])), key
    assert row["floors"]["fid"] < row["metrics"]["fid"]  # one tiny epoch is far from real data
    assert row["ceilings"]["classes_covered"] == smoke_data.num_classes
    for path in row["pictures"].values():
        assert Path(path).read_bytes().startswith(PNG_MAGIC)
    saved = json.loads((tmp_path / "smoke" / "result.json").read_text())
    assert saved["metrics"] == row["metrics"] and len(saved["history"]) == 1
    table = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["name"] for r in table) == ["smoke", "smoke-raw"]
    assert "history" not in table[0]
    md = (tmp_path / "results.md").read_text()
    assert "| smoke | no | 1 |" in md and "real data" in md
    assert any("judge trained" in line for line in logs)

    # The judge cached in the output folder is reused, not retrained.
    logs.clear()
    judge = recipes.judge_for(smoke_data, cfg, tmp_path, log=logs.append)
    assert judge.meta["weights_sha256"] == row["judge_sha256"] and not logs


def test_wall_clock_budget_still_trains_one_epoch(smoke_data):
    state, summary = recipes.train_candidate(recipes.pick("smoke")[0], smoke_data,
                                             budget_s=1e-3, log=lambda _s: None)
    assert state.epoch == summary["epochs"] == 1 and summary["train_config"]["epochs"] == 1


def test_calibrate_reports_rates_and_budget_epochs(smoke_data):
    rows = recipes.calibrate(recipes.pick("smoke"), smoke_data, epochs=2, budget_s=10.0,
                             log=lambda _s: None)
    (row,) = rows
    assert row["images_per_s"] > 0 and row["cpu_images_per_s"] > 0
    assert row["budget_epochs"] == epochs_for_budget(
        10.0, row["images_per_s"], len(smoke_data.y_train), row["batch_size"])
