"""Scenario 8 (issue 18, load): 16 application replicas pull `@champion` while a retrain moves it.

A barely trained version 1 (learning rates 1e-6: G stays near its random start) is champion.
Then 16 consumer processes (`gan.tools.load_bench.run_load`: fresh Pythons, torch threads 1,
no `gan` imported, the environment of `consumer_env` only: no storage keys) each loop
`mlflow.pyfunc.load_model("models:/<name>@champion")` + `predict({"n": 16, "seed": 0})`; at
the same time a smoke retrain (10 epochs of batch 8, normal learning rates) starts, registers
version 2 and moves `champion` to it. The consumers run 60 s, and on until the alias moved
5 s ago (hard cap 240 s). Asserted: 0 errors; every load is a complete, registered, READY
version (right shape, finite, one digest per version across all consumers, only versions 1
and 2); no consumer goes back to 1 after it saw 2; at least one consumer saw both. The
figures (p50/p99 load latency, loads/s) are printed and written to `load_summary.json`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from faultlib import RELAXED_GATE, aliases, run_flow, smoke_params, unique, versions_of

from gan.core.settings import Settings
from gan.stack.auth import identity_env
from gan.tools.load_bench import run_load

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
CONSUMERS, DURATION_S, SETTLE_S, MAX_S = 16, 60.0, 5.0, 240.0
_SERVICE_VARS = ("GAN_", "AWS_", "MLFLOW_", "PREFECT_", "RAY_")


def consumer_env(stack: Settings) -> dict[str, str]:
    """What each consumer process gets: an application's environment, i.e. this one without
    the pipeline's paths, service variables or keys, plus the MLflow server's URI and the
    stack's read-only consumer identity (MLFLOW_TRACKING_USERNAME/PASSWORD)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_SERVICE_VARS) and k != "PYTHONPATH"}
    consumer = identity_env(stack.mlflow_consumer_file)
    assert consumer, f"no consumer identity in {stack.mlflow_consumer_file}"
    return env | {"MLFLOW_TRACKING_URI": stack.require_mlflow()} | consumer


def test_16_consumers_pull_the_champion_while_a_retrain_moves_it(
        flow_api: Settings, ray_local: Any, mlflow_client, tmp_path: Path) -> None:
    name = unique("load")
    state, secs = run_flow(smoke_params(name, unique("load-v1"), epochs=1, lr_g=1e-6,
                                        lr_d=1e-6))
    print(f"[load] version 1: {state.type.value} in {secs:.0f} s")
    assert state.is_completed(), state.message
    assert aliases(mlflow_client, name).get("champion") == "1"

    retrain: dict[str, Any] = {}
    # ~200 steps at the normal learning rates: far better than version 1; noise_k 0 so the
    # gate promotes on the better mean FID alone (this test is about load, not the gate).
    v2 = smoke_params(name, unique("load-v2"), epochs=10, batch_size=8,
                      gate=RELAXED_GATE | {"noise_k": 0.0})
    thread = threading.Thread(target=lambda: retrain.update(v2=run_flow(v2)))
    moved: dict[str, float] = {}
    polled = [0.0]

    def stop(elapsed: float) -> bool:
        if "at" not in moved and elapsed - polled[0] >= 1.0:
            polled[0] = elapsed
            if aliases(mlflow_client, name).get("champion") not in (None, "1"):
                moved["at"] = elapsed
        if elapsed < DURATION_S:
            return False
        if "at" not in moved:  # a retrain that ended without moving it fails below
            return not thread.is_alive() and elapsed - polled[0] < 1.0
        return elapsed >= moved["at"] + SETTLE_S

    t0 = time.monotonic()
    thread.start()  # first: under the consumers' load the retrain takes minutes on 2 cores
    load = run_load(f"models:/{name}@champion", env=consumer_env(flow_api),
                    workdir=tmp_path / "consumers", consumers=CONSUMERS, stop=stop, max_s=MAX_S)
    thread.join(timeout=600)
    wall = time.monotonic() - t0
    summary = load.summary() | {"alias_moved_at_s": moved.get("at"), "wall_s": round(wall, 1),
                                "mlflow_workers": flow_api.mlflow_workers}
    out = tmp_path / "load_summary.json"
    out.write_text(json.dumps(summary, indent=1))
    print(f"[load] {json.dumps(summary)}\n[load] figures in {out}")

    state2, secs2 = retrain["v2"]
    print(f"[load] version 2 (retrain under load): {state2.type.value} in {secs2:.0f} s")
    assert state2.is_completed(), state2.message
    assert aliases(mlflow_client, name).get("champion") == "2", "the retrain did not promote"
    assert load.errors == [], load.errors[:3]
    assert load.exit_codes == [0] * CONSUMERS, load.stderr_tails
    versions = {v.run_id: v for v in versions_of(mlflow_client, name)}
    assert {v.version for v in versions.values()} == {"1", "2"}
    seen: dict[int, list[str]] = {}
    digests: dict[str, set[str]] = {}
    for r in load.loads:
        v = versions.get(r["run_id"])
        assert v is not None, f"a load came from MLflow run {r['run_id']}: no version of {name}"
        assert v.status == "READY"
        assert r["shape"] == r["want_shape"] == [16, 1, 28, 28] and r["dtype"] == "float32"
        assert r["finite"]
        seen.setdefault(r["consumer"], []).append(v.version)
        digests.setdefault(v.version, set()).add(r["digest"])
    assert all(len(d) == 1 for d in digests.values()), "one version drew different samples"
    assert len(seen) == CONSUMERS and sum(map(len, seen.values())) >= CONSUMERS
    for got in seen.values():
        assert got == sorted(got), f"a consumer went back to version 1 after 2: {got}"
    saw_both = sum(1 for got in seen.values() if {"1", "2"} <= set(got))
    print(f"[load] {saw_both} of {CONSUMERS} consumers loaded version 1, then version 2")
    assert saw_both >= 1
