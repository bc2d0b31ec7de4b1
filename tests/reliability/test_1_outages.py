"""Scenarios 1, 2 and 4: one run id that meets three outages and is rerun after each.

The chain (one small training in all; every kill is a SIGKILL of the real service process tree,
every restart is `gan stack up`, which starts only what is dead):
  a. the dataset version is written; SeaweedFS killed; run R fails at `prepare_data` after its
     retries (scenario 1);
  b. S3 back; run R again; SeaweedFS killed as soon as epoch 2's checkpoint is in the bucket:
     R fails in `train`, naming the endpoint, nothing registered (scenario 2);
  c. S3 back, MLflow killed; run R again: the dataset is reused, training resumes from the last
     complete checkpoint and finishes, evaluation runs, `register` fails naming the MLflow
     URL, and nothing is registered (scenarios 2 and 4); the run's MLflow run, opened when
     training started in b (FAILED there), holds no model;
  d. MLflow back; run R again: no training (the checkpoints are untouched), exactly one MLflow
     run and one model version (scenario 4).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from faultlib import (
    Faults,
    aliases,
    mlflow_runs_of,
    run_flow,
    smoke_params,
    task_runs,
    unique,
    versions_of,
    wait_until,
)

from gan.core.settings import Settings
from gan.data import prepare as data
from gan.io.storage import Storage
from gan.train.checkpoint import CheckpointError, load_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
EPOCHS = 6


def _etags(storage: Storage, prefix: str) -> dict[str, str]:
    """{uri: ETag} of every object under `prefix` (what changes when an object is rewritten)."""
    bucket = prefix[5:].split("/", 1)[0]
    out = {}
    for uri in storage.list_keys(prefix):
        key = uri[len(f"s3://{bucket}/"):]
        out[uri] = storage.client.head_object(Bucket=bucket, Key=key)["ETag"]
    return out


def _checkpoints(storage: Storage, settings: Settings, run_id: str) -> dict[int, bool]:
    """{epoch: complete?} of every checkpoint folder of run `run_id` in the bucket."""
    out: dict[int, bool] = {}
    for uri in storage.list_keys(settings.s3_uri("ray", run_id)):
        part = next((p for p in uri.split("/") if p.startswith("checkpoint_epoch_")), None)
        if part is None:
            continue
        epoch = int(part.rsplit("_", 1)[1])
        ok = False
        if uri.endswith("/checkpoint.pt"):
            try:
                ok = load_checkpoint(storage.get_bytes(uri))["epoch"] == epoch
            except CheckpointError:
                ok = False
        out[epoch] = out.get(epoch, False) or ok
    return out


def _kill_s3_at_checkpoint(faults: Faults, storage: Storage, uri: str, seen: dict) -> None:
    wait_until(lambda: storage.exists(uri), 600, f"{uri} to appear")
    seen["killed_at"] = time.monotonic()
    faults.kill("s3")


@pytest.fixture(scope="module")
def chain(flow_api: Settings, ray_local: Any) -> dict[str, Any]:
    settings, storage = flow_api, Storage.from_settings(flow_api)
    name, run_id = unique("outage"), unique("outage-run")
    params = smoke_params(name, run_id, epochs=EPOCHS, data={"limit": 240})
    faults, obs = Faults(settings), {"name": name, "run_id": run_id}
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.require_mlflow())
    try:
        # a. the dataset is in the bucket; S3 goes down; the run cannot even prepare its data.
        ref = data.prepare(params.resolve()[0], storage)
        prefix = ref.uri
        obs["dataset_before"] = _etags(storage, prefix)
        faults.kill("s3")
        obs["a"] = run_flow(params)
        obs["a_tasks"] = task_runs(obs["a"][0].state_details.flow_run_id)
        obs["a_up_s"] = faults.up()
        obs["a_versions"] = versions_of(client, name)
        # b. S3 dies while the run uploads its checkpoints.
        seen: dict[str, float] = {}
        killer = threading.Thread(target=_kill_s3_at_checkpoint, daemon=True, args=(
            faults, storage, settings.s3_uri("ray", run_id, "checkpoint_epoch_00002",
                                             "checkpoint.pt"), seen))
        killer.start()
        obs["b"] = run_flow(params)
        killer.join(timeout=60)
        obs["b_killed"] = "killed_at" in seen
        obs["b_up_s"] = faults.up()
        obs["b_checkpoints"] = _checkpoints(storage, settings, run_id)
        obs["b_versions"] = versions_of(client, name)
        obs["b_mlflow_runs"] = mlflow_runs_of(client, run_id)
        # c. MLflow down: the rerun resumes training, evaluates, then cannot register.
        faults.kill("mlflow")
        obs["c"] = run_flow(params)
        obs["c_tasks"] = task_runs(obs["c"][0].state_details.flow_run_id)
        obs["c_up_s"] = faults.up()
        obs["c_trained"] = storage.get_json(settings.s3_uri("ray", run_id, "trained.json"))
        obs["c_ray_files"] = _etags(storage, settings.s3_uri("ray", run_id))
        obs["c_versions"] = versions_of(client, name)
        obs["c_aliases"] = aliases(client, name)
        obs["c_mlflow_runs"] = mlflow_runs_of(client, run_id)
        # d. everything back: rerunning registers the trained run, once, without training.
        obs["d"] = run_flow(params)
        obs["d_ray_files"] = _etags(storage, settings.s3_uri("ray", run_id))
        obs["d_versions"] = versions_of(client, name)
        obs["d_mlflow_runs"] = mlflow_runs_of(client, run_id)
        obs["dataset_after"] = _etags(storage, prefix)
        obs["dataset_version"] = ref.version
    finally:
        if faults.killed or not faults.healthy():
            faults.up()
    for step in "abcd":
        state, secs = obs[step]
        print(f"[outages] {step}: {state.type.value} in {secs:.0f} s: {state.message}")
    return obs


def test_s3_down_while_preparing_retries_names_endpoint_then_reuses(chain, flow_api):
    """User sees: the run fail at prepare_data after 3 retries (2 s, 5 s, 10 s) with
    "prepare_data failed: S3 endpoint http://127.0.0.1:<port> unreachable ..."; after
    `gan stack up`, the rerun of the same run id finishes on the dataset written before."""
    state, _ = chain["a"]
    assert state.is_failed()
    assert "prepare_data failed: S3 endpoint" in state.message
    assert flow_api.s3_endpoint_url in state.message
    assert chain["a_tasks"]["prepare_data"].run_count == 4  # 1 + 3 retries with backoff
    assert set(chain["a_tasks"]) == {"prepare_data"}  # nothing after it ran
    assert chain["a_versions"] == []
    assert chain["d"][0].is_completed()
    # The stored version was reused: not one object of it was rewritten.
    assert chain["dataset_after"] == chain["dataset_before"] != {}
    run = chain["d_mlflow_runs"][0]
    assert run.data.tags["gan.dataset.version"] == chain["dataset_version"]


def test_s3_down_mid_checkpoint_fails_clearly_then_resumes_from_a_complete_one(chain, flow_api):
    """User sees: "train failed: S3 endpoint http://127.0.0.1:<port> failed while training run
    R; rerun with run id R to resume from its last complete checkpoint"; no model; the rerun
    logs "resumed from checkpoint at epoch k" with k a complete checkpoint."""
    state, _ = chain["b"]
    assert chain["b_killed"], "S3 was not killed during training"
    assert state.is_failed()
    assert "train failed:" in state.message
    assert f"127.0.0.1:{flow_api.s3_port}" in state.message  # the endpoint is named
    assert chain["b_versions"] == []
    # Its MLflow run, open since training started, ended FAILED naming the endpoint.
    (b_run,) = chain["b_mlflow_runs"]
    assert b_run.info.status == "FAILED" and b_run.data.tags.get("gan.failure")
    trained = chain["c_trained"]
    resumed = trained["resumed_from_epoch"]
    complete = {e for e, ok in chain["b_checkpoints"].items() if ok}
    assert resumed >= 2 and resumed in complete, (resumed, chain["b_checkpoints"])
    assert trained["epochs_completed"] == EPOCHS
    # The final checkpoint is whole and is the one published.
    assert chain["d_mlflow_runs"][0].data.tags["gan.checkpoint_uri"] == trained["checkpoint_uri"]


def test_mlflow_down_at_register_then_rerun_publishes_exactly_one_version(chain, flow_api):
    """User sees: "register failed: MLflow tracking server http://127.0.0.1:<port> unreachable
    after 3 attempts ...; nothing was registered" (after the task's 2 retries); no alias moved;
    after `gan stack up` the rerun publishes version 1, without training again."""
    state, _ = chain["c"]
    assert state.is_failed()
    assert "register failed: MLflow tracking server" in state.message
    assert flow_api.require_mlflow() in state.message
    tasks = chain["c_tasks"]
    assert tasks["train"].state.is_completed() and tasks["evaluate"].state.is_completed()
    assert tasks["register"].run_count == 3  # 1 + 2 retries
    assert chain["c_versions"] == [] and chain["c_aliases"] == {}
    # Only the run's MLflow run from before (MLflow was down for this attempt): no model in it.
    assert [r.info.run_id for r in chain["c_mlflow_runs"]] == [
        r.info.run_id for r in chain["b_mlflow_runs"]]
    assert "gan.model_id" not in chain["c_mlflow_runs"][0].data.tags
    done, _ = chain["d"]
    assert done.is_completed(), done.message
    model = done.result()
    assert [v.version for v in chain["d_versions"]] == [model.version] == ["1"]
    assert len(chain["d_mlflow_runs"]) == 1  # the same MLflow run all along
    assert chain["d_mlflow_runs"][0].info.run_id == chain["b_mlflow_runs"][0].info.run_id
    assert chain["d_versions"][0].run_id == chain["d_mlflow_runs"][0].info.run_id
    # No retraining: the run's files (checkpoints, trained.json) were not touched.
    assert chain["d_ray_files"] == chain["c_ray_files"]
