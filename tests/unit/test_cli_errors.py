"""One-line errors of the `gan` command where a user is most likely to go wrong: no stack in
this folder, a CUDA device on a machine without one, `gan data upload` misuse; and the
`models:/` URI resolution that must not fall back to MLflow's default registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gan.cli.main import app
from gan.registry import load as registry_load

run = CliRunner().invoke


def _one_line_error(r, code: int, text: str) -> None:
    assert r.exit_code == code, r.output
    assert text in r.output and "Traceback" not in r.output


def test_stack_status_without_a_stack_fails(settings_env) -> None:
    r = run(app, ["stack", "status"])
    _one_line_error(r, 1, f"no local stack in GAN_HOME={settings_env.gan_home}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
@pytest.mark.parametrize("args", [
    ["sample", "--model", "m", "--n", "4", "--out", "g.png", "--device", "cuda"],
    ["anomaly", "--model", "m", "--input", "b.npz", "--out", "s.csv", "--device", "cuda:0"],
    ["inpaint", "--model", "m", "--input", "b.npz", "--out", "g.png", "--device", "cuda"],
    ["retrain", "--smoke", "--gpu"],
])
def test_cuda_without_cuda_is_one_line(settings_env, args: list[str]) -> None:
    _one_line_error(run(app, args), 2, "no CUDA device is available on this machine")


def test_data_upload_refuses_a_non_s3_prefix(tmp_path: Path, settings_env) -> None:
    (tmp_path / "a.gz").write_bytes(b"x")
    _one_line_error(run(app, ["data", "upload", str(tmp_path), "/tmp/x"]), 2,
                    "PREFIX must be an s3:// URI")


class _Client:
    """Answers like an MlflowClient for version 3 of `m`, alias champion → 3."""

    def get_model_version_by_alias(self, name, alias):
        assert (name, alias) == ("m", "champion")
        return type("MV", (), {"version": "3"})()

    def get_model_version_download_uri(self, name, version):
        assert (name, version) == ("m", "3")
        return "models:/m-abc"  # MLflow 3: a version's source is its logged model

    def get_logged_model(self, model_id):
        assert model_id == "m-abc"
        return type("LM", (), {"artifact_location": "mlflow-artifacts:/1/models/m-abc/artifacts"})()


@pytest.mark.parametrize("uri, resolved", [
    ("models:/m@champion", "mlflow-artifacts:/1/models/m-abc/artifacts"),
    ("models:/m/3", "mlflow-artifacts:/1/models/m-abc/artifacts"),
    ("models:/m-abc", "mlflow-artifacts:/1/models/m-abc/artifacts"),
    ("runs:/r1/generator", "runs:/r1/generator"),
])
def test_models_uris_resolve_with_the_given_client(uri: str, resolved: str) -> None:
    assert registry_load.resolve_uri(_Client(), uri) == resolved  # type: ignore[arg-type]


def test_bench_pull_model_must_name_a_model(tmp_path: Path, settings_env) -> None:
    r = run(app, ["bench", "--pull-only", "--pull-model", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "not models:/..., runs:/... or a local MLflow model" in r.output


def test_data_prepare_names_a_bad_file_before_touching_storage(
        tmp_path: Path, settings_env, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run(app, ["data", "prepare"])
    _one_line_error(r, 1, "object storage is not configured")
    # An endpoint nothing listens on: a local source is read and refused before any S3 call.
    for k, v in {"GAN_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
                 "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "notes.png").write_text("a text file\n")
    r = run(app, ["data", "prepare", "--source", "images", "--uri", str(tmp_path / "imgs")])
    _one_line_error(r, 1, f"{tmp_path / 'imgs'}/notes.png: not a PNG, JPEG or WebP image")
    r = run(app, ["data", "prepare", "--source", "images", "--image-size", "7"])
    _one_line_error(r, 2, "data.image_size")  # pydantic's bound, naming the field
