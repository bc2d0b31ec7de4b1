"""Authentication on the session stack: who gets in, and who may change the registry.

- MLflow (basic-auth app), Prefect (API auth string) and Ray (token) refuse anonymous and
  wrong-credential clients; MLflow's and Prefect's health endpoints stay open for probes.
- The read-only consumer identity (`mlflow-consumer.json`, named by `gan stack status`) loads
  `@champion` through the artifact proxy and samples it in a process with only torch and
  MLflow, and gets 403 when it sets an alias, creates a version or deletes one.
- The owner's `gan` commands and Prefect clients work with nothing set in the environment:
  they read the stack's secret files; `gan bench --pull-only --pull-model models:/...@champion`
  pulls as the read-only consumer (as applications do), never as the admin.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from gan.core.config import ModelConfig
from gan.core.settings import Settings
from gan.nets.models import build
from gan.registry import model_format as mm

pytestmark = pytest.mark.integration
CREDS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING")
MODEL_CFG = ModelConfig(arch="dcgan", conditional=False, base_channels=8, latent_dim=12)


def _http(url: str, *, auth: str | None = None, body: dict | None = None,
          method: str = "GET") -> int:
    """HTTP status of one request (`auth`: "user:password" sent as basic auth)."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _identity(path: Path) -> tuple[str, str]:
    d = json.loads(path.read_text())
    return d["username"], d["password"]


def _env_without_credentials() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CREDS}


@pytest.fixture(scope="module")
def champion(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A registered model whose v1 is @champion (published as the owner), and a reference .npz
    of what its G draws."""
    tmp = tmp_path_factory.mktemp("auth_model")
    torch.manual_seed(5)
    G, D = build(MODEL_CFG)
    G.eval()
    uri = stack.require_mlflow()
    c = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    name = f"auth-{uuid.uuid4().hex[:8]}"
    with mlflow.start_run(experiment_id=c.create_experiment(f"{name}-exp")):
        info = mm.log_bundle_model("generator", mm.write_bundle(tmp / "gan_generator",
                                                                MODEL_CFG, G, D))
    c.create_registered_model(name)
    c.create_model_version(name, source=f"models:/{info.model_id}", model_id=info.model_id)
    c.set_registered_model_alias(name, "champion", "1")
    z = torch.randn(4, MODEL_CFG.latent_dim, generator=torch.Generator().manual_seed(1))
    z_req = torch.randn(4, MODEL_CFG.latent_dim, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = {"z": z.numpy(), "x": G(z).numpy(), "x_req": G(z_req).numpy()}
    np.savez(tmp / "ref.npz", **ref)
    return name, tmp / "ref.npz"


def test_mlflow_and_prefect_refuse_anonymous_and_wrong_credentials(stack: Settings) -> None:
    mlflow_uri, prefect = stack.require_mlflow(), stack.require_prefect()
    admin = _identity(stack.mlflow_admin_file)
    search = f"{mlflow_uri}/api/2.0/mlflow/registered-models/search"
    assert _http(search) == 401
    assert _http(search, auth=f"{admin[0]}:wrong-password") == 401
    assert _http(search, auth="nobody:" + admin[1]) == 401
    assert _http(search, auth=":".join(admin)) == 200
    assert _http(f"{mlflow_uri}/health") == 200  # the supervisor's probe needs no identity

    auth_string = stack.prefect_auth_file.read_text().strip()
    flows = f"{prefect}/flows/filter"
    assert _http(flows, body={}, method="POST") == 401
    assert _http(flows, auth=auth_string.split(":")[0] + ":wrong", body={}, method="POST") == 401
    assert _http(flows, auth=auth_string, body={}, method="POST") == 200
    assert _http(f"{prefect}/health") == 200
    # The UI's own settings tell it to ask for the auth string before any API call.
    ui_settings = prefect.removesuffix("/api") + "/ui-settings"
    with urllib.request.urlopen(ui_settings, timeout=30) as r:  # noqa: S310 (loopback)
        assert json.loads(r.read()).get("auth") == "BASIC"


def test_status_names_the_consumer_file_never_a_secret(stack: Settings, gan_cli) -> None:
    st = gan_cli.status()
    assert st["mlflow_consumer_file"] == str(stack.mlflow_consumer_file.resolve())
    text = gan_cli.run("stack", "status")
    assert text.returncode == 0 and "mlflow-consumer.json" in text.stdout.replace("\n", "")
    shown = json.dumps(st) + text.stdout + text.stderr
    for path in (stack.mlflow_admin_file, stack.mlflow_consumer_file):
        assert _identity(path)[1] not in shown
    assert stack.prefect_auth_file.read_text().strip().split(":")[1] not in shown
    for f in (stack.mlflow_admin_file, stack.mlflow_consumer_file, stack.prefect_auth_file):
        assert f.stat().st_mode & 0o077 == 0, f


def test_consumer_pulls_the_champion_but_cannot_change_the_registry(
        stack: Settings, champion, portable_client) -> None:
    name, ref = champion
    consumer = _identity(stack.mlflow_consumer_file)
    results = portable_client([{"uri": f"models:/{name}@champion", "conditional": False,
                                "ref": str(ref)}],
                              tracking_uri=stack.require_mlflow(), identity=consumer)
    assert [r["ok"] for r in results] == [True], results

    api, who = f"{stack.require_mlflow()}/api/2.0/mlflow", ":".join(consumer)
    assert _http(f"{api}/registered-models/alias?name={name}&alias=champion", auth=who) == 200
    refused = {
        "set alias": _http(f"{api}/registered-models/alias", auth=who, method="POST",
                           body={"name": name, "alias": "champion", "version": "1"}),
        "create version": _http(f"{api}/model-versions/create", auth=who, method="POST",
                                body={"name": name, "source": "mlflow-artifacts:/x"}),
        "delete version": _http(f"{api}/model-versions/delete", auth=who, method="DELETE",
                                body={"name": name, "version": "1"}),
        "delete alias": _http(f"{api}/registered-models/alias", auth=who, method="DELETE",
                              body={"name": name, "alias": "champion"}),
    }
    assert refused == dict.fromkeys(refused, 403)
    c = MlflowClient(stack.require_mlflow())  # the owner (the `stack` fixture's identity)
    assert c.get_model_version_by_alias(name, "champion").version == "1"
    assert [v.version for v in c.search_model_versions(f"name='{name}'")] == ["1"]


def test_bench_pulls_the_champion_as_the_read_only_consumer(stack: Settings, champion,
                                                           gan_cli) -> None:
    """`gan bench --pull-only --pull-model models:/<name>@champion` with nothing set in the
    environment (as a user types it): the fresh client process signs in as the stack's
    consumer, loads the version through the artifact proxy and draws 10,000 images."""
    name, _ = champion
    r = gan_cli.run("bench", "--pull-only", "--json", "--pull-model",
                    f"models:/{name}@champion", env=_env_without_credentials(), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    row = json.loads(r.stdout.strip().splitlines()[-1])
    assert row["model"] == "pull" and row["pull_model"] == f"models:/{name}@champion"
    assert row["pull_identity"] == _identity(stack.mlflow_consumer_file)[0] == "gan-consumer"
    assert row["pull_images"] == 10_000 and row["pull_10k_s"] > 0


def test_owner_commands_need_nothing_in_the_environment(stack: Settings, champion, gan_cli,
                                                        tmp_path: Path) -> None:
    name, _ = champion
    env = _env_without_credentials()
    r = gan_cli.run("sample", "--model", f"models:/{name}@champion", "--n", "4",
                    "--npz", str(tmp_path / "s.npz"), env=env)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "s.npz")["x"].shape == (4, 1, 28, 28)
    # A Prefect client set up as every `gan` command does it (Settings → use_api).
    code = ("from gan.core.settings import Settings\n"
            "from flows.prefect_setup import use_api\n"
            "use_api(Settings.load())\n"
            "from prefect import get_client\n"
            "with get_client(sync_client=True) as c:\n"
            "    print(c.read_deployment_by_name('retrain/gan-retrain').name)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0 and r.stdout.strip().endswith("gan-retrain"), r.stderr[-2000:]


_RAY_CLIENT = """
import sys, ray
try:
    ray.init(address=sys.argv[1], log_to_driver=False)
    print("JOINED", ray.cluster_resources().get("CPU"), flush=True)
except Exception as e:
    print("REFUSED", type(e).__name__, str(e)[:300], flush=True)
"""


def _ray_client(address: str, home: Path, **token_env: str) -> subprocess.Popen[str]:
    """`ray.init(address)` in a new process with token auth on and `token_env`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    home.mkdir()
    # A HOME of its own: no default token file (~/.ray/auth_token) to fall back on. Cluster
    # mode off, as for the stack's head: 127.0.0.1 stays loopback (see gan.train.ray.cluster).
    env |= {"RAY_AUTH_MODE": "token", "HOME": str(home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            **token_env}
    return subprocess.Popen([sys.executable, "-c", _RAY_CLIENT, address], env=env, cwd=home,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _outcome(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """What the client printed; a client still waiting for the GCS after `timeout_s` (Ray
    retries a refused handshake until its own timeout) is stopped and reported as such."""
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        out += "\nstill waiting for the GCS when stopped"
    return out


def test_ray_head_refuses_clients_without_the_right_token(stack: Settings,
                                                          tmp_path: Path) -> None:
    address = stack.ray_address
    assert address and stack.ray_from_stack
    token = stack.ray_token_file.read_text().strip()
    # All three at once: the refused ones cost no more wall time than the accepted one.
    clients = {"wrong": _ray_client(address, tmp_path / "wrong", RAY_AUTH_TOKEN="0" * 64),
               "none": _ray_client(address, tmp_path / "none"),
               "right": _ray_client(address, tmp_path / "right", RAY_AUTH_TOKEN=token)}
    out = {name: _outcome(p, 90) for name, p in clients.items()}
    assert "JOINED" in out["right"], out["right"][-2000:]
    for name in ("wrong", "none"):
        assert "JOINED" not in out[name], out[name][-2000:]
    assert "REFUSED AuthenticationError" in out["none"], out["none"][-2000:]
