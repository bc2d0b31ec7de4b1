"""Scenario 3 (a Ray worker killed mid-epoch) and the security checks made during that run.

One flow run (smoke MLP, 20 epochs, checkpoint every epoch). As soon as Ray has registered epoch
2's checkpoint, a monitor thread lists every listening socket of the local Ray (this process's
descendants) and of the stack's services, then SIGKILLs the Ray Train worker process from
outside. Ray restarts the worker group from the latest checkpoint and the run finishes.
Afterwards the S3 secret is searched for in everything the run left: the services' logs, the
local Ray's session logs, the Prefect flow run (parameters, logs, artifacts, task results in
the bucket) and the MLflow run (params, tags, records).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from faultlib import (
    LOOPBACK,
    SERVICES,
    mlflow_runs_of,
    run_flow,
    sigkill,
    smoke_params,
    stack_procs,
    unique,
    versions_of,
    wait_until,
)

from gan.core.settings import Settings
from gan.io.storage import Storage
from gan.stack.procs import listening_sockets

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
EPOCHS = 20


def _train_workers() -> list[psutil.Process]:
    """Ray Train worker processes started by this test process (not anyone else's)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.name().startswith("ray::RayTrainW") or "RayTrainWorker" in " ".join(
                    p.cmdline()[:1]):
                out.append(p)
        except psutil.Error:
            continue
    return out


def _monitor(settings: Settings, storage: Storage, run_id: str, seen: dict[str, Any]) -> None:
    # Ray's "latest checkpoint" is the latest its controller has registered, which it records
    # in the run snapshot: wait until epoch 2 is there, so the restart must start from >= 2.
    snapshot = settings.s3_uri("ray", run_id, "checkpoint_manager_snapshot.json")
    wait_until(lambda: b"checkpoint_epoch_00002" in storage.get_bytes(snapshot), 600,
               f"epoch 2 in {snapshot}", every_s=0.1)
    home = settings.gan_home.resolve()
    seen["ray_sockets"] = listening_sockets(psutil.Process().children(recursive=True))
    seen["stack_sockets"] = {n: listening_sockets(stack_procs(home, n)) for n in SERVICES}
    workers = wait_until(_train_workers, 30, "a Ray Train worker process")
    seen["killed_pids"] = sigkill(workers[:1])
    seen["killed_at"] = time.monotonic()


@pytest.fixture(scope="module")
def killed_run(flow_api: Settings, ray_local: Any) -> dict[str, Any]:
    settings, storage = flow_api, Storage.from_settings(flow_api)
    name, run_id = unique("workerkill"), unique("workerkill-run")
    seen: dict[str, Any] = {"name": name, "run_id": run_id, "ray_temp": ray_local.temp_dir}
    monitor = threading.Thread(target=_monitor, args=(settings, storage, run_id, seen),
                               daemon=True)
    monitor.start()
    state, secs = run_flow(smoke_params(name, run_id, epochs=EPOCHS))
    monitor.join(timeout=30)
    print(f"[worker kill] {state.type.value} in {secs:.0f} s; killed {seen.get('killed_pids')}")
    seen.update(state=state, secs=secs,
                trained=storage.get_json(settings.s3_uri("ray", run_id, "trained.json")))
    return seen


def test_killed_worker_run_completes_from_latest_checkpoint_registered_once(
        killed_run, mlflow_client):
    """User sees: the progress stop for a moment ("resumed from checkpoint at epoch k" in the
    log), then the run finish and register one version; no duplicate MLflow run or version."""
    state = killed_run["state"]
    assert killed_run.get("killed_pids"), "no worker was killed"
    assert state.is_completed(), state.message
    trained = killed_run["trained"]
    assert trained["resumed_from_epoch"] >= 2  # restarted from a checkpoint, not from scratch
    assert trained["epochs_completed"] == EPOCHS
    assert [v.version for v in versions_of(mlflow_client, killed_run["name"])] == ["1"]
    runs = mlflow_runs_of(mlflow_client, killed_run["run_id"])
    assert len(runs) == 1
    assert runs[0].data.metrics["run/resumed_from_epoch"] == trained["resumed_from_epoch"]
    assert state.result().version == "1"


def test_every_socket_listening_during_training_is_loopback(killed_run):
    """User sees: nothing; an attacker on the network finds no port of Ray (GCS, raylet,
    object manager, workers), SeaweedFS, MLflow or Prefect open on a non-loopback address."""
    ray = killed_run["ray_sockets"]
    names = {n for n, _, _ in ray}
    assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), names
    assert {ip for _, ip, _ in ray} <= LOOPBACK, [s for s in ray if s[1] not in LOOPBACK]
    for service, socks in killed_run["stack_sockets"].items():
        if service == "serve":  # the deployment server opens no listening socket
            continue
        assert socks, f"{service}: no listening socket found"
        assert {ip for _, ip, _ in socks} <= LOOPBACK, (service, socks)


def _texts_of_run(settings: Settings, storage: Storage, flow_run_id: Any,
                  mlflow_client: Any, run_id: str) -> dict[str, str]:
    """Everything the run published, as text, keyed by where it came from."""
    from mlflow.artifacts import download_artifacts
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    out: dict[str, str] = {}
    with get_client(sync_client=True) as c:
        fr = c.read_flow_run(flow_run_id)
        out["prefect flow-run parameters"] = str(fr.parameters)
        out["prefect flow-run state"] = str(fr.state)
        logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[flow_run_id])))
        out["prefect logs"] = "\n".join(log.message for log in logs)
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        out["prefect artifacts"] = "\n".join(f"{a.data} {a.description}" for a in arts)
    for uri in storage.list_keys(settings.s3_uri("prefect", "results")):
        out[uri] = storage.get_bytes(uri).decode(errors="replace")
    (run,) = mlflow_runs_of(mlflow_client, run_id)
    out["mlflow params"] = str(run.data.params)
    out["mlflow tags"] = str(run.data.tags)
    records = Path(download_artifacts(run_id=run.info.run_id, artifact_path="records",
                                      tracking_uri=settings.require_mlflow()))
    for f in records.glob("*.json"):
        out[f"mlflow records/{f.name}"] = f.read_text()
    return out


def test_secret_never_in_logs_mlflow_or_prefect(killed_run, flow_api, mlflow_client):
    """User sees: `***` or nothing where a credential could have gone: the S3 secret key is in
    no service log, no Ray log, no Prefect parameter/log/artifact/result, no MLflow param/tag."""
    settings, storage = flow_api, Storage.from_settings(flow_api)
    secret = settings.aws_secret_access_key.get_secret_value()  # type: ignore[union-attr]
    state = killed_run["state"]
    texts = _texts_of_run(settings, storage, state.state_details.flow_run_id, mlflow_client,
                          killed_run["run_id"])
    assert any(k.startswith("s3://") for k in texts), "no persisted Prefect result found"
    assert f"epoch {EPOCHS}/{EPOCHS}" in texts["prefect logs"]  # the search covers real logs
    for log in sorted((settings.gan_home / "logs").glob("*.log")):
        texts[str(log)] = log.read_text(errors="replace")
    ray_files = [p for p in Path(killed_run["ray_temp"]).rglob("*")
                 if p.is_file() and not p.is_symlink() and p.stat().st_size < 50_000_000]
    assert any(p.name.startswith("worker") for p in ray_files), "no Ray worker log found"
    for p in ray_files:
        try:
            texts[str(p)] = p.read_bytes().decode(errors="replace")
        except OSError:
            continue
    texts["result"] = repr(state.result()) + repr(killed_run["trained"])
    leaked = [where for where, text in texts.items() if secret in text]
    assert leaked == [], f"the S3 secret appears in {leaked}"
