"""`gan stack backup` / `gan stack restore` on real stacks: a copy taken while the session stack
runs, restored into another GAN_HOME on other ports, serves the same registry byte for byte.

The session stack gets a registered model (two versions, @champion and @challenger, a logged
artifact), a dataset object and a Prefect flow run; the backup goes to a folder; a second stack
is restored from it and brought up; its champion's files equal the original's, and its aliases,
versions, dataset and flow run are there. That second stack is then backed up into an s3://
prefix of the session stack's store (the "other store"), which lists the same objects.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from gan.core.settings import Settings
from gan.io.storage import Storage

pytestmark = pytest.mark.integration


def _api(url: str, body: dict | None = None, method: str = "POST") -> dict:
    data = None if body is None else json.dumps(body).encode()
    # The stacks' Prefect asks for its auth string (the `stack` fixture exports the owner's;
    # the restored stack has the same one: it comes with the backup).
    token = base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Basic {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (loopback test stack)
        return json.loads(r.read())


def _register(settings: Settings, tmp_path: Path) -> str:
    """A model with v1 @champion and v2 @challenger, each holding a random artifact."""
    client = MlflowClient(settings.require_mlflow())
    name = f"backup-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    exp = client.create_experiment(f"{name}-exp")
    for i in range(2):
        run = client.create_run(exp)
        (tmp_path / "model").mkdir(exist_ok=True)
        (tmp_path / "model" / "weights.bin").write_bytes(os.urandom(4096 + i))
        client.log_artifacts(run.info.run_id, str(tmp_path / "model"), "model")
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                         run.info.run_id)
        client.set_registered_model_alias(name, "champion" if i == 0 else "challenger",
                                          mv.version)
    return name


def _champion_files(tracking_uri: str, name: str, dest: Path) -> dict[str, bytes]:
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # download_artifacts resolves models:/ here
    root = Path(download_artifacts(f"models:/{name}@champion", dst_path=str(dest)))
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_backup_restore_round_trip(stack: Settings, storage: Storage, gan_cli, make_stack_env,
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.require_mlflow())
    name = _register(stack, tmp_path)
    # An object of its own, not under datasets/: the session stack's other tests read every
    # dataset manifest there (a fake one would break them).
    dataset_uri = stack.s3_uri("uploads", "backup-test", uuid.uuid4().hex[:16], "object.json")
    storage.put_json(dataset_uri, {"n_train": 3})
    prefect = stack.require_prefect()
    flow = _api(f"{prefect}/flows/", {"name": "backup-test"})
    flow_run = _api(f"{prefect}/flow_runs/", {"flow_id": flow["id"], "name": name})
    before = _champion_files(stack.require_mlflow(), name, tmp_path / "a")

    dest = tmp_path / "backup"
    r = gan_cli.run("stack", "backup", str(dest))  # the session stack keeps running
    assert r.returncode == 0, r.stderr
    manifest = json.loads((dest / "manifest.json").read_text())
    files = manifest["files"]
    assert {"mlflow.db", "prefect.db", "credentials.json", "s3-identities.json",
            "mlflow-auth.db", "mlflow-admin.json", "mlflow-consumer.json", "prefect-auth"
            } <= set(files)
    assert f"objects/{dataset_uri.split('/', 3)[3]}" in files
    assert (dest / "credentials.json").stat().st_mode & 0o077 == 0
    again = gan_cli.run("stack", "backup", str(dest))
    assert again.returncode == 1 and "not empty" in again.stderr

    env = make_stack_env()
    r = gan_cli.run("stack", "restore", str(dest), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    twice = gan_cli.run("stack", "restore", str(dest), env=env)
    assert twice.returncode == 1 and "not empty" in twice.stderr
    r = gan_cli.start(env)
    assert r.returncode == 0, r.stdout + r.stderr
    st = gan_cli.status(env)

    client = MlflowClient(st["mlflow_uri"])
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert client.get_model_version_by_alias(name, "challenger").version == "2"
    after = _champion_files(st["mlflow_uri"], name, tmp_path / "b")
    assert after == before and after  # byte for byte
    restored_run = _api(f"{st['prefect_api_url']}/flow_runs/{flow_run['id']}", method="GET")
    assert restored_run["name"] == name
    b_settings = stack.model_copy(update={"s3_endpoint_url": st["s3_endpoint"]})
    assert Storage.from_settings(b_settings).get_json(dataset_uri) == {"n_train": 3}

    # The restored stack backed up into an s3:// prefix of another store (the session stack's).
    keys = json.loads((stack.gan_home / "credentials.json").read_text())
    prefix = stack.s3_uri("backups", uuid.uuid4().hex[:8])
    r = gan_cli.run("stack", "backup", prefix, env=env | {
        "GAN_BACKUP_S3_ENDPOINT_URL": stack.s3_endpoint_url,
        "GAN_BACKUP_AWS_ACCESS_KEY_ID": keys["access_key_id"],
        "GAN_BACKUP_AWS_SECRET_ACCESS_KEY": keys["secret_access_key"]})
    assert r.returncode == 0, r.stderr
    remote = storage.get_json(f"{prefix}/manifest.json")["files"]
    objects = {k: v for k, v in files.items() if k.startswith("objects/")}
    assert objects.items() <= remote.items()
