"""Helpers of the reliability suite (kill services for real, run the flow, read back what it
wrote); the fixtures that use them are in this folder's conftest.py."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from gan.core.config import RetrainParams
from gan.core.settings import Settings

GAN_EXE = str(Path(sys.executable).parent / "gan")
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
SERVICES = ("s3", "mlflow", "prefect", "serve", "ray")  # ray: the stack's warm Ray head
# Tiny flow runs: the seed-style MLP of the smoke preset, 200-300 digits, a 2-epoch judge.
RELAXED_GATE = {"require_all_classes": False, "max_class_kl": 100.0, "min_recall_ratio": 0.0}


def unique(tag: str) -> str:
    return f"rel-{tag}-{uuid.uuid4().hex[:6]}"


def smoke_params(model_name: str, run_id: str | None = None, **over: Any) -> RetrainParams:
    """Smoke preset (tiny MLP, judge of 2 epochs) with a relaxed gate, overridable."""
    tree: dict[str, Any] = {"preset": "smoke", "epochs": 2, "gate": RELAXED_GATE,
                            "registry": {"model_name": model_name}, "run_id": run_id}
    tree.update(over)
    return RetrainParams.model_validate(tree)


def wait_until(cond: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.05
               ) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            got = cond()
        except Exception:  # noqa: BLE001 (the thing waited for may fail until it is there)
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(every_s)


# --------------------------------------------------------------------------- processes


def stack_procs(home: Path, name: str) -> list[psutil.Process]:
    """The live process tree of stack service `name` (from its pid file), parent first."""
    try:
        pid = json.loads((home / "run" / f"{name}.pid").read_text())["pid"]
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except (FileNotFoundError, psutil.NoSuchProcess, KeyError, json.JSONDecodeError):
        return []


def sigkill(procs: list[psutil.Process]) -> list[int]:
    """SIGKILL exactly these processes (no grace, no clean-up) and wait until they are gone."""
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=15)
    return [p.pid for p in procs]


class Faults:
    """Kill services of the session stack for real, and bring them back with `gan stack up`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.gan_home.resolve()
        self.killed: list[str] = []

    def kill(self, *names: str) -> list[int]:
        victims = [p for n in names for p in stack_procs(self.home, n)]
        assert victims, f"no running process for {names} in {self.home}"
        self.killed += names
        return sigkill(victims)

    def up(self) -> float:
        """`gan stack up` (as the user would); returns its duration; asserts all healthy."""
        import subprocess

        t0 = time.monotonic()
        r = subprocess.run([GAN_EXE, "stack", "up"], capture_output=True, text=True,
                           timeout=300, stdin=subprocess.DEVNULL, env=dict(os.environ))
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        self.killed.clear()
        return time.monotonic() - t0

    def healthy(self) -> bool:
        from gan.stack.supervisor import status

        return bool(status(self.settings)["healthy"])


def run_flow(params: RetrainParams) -> tuple[Any, float]:
    """The retrain flow in this process (as `gan retrain` runs it): (final state, seconds)."""
    from flows.retrain import retrain

    t0 = time.monotonic()
    state = retrain(params, return_state=True)
    return state, time.monotonic() - t0


def task_runs(flow_run_id: Any) -> dict[str, Any]:
    """{task name without suffix: task run} of one flow run, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as c:
        runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[flow_run_id])))
    return {t.name.split("-")[0].split(" ")[0]: t for t in runs}


def versions_of(client: Any, name: str) -> list[Any]:
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def mlflow_runs_of(client: Any, run_id: str) -> list[Any]:
    """Every MLflow run (any experiment) tagged with pipeline run id `run_id`."""
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, filter_string=f"tags.`gan.run_id` = '{run_id}'")


def aliases(client: Any, name: str) -> dict[str, str]:
    try:
        return dict(client.get_registered_model(name).aliases)
    except Exception:  # noqa: BLE001 (no such model yet: no aliases)
        return {}
