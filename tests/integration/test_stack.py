"""The real local stack: SeaweedFS S3, MLflow server, Prefect server, driven by `gan stack`.

Most tests share the session's `stack`; the stop/restart, busy-port and external-S3 tests each
bring up their own instance (own GAN_HOME and ports) so the shared one is never disturbed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import stat
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import psutil
import pytest
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from pydantic import SecretStr

from gan.core.settings import Settings
from gan.io.storage import Storage, StorageError, arrow_fs, arrow_path
from gan.stack import procs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MB = 2**20
SERVICES = ("s3", "mlflow", "prefect", "serve", "ray")  # serve: `gan serve`; ray: the warm head
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _key(prefix: str) -> str:
    return f"tests/{prefix}-{uuid.uuid4().hex[:12]}"


def _settings_for(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings.load() as a process started with `env` would see it."""
    for k in ("GAN_HOME", "GAN_S3_PORT", "GAN_MLFLOW_PORT", "GAN_PREFECT_PORT", "GAN_S3_BUCKET",
              "GAN_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
              "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "MLFLOW_TRACKING_USERNAME",
              "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING"):
        if k in env:
            monkeypatch.setenv(k, env[k])
        else:
            monkeypatch.delenv(k, raising=False)
    settings = Settings.load()
    # That stack's own identities (from its GAN_HOME) for the MLflow clients of this process.
    if settings.mlflow_tracking_username and settings.mlflow_tracking_password:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", settings.mlflow_tracking_username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD",
                           settings.mlflow_tracking_password.get_secret_value())
    return settings


def _stack_pids(home: Path) -> dict[str, list[int]]:
    """Each service's process tree, from the pid records `gan stack up` wrote."""
    out = {}
    for pid_file in sorted((home / "run").glob("*.pid")):
        rec = procs.read_record(pid_file)
        assert rec is not None, pid_file
        out[pid_file.stem] = procs.tree_pids(rec)
    return out


def _alive(p: psutil.Process) -> bool:
    """Still running and still the same process (psutil compares start times: pids wrap)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _log_artifact(tracking_uri: str, tmp_path: Path) -> tuple[str, str]:
    """Log one small artifact through the MLflow server (no S3 keys on this side)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.create_experiment(f"stack-test-{uuid.uuid4().hex[:8]}")
    run = client.create_run(exp)
    path = tmp_path / "hello.txt"
    path.write_text("proxied through the tracking server\n")
    client.log_artifact(run.info.run_id, str(path))
    return exp, run.info.run_id


# --------------------------------------------------------------------------- shared stack


def test_up_gives_healthy_services_and_status_json(stack, gan_cli):
    st = gan_cli.status()
    for key in ("s3_endpoint", "bucket", "credentials_file", "mlflow_uri", "prefect_api_url",
                "services"):
        assert key in st
    assert set(st["services"]) == set(SERVICES)
    for name in SERVICES:
        svc = st["services"][name]
        assert svc["healthy"] is True, (name, svc)
        assert isinstance(svc["pid"], int) and _alive(psutil.Process(svc["pid"]))
        assert svc["url"].startswith("127.0.0.1:" if name == "ray" else "http://127.0.0.1:")
    assert st["healthy"] is True
    assert st["s3_endpoint"] == stack.s3_endpoint_url == st["services"]["s3"]["url"]
    assert st["mlflow_uri"] == stack.mlflow_tracking_uri
    assert st["prefect_api_url"] == stack.prefect_api_url
    assert st["credentials_file"] == str(stack.credentials_file.resolve())
    assert st["bucket"] == stack.s3_bucket
    assert st["ray"] == f"127.0.0.1:{stack.ray_port}" == stack.ray_address
    assert stack.ray_from_stack  # training joins this head, or starts its own when it is down
    state = json.loads(stack.state_file.read_text())
    assert state == {"s3_endpoint": st["s3_endpoint"], "mlflow_uri": st["mlflow_uri"],
                     "prefect_api_url": st["prefect_api_url"], "ray_address": st["ray"]}


def test_state_lives_in_gan_home(stack):
    home = stack.gan_home.resolve()
    assert (home / "mlflow" / "mlflow.db").is_file()
    assert (home / "prefect" / "prefect.db").is_file()
    assert any((home / "s3").iterdir())
    for name in SERVICES:
        assert (home / "logs" / f"{name}.log").is_file()
        assert (home / "run" / f"{name}.pid").is_file()


@pytest.mark.parametrize("writer", ["boto3", "pyarrow"])
def test_large_object_round_trip_multipart(stack, storage, writer):
    """Over 10 MB, so both clients use multipart uploads (ETag ends in -<parts>)."""
    data = os.urandom(12 * MB + 12345)
    uri = stack.s3_uri(_key(writer))
    fs = arrow_fs(stack)
    if writer == "boto3":
        cfg = TransferConfig(multipart_threshold=5 * MB, multipart_chunksize=5 * MB)
        bucket, key = uri[5:].split("/", 1)
        storage.client.upload_fileobj(io.BytesIO(data), bucket, key, Config=cfg)
        with fs.open_input_stream(arrow_path(uri)) as f:
            back = f.read()
    else:
        with fs.open_output_stream(arrow_path(uri)) as f:
            f.write(data)
        back = storage.get_bytes(uri)
    assert back == data
    bucket, key = uri[5:].split("/", 1)
    etag = storage.client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    assert "-" in etag and int(etag.rsplit("-", 1)[1]) >= 2, etag


def test_wrong_credentials_are_rejected(stack, storage):
    uri = stack.s3_uri(_key("creds"))
    storage.put_bytes(uri, b"secret data")
    bad_secret = stack.model_copy(update={"aws_secret_access_key": SecretStr("x" * 40)})
    bad_key = stack.model_copy(update={"aws_access_key_id": SecretStr("NOSUCHKEYID000000000")})
    for bad, code in ((bad_secret, "SignatureDoesNotMatch"), (bad_key, "InvalidAccessKeyId")):
        with pytest.raises(StorageError, match=code):
            Storage.from_settings(bad, retries=1).get_bytes(uri)
        with pytest.raises(StorageError, match="refused the credentials"):
            Storage.from_settings(bad, retries=1).put_bytes(stack.s3_uri(_key("nope")), b"x")
        with pytest.raises(OSError, match="ACCESS_DENIED|INVALID_ACCESS_KEY|SIGNATURE"):
            with arrow_fs(bad).open_input_stream(arrow_path(uri)) as f:
                f.read()
        with pytest.raises(OSError, match="ACCESS_DENIED|INVALID_ACCESS_KEY|SIGNATURE"):
            with arrow_fs(bad).open_output_stream(arrow_path(stack.s3_uri(_key("no")))) as f:
                f.write(b"x" * 100)
    assert storage.get_bytes(uri) == b"secret data"


def test_anonymous_access_is_refused(stack, storage):
    uri = stack.s3_uri(_key("anon"))
    storage.put_bytes(uri, b"private")
    bucket, key = uri[5:].split("/", 1)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{stack.s3_endpoint_url}/{bucket}/{key}", timeout=10)
    assert e.value.code == 403
    anon = boto3.session.Session().client(
        "s3", endpoint_url=stack.s3_endpoint_url, region_name="us-east-1",
        config=botocore.config.Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
    calls = [lambda: anon.get_object(Bucket=bucket, Key=key),
             lambda: anon.put_object(Bucket=bucket, Key=_key("anon-put"), Body=b"x"),
             lambda: anon.list_objects_v2(Bucket=bucket),
             anon.list_buckets]
    for call in calls:
        with pytest.raises(botocore.exceptions.ClientError) as ce:
            call()
        assert ce.value.response["Error"]["Code"] in ("AccessDenied", "403")


def test_second_up_is_a_no_op(stack, gan_cli):
    before = gan_cli.status()
    r = gan_cli.run("stack", "up")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("already running") == len(SERVICES)
    assert not [line for line in r.stdout.splitlines() if line.startswith("started ")]
    after = gan_cli.status()
    for name in SERVICES:
        assert after["services"][name]["pid"] == before["services"][name]["pid"]
        assert after["services"][name]["healthy"]


def test_every_listening_socket_is_on_loopback(stack):
    trees = _stack_pids(stack.gan_home.resolve())
    assert set(trees) == set(SERVICES)
    ports = {}
    for name, pids in trees.items():
        listening = []
        for pid in pids:
            for c in psutil.Process(pid).net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    listening.append((c.laddr.ip, c.laddr.port))
        assert listening, f"{name} listens nowhere?"
        assert {ip for ip, _ in listening} <= LOOPBACK, (name, listening)
        ports[name] = {p for _, p in listening}
    assert stack.s3_port in ports["s3"] and stack.s3_port + 10000 in ports["s3"]
    assert len(ports["s3"]) >= 8  # master, volume, filer, S3 (+ admin) and their gRPC ports
    assert ports["mlflow"] == {stack.mlflow_port} and ports["prefect"] == {stack.prefect_port}
    assert stack.ray_port in ports["ray"]  # GCS; raylet, object manager, workers: random ports


def test_credentials_private_and_never_shown(stack, gan_cli):
    home = stack.gan_home.resolve()
    creds = json.loads(stack.credentials_file.read_text())
    key, secret = creds["access_key_id"], creds["secret_access_key"]
    assert stat.S_IMODE(stack.credentials_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "s3-identities.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(stack.ray_token_file.stat().st_mode) == 0o600
    ray_token = stack.ray_token_file.read_text()
    shown = [gan_cli.run("stack", "status").stdout, json.dumps(gan_cli.status()),
             gan_cli.run("stack", "up").stdout, stack.state_file.read_text()]
    shown += [p.read_text(errors="replace") for p in (home / "logs").glob("*")]
    shown += [p.read_text() for p in (home / "run").glob("*.pid")]
    for pids in _stack_pids(home).values():  # argv is world-readable (ps)
        shown += [" ".join(psutil.Process(pid).cmdline()) for pid in pids]
    assert len(shown) > 8
    for text in shown:
        assert secret not in text and key not in text and ray_token not in text


def test_mlflow_artifacts_are_proxied_into_the_bucket(stack, storage, tmp_path):
    _, run_id = _log_artifact(stack.require_mlflow(), tmp_path)
    keys = storage.list_keys(stack.s3_uri("mlflow"))
    assert any(run_id in k and k.endswith("/hello.txt") for k in keys), keys[-5:]


def test_prefect_api_and_ui_reachable(stack):
    with urllib.request.urlopen(f"{stack.require_prefect()}/health", timeout=10) as r:
        assert json.loads(r.read()) is True
    ui = stack.require_prefect().removesuffix("/api")
    with urllib.request.urlopen(ui, timeout=10) as r:
        assert r.status == 200 and b"<html" in r.read().lower()


# --------------------------------------------------------------------------- own instances


def test_down_stops_everything_and_up_finds_the_data(
    make_stack_env, gan_cli, monkeypatch, tmp_path
):
    env = make_stack_env()
    home = Path(env["GAN_HOME"])
    r = gan_cli.start(env)
    assert r.returncode == 0, r.stderr
    settings = _settings_for(env, monkeypatch)
    data = os.urandom(11 * MB)
    uri = settings.s3_uri(_key("persist"))
    Storage.from_settings(settings).put_file(uri, _write(tmp_path / "big.bin", data))
    exp, run_id = _log_artifact(settings.require_mlflow(), tmp_path)
    trees = _stack_pids(home)
    assert set(trees) == set(SERVICES) and all(trees.values())
    # psutil.Process remembers each start time: a pid reused meanwhile does not count as ours.
    old = [psutil.Process(pid) for pids in trees.values() for pid in pids]

    r = gan_cli.run("stack", "down", env=env)
    assert r.returncode == 0, r.stderr
    for name in SERVICES:
        assert f"stopped {name}" in r.stdout
    left = [p for p in old if _alive(p)]
    assert left == []
    assert list((home / "run").glob("*.pid")) == []
    st = gan_cli.status(env)
    assert not st["healthy"] and all(not s["healthy"] and s["pid"] is None
                                     for s in st["services"].values())
    assert "nothing was running" in gan_cli.run("stack", "down", env=env).stdout
    assert (home / "mlflow" / "mlflow.db").is_file() and stack_data_kept(home)

    r = gan_cli.run("stack", "up", env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    new = gan_cli.status(env)
    assert new["healthy"]
    new_procs = [psutil.Process(s["pid"]) for s in new["services"].values()]
    assert not {(p.pid, p.create_time()) for p in new_procs} & {
        (p.pid, p.create_time()) for p in old}
    assert Storage.from_settings(_settings_for(env, monkeypatch)).get_bytes(uri) == data
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=settings.require_mlflow()).get_run(run_id)
    assert run.info.experiment_id == exp


def stack_data_kept(home: Path) -> bool:
    return (home / "credentials.json").is_file() and any((home / "s3").iterdir())


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@contextlib.contextmanager
def _listening_on_a_stack_port(make_stack_env, var: str, offset: int):
    """(env, port) with a socket of ours listening on `env[var] + offset`; new ports when
    another process took that one between choosing and binding."""
    for _ in range(5):
        env = make_stack_env()
        port = int(env[var]) + offset
        with socket.socket() as blocker:
            try:
                blocker.bind(("127.0.0.1", port))
            except OSError:
                continue
            blocker.listen()
            yield env, port
            return
    raise RuntimeError(f"no free port for {var}+{offset} in 5 tries")


@pytest.mark.parametrize(
    ("var", "offset", "what"),
    [("GAN_MLFLOW_PORT", 0, "MLflow"), ("GAN_PREFECT_PORT", 0, "Prefect"),
     ("GAN_S3_PORT", 0, "SeaweedFS S3"), ("GAN_S3_PORT", 1, "SeaweedFS master"),
     ("GAN_S3_PORT", 10003, "SeaweedFS filer gRPC")],
)
def test_busy_port_is_named_and_nothing_starts(make_stack_env, gan_cli, var, offset, what):
    with _listening_on_a_stack_port(make_stack_env, var, offset) as (env, port):
        r = gan_cli.run("stack", "up", env=env, timeout=120)
    assert r.returncode == 1
    assert f"port {port} ({what}) is in use; set {var} to a free port" in r.stderr
    assert list((Path(env["GAN_HOME"]) / "run").glob("*.pid")) == []


def test_external_services_are_used_not_started(
    stack, make_stack_env, gan_cli, monkeypatch, tmp_path
):
    """GAN_S3_ENDPOINT_URL set: no SeaweedFS, the given keys, the bucket created there; and
    PREFECT_API_URL of another server: no Prefect server (here: the session stack's ones)."""
    endpoint, key, secret = stack.require_s3()
    bucket = f"ext-{uuid.uuid4().hex[:10]}"
    env = make_stack_env(GAN_S3_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=key,
                         AWS_SECRET_ACCESS_KEY=secret, GAN_S3_BUCKET=bucket,
                         PREFECT_API_URL=stack.require_prefect())
    home = Path(env["GAN_HOME"])
    r = gan_cli.start(env)
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr
    st = gan_cli.status(env)
    assert st["healthy"], st
    for name in ("s3", "prefect"):
        assert st["services"][name]["external"] and st["services"][name]["pid"] is None
        assert not (home / "run" / f"{name}.pid").exists()
    assert st["s3_endpoint"] == endpoint and st["credentials_file"] is None
    assert st["prefect_api_url"] == stack.prefect_api_url
    assert not st["services"]["mlflow"]["external"]
    assert not (home / "credentials.json").exists() and not any((home / "s3").iterdir())
    assert not st["services"]["ray"]["external"]  # the Ray head is local whatever the store
    assert json.loads((home / "stack.json").read_text()) == {"mlflow_uri": st["mlflow_uri"],
                                                             "ray_address": st["ray"]}
    Storage.from_settings(stack).client.head_bucket(Bucket=bucket)  # created by `up`
    settings = _settings_for(env, monkeypatch)
    _, run_id = _log_artifact(settings.require_mlflow(), tmp_path)
    keys = Storage.from_settings(settings).list_keys(f"s3://{bucket}/mlflow")
    assert any(run_id in k for k in keys)
