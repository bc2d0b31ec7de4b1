"""Security checks that need no training run: wrong or missing S3 credentials are refused with
no anonymous fallback, and checkpoints and models holding pickled code are refused without
executing it. (Loopback sockets and the secret search during a training run are in
test_2_worker_kill_security.py; the stack's own sockets and credential file mode in
tests/integration/test_stack.py.)
"""

from __future__ import annotations

import io
from pathlib import Path

import botocore.config
import pytest
import torch
from botocore import UNSIGNED
from pyarrow import fs as pafs
from pydantic import SecretStr

from gan.core.config import DataConfig, resolve_configs
from gan.core.settings import Settings, SettingsError
from gan.data.prepare import prepare
from gan.io.storage import Storage, StorageError, arrow_fs, arrow_path
from gan.nets.models import build_generator
from gan.registry import load as registry_load
from gan.registry.model_format import GENERATOR_FILE, BundleError, write_bundle
from gan.train.checkpoint import CheckpointError, load_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class _Payload:
    """Unpickling this creates `marker`: proof that code ran during loading."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_wrong_or_missing_credentials_are_refused_without_anonymous_fallback(
        stack: Settings) -> None:
    """User sees: "S3 endpoint http://127.0.0.1:<port> refused the credentials for s3://...
    (SignatureDoesNotMatch); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" from every
    stage; without keys "object storage is not configured: AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY unset"; anonymous requests get AccessDenied; nothing is written."""
    good = Storage.from_settings(stack)
    before = good.list_keys(stack.s3_uri("datasets"))
    wrong = stack.model_copy(update={"aws_secret_access_key": SecretStr("wrong" * 8)})
    bad = Storage.from_settings(wrong, retries=1)
    with pytest.raises(StorageError, match=r"S3 endpoint http://127\.0\.0\.1:\d+ refused the "
                       r"credentials for s3://.*check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"):
        prepare(DataConfig(limit=20 * 10, name="creds-check"), bad)
    with pytest.raises(OSError, match="ACCESS_DENIED|SIGNATURE|INVALID_ACCESS_KEY"):
        arrow_fs(wrong).get_file_info(arrow_path(stack.s3_uri("datasets", "x")))
    assert good.list_keys(stack.s3_uri("datasets")) == before
    # No keys at all: refused before any request, never an unsigned (anonymous) one.
    keyless = Settings(GAN_HOME=str(stack.gan_home / "nowhere"),
                       GAN_S3_ENDPOINT_URL=stack.s3_endpoint_url).model_copy(
        update={"s3_external": True})
    with pytest.raises(SettingsError, match="AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY unset"):
        Storage.from_settings(keyless)
    with pytest.raises(SettingsError, match="AWS_ACCESS_KEY_ID"):
        arrow_fs(keyless)
    # The store itself refuses anonymous requests (boto3 unsigned, pyarrow anonymous).
    import boto3

    unsigned = boto3.session.Session().client(
        "s3", endpoint_url=stack.s3_endpoint_url, region_name="us-east-1",
        config=botocore.config.Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
    with pytest.raises(Exception, match="AccessDenied|403"):
        unsigned.list_objects_v2(Bucket=stack.s3_bucket, Prefix="datasets/")
    scheme, _, host = (stack.s3_endpoint_url or "").partition("://")
    anon_fs = pafs.S3FileSystem(anonymous=True, endpoint_override=host, scheme=scheme,
                                force_virtual_addressing=False)
    with pytest.raises(OSError, match="ACCESS_DENIED|AccessDenied|403"):
        anon_fs.get_file_info(pafs.FileSelector(f"{stack.s3_bucket}/datasets"))


def test_checkpoint_holding_pickled_code_is_refused(tmp_path: Path) -> None:
    """User sees: "checkpoint bytes: refused: it holds objects other than tensors and
    primitives (weights-only loading; nothing was executed): ..."; the payload never ran."""
    marker = tmp_path / "pwned"
    m, t = resolve_configs("smoke")
    buf = io.BytesIO()
    torch.save({"format": "gan-checkpoint/1", "model_config": m.model_dump(mode="json"),
                "train_config": {}, "generator": _Payload(marker), "discriminator": {},
                "epoch": 1, "step": 1}, buf)
    with pytest.raises(CheckpointError, match="refused: it holds objects other than tensors"):
        load_checkpoint(buf.getvalue())
    assert not marker.exists()


def test_model_weights_or_flavour_holding_pickled_code_are_refused(tmp_path: Path) -> None:
    """User sees: "model '<dir>': its weights are not a valid safetensors file; refused,
    nothing was executed" for a planted pickle, and "model '<dir>' is not a gan generator
    (loader 'mlflow.pytorch...')" for a pickle-format MLflow model; the payload never ran."""
    import mlflow.pyfunc
    import mlflow.pytorch

    marker = tmp_path / "pwned"
    m, _ = resolve_configs("smoke")
    G = build_generator(m)
    # 1. A genuine gan bundle whose weights file was replaced by a pickle.
    bundle = tmp_path / "bundle"
    write_bundle(bundle / "data", m, G)
    mlflow.pyfunc.save_model(str(bundle / "model"), loader_module="gan.registry.model_format",
                             data_path=str(bundle / "data"))
    weights = next((bundle / "model").rglob(GENERATOR_FILE))
    torch.save({"weight": _Payload(marker)}, weights)
    with pytest.raises(BundleError, match="not a valid safetensors file; refused"):
        registry_load.load_generator(str(bundle / "model"))
    # 2. An MLflow model in the pickle-based pytorch flavour: refused before loading anything.
    pickled = tmp_path / "pickled"
    mlflow.pytorch.save_model(G, str(pickled), serialization_format="pickle")
    with pytest.raises(BundleError, match="is not a gan generator"):
        registry_load.load_generator(str(pickled))
    assert not marker.exists()
