"""Run semantics and needed work on the real stack (issue 15, points 5, 6, 8), with the smoke
recipe (tiny MLP, 200 digits, a 2-epoch judge), the flow run in this process as `gan retrain`
runs it, under the smoke preset's default model name (`gan-<dataset>-smoke`):

  A  3 epochs with a time limit that expires in epoch 1: stopped, evaluated, registered as
     v1 `challenger`, never promoted (reason first in its decision);
  A' the same run id with the time limit lifted: a changed loss is refused naming the field;
     unchanged, it continues from epoch 1 to 3 and publishes v2 from the new checkpoint
     (its own MLflow run); v1 keeps its checkpoint and report; run again, it trains and
     evaluates nothing and returns the same decision, its report untouched;
  B  a new run id on the same data, recipe and code: nothing changed, so no training and no
     new version;
and `gan-digits` (the production name) gets no version from any of them.
"""

from __future__ import annotations

import time
import uuid

import pytest
from mlflow import MlflowClient

from gan.core.config import RetrainParams
from gan.core.records import ModelRef, Unchanged
from gan.core.settings import Settings
from gan.io.storage import Storage
from gan.registry import lineage, run_log

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DATA = f"sem{uuid.uuid4().hex[:6]}"  # a dataset name of its own: model gan-<DATA>-smoke
MODEL = f"gan-{DATA}-smoke"
RELAXED_GATE = {"require_all_classes": False, "max_class_kl": 100.0, "min_recall_ratio": 0.0}


def _params(**over: object) -> RetrainParams:
    tree = {"preset": "smoke", "epochs": 3, "data": {"name": DATA}, "gate": RELAXED_GATE}
    return RetrainParams.model_validate({**tree, **over})


def _versions(c: MlflowClient, name: str) -> list:
    return sorted(c.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


@pytest.fixture(scope="module")
def flow(stack: Settings):
    from flows.prefect_setup import use_api

    use_api(stack)
    from flows.retrain import retrain  # after use_api: Prefect reads its API URL at import

    def run(params: RetrainParams):
        state = retrain(params, return_state=True)
        return state, (state.result() if state.is_completed() else None)

    return run


def test_time_limit_continue_resume_check_and_nothing_changed(stack: Settings, flow) -> None:
    if not lineage.comparable_code(run_log.code_version()):
        pytest.fail(f"code version {run_log.code_version()!r}: commit the changes to gan/, "
                    "flows/, pyproject.toml, constraints.txt; the 'nothing changed' step "
                    "compares code versions (a dirty checkout never equals one)")
    c, storage = MlflowClient(stack.require_mlflow()), Storage.from_settings(stack)
    production_before = len(_versions(c, "gan-digits"))
    run_id = f"{MODEL}-a"

    # A: stopped by the time limit after epoch 1 → registered, never promoted.
    _, a = flow(_params(run_id=run_id, time_limit_s=0.001))
    assert isinstance(a, ModelRef) and a.name == MODEL and a.version == "1"
    assert not a.champion and not a.decision.promote
    assert a.decision.reasons[0].startswith(
        "FAIL: training unfinished (stopped by the time limit after epoch 1 of 3)")
    v1 = c.get_model_version(MODEL, "1")
    assert v1.tags["gan.unfinished"] == "true" and "checkpoint_epoch_00001" in v1.tags[
        "gan.checkpoint_uri"]
    assert c.get_model_version_by_alias(MODEL, "challenger").version == "1"

    # A' with another loss: refused before training, naming the field.
    state, _ = flow(_params(run_id=run_id, loss="wgan-gp"))
    assert state.is_failed()
    assert "train failed: run id" in state.message and "loss 'hinge' → 'wgan-gp'" in state.message

    # A' unchanged, no time limit: continues to epoch 3, publishes v2 from the new checkpoint.
    _, a2 = flow(_params(run_id=run_id))
    assert isinstance(a2, ModelRef) and a2.version == "2" and a2.champion
    assert a2.mlflow_run_id != a.mlflow_run_id
    v1, v2 = c.get_model_version(MODEL, "1"), c.get_model_version(MODEL, "2")
    assert "checkpoint_epoch_00001" in v1.tags["gan.checkpoint_uri"]  # untouched
    assert "checkpoint_epoch_00003" in v2.tags["gan.checkpoint_uri"]
    assert v2.tags["gan.unfinished"] == "false"
    run2 = c.get_run(a2.mlflow_run_id)
    assert run2.data.tags[run_log.CONTINUES_TAG] == a.mlflow_run_id
    assert run2.data.params["train.epochs"] == "3"
    assert storage.exists(stack.s3_uri("runs", run_id, "eval", "report.json"))  # A's
    report3 = stack.s3_uri("runs", run_id, "eval", "epoch_00003", "report.json")
    assert storage.exists(report3)
    assert a2.decision.report_uri == report3

    # A' again, finished and decided: nothing trained or evaluated again, the decision and the
    # report it was made on unchanged (issue 23, item 8: the report used to be overwritten).
    etag = storage.client.head_object(Bucket=stack.s3_bucket, Key=report3.split("/", 3)[3])
    _, again = flow(_params(run_id=run_id))
    assert again == a2
    assert storage.client.head_object(Bucket=stack.s3_bucket, Key=report3.split("/", 3)[3])[
        "ETag"] == etag["ETag"]
    assert not storage.exists(stack.s3_uri("runs", run_id, "eval", "epoch_00003", "2",
                                           "report.json"))

    # B: a new run id, same data, recipe and code as the champion → nothing to do.
    t0 = time.monotonic()
    state, b = flow(_params())
    print(f"nothing-changed run: {time.monotonic() - t0:.1f} s")
    assert isinstance(b, Unchanged), state.message
    assert b.champion_version == "2" and b.reason.startswith("nothing changed since champion v2")
    assert len(_versions(c, MODEL)) == 2  # no new version
    assert not storage.list_keys(stack.s3_uri("ray", b.run_id))  # nothing trained

    assert len(_versions(c, "gan-digits")) == production_before  # smoke stays out of it
