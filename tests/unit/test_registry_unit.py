"""gan.registry.{publish, run_log, model_format} and gan.apps.sampling without any service.

Param flattening and lineage never carry a credential; the safetensors bundle round-trips G and
D exactly; the pyfunc wrapper (directly and through a locally saved MLflow model) returns
float32 (N, 1, 28, 28) in [-1, 1]; sampling validates its request, balances labels and writes
a real PNG and npz; `gan sample` works on a local model directory.
"""

from __future__ import annotations

import io
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import SecretStr
from typer.testing import CliRunner

from gan.apps import sampling
from gan.core.config import (
    DataConfig,
    GateConfig,
    ModelConfig,
    RetrainParams,
    TrainConfig,
)
from gan.core.records import ChampionScore, DatasetRef, Report, TrainedRef
from gan.nets.models import build
from gan.registry import load as registry_load
from gan.registry import model_format as mm
from gan.registry import publish as registry
from gan.registry import run_log as mlflow_run

torch.set_num_threads(1)

TINY = {"g_hidden": (16, 32), "d_hidden": (32, 16), "base_channels": 8, "latent_dim": 12}


def tiny_models(arch: str = "dcgan", conditional: bool = True, seed: int = 0):
    cfg = ModelConfig(arch=arch, conditional=conditional, spectral_norm=True, **TINY)
    torch.manual_seed(seed)
    G, D = build(cfg)
    # One train-mode pass moves the BatchNorm running stats off their defaults, so a bundle
    # that forgot buffers would give different eval outputs.
    G.train()
    G(torch.randn(8, cfg.latent_dim), torch.arange(8) % 10)
    D(torch.randn(8, 1, 28, 28), torch.arange(8) % 10)  # one power iteration in D's SN
    return cfg, G.eval(), D.eval()


# --------------------------------------------------------------------------- params


def test_flatten_params_keys_and_values() -> None:
    p = RetrainParams(preset="smoke")
    data, model, train, ev = p.resolve()
    flat = mlflow_run.flatten_params(
        {"data": data, "model": model, "train": train, "eval": ev, "gate": GateConfig()})
    assert flat["model.arch"] == "mlp"
    assert flat["model.g_hidden"] == "[32, 64]"
    assert flat["train.epochs"] == "1" and flat["train.lr_g"] == "0.0002"
    assert flat["data.source"] == "digits" and flat["eval.judge_epochs"] == "2"
    assert flat["gate.max_class_kl"] == "0.1"
    prefixes = {k.split(".")[0] for k in flat}
    assert prefixes == {"data", "model", "train", "eval", "gate"}
    assert set(flat) >= {f"model.{k}" for k in ModelConfig.model_fields}
    assert set(flat) >= {f"train.{k}" for k in TrainConfig.model_fields}
    assert all(isinstance(v, str) for v in flat.values())


def test_flatten_params_refuses_credentials(settings_env) -> None:
    settings_env.set(GAN_S3_ENDPOINT_URL="http://127.0.0.1:1", AWS_ACCESS_KEY_ID="AKIDSECRETID",
                     AWS_SECRET_ACCESS_KEY="super-secret-value")
    settings = settings_env.load()
    with pytest.raises(mlflow_run.RunLoggingError, match="'settings'.*never logged"):
        mlflow_run.flatten_params({"model": ModelConfig(), "settings": settings})
    with pytest.raises(mlflow_run.RunLoggingError, match="'data.key'"):
        mlflow_run.flatten_params({"data": {"key": SecretStr("x")}})
    with pytest.raises(mlflow_run.RunLoggingError, match="'s3.aws_secret_access_key'"):
        mlflow_run.flatten_params({"s3": {"aws_secret_access_key": "x"}})
    flat = mlflow_run.flatten_params({"data": DataConfig(
        source="npz", uri="https://bob:hunter2@example.org/d.npz?X-Amz-Signature=abc&v=1")})
    assert flat["data.uri"] == "https://***@example.org/d.npz?X-Amz-Signature=***&v=1"
    assert "hunter2" not in str(flat) and "abc" not in flat["data.uri"]


def test_lineage_tags(tmp_path: Path) -> None:
    trained, dataset = _trained(), _dataset()
    tags = mlflow_run.lineage_tags(run_id="r1", trained=trained, dataset=dataset,
                                   lineage={"prefect.flow_run_id": "fr-1",
                                            "prefect.flow_run_url": "http://u:p@h/runs/fr-1"})
    assert tags["gan.run_id"] == "r1" and tags["gan.dataset.version"] == dataset.version
    assert tags["gan.checkpoint_uri"] == trained.checkpoint_uri
    assert tags["gan.dataset.uri"] == dataset.uri and tags["gan.ray.run_name"] == "ray-r1"
    assert tags["prefect.flow_run_id"] == "fr-1"
    assert tags["prefect.flow_run_url"] == "http://***@h/runs/fr-1"
    assert tags["gan.code_version"]
    with pytest.raises(mlflow_run.RunLoggingError, match="lineage tag"):
        mlflow_run.lineage_tags(run_id="r1", trained=trained, dataset=dataset,
                                lineage={"x": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize("bad", ["", "a b", "x'; drop", "-lead", "a" * 65])
def test_bad_run_ids(bad: str) -> None:
    with pytest.raises(mlflow_run.RunLoggingError, match="run_id"):
        mlflow_run.check_run_id(bad)


def test_version_tags_few_and_old_metric_tags_still_read() -> None:
    """New versions carry run id and dataset version (the gate adds the verdict); versions
    registered before the model card carry their metrics as tags, still read exactly."""
    report = _report(fid=12.345678901234567, class_kl=0.0123)
    # A hex dataset version that float() would read as 1e16: must not become a "metric".
    tags = registry.version_tags(report, _dataset(version="1e16000000000000"), "r1")
    assert tags == {"dataset_version": "1e16000000000000", "run_id": "r1"}
    old = tags | {"fid": repr(12.345678901234567), "class_kl": "0.0123", "verdict": "champion",
                  "gan.gate.applied": "true", "gate.promote": "1"}
    assert registry.metrics_from_tags(old) == {"fid": 12.345678901234567, "class_kl": 0.0123}


def test_evaluation_metrics_names() -> None:
    m = mlflow_run.evaluation_metrics(_report(fid=3.0, class_kl=0.01))
    assert m["fid"] == 3.0 and m["floor_fid"] == 1.0 and m["ceiling_inception_score"] == 9.5
    assert m["judge_accuracy"] == 0.99 and m["class_share_9"] == 0.1
    assert all(mlflow_run.metric_key(k) == k for k in m)


def test_evaluation_metrics_carry_spread_and_the_rescored_champion() -> None:
    champ = ChampionScore(version="2", metrics={"fid": 4.0}, per_seed={"fid": [4.0, 4.0]})
    report = _report(fid=3.0, class_kl=0.01).model_copy(
        update={"spread": {"fid": 0.2}, "champion": champ})
    m = mlflow_run.evaluation_metrics(report)
    assert m["spread_fid"] == 0.2 and m["champion_fid"] == 4.0
    unscored = report.model_copy(update={"champion": ChampionScore(version="2",
                                                                   comparable=False)})
    assert "champion_fid" not in mlflow_run.evaluation_metrics(unscored)


# --------------------------------------------------------------------------- bundle + pyfunc


@pytest.mark.parametrize(("arch", "conditional"), [("mlp", False), ("dcgan", True)])
def test_bundle_round_trip(tmp_path: Path, arch: str, conditional: bool) -> None:
    cfg, G, D = tiny_models(arch, conditional)
    mm.write_bundle(tmp_path / "b", cfg, G, D)
    torch.manual_seed(123)  # the rebuilt modules start from other random weights
    G2 = mm.load_generator_from_bundle(tmp_path / "b")
    D2 = mm.load_discriminator_from_bundle(tmp_path / "b")
    assert not G2.training and not D2.training
    z, y = torch.randn(6, cfg.latent_dim), torch.arange(6) % 10
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        assert torch.equal(G(z, y), G2(z, y))
        assert torch.equal(D(x, y), D2(x, y))
    assert mm.read_model_config(tmp_path / "b") == cfg


def test_bundle_errors(tmp_path: Path) -> None:
    with pytest.raises(mm.BundleError, match="model_config.json is missing"):
        mm.read_model_config(tmp_path)
    (tmp_path / mm.CONFIG_FILE).write_text('{"format": "other"}')
    with pytest.raises(mm.BundleError, match="format 'other'"):
        mm.read_model_config(tmp_path)
    cfg, G, _ = tiny_models("mlp", False)
    mm.write_bundle(tmp_path / "g", cfg, G)  # no discriminator
    with pytest.raises(mm.BundleError, match="discriminator.safetensors is missing"):
        mm.load_discriminator_from_bundle(tmp_path / "g")
    other = ModelConfig(arch="mlp", g_hidden=(8,), d_hidden=(8,), latent_dim=12)
    mm.write_bundle(tmp_path / "bad", other, G)  # weights of another architecture
    with pytest.raises(mm.WeightsMismatch, match="do not fit the MLPGenerator"):
        mm.load_generator_from_bundle(tmp_path / "bad")


def test_pyfunc_wrapper_shapes_and_errors() -> None:
    cfg, G, _ = tiny_models("dcgan", True)
    model = mm.GeneratorPyfunc(G)
    ex = mm.input_example(cfg, n=7)
    out = model.predict(ex)
    assert out.shape == (7, 1, 28, 28) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    with torch.no_grad():
        ref = G(torch.from_numpy(ex["z"]), torch.from_numpy(ex["y"])).numpy()
    np.testing.assert_array_equal(out, ref)
    with pytest.raises(ValueError, match="conditional"):
        model.predict({"z": ex["z"]})
    with pytest.raises(ValueError, match=r"shape \(N, 12\)"):
        model.predict({"z": ex["z"][:, :5], "y": ex["y"]})
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        model.predict({"z": ex["z"], "y": ex["y"] + 10})
    with pytest.raises(TypeError, match="generator input"):
        model.predict([1, 2, 3])


def test_saved_pyfunc_model_predicts_locally(tmp_path: Path) -> None:
    """The MLflow model format itself, saved to disk (no server): pyfunc and load_generator."""
    cfg, G, D = tiny_models("dcgan", True)
    bundle = mm.write_bundle(tmp_path / "gan_generator", cfg, G, D)
    path = mm.save_bundle_model(tmp_path / "model", bundle)
    assert "pickle" not in (path / "MLmodel").read_text()
    assert not list(path.rglob("*.pkl")) and not list(path.rglob("*.pt"))
    ex = mm.input_example(cfg, n=4, seed=5)
    out = mlflow.pyfunc.load_model(str(path)).predict(ex)
    with torch.no_grad():
        ref = G(torch.from_numpy(ex["z"]), torch.from_numpy(ex["y"])).numpy()
    np.testing.assert_allclose(out, ref, atol=2e-6)  # the portable G's fused inference form
    G2 = registry_load.load_generator(str(path))
    with torch.no_grad():
        assert torch.equal(G2(torch.from_numpy(ex["z"]), torch.from_numpy(ex["y"])),
                           torch.from_numpy(ref))
    assert isinstance(registry_load.load_discriminator(str(path)), torch.nn.Module)
    with pytest.raises(registry_load.ModelNotFoundError, match="no MLflow model directory"):
        registry_load.load_generator(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("loader", mm.LEGACY_LOADER_MODULES)
def test_versions_from_before_the_layout_still_load(tmp_path: Path, loader: str) -> None:
    """A model saved with an older loader module (`gan.mlflow_model`, what every version
    registered before the package move names; `gan.registry.model_format`, what versions
    before the self-contained format name) loads both ways, like a new one."""
    cfg, G, D = tiny_models("dcgan", True)
    bundle = mm.write_bundle(tmp_path / "gan_generator", cfg, G, D)
    path = tmp_path / "model"
    mlflow.pyfunc.save_model(str(path), loader_module=loader, data_path=str(bundle))
    assert f"loader_module: {loader}" in (path / "MLmodel").read_text()
    ex = mm.input_example(cfg, n=3, seed=1)
    with torch.no_grad():
        ref = G(torch.from_numpy(ex["z"]), torch.from_numpy(ex["y"])).numpy()
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(str(path)).predict(ex), ref)
    with torch.no_grad():
        out = registry_load.load_generator(str(path))(torch.from_numpy(ex["z"]),
                                                      torch.from_numpy(ex["y"]))
    np.testing.assert_array_equal(out.numpy(), ref)


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("n", [0, -3, sampling.MAX_SAMPLES + 1, True, 2.5])
def test_bad_n_rejected(n) -> None:
    with pytest.raises(sampling.SamplingError, match="--n must be an integer"):
        sampling.check_request(n, out="g.png")


def test_request_checks(tmp_path: Path) -> None:
    with pytest.raises(sampling.SamplingError, match="nothing to write"):
        sampling.check_request(4)
    with pytest.raises(sampling.SamplingError, match="use a .png name"):
        sampling.check_request(4, out=tmp_path / "g.jpg")
    with pytest.raises(sampling.SamplingError, match="does not exist"):
        sampling.check_request(4, npz=tmp_path / "no" / "s.npz")
    sampling.check_request(4, out=tmp_path / "g.png", npz=tmp_path / "s.npz", label=3)


def test_labels_balanced_and_single_class() -> None:
    _, G, _ = tiny_models("dcgan", True)
    s = sampling.generate(G, 25, seed=1)
    counts = torch.bincount(s.y, minlength=10)
    assert counts.sum() == 25 and counts.max() - counts.min() <= 1
    assert s.x.shape == (25, 1, 28, 28) and s.x.dtype == torch.float32
    one = sampling.generate(G, 5, seed=1, label=7)
    assert one.y.tolist() == [7] * 5
    with pytest.raises(sampling.SamplingError, match=r"\[0, 10\)"):
        sampling.generate(G, 5, label=10)
    _, Gu, _ = tiny_models("mlp", False)
    assert sampling.generate(Gu, 3).y is None
    with pytest.raises(sampling.SamplingError, match="unconditional"):
        sampling.generate(Gu, 3, label=1)


def test_generate_seeded_and_batched() -> None:
    _, G, _ = tiny_models("mlp", False)
    a = sampling.generate(G, 10, seed=4, batch=3)
    b = sampling.generate(G, 10, seed=4)
    c = sampling.generate(G, 10, seed=5)
    d = sampling.generate(G, 10, seed=4)
    assert torch.equal(b.x, d.x) and not torch.allclose(a.x, c.x)
    # Batch size changes the BLAS kernels, so batched equals unbatched up to rounding.
    torch.testing.assert_close(a.x, b.x, rtol=1e-5, atol=1e-6)


def test_gan_sample_is_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """`gan sample`'s draw obeys the same output bound as the published model (1 GiB of
    float32 images by default): a request past it is refused naming the limit, before any
    latent is drawn; a request within it is drawn."""
    cfg = ModelConfig(arch="dcgan", image_size=128, channels=3, base_channels=4, latent_dim=8)
    torch.manual_seed(0)
    G = build(cfg)[0].eval()
    def refuse(G: object, n: int, *args: object, **kwargs: object) -> None:
        raise AssertionError(f"{n} images drawn: the request was accepted")

    monkeypatch.setattr(sampling, "sample_images", refuse)
    with pytest.raises(sampling.SamplingError, match=r"100000 images of 3×128×128 float32 are "
                       r"18\.3 GiB.*limit of 1\.0 GiB.*at most 5461"):
        sampling.generate(G, 100_000)
    with pytest.raises(sampling.SamplingError, match=r"limit of 576\.0 KiB.*at most 3"):
        sampling.generate(G, 4, max_bytes=3 * 3 * 128 * 128 * 4)
    monkeypatch.undo()
    assert sampling.generate(G, 3, max_bytes=3 * 3 * 128 * 128 * 4).x.shape == (3, 3, 128, 128)


def test_write_grid_and_npz(tmp_path: Path) -> None:
    _, G, _ = tiny_models("dcgan", True)
    s = sampling.generate(G, 20, seed=0)
    png = sampling.write_grid(s, tmp_path / "g.png", ncol=sampling.grid_columns(G, 20), scale=1)
    img = Image.open(io.BytesIO(png.read_bytes()))
    assert img.format == "PNG" and img.size == (10 * 30 + 2, 2 * 30 + 2)  # 28 px + 2 pad
    npz = sampling.write_npz(s, tmp_path / "s.npz")
    with np.load(npz) as f:
        assert f["x"].shape == (20, 1, 28, 28) and f["x"].dtype == np.float32
        assert f["y"].dtype == np.int64 and f["y"].tolist() == [i % 10 for i in range(20)]
        assert -1.0 <= f["x"].min() and f["x"].max() <= 1.0
        np.testing.assert_array_equal(f["x"], s.x.numpy())


def test_cli_sample_local_model(tmp_path: Path, settings_env) -> None:
    from gan.cli.main import app

    cfg, G, D = tiny_models("dcgan", True)
    path = mm.save_bundle_model(tmp_path / "model",
                                mm.write_bundle(tmp_path / "gan_generator", cfg, G, D))
    runner = CliRunner()
    r = runner.invoke(app, ["sample", "--model", str(path), "--n", "12", "--label", "3",
                            "--out", str(tmp_path / "g.png"), "--npz", str(tmp_path / "s.npz")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "g.png").format == "PNG"
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (12, 1, 28, 28) and set(f["y"].tolist()) == {3}
    r = runner.invoke(app, ["sample", "--model", str(path), "--n", "100001", "--out", "g.png"])
    assert r.exit_code == 2 and "--n must be an integer in [1, 100000]" in r.output


# --------------------------------------------------------------------------- records


def _dataset(version: str = "0123456789abcdef") -> DatasetRef:
    return DatasetRef(name="digits", version=version, uri=f"s3://gan/datasets/digits/{version}/",
                      source="digits", n_train=100, n_holdout=20, num_classes=10, image_size=28)


def _trained() -> TrainedRef:
    return TrainedRef(run_id="r1", checkpoint_uri="s3://gan/runs/r1/checkpoint.pt",
                      dataset_version="0123456789abcdef", model_cfg={}, train_cfg={},
                      epochs_completed=1, global_step=4, ray_run_name="ray-r1",
                      ray_storage_uri="s3://gan/ray")


def _report(fid: float, class_kl: float) -> Report:
    return Report(run_id="r1", dataset_version="0123456789abcdef",
                  metrics={"fid": fid, "kid_mean": 0.5, "class_kl": class_kl,
                           "recall": 0.7},
                  floors={"fid": 1.0, "recall": 0.9}, ceilings={"inception_score": 9.5},
                  class_hist=[0.1] * 10,
                  classes_covered=10, judge_accuracy=0.99, n_samples=200,
                  report_uri="s3://gan/runs/r1/eval/report.json",
                  markdown_uri="s3://gan/runs/r1/eval/report.md")

