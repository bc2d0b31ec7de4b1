"""Fixtures of the reliability suite: real faults injected into the real stack.

- `ray_local` (package): one local Ray (2 CPUs, loopback, `gan.train.ray.cluster.start_local`, the
  function training uses when no Ray runs) shared by every flow run of the suite; `train()`
  joins it instead of paying a Ray start per run.
- `flow_api` (package): the session `stack`, with this process's Prefect client pointed at it.
- `faults`: kill a stack service for real (SIGKILL its whole process tree, as the OOM killer or
  a power cut would) and bring it back with `gan stack up` (which starts only what is dead);
  after the test the session stack is healthy again whatever happened.
- `mlflow_client`: an MlflowClient on the session stack.

Helpers (`faultlib.py`): `run_flow`, `task_runs`, `wait_until`, `stack_procs`, `sigkill`,
`versions_of`, `mlflow_runs_of`. Every destructive test restarts what it
killed, so the session `stack` survives the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from faultlib import Faults

from gan.core.settings import Settings

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="package")
def ray_local() -> Iterator[Any]:
    """One local Ray for the suite, started like training starts it (loopback only)."""
    from gan.train.ray.cluster import start_local, stop

    session = start_local(num_cpus=2)
    try:
        yield session
    finally:
        stop(session)


@pytest.fixture(scope="package")
def flow_api(stack: Settings) -> Settings:
    """The session stack, with Prefect (and MLflow's fluent API) pointed at it."""
    from flows.prefect_setup import use_api

    use_api(stack)
    return stack


@pytest.fixture
def faults(flow_api: Settings) -> Iterator[Faults]:
    """Kill/restart services; afterwards the session stack is healthy again, whatever failed."""
    f = Faults(flow_api)
    try:
        yield f
    finally:
        if f.killed or not f.healthy():
            f.up()


@pytest.fixture
def mlflow_client(flow_api: Settings):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=flow_api.require_mlflow(),
                        registry_uri=flow_api.require_mlflow())
