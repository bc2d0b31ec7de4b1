"""The recipe runner (`gan.tools.recipes`) on the smoke preset: trains, evaluates, writes tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.core.config import PRESETS, DataConfig, EvalConfig
from gan.data.prepare import prepare_arrays
from gan.tools import recipe_tables, recipes
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
        assert model_cfg.arch in ("mlp", "dcgan", "dcgan-up", "resnet", "r3gan"), cand.name


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
    # The judge is the pipeline's ladder's (labelled digits: the classifier judge), trained once
    assert row["judge_kind"] == "classifier"
    # The checkerboard measure of the samples beside the real holdout's (digits: ≈ 0.87).
    assert 0.5 < row["nyquist"]["real"] < 1.0 and row["nyquist"]["samples"] > 0
    assert "Nyquist (real)" in md
    assert any("classifier judge" in line and "trained in" in line for line in logs)

    # The judge cached in the output folder is reused, not retrained.
    logs.clear()
    judge = recipes.judge_for(smoke_data, cfg, tmp_path, log=logs.append)
    assert judge.meta["weights_sha256"] == row["judge_sha256"]
    assert len(logs) == 1 and "reused from the cache" in logs[0]


def test_reference_scores_rank_a_worse_generator_worse(smoke_data, tmp_path: Path):
    # The reference classifier's FID of a 1-epoch generator sits above the real-data floor, and
    # a generator drawing pure noise scores worse still: the ratio can fail.
    from gan.tools import recipe_judges

    cfg = EvalConfig(**PRESETS["smoke"]["eval"])
    ref = recipe_judges.reference_judge_for("digits", smoke_data, tmp_path, log=lambda _m: None)
    state, _ = recipes.train_candidate(recipes.pick("smoke")[0], smoke_data, epochs=1,
                                       log=lambda _m: None)
    trained = recipe_judges.reference_scores(state.generator, smoke_data, ref, cfg)

    class Noise(torch.nn.Module):
        latent_dim, conditional = 8, False

        def __init__(self) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, z, y=None):  # (B, 8) → (B, 1, 28, 28) uniform noise
            g = torch.Generator().manual_seed(int(z[0, 0].abs() * 1e6) % 2**31)
            return torch.rand(len(z), *smoke_data.x_train.shape[1:], generator=g) * 2 - 1

    noise = recipe_judges.reference_scores(Noise(), smoke_data, ref, cfg)
    assert trained["ratio"] > 1.0 and trained["floor"] > 0
    assert trained["cond_acc"] is None  # an unconditional G has no class to be read as
    assert noise["fid"] > trained["fid"]
    assert (tmp_path / "reference").is_dir()  # cached beside the results


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


# --------------------------------------------------------------------------- data and seeds


def test_shapes_data_is_the_rgb_set_prepared_like_the_pipeline():
    data = recipes.load_data("shapes", shapes_per_class=10)
    n = len(data.y_train) + len(data.y_holdout)
    assert n == 40 and len(data.y_holdout) == 5  # the pipeline's split by pixel hash (pinned)
    assert tuple(data.x_train.shape[1:]) == (3, 32, 32) and data.x_train.dtype == torch.float32
    assert data.x_train.min() >= -1.0 and data.x_train.max() <= 1.0
    assert data.x_train.min() < -0.5 and data.x_train.max() > 0.5  # not a constant image
    assert data.labelled and data.num_classes == 4
    assert data.class_names == ("circle", "cross", "square", "triangle")
    assert np.add(data.class_hist("train"), data.class_hist("holdout")).tolist() == [10] * 4
    # Same seed → same images → same content-addressed version.
    assert recipes.load_data("shapes", shapes_per_class=10).version == data.version
    with pytest.raises(ValueError, match="unknown data 'cifar'"):
        recipes.load_data("cifar")


def test_painted_data_is_the_judge_issues_colour_set():
    data = recipes.load_data("painted", limit=100)
    assert len(data.y_train) + len(data.y_holdout) == 100 and data.num_classes == 10
    assert tuple(data.x_train.shape[1:]) == (3, 32, 32) and data.labelled
    assert recipes.load_data("painted", limit=100).version == data.version


def test_candidates_fit_the_data_and_express_diffaugment_and_resnet():
    data = recipes.load_data("shapes", shapes_per_class=10)
    cands = recipes.candidates()
    m, t = cands["default+diffaug"].configs()
    assert t.diffaugment == "color,translation,cutout" and cands["default"].configs()[
        1].diffaugment == ""
    m = recipes.fit_to_data(cands["resnet"].configs()[0], data)
    assert (m.arch, m.channels, m.image_size, m.num_classes, m.conditional) == (
        "resnet", 3, 32, 4, True)


def _row(name: str, seed: int, fid: float, *, epochs: int = 5, kl: float | None = 0.1) -> dict:
    return {"name": name, "seed": seed, "epochs": epochs, "train_s": 10.0 + seed,
            "model_config": {"conditional": True}, "diverged": None,
            "classes_covered": 10, "conditional_accuracy": 0.9,
            "metrics": {"fid": fid, "kid_mean": 0.002, "precision": 0.5, "recall": 0.4,
                        "density": 0.8, "coverage": 0.6, "class_kl": kl},
            "floors": {"fid": 2.0, "kid_mean": 0.0, "precision": 0.7, "recall": 0.7,
                       "density": 1.0, "coverage": 0.9, "classes_covered": 10,
                       "class_kl": 0.001}}


def test_aggregate_gives_mean_and_sample_std_over_seeds():
    rows = [_row("a", 0, 4.0), _row("a", 1, 6.0), _row("a", 2, 8.0, kl=None),
            _row("b", 0, 3.0)]
    agg = {a["name"]: a for a in recipe_tables.aggregate(rows)}
    a = agg["a"]
    assert a["seeds"] == [0, 1, 2] and a["epochs"] == 5 and a["diverged"] == 0
    fid = a["stats"]["fid"]
    assert fid["mean"] == pytest.approx(6.0) and fid["std"] == pytest.approx(2.0)  # n-1
    assert (fid["min"], fid["max"], fid["n"]) == (4.0, 8.0, 3)
    assert a["stats"]["fid_ratio"]["mean"] == pytest.approx(3.0)
    assert a["stats"]["class_kl"]["n"] == 2  # a seed without the value is left out
    assert agg["b"]["stats"]["fid"]["std"] == 0.0  # one seed: no spread
    table = recipe_tables.seeds_table(list(agg.values()), rows[0]["floors"])
    lines = table.splitlines()
    assert "real data" in lines[2]
    assert lines[3].startswith("| b |") and "| 6.000 ± 2.000 | 3.0 ± 1.0 | 4.000–8.000 |" in (
        lines[4])


def test_aggregate_refuses_rows_that_are_not_one_recipe():
    with pytest.raises(ValueError, match="seed repeated"):
        recipe_tables.aggregate([_row("a", 0, 4.0), _row("a", 0, 5.0)])
    with pytest.raises(ValueError, match="different epochs"):
        recipe_tables.aggregate([_row("a", 0, 4.0), _row("a", 1, 5.0, epochs=6)])
    assert recipes.parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("0,x", "1,1", "", "-1"):
        with pytest.raises(ValueError, match="--seeds"):
            recipes.parse_seeds(bad)


def test_compare_over_two_seeds_writes_per_seed_folders_and_the_mean_table(
        smoke_data, tmp_path: Path):
    cfg = EvalConfig(**PRESETS["smoke"]["eval"])
    rows = recipes.compare(recipes.pick("smoke"), smoke_data, cfg, tmp_path, epochs=1,
                           seeds=(0, 1), raw_too=False, log=lambda _s: None)
    assert [(r["name"], r["seed"]) for r in rows] == [("smoke", 0), ("smoke", 1)]
    assert rows[0]["metrics"]["fid"] != rows[1]["metrics"]["fid"]  # the seed changes training
    for k in (0, 1):
        assert json.loads((tmp_path / f"smoke-seed{k}" / "result.json").read_text())["seed"] == k
    (agg,) = json.loads((tmp_path / "aggregate.json").read_text())
    assert agg["name"] == "smoke" and agg["seeds"] == [0, 1] and agg["stats"]["fid"]["n"] == 2
    md = (tmp_path / "results.md").read_text()
    assert "Mean ± sample standard deviation" in md and "| smoke | no | 0,1 | 1 |" in md
    # A later call with another seed adds to the same table (same judge, same folder).
    recipes.compare(recipes.pick("smoke"), smoke_data, cfg, tmp_path, epochs=1, seeds=(2,),
                    raw_too=False, log=lambda _s: None)
    (agg,) = json.loads((tmp_path / "aggregate.json").read_text())
    assert agg["seeds"] == [0, 1, 2] and (tmp_path / "smoke-seed2" / "result.json").exists()


def test_cli_refuses_bad_seeds_and_candidates_before_making_data(capsys):
    for argv in (["compare", "--seeds", "1,1"], ["compare", "--candidates", "nope"]):
        with pytest.raises(SystemExit) as e:
            recipes.main(argv)
        assert e.value.code == 2
    assert "unknown candidate" in capsys.readouterr().err
