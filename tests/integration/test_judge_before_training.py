"""A judge that fails its check ends the run before training (issue 22): one smoke flow run on
the real stack (SeaweedFS, MLflow, Prefect; no Ray: nothing trains), run in this process as
`gan retrain --smoke --judge classifier --min-judge-accuracy 1` runs it. The state message names
the flag to change; no checkpoint, no evaluation, no MLflow run or model version exist."""

from __future__ import annotations

import uuid

import pytest
from mlflow import MlflowClient

from gan.core.config import RetrainParams
from gan.core.settings import Settings
from gan.io.storage import Storage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_a_judge_that_fails_its_check_ends_the_run_before_training(stack: Settings) -> None:
    from flows.prefect_setup import use_api

    use_api(stack)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.retrain import retrain  # after use_api: Prefect reads its API URL at import

    model = f"judgefail-{uuid.uuid4().hex[:8]}"
    run_id = f"{model}-run"
    params = RetrainParams.model_validate({
        "preset": "smoke", "run_id": run_id, "registry": {"model_name": model},
        # the smoke preset's 2-epoch classifier judge cannot reach a perfect holdout accuracy
        "eval": {"judge": "classifier", "min_judge_accuracy": 1.0}})
    state = retrain(params, return_state=True)

    assert state.is_failed()
    message = state.message or ""
    assert "prepare_judge failed: no judge of dataset version" in message, message
    assert "nothing was trained" in message
    assert "raise --judge-epochs (eval.judge_epochs, now 2) or lower --min-judge-accuracy " \
           "(eval.min_judge_accuracy, now 1.0)" in message, message
    with get_client(sync_client=True) as c:
        tasks = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[state.state_details.flow_run_id])))
    names = {t.name.split("-")[0]: t for t in tasks}
    assert set(names) == {"prepare_data", "prepare_judge"}, sorted(names)
    assert names["prepare_judge"].run_count == 1  # a judge failure is no storage error
    storage = Storage.from_settings(stack)
    assert storage.list_keys(stack.s3_uri("ray", run_id) + "/") == []  # no checkpoint
    assert storage.list_keys(stack.s3_uri("runs", run_id) + "/") == []  # no evaluation
    mlflow = MlflowClient(tracking_uri=stack.require_mlflow())
    assert mlflow.search_registered_models(f"name = '{model}'") == []
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    assert not experiments or mlflow.search_runs(  # no MLflow run: training never opened one
        experiments, filter_string=f"tags.`gan.run_id` = '{run_id}'") == []


def test_data_prepare_builds_the_judge_and_prints_its_figures(stack: Settings) -> None:
    """`gan data prepare` builds and checks the judge as the flow does; the second time it is
    reused from the cache; a judge that fails is an error naming the flag."""
    from typer.testing import CliRunner

    from gan.cli.main import app

    runner = CliRunner()
    args = ["data", "prepare", "--smoke", "--holdout-fraction", "0.3"]  # a version of its own
    first = runner.invoke(app, args)
    out = " ".join(first.output.split())  # rich wraps long lines
    assert first.exit_code == 0, out
    assert "judge: classifier judge (the data has labels): holdout_accuracy " in out, out
    assert "; trained in " in out and "/judges/" in out
    again = " ".join(runner.invoke(app, args).output.split())
    assert "already stored (reused)" in again and "; reused from the cache in " in again, again
    failed = runner.invoke(app, [*args, "--judge", "classifier", "--min-judge-accuracy", "1"])
    text = " ".join(failed.output.split())
    assert failed.exit_code == 1 and "error:" in text, text
    assert "lower --min-judge-accuracy (eval.min_judge_accuracy, now 1.0)" in text, text
