"""Scenario 5 (training diverges) and scenario 6 (two retraining runs at once, one model name).

5: lr_g = lr_d = 1.0 (the largest the form accepts) saturates D within a few hundred steps;
   the trainer's divergence check stops the run (patience 200 steps).
6: two flow runs of the same model name started together in two threads of this process (two
   Ray Train runs on one local Ray, one CPU each), seeds 0 and 1.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from faultlib import mlflow_runs_of, run_flow, smoke_params, task_runs, unique, versions_of

from gan.core.settings import Settings
from gan.io.storage import Storage
from gan.registry.publish import version_metrics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_divergence_stops_with_its_reason_and_registers_nothing(flow_api: Settings,
                                                                ray_local: Any,
                                                                mlflow_client) -> None:
    """User sees: "train failed: training run R diverged at step N: D saturated for 200
    consecutive steps (d_real=... > 0.99, d_fake=... < 0.01)"; no model. Its MLflow run (open
    since training started, with the epochs it trained) ended FAILED, naming the divergence."""
    name, run_id = unique("diverge"), unique("diverge-run")
    params = smoke_params(name, run_id, epochs=60, batch_size=8, lr_g=1.0, lr_d=1.0)
    state, secs = run_flow(params)
    print(f"[divergence] {state.type.value} in {secs:.0f} s: {state.message}")
    assert state.is_failed()
    assert f"train failed: training run {run_id} diverged at step" in state.message
    assert "D saturated for 200 consecutive steps" in state.message
    tasks = task_runs(state.state_details.flow_run_id)
    assert set(tasks) == {"prepare_data", "prepare_judge", "train"}
    assert tasks["train"].run_count == 1
    assert mlflow_client.search_registered_models(f"name = '{name}'") == []
    (run,) = mlflow_runs_of(mlflow_client, run_id)
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["gan.failure"]
    assert "train/loss_d" in run.data.metrics  # the epochs before it diverged, live
    storage = Storage.from_settings(flow_api)
    assert not storage.list_keys(flow_api.s3_uri("runs", run_id))  # not even evaluated


@pytest.fixture(scope="module")
def two_runs(flow_api: Settings, ray_local: Any) -> dict[str, Any]:
    name = unique("concurrent")
    ids = [unique("concurrent-a"), unique("concurrent-b")]
    results: dict[str, Any] = {}

    def one(run_id: str, seed: int) -> None:
        results[run_id] = run_flow(smoke_params(name, run_id, epochs=2, seed=seed))

    threads = [threading.Thread(target=one, args=(rid, i)) for i, rid in enumerate(ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    for rid, (state, secs) in results.items():
        print(f"[concurrent] {rid}: {state.type.value} in {secs:.0f} s: {state.message}")
    return {"name": name, "ids": ids, "results": results}


def test_two_runs_at_once_finish_apart_and_champion_is_the_better(two_runs, flow_api,
                                                                  mlflow_client) -> None:
    """User sees: two runs finish, two versions (1 and 2) of the model, each with its own
    MLflow run, checkpoints and report; `champion` is the version the gate prefers (lower
    FID), `challenger` the last registered."""
    name, ids = two_runs["name"], two_runs["ids"]
    for rid in ids:
        state, _ = two_runs["results"][rid]
        assert state.is_completed(), state.message
    versions = versions_of(mlflow_client, name)
    assert [v.version for v in versions] == ["1", "2"]
    assert sorted(v.tags["run_id"] for v in versions) == sorted(ids)
    storage = Storage.from_settings(flow_api)
    for rid in ids:
        (run,) = mlflow_runs_of(mlflow_client, rid)
        # Run-scoped prefixes: everything a run points at lies under its own run id.
        assert run.data.tags["gan.checkpoint_uri"].startswith(flow_api.s3_uri("ray", rid) + "/")
        report = storage.get_json(flow_api.s3_uri("runs", rid, "eval", "report.json"))
        assert report["run_id"] == rid
        other = next(o for o in ids if o != rid)
        assert all(other not in k for k in storage.list_keys(flow_api.s3_uri("ray", rid)))
    promoted = [v for v in versions if v.tags.get("verdict") == "champion"]
    fid = {v.version: version_metrics(mlflow_client, v)["fid"] for v in versions}
    champion = mlflow_client.get_registered_model(name).aliases.get("champion")
    if promoted:
        assert champion == min((v.version for v in promoted), key=fid.__getitem__), (fid,
                                                                                    promoted)
    else:
        assert champion is None
    assert mlflow_client.get_registered_model(name).aliases["challenger"] in ("1", "2")
