"""Settings from the environment and GAN_HOME's state files; RetrainParams validation."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from gan.core.config import RetrainParams
from gan.core.settings import SettingsError

SECRET = "s3cr3t-Value-That-Must-Not-Leak-0123456789"


def test_defaults(settings_env):
    s = settings_env.load()
    assert s.gan_home == settings_env.gan_home
    assert (s.s3_bucket, s.s3_port, s.mlflow_port, s.prefect_port) == ("gan", 8333, 5000, 4200)
    assert s.s3_endpoint_url is None and s.mlflow_tracking_uri is None and not s.s3_external
    assert s.aws_default_region == "us-east-1" and s.ray_address is None


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("GAN_S3_PORT", "abc"),
        ("GAN_S3_PORT", "80"),
        ("GAN_MLFLOW_PORT", "70000"),
        ("GAN_PREFECT_PORT", "-1"),
        ("GAN_S3_ENDPOINT_URL", "ftp://x"),
        ("PREFECT_API_URL", "localhost:4200/api"),
        ("GAN_S3_BUCKET", "Bad_Bucket"),
    ],
)
def test_invalid_value_names_the_variable(settings_env, var, value):
    settings_env.set(**{var: value})
    with pytest.raises(SettingsError) as e:
        settings_env.load()
    assert var in str(e.value)


def test_missing_s3_settings_name_the_variables(settings_env):
    s = settings_env.load()
    with pytest.raises(SettingsError) as e:
        s.require_s3()
    for var in ("GAN_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert var in str(e.value)
    with pytest.raises(SettingsError, match="MLFLOW_TRACKING_URI"):
        s.require_mlflow()
    with pytest.raises(SettingsError, match="PREFECT_API_URL"):
        s.require_prefect()


def test_only_the_missing_key_is_named(settings_env):
    settings_env.set(GAN_S3_ENDPOINT_URL="http://s3.example:9000", AWS_ACCESS_KEY_ID="AK")
    with pytest.raises(SettingsError) as e:
        settings_env.load().require_s3()
    assert "AWS_SECRET_ACCESS_KEY" in str(e.value)
    assert "GAN_S3_ENDPOINT_URL" not in str(e.value) and "AWS_ACCESS_KEY_ID," not in str(e.value)


def test_secrets_are_masked(settings_env):
    settings_env.set(GAN_S3_ENDPOINT_URL="https://s3.example/", AWS_ACCESS_KEY_ID="AKIDVALUE",
                     AWS_SECRET_ACCESS_KEY=SECRET)
    s = settings_env.load()
    public = s.public_dict()
    assert public["aws_access_key_id"] == "***" and public["aws_secret_access_key"] == "***"
    for text in (json.dumps(public), repr(s), str(s)):
        assert SECRET not in text and "AKIDVALUE" not in text
    assert s.require_s3() == ("https://s3.example", "AKIDVALUE", SECRET)
    assert s.s3_external


def test_stack_state_files_are_picked_up(settings_env):
    home = settings_env.gan_home
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({
        "s3_endpoint": "http://127.0.0.1:18333", "mlflow_uri": "http://127.0.0.1:15000",
        "prefect_api_url": "http://127.0.0.1:14200/api"}))
    (home / "credentials.json").write_text(json.dumps(
        {"access_key_id": "LOCALKEY", "secret_access_key": SECRET}))
    s = settings_env.load()
    assert s.require_s3() == ("http://127.0.0.1:18333", "LOCALKEY", SECRET)
    assert s.require_mlflow() == "http://127.0.0.1:15000"
    assert s.require_prefect() == "http://127.0.0.1:14200/api"
    assert not s.s3_external


def test_environment_urls_win_over_stack_json(settings_env):
    home = settings_env.gan_home
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({"mlflow_uri": "http://127.0.0.1:15000"}))
    settings_env.set(MLFLOW_TRACKING_URI="http://mlflow.example:5000")
    assert settings_env.load().mlflow_tracking_uri == "http://mlflow.example:5000"


def test_local_stack_keys_win_over_unrelated_aws_env(settings_env):
    """AWS_* in a user's shell belong to another store; the local SeaweedFS needs its own."""
    home = settings_env.gan_home
    home.mkdir()
    (home / "credentials.json").write_text(json.dumps(
        {"access_key_id": "LOCALKEY", "secret_access_key": SECRET}))
    settings_env.set(AWS_ACCESS_KEY_ID="AWSKEY", AWS_SECRET_ACCESS_KEY="aws-secret")
    s = settings_env.load()
    assert s.aws_access_key_id and s.aws_access_key_id.get_secret_value() == "LOCALKEY"


def test_external_s3_never_uses_the_local_credentials(settings_env):
    home = settings_env.gan_home
    home.mkdir()
    (home / "credentials.json").write_text(json.dumps(
        {"access_key_id": "LOCALKEY", "secret_access_key": SECRET}))
    settings_env.set(GAN_S3_ENDPOINT_URL="https://minio.example")
    s = settings_env.load()
    assert s.s3_external and s.aws_access_key_id is None
    with pytest.raises(SettingsError, match="AWS_ACCESS_KEY_ID"):
        s.require_s3()


def test_unreadable_credentials_file_is_named(settings_env):
    home = settings_env.gan_home
    home.mkdir()
    (home / "credentials.json").write_text("{not json")
    with pytest.raises(SettingsError, match="credentials.json"):
        settings_env.load()


# --------------------------------------------------------------------------- RetrainParams


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"epochs": -1}, "epochs"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"arch": "transformer"}, "arch"),
        ({"registry": {"model_name": "bad name!"}}, "model_name"),
        ({"registry": {"model_name": "-starts-with-dash"}}, "model_name"),
        ({"lr_g": 0.0}, "lr_g"),
        ({"unknown_knob": 1}, "unknown_knob"),
    ],
)
def test_retrain_params_reject_bad_values(kwargs, field):
    with pytest.raises(ValidationError) as e:
        RetrainParams(**kwargs)
    assert field in str(e.value)


def test_retrain_params_accept_good_values():
    p = RetrainParams(epochs=3, batch_size=16, arch="mlp", registry={"model_name": "gan-digits.v2"})
    data, model, train, _ = p.resolve()
    assert (train.epochs, train.batch_size, model.arch) == (3, 16, "mlp")
    assert p.model_name == "gan-digits.v2"
    assert RetrainParams().model_name == "gan-digits"
