"""The retrain flow end to end on the real stack: SeaweedFS, MLflow server, Prefect server,
a local Ray started by training.

Two real trainings (smoke preset, tiny MLP) under one fresh model name:
  1. a deployment run, created through the Prefect API as the UI's Run button does, executed
     by `gan serve --no-schedule` in a subprocess: 20 epochs at lr 1e-3, gate relaxed on the
     class rules (the smoke judge is too weak for them) → `champion`;
  2. `gan retrain` in a subprocess, deliberately worse (1 epoch at lr 1e-6; FID measured at
     ~12 against ~5.5 for run 1) → `challenger` only, refused by the FID rule, and its
     prepare_data is a cache hit of run 1 (another process: the cache lives in the bucket).
Invalid parameters fail before any task runs; a failing stage names itself; nothing of a
failed run is registered.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import torch
from mlflow import MlflowClient

from gan.core.config import RetrainParams
from gan.core.settings import Settings
from gan.io.storage import Storage
from gan.registry import load as registry_load
from gan.registry import publish as registry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

GAN_EXE = str(Path(sys.executable).parent / "gan")
MODEL = f"flowtest-{uuid.uuid4().hex[:8]}"
DEPLOYMENT = f"flowtest-{uuid.uuid4().hex[:8]}"
# A holdout share no other module uses: its own dataset version, so run 1's prepare_data is
# computed here and not a cache hit of an earlier module's smoke run (gan bench's, in CI).
HOLDOUT = 0.25
GOOD = {"preset": "smoke", "epochs": 20, "lr_g": 1e-3, "lr_d": 1e-3,
        "data": {"holdout_fraction": HOLDOUT}, "registry": {"model_name": MODEL},
        "gate": {"require_all_classes": False, "max_class_kl": 100.0, "min_recall_ratio": 0.0}}
WORSE_ARGS = ("--smoke", "--epochs", "1", "--lr-g", "1e-6", "--lr-d", "1e-6",
              "--model-name", MODEL, "--max-class-kl", "100", "--holdout-fraction", str(HOLDOUT))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client(stack: Settings):
    from flows.prefect_setup import use_api

    use_api(stack)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        yield c


@pytest.fixture(scope="module")
def served(stack: Settings, client, tmp_path_factory):
    """`gan serve --no-schedule --name <unique>` in a subprocess until the module ends."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([GAN_EXE, "serve", "--no-schedule", "--name", DEPLOYMENT],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ))
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                dep = client.read_deployment_by_name(f"retrain/{DEPLOYMENT}")
                break
            except Exception:  # ObjectNotFound until `serve` has registered it
                assert proc.poll() is None, f"gan serve exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no deployment:\n{log.read_text()}"
                time.sleep(2)
        assert dep.schedules == [] and dep.entrypoint == "flows.retrain.retrain"
        yield dep
    finally:
        _stop_tree(proc)


def _stop_tree(proc: subprocess.Popen) -> None:
    """Stop the serve process we started and whatever it started (flow runs, Ray)."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=30)
    for p in alive:
        p.kill()


def _task_runs(client, flow_run_id) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
        any_=[flow_run_id])))


def _artifacts(client, flow_run_id) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    return client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def _deployment_runs(client, deployment_id) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(
        any_=[deployment_id])))
    return sorted(str(r.id) for r in runs)


def _flow_run_named(client, name: str):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
        name=FlowRunFilterName(any_=[name])))
    assert len(runs) == 1, [r.name for r in runs]
    return runs[0]


@pytest.fixture(scope="module")
def first_run(stack: Settings, client, served):
    """Run 1: a deployment run started through the API, as the UI's Run button does."""
    from prefect.deployments import run_deployment

    t0 = time.monotonic()
    fr = run_deployment(f"retrain/{DEPLOYMENT}", parameters={"params": GOOD}, timeout=900)
    print(f"deployment run {fr.name}: {time.monotonic() - t0:.0f} s")
    assert fr.state.is_completed(), fr.state.message
    return fr


@pytest.fixture(scope="module")
def second_run(stack: Settings, client, first_run):
    """Run 2: `gan retrain` from the command line, deliberately worse than run 1."""
    run_id = f"{MODEL}-worse"
    t0 = time.monotonic()
    r = subprocess.run([GAN_EXE, "retrain", *WORSE_ARGS, "--run-id", run_id],
                       capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    print(f"gan retrain (worse): {time.monotonic() - t0:.0f} s")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return run_id, r.stdout


# --------------------------------------------------------------------------- tests


def test_deployment_run_publishes_a_champion(stack: Settings, client, first_run):
    c = MlflowClient(tracking_uri=stack.require_mlflow())
    mv = c.get_model_version_by_alias(MODEL, "champion")
    assert c.get_model_version_by_alias(MODEL, "challenger").version == mv.version
    # The flow run keeps the name it got at creation (the UI's toast, the runs list); the run
    # id, made from it when the run started, contains it: nobody renamed the flow run since.
    run_id = mv.tags["run_id"]
    assert run_id.startswith(f"{MODEL}-{first_run.name}-"), (run_id, first_run.name)
    run = c.get_run(mv.run_id)
    assert run.data.tags["prefect.flow_run_id"] == str(first_run.id)
    assert run.data.params["train.epochs"] == "20" and run.data.params["preset"] == "smoke"
    # Its files are in the bucket: checkpoint, evaluation, and the logged model via MLflow.
    storage = Storage.from_settings(stack)
    mlflow_keys = storage.list_keys(stack.s3_uri("mlflow"))
    model_id = run.data.tags[registry.MODEL_ID_TAG]  # the logged model behind the version
    assert mv.source == f"models:/{model_id}"
    assert any(model_id in k and k.endswith("MLmodel") for k in mlflow_keys)
    assert storage.exists(run.data.tags["gan.checkpoint_uri"])
    assert storage.exists(stack.s3_uri("runs", run_id, "eval", "report.json"))
    # ... and consumers sample from it.
    G = registry_load.load_generator(f"models:/{MODEL}@champion", settings=stack)
    with torch.no_grad():
        x = G(torch.randn(4, G.latent_dim))
    assert x.shape == (4, 1, 28, 28) and torch.isfinite(x).all()


def test_completed_run_shows_progress_summary_and_samples(stack: Settings, client, first_run):
    arts = {a.type: a for a in _artifacts(client, first_run.id)}
    assert set(arts) >= {"progress", "markdown", "image"}
    assert float(arts["progress"].data) == 100.0
    assert "epoch 20/20" in arts["progress"].description
    md = arts["markdown"].data
    assert arts["markdown"].key == f"{MODEL}-report"
    assert "**promoted**" in md and "| FID ↓ |" in md and "PASS: no champion" in md
    assert f"{stack.require_mlflow()}/#/models/{MODEL}/versions/1" in md
    # The sample grid is an MLflow artifact URL: behind MLflow's basic auth (a browser signed
    # in to MLflow shows it; here the pipeline's identity from the stack's files).
    assert stack.mlflow_tracking_username and stack.mlflow_tracking_password
    basic = base64.b64encode(f"{stack.mlflow_tracking_username}:"
                             f"{stack.mlflow_tracking_password.get_secret_value()}".encode())
    req = urllib.request.Request(arts["image"].data,
                                 headers={"Authorization": "Basic " + basic.decode()})
    with urllib.request.urlopen(req, timeout=30) as r:  # the sample grid
        assert r.headers["Content-Type"] == "image/png" and r.read(8) == b"\x89PNG\r\n\x1a\n"
    secret = stack.aws_secret_access_key.get_secret_value()  # type: ignore[union-attr]
    assert all(secret not in str(a.data) + str(a.description) for a in arts.values())
    params = client.read_flow_run(first_run.id).parameters
    assert secret not in str(params) and params["params"]["epochs"] == 20


def test_worse_run_stays_challenger_and_reuses_the_dataset(stack: Settings, client,
                                                           first_run, second_run):
    run_id, out = second_run
    assert f"registered models:/{MODEL}/2: not promoted" in out
    c = MlflowClient(tracking_uri=stack.require_mlflow())
    assert c.get_model_version_by_alias(MODEL, "champion").version == "1"
    assert c.get_model_version_by_alias(MODEL, "challenger").version == "2"
    v2 = c.get_model_version(MODEL, "2")
    assert v2.tags["verdict"] == "rejected"  # the reasons read in its model card
    assert "FAIL: FID" in v2.description and "vs champion v1 re-scored" in v2.description
    fr = _flow_run_named(client, run_id)
    states = {t.name.split("-")[0]: t.state.name for t in _task_runs(client, fr.id)}
    assert states["prepare_data"] == "Cached"  # run 1's result, read from the bucket
    first = {t.name.split("-")[0]: t for t in _task_runs(client, first_run.id)}
    assert first["prepare_data"].state.name == "Completed"
    assert Storage.from_settings(stack).list_keys(stack.s3_uri("prefect", "results"))


def test_invalid_parameters_are_rejected_before_any_task(stack: Settings, client, served):
    from prefect.deployments import run_deployment

    from flows.retrain import retrain

    before = _deployment_runs(client, served.id)
    with pytest.raises(Exception, match=r"params\.epochs.*-1 is less than the minimum of 1"):
        run_deployment(f"retrain/{DEPLOYMENT}", parameters={"params": {"epochs": -1}},
                       timeout=0)
    assert _deployment_runs(client, served.id) == before  # the API refused to create a run
    # Valid field by field, invalid together: the flow fails before its first task.
    state = retrain(RetrainParams.model_validate({"data": {"image_size": 30}}),
                    return_state=True)
    assert state.is_failed()
    assert "invalid retrain parameters: model: model.image_size 30 must be divisible by 4" in (
        state.message)
    assert _task_runs(client, state.state_details.flow_run_id) == []


def test_failed_stage_is_named_and_registers_nothing(stack: Settings, client, tmp_path):
    from flows.retrain import retrain

    name = f"{MODEL}-failed"
    params = RetrainParams.model_validate({
        "preset": "smoke", "data": {"source": "npz", "uri": str(tmp_path / "missing.npz")},
        "registry": {"model_name": name}})
    state = retrain(params, return_state=True)
    assert state.is_failed()
    assert f"prepare_data failed: {tmp_path / 'missing.npz'}: cannot read" in state.message
    tasks = _task_runs(client, state.state_details.flow_run_id)
    assert [t.name.split("-")[0] for t in tasks] == ["prepare_data"]
    assert tasks[0].run_count == 1  # a bad file is not a storage error: no retries
    assert MlflowClient(tracking_uri=stack.require_mlflow()).search_registered_models(
        f"name = '{name}'") == []
