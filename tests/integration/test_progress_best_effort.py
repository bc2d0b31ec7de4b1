"""The training task's progress artifact, now sent from a best-effort thread, still belongs to
its flow and task run on the real Prefect server and ends at 100 %."""

from __future__ import annotations

import pytest

from gan.core.settings import Settings

pytestmark = pytest.mark.integration


def test_progress_artifact_lands_on_its_task_run(stack: Settings) -> None:
    from flows.prefect_setup import use_api

    use_api(stack)
    from prefect import flow, task  # lazy: after use_api points Prefect at the stack
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.runtime import flow_run

    from flows.retrain import EpochProgress

    @task
    def fake_train() -> None:
        progress = EpochProgress("best-effort-test", total_epochs=5)
        for epoch in range(1, 6):
            progress({"epoch": epoch, "step": epoch, "loss_d": 1.0, "loss_g": 1.0})
        progress.close(timeout_s=30)

    @flow
    def fake_retrain() -> str:
        fake_train()
        return flow_run.get_id()

    run_id = fake_retrain()
    with get_client(sync_client=True) as c:
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    progress = [a for a in arts if a.type == "progress"]
    assert len(progress) == 1 and progress[0].task_run_id is not None
    assert float(progress[0].data) == 100.0 and "5/5" in progress[0].description
