"""The work-pool path (issue 17, point 3), run as README's "Running with a work pool" says:
`prefect work-pool create gan-pool --type process`, `prefect deploy --all` from the project's
`prefect.yaml`, a flow run of `retrain/gan-retrain-pool`, and `prefect worker start --pool
gan-pool` (`--run-once` here) that executes it. The run takes the stack's S3, MLflow and Ray from
the worker's environment and ends COMPLETED with a registered version; the deployment holds no
secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from gan.core.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
PREFECT_EXE = str(Path(sys.executable).parent / "prefect")
MODEL = f"pool-{uuid.uuid4().hex[:8]}"
SMOKE = {"preset": "smoke", "registry": {"model_name": MODEL},
         "gate": {"require_all_classes": False, "max_class_kl": 100.0, "min_recall_ratio": 0.0}}


def _prefect(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    t0 = time.monotonic()
    r = subprocess.run([PREFECT_EXE, "--no-prompt", *args], cwd=ROOT, env=dict(os.environ),
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    print(f"prefect {' '.join(args[:3])}: {time.monotonic() - t0:.0f} s")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_a_worker_runs_the_prefect_yaml_deployment_on_the_stack(stack: Settings) -> None:
    from flows.prefect_setup import use_api

    use_api(stack)
    from prefect.client.orchestration import get_client  # after use_api (reads the API URL)
    from prefect.deployments import run_deployment

    _prefect("work-pool", "create", "gan-pool", "--type", "process")
    _prefect("deploy", "--all", timeout=180)
    fr = run_deployment("retrain/gan-retrain-pool", parameters={"params": SMOKE}, timeout=0)
    try:
        _prefect("worker", "start", "--pool", "gan-pool", "--run-once", timeout=480)
        with get_client(sync_client=True) as c:
            run = c.read_flow_run(fr.id)
            dep = c.read_deployment(run.deployment_id)
        assert run.state is not None and run.state.is_completed(), run.state
        # Nothing secret in what the deployment stores: the worker's environment has the keys.
        secret = json.loads(stack.credentials_file.read_text())["secret_access_key"]
        stored = json.dumps([dep.parameters, dep.job_variables, dep.pull_steps,
                             dep.parameter_openapi_schema], default=str)
        assert secret not in stored and "AWS_SECRET_ACCESS_KEY" not in stored
        mv = MlflowClient(tracking_uri=stack.require_mlflow()).get_model_version(MODEL, "1")
        assert mv.tags["run_id"].startswith(f"{MODEL}-{run.name}-")  # run id ⊃ flow run name
    finally:
        with get_client(sync_client=True) as c:  # no nightly pool runs left in the session
            c.delete_deployment(fr.deployment_id)
