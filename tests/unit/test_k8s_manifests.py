"""infra/k8s: the manifests parse, and carry what the code relies on.

Env var names are the ones `gan.core.settings.Settings` reads (plus Ray's own RAY_AUTH_MODE and
RAY_AUTH_TOKEN); secrets come from the Secret (never inline); the GPU group requests GPUs and the
CPU group none; rayVersion and the image's Ray match the installed Ray's major.minor; the
Secret/ConfigMap example defines every key used. What the multi-node test proves, the manifests
carry: token authentication on every Ray container (head, workers, the autoscaler) and the
flow-run pods, the token from the Secret `gan-ray-token`, never a literal; workers placed by the
custom resource the flow-run pods request (GAN_RAY_WORKER_RESOURCE), offered by every worker
group and not by the head; a default recipe that survives a lost worker (train.max_failures).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import ray
import yaml
from pydantic import AliasChoices

from gan.core.config import TrainConfig
from gan.core.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"
SECRET_VARS = {"GAN_S3_ENDPOINT_URL", "GAN_S3_BUCKET", "AWS_ACCESS_KEY_ID",
               "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
CONFIG_VARS = {"MLFLOW_TRACKING_URI", "PREFECT_API_URL"}
RAY_AUTH_VARS = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}  # read by Ray itself on every process
TOKEN_SECRET = {"name": "gan-ray-token", "key": "RAY_AUTH_TOKEN"}


def settings_env_names() -> set[str]:
    names = set()
    for f in Settings.model_fields.values():
        if isinstance(f.validation_alias, AliasChoices):
            names.update(str(c) for c in f.validation_alias.choices)
    return names


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def one(name: str, kind: str) -> dict[str, Any]:
    found = [d for d in docs(name) if d["kind"] == kind]
    assert len(found) == 1, f"{name}: expected one {kind}"
    return found[0]


def major_minor(version: str) -> str:
    m = re.match(r"(\d+)\.(\d+)", version)
    assert m, version
    return f"{m[1]}.{m[2]}"


def ray_pods() -> list[dict[str, Any]]:
    spec = one("raycluster.yaml", "RayCluster")["spec"]
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


def containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


def test_every_manifest_parses() -> None:
    files = sorted(K8S.glob("*.yaml"))
    assert {f.name for f in files} >= {"raycluster.yaml", "gan-settings.example.yaml",
                                       "prefect-worker.yaml"}
    for f in files:
        assert all("apiVersion" in d and "kind" in d for d in docs(f.name)), f.name
    json.loads((K8S / "prefect-base-job-template.json").read_text())


def test_raycluster_shape_and_ray_version() -> None:
    rc = one("raycluster.yaml", "RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    assert major_minor(rc["spec"]["rayVersion"]) == major_minor(ray.__version__)
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    assert rc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    # Every image carries our Ray version in its tag (the Dockerfile's base decides it).
    for group in ray_pods():
        for c in containers(group):
            tag = c["image"].rsplit(":", 1)[1]
            assert f"ray{major_minor(ray.__version__)}" in tag, c["image"]


def test_gpu_group_requests_gpus_and_cpu_group_none() -> None:
    groups = {g["groupName"]: g for g in one("raycluster.yaml", "RayCluster")["spec"][
        "workerGroupSpecs"]}
    gpu = containers(groups["gpu"])[0]["resources"]
    assert int(gpu["limits"]["nvidia.com/gpu"]) >= 1
    assert int(groups["gpu"]["rayStartParams"]["num-gpus"]) == int(gpu["limits"]["nvidia.com/gpu"])
    cpu = containers(groups["cpu"])[0]["resources"]
    assert "nvidia.com/gpu" not in cpu.get("limits", {})
    assert int(groups["cpu"]["rayStartParams"]["num-cpus"]) <= int(cpu["limits"]["cpu"])


def test_ray_pods_get_the_settings_gan_reads_from_secret_and_configmap() -> None:
    known = settings_env_names()
    secret = one("gan-settings.example.yaml", "Secret")
    config = one("gan-settings.example.yaml", "ConfigMap")
    for group in ray_pods():
        for c in containers(group):
            env = {e["name"]: e for e in c["env"]}
            extra = set(env) - known - RAY_AUTH_VARS
            assert not extra, f"{sorted(extra)} are not read by gan.core.config nor Ray's auth"
            assert SECRET_VARS | CONFIG_VARS <= set(env)
            for name in SECRET_VARS:
                ref = env[name]["valueFrom"]["secretKeyRef"]
                assert "value" not in env[name]  # never inline
                assert ref["name"] == secret["metadata"]["name"]
                assert ref["key"] in secret["stringData"]
            for name in CONFIG_VARS:
                ref = env[name]["valueFrom"]["configMapKeyRef"]
                assert ref["name"] == config["metadata"]["name"] and ref["key"] in config["data"]
            # RAY_ADDRESS belongs to the flow-run pods, never to the Ray pods themselves.
            assert "RAY_ADDRESS" not in env


def test_settings_example_and_flow_run_pods() -> None:
    secret = one("gan-settings.example.yaml", "Secret")
    config = one("gan-settings.example.yaml", "ConfigMap")
    known = settings_env_names()
    assert set(secret["stringData"]) == SECRET_VARS
    assert set(config["data"]) <= known | RAY_AUTH_VARS and "RAY_ADDRESS" in config["data"]
    head = one("raycluster.yaml", "RayCluster")["metadata"]["name"]
    assert config["data"]["RAY_ADDRESS"].startswith(f"ray://{head}-head-svc:")
    template = json.loads((K8S / "prefect-base-job-template.json").read_text())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    env_from = pod["containers"][0]["envFrom"]
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in env_from
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in env_from


def test_dockerfile_ray_matches_installed() -> None:
    text = (K8S / "Dockerfile").read_text()
    m = re.search(r"^ARG RAY_IMAGE=rayproject/ray:(\S+)$", text, re.M)
    assert m, "Dockerfile must pin its Ray base image"
    assert major_minor(m[1]) == major_minor(ray.__version__)


def _env_entries(node: Any) -> list[dict[str, Any]]:
    """Every `{name: ..., value/valueFrom: ...}` entry anywhere in a parsed manifest."""
    if isinstance(node, dict):
        own = [node] if "name" in node and ("value" in node or "valueFrom" in node) else []
        return own + [e for v in node.values() for e in _env_entries(v)]
    if isinstance(node, list):
        return [e for v in node for e in _env_entries(v)]
    return []


def _token_auth(env: list[dict[str, Any]], where: str) -> None:
    by_name = {e["name"]: e for e in env}
    assert by_name.get("RAY_AUTH_MODE", {}).get("value") == "token", where
    token = by_name.get("RAY_AUTH_TOKEN")
    assert token is not None and "value" not in token, where  # never a literal
    assert token["valueFrom"] == {"secretKeyRef": TOKEN_SECRET}, where


def test_ray_token_from_a_secret_on_head_workers_and_autoscaler() -> None:
    rc = one("raycluster.yaml", "RayCluster")
    for group in ray_pods():
        for c in containers(group):
            _token_auth(c["env"], f"{group.get('groupName', 'head')}/{c['name']}")
            assert "RAY_AUTH_TOKEN_PATH" not in {e["name"] for e in c["env"]}
    _token_auth(rc["spec"]["autoscalerOptions"]["env"], "autoscaler")
    # No manifest carries a token: RAY_AUTH_TOKEN is only ever a Secret reference, and
    # neither the example Secret nor the ConfigMap holds one.
    for f in sorted(K8S.glob("*.yaml")):
        for e in _env_entries(docs(f.name)):
            if e["name"] == "RAY_AUTH_TOKEN":
                assert "value" not in e, f.name
    for d in docs("gan-settings.example.yaml"):
        assert "RAY_AUTH_TOKEN" not in {**d.get("data", {}), **d.get("stringData", {})}


def test_flow_run_pods_join_with_the_token_and_request_the_worker_resource() -> None:
    config = one("gan-settings.example.yaml", "ConfigMap")["data"]
    assert config["RAY_AUTH_MODE"] == "token"
    template = json.loads((K8S / "prefect-base-job-template.json").read_text())
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert {"secretRef": {"name": TOKEN_SECRET["name"]}} in pod["containers"][0]["envFrom"]
    # Settings accepts the resource name the flow-run pods get.
    assert Settings(GAN_RAY_WORKER_RESOURCE=config["GAN_RAY_WORKER_RESOURCE"]
                    ).ray_worker_resource == config["GAN_RAY_WORKER_RESOURCE"]


def _offered(group: dict[str, Any]) -> dict[str, float]:
    raw = group["rayStartParams"].get("resources")
    return json.loads(json.loads(raw)) if raw else {}  # KubeRay's quoted JSON string


def test_workers_placed_by_the_custom_resource_and_survive_a_lost_worker() -> None:
    resource = one("gan-settings.example.yaml", "ConfigMap")["data"]["GAN_RAY_WORKER_RESOURCE"]
    spec = one("raycluster.yaml", "RayCluster")["spec"]
    assert resource not in _offered(spec["headGroupSpec"])  # nothing trains on the head
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    for name, g in groups.items():
        offered = _offered(g)
        assert offered.get(resource, 0) >= 1, name
    # As many workers as the pod has CPUs for (1 CPU each), and one per GPU.
    cpu = groups["cpu"]
    assert _offered(cpu)[resource] <= int(cpu["rayStartParams"]["num-cpus"])
    gpu = groups["gpu"]
    assert _offered(gpu)[resource] == int(gpu["rayStartParams"]["num-gpus"])
    # The default recipe restarts the worker group after a lost worker pod.
    assert TrainConfig().max_failures >= 1
