"""Scenario 7: every service of the stack SIGKILLed at once (a power cut, an OOM kill) and
brought up again with `gan stack up`: nothing registered or stored is lost.

Runs last in the suite (file name) so that it finds what the other scenarios published; run
alone, it first publishes one small model itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from faultlib import SERVICES, run_flow, sigkill, smoke_params, stack_procs, unique

from gan.apps.sampling import generate
from gan.core.settings import Settings
from gan.data.prepare import MANIFEST_FILE, load_prepared
from gan.io.storage import Storage
from gan.registry import load as registry_load

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _inventory(settings: Settings, client: Any, storage: Storage) -> dict[str, Any]:
    models = {m.name: m for m in client.search_registered_models(max_results=1000)}
    return {
        "versions": {(v.name, v.version, v.run_id, v.source)
                     for name in models for v in client.search_model_versions(f"name = '{name}'")},
        "aliases": {name: dict(m.aliases) for name, m in models.items()},
        "manifests": {u for u in storage.list_keys(settings.s3_uri("datasets"))
                      if u.endswith(MANIFEST_FILE)},
        "mlflow_objects": len(storage.list_keys(settings.s3_uri("mlflow"))),
        "experiments": {e.name for e in client.search_experiments()},
    }


def _pipeline_model(inventory: dict, client: Any) -> tuple[str, dict[str, str]] | None:
    """A model with an alias whose version the pipeline registered (tag run_id), with its
    aliases; None if none (other tests register plain files as versions too)."""
    for name, aliases in sorted(inventory["aliases"].items()):
        if aliases and "run_id" in client.get_model_version(name, min(aliases.values())).tags:
            return name, aliases
    return None


def test_stack_killed_hard_comes_back_with_everything(flow_api: Settings, faults, mlflow_client,
                                                      ray_local: Any) -> None:
    """User sees: after SIGKILL of SeaweedFS, MLflow, Prefect and `gan serve`, `gan stack up`
    reports every service healthy again, and every model version, alias, logged model,
    dataset and Prefect deployment is still there; `load_generator` still samples."""
    storage = Storage.from_settings(flow_api)
    if _pipeline_model(_inventory(flow_api, mlflow_client, storage), mlflow_client) is None:
        state, _ = run_flow(smoke_params(unique("killall"), unique("killall-run")))
        assert state.is_completed(), state.message
    before = _inventory(flow_api, mlflow_client, storage)
    found = _pipeline_model(before, mlflow_client)
    assert found is not None
    name, alias_map = found
    home = flow_api.gan_home.resolve()
    victims = [p for s in SERVICES for p in stack_procs(home, s)]
    assert {s for s in SERVICES if stack_procs(home, s)} == set(SERVICES)
    faults.killed += list(SERVICES)
    sigkill(victims)  # all at once: no service gets to shut down cleanly
    assert not any(stack_procs(home, s) for s in SERVICES)
    secs = faults.up()
    print(f"[kill all] {len(victims)} processes SIGKILLed; `gan stack up` took {secs:.0f} s")
    assert faults.healthy()
    after = _inventory(flow_api, mlflow_client, storage)
    assert after == before
    alias, version = sorted(alias_map.items())[0]
    G = registry_load.load_generator(f"models:/{name}@{alias}", settings=flow_api)
    x = generate(G, 2).x  # (2, C, H, W), labels drawn for conditional models
    assert x.shape[0] == 2 and bool(x.isfinite().all())
    for manifest in sorted(after["manifests"])[:3]:  # tensors still match their sha256
        data = load_prepared(storage, manifest)
        assert len(data.y_train) > 0
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        assert c.read_deployment_by_name("retrain/gan-retrain").name == "gan-retrain"
