"""gan.apps.anomaly, gan.apps.studies.anomaly_eval, `gan anomaly`: AnoGAN scores, baselines on the
same split, the one-class protocol on an easy split, the CSV output, clear errors for bad input."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gan.apps import anomaly, fanogan
from gan.apps.inputs import InputError
from gan.apps.latent_search import SearchConfig
from gan.apps.studies import anomaly_eval
from gan.apps.studies.demo_models import tiny_recipe
from gan.core.config import DataConfig
from gan.data.prepare import prepare_arrays

torch.set_num_threads(1)
FAST = SearchConfig(steps=15, lr=0.1)


@pytest.fixture(scope="module")
def data(tiny_digits):
    return tiny_digits


@pytest.fixture(scope="module")
def model_dir(tiny_cond_model_dir) -> Path:
    """A tiny conditional DCGAN trained in-process, saved as an MLflow model directory."""
    return tiny_cond_model_dir


@pytest.fixture(scope="module")
def zero_split_result():
    """The one-class protocol on an easy split: normal = digit 0 (all ~140 train images),
    anomalies = pure noise; a tiny GAN at a high learning rate learns the black background in
    ~90 steps, which is what separates the two."""
    data = prepare_arrays(DataConfig())
    split = anomaly_eval.one_class_split(data, 0)
    normal_test = data.x_holdout[data.y_holdout == 0]
    noise = torch.rand(len(normal_test), 1, 28, 28, generator=torch.Generator().manual_seed(0))
    split = dataclasses.replace(
        split, x_test=torch.cat([normal_test, noise * 2 - 1]),
        is_anomaly=np.r_[np.zeros(len(normal_test), bool), np.ones(len(noise), bool)],
        test_idx=np.r_[np.nonzero((data.y_holdout == 0).numpy())[0], -np.ones(len(noise), int)])
    model_cfg, train_cfg = tiny_recipe(conditional=False, epochs=10)
    train_cfg = train_cfg.model_copy(update={"batch_size": 16, "lr_g": 1e-3, "lr_d": 1e-3})
    G, D = anomaly_eval.train_one_class_gan(data, split, (model_cfg, train_cfg))
    E, losses = fanogan.train_encoder(G, D, split.x_train, cfg=fanogan.EncoderConfig(epochs=8))
    return data, split, anomaly_eval.evaluate_split(split, G, D, cfg=FAST, encoder=E), losses


def test_one_class_easy_split_beats_chance(zero_split_result) -> None:
    _, _, res, encoder_losses = zero_split_result
    assert set(res.auroc) == {"anogan", "residual", "fanogan", "pca", "knn"}
    assert res.auroc["anogan"] > 0.9, res.auroc  # chance is 0.5
    assert res.auroc["fanogan"] > 0.9, res.auroc
    assert res.history[-1] < res.history[0]
    assert encoder_losses[-1] < encoder_losses[0]  # the izi_f training lowers its own loss


def test_fanogan_scores_and_errors(model_dir, data) -> None:
    from gan.registry.load import load_discriminator, load_generator

    G, D = load_generator(str(model_dir)), load_discriminator(str(model_dir))
    x, y = data.x_train[:40], data.y_train[:40]
    with pytest.raises(ValueError, match="needs labels"):
        fanogan.train_encoder(G, D, x, None)
    E, _ = fanogan.train_encoder(G, D, x, y, cfg=fanogan.EncoderConfig(epochs=1))
    s = fanogan.fanogan_scores(G, D, E, x, labels=y, kappa=0.5)
    assert s.score.shape == (40,)
    np.testing.assert_allclose(s.score, s.pixel + 0.5 * s.feature)
    with torch.no_grad():  # the pixel term is the MSE of x against G(E(x), y)
        mse = (x - G(E(x), y)).square().flatten(1).mean(1).double().numpy()
    np.testing.assert_allclose(s.pixel, mse, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        fanogan.fanogan_scores(G, D, E, torch.zeros(2, 1, 8, 8), labels=y[:2])


def test_baselines_use_the_same_arrays(zero_split_result) -> None:
    data, split, res, _ = zero_split_result
    assert res.split is split
    np.testing.assert_array_equal(split.train_idx,
                                  np.nonzero((data.y_train == 0).numpy())[0])
    assert torch.equal(split.x_train, data.x_train[split.train_idx])
    # the stored baseline scores are exactly those of the split's arrays
    np.testing.assert_array_equal(res.scores["pca"],
                                  anomaly.pca_scores(split.x_train, split.x_test))
    np.testing.assert_array_equal(res.scores["knn"],
                                  anomaly.knn_scores(split.x_train, split.x_test))
    assert all(len(v) == len(split.x_test) for v in res.scores.values())


def test_one_class_split_and_limit(data) -> None:
    split = anomaly_eval.one_class_split(data, 3)
    assert len(split.x_test) == len(data.y_holdout)
    np.testing.assert_array_equal(split.is_anomaly, (data.y_holdout != 3).numpy())
    small = anomaly_eval._limit_test(split, data.y_holdout.numpy(), 30)
    assert len(small.x_test) == 30 and small.is_anomaly.sum() < 30
    assert torch.equal(small.x_test, data.x_holdout[small.test_idx])
    with pytest.raises(ValueError, match="normal class"):
        anomaly_eval.one_class_split(data, 10)


def test_objective_is_the_papers(data) -> None:
    _, D = anomaly_eval.train_one_class_gan(
        data, anomaly_eval.one_class_split(data, 1), anomaly_eval.one_class_recipe(epochs=1))
    x = data.x_holdout[:3]
    gz = torch.zeros_like(x)
    obj = anomaly.AnoGANObjective(x, D, lam=0.1)
    rows = torch.arange(3)
    r, f = obj.parts(gz, rows)
    torch.testing.assert_close(r, x.abs().flatten(1).sum(1))
    torch.testing.assert_close(obj(gz, rows, None, None), 0.9 * r + 0.1 * f)
    assert torch.equal(anomaly.AnoGANObjective(x, None, lam=0.0)(gz, rows, None, None), r)
    with pytest.raises(ValueError, match="needs the discriminator"):
        anomaly.AnoGANObjective(x, None, lam=0.1)


def test_score_file_csv(model_dir, data, tmp_path: Path) -> None:
    x, y = data.x_holdout[:6].numpy(), data.y_holdout[:6].numpy()
    np.savez(tmp_path / "in.npz", x=x, y=y)
    out = tmp_path / "scores.csv"
    summary = anomaly.score_file(str(model_dir), str(tmp_path / "in.npz"), str(out),
                                 settings=None, cfg=FAST)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert summary["n"] == 6 and len(rows) == 6
    assert list(rows[0]) == ["index", "score", "residual", "feature", "label", "y"]
    assert [int(r["label"]) for r in rows] == y.tolist()  # labels given → searched as given
    for r in rows:
        assert float(r["score"]) == pytest.approx(0.9 * float(r["residual"])
                                                  + 0.1 * float(r["feature"]), rel=1e-4)


def test_cli_anomaly(model_dir, data, tmp_path: Path, settings_env) -> None:
    from gan.cli.main import app

    u8 = ((data.x_holdout[:4].numpy() + 1) * 127.5).round().astype(np.uint8)[:, 0]  # (4, 28, 28)
    np.savez(tmp_path / "in.npz", x=u8)
    r = CliRunner().invoke(app, ["anomaly", "--model", str(model_dir), "--input",
                                 str(tmp_path / "in.npz"), "--out", str(tmp_path / "s.csv"),
                                 "--steps", "3"])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "s.csv").read_text().splitlines()
    assert text[0] == "index,score,residual,feature,label" and len(text) == 5  # 10 classes tried
    r = CliRunner().invoke(app, ["anomaly", "--model", str(model_dir), "--input",
                                 str(tmp_path / "in.npz"), "--out", "s.csv", "--steps", "0"])
    assert r.exit_code == 2 and "--steps" in r.output


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 8, 8), np.float32)}, r"shape \(3, 1, 8, 8\).*\(N, 1, 28, 28\)"),
    ({"x": np.zeros((0, 1, 28, 28), np.float32)}, r"no images \(N = 0\)"),
    ({"images": np.zeros((2, 28, 28), np.float32)}, "no array 'x'"),
    ({"x": np.full((2, 28, 28), 3.0, np.float32)}, r"\[-1, 1\]"),
    ({"x": np.full((2, 28, 28), np.nan, np.float32)}, "NaN"),
    ({"x": np.zeros((2, 28, 28), np.float32), "y": np.array([1, 2, 3])}, "'y' has shape"),
])
def test_bad_inputs_named(model_dir, tmp_path: Path, arrays, message) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=message) as e:
        anomaly.score_file(str(model_dir), str(tmp_path / "bad.npz"), str(tmp_path / "s.csv"),
                           settings=None, cfg=FAST)
    assert "bad.npz" in str(e.value)


def test_empty_and_missing_files(model_dir, tmp_path: Path, settings_env) -> None:
    from gan.cli.main import app

    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for name, message in (("empty.npz", "empty (0 bytes)"), ("junk.npz", "not a readable .npz"),
                          ("nowhere.npz", "cannot read")):
        r = CliRunner().invoke(app, ["anomaly", "--model", str(model_dir), "--input",
                                     str(tmp_path / name), "--out", str(tmp_path / "s.csv")])
        assert r.exit_code == 1 and message in r.output, r.output
    assert not (tmp_path / "s.csv").exists()


def test_batch_output_names() -> None:
    from flows.batch import output_for

    assert output_for("s3://b/out.csv", "s3://b/in/a.npz", ".scores.csv", 1) == "s3://b/out.csv"
    assert output_for("s3://b/out/", "s3://b/in/a.npz", ".scores.csv", 1) \
        == "s3://b/out/a.scores.csv"
    assert output_for("s3://b/out.csv", "s3://b/in/a.npz", ".scores.csv", 2) \
        == "s3://b/out.csv/a.scores.csv"  # several inputs: always a prefix
    assert output_for("s3://b/o", "s3://b/in/x.npz", ".inpainted.npz", 1) \
        == "s3://b/o/x.inpainted.npz"


@pytest.mark.parametrize("with_model", [True, False])
def test_cli_anomaly_eval(model_dir, data, tmp_path: Path, settings_env, monkeypatch,
                          with_model: bool) -> None:
    """`gan anomaly-eval` with a published conditional G (searched with the normal label) and
    with the per-class protocol; the small digits subset replaces the default split."""
    import json

    from gan.apps.studies import runs as apps_eval
    from gan.cli.main import app

    monkeypatch.setattr(apps_eval, "prepare_arrays", lambda cfg: data)
    args = ["anomaly-eval", "--classes", "0,1", "--epochs", "1", "--steps", "3",
            "--test-limit", "30", "--encoder-epochs", "1" if with_model else "0",
            "--json", str(tmp_path / "r.json")]
    if with_model:
        args += ["--model", str(model_dir)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "r.json").read_text())
    assert [row["normal"] for row in out["rows"]] == [0, 1]
    for row in out["rows"]:
        assert row["n_test"] == 30 and 0 < row["n_anomalous"] < 30
        for m in ("anogan", "residual", "pca", "knn"):
            assert 0.0 <= row[f"auroc_{m}"] <= 1.0
        assert ("auroc_fanogan" in row) == with_model  # --encoder-epochs 0: no column
    assert ("G(·, c)" in out["table"]) == with_model
    assert ("f-AnoGAN" in out["table"]) == with_model
    assert out["command"].startswith("gan anomaly-eval") and "--test-limit 30" in out["command"]
    r = CliRunner().invoke(app, ["anomaly-eval", "--classes", "zero"])
    assert r.exit_code == 2 and "--classes" in r.output
