"""The local stack's services as data: what runs, on which ports, with which files and keys.

What this module is: `Service` / `Port` / `Layout` specs; `plan(settings)`, the services in
start order (SeaweedFS, MLflow, Prefect and, with that server, `gan serve`; then a warm Ray
head that training attaches to), one builder each; the local S3 credentials
(`ensure_credentials`, generated once, 0600) and SeaweedFS's copy of them, and the Ray head's
token (`gan.stack.auth.ensure_token`, 0600). Planning starts nothing: `gan.stack.supervisor`
runs it.

What it is not: no processes, no health checks (`gan.stack.supervisor`, `gan.stack.procs`),
and it never prints a secret.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from shutil import which
from typing import Any

from gan.core.deployment import DEPLOYMENT_NAME, deployment_health_url
from gan.core.settings import Settings
from gan.io.jsonio import read_json, write_json
from gan.stack import auth

# SeaweedFS's parts, at GAN_S3_PORT + index; each also opens gRPC at +10000.
WEED_ROLES = ("S3", "master", "volume", "filer", "admin")
GRPC_OFFSET = 10_000
# Services whose own process stops its children on SIGTERM (`ray start --block` tears its
# node down): `down` signals only that process first (see `procs.terminate_trees`).
STOPS_ITS_CHILDREN = frozenset({"ray"})


class StackError(RuntimeError):
    """The stack cannot start or stop; the message names the service, port or file."""


@dataclass(frozen=True)
class Port:
    number: int
    what: str  # "MLflow", "SeaweedFS master gRPC"
    env_var: str  # the variable that moves it
    derived: str = ""  # how the number follows from env_var, when it is not env_var itself

    def busy_message(self) -> str:
        how = f" ({self.derived})" if self.derived else ""
        return f"port {self.number} ({self.what}) is in use; set {self.env_var} to a free port{how}"


@dataclass(frozen=True)
class Service:
    """One process of the stack, or (argv empty) an external service only shown in status."""

    name: str  # key of pid/log files and of status["services"]
    title: str
    url: str  # what clients use
    health_url: str | None  # GET answering 200 = healthy; None: a live process is healthy
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # the child's env only
    ports: tuple[Port, ...] = ()
    needs: tuple[str, ...] = ()  # services that must be healthy before this one starts
    # Headers of the health GET (e.g. Prefect's API auth for `gan serve`'s deployment probe).
    health_headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def external(self) -> bool:
        return not self.argv


@dataclass(frozen=True)
class Layout:
    """Where the stack keeps its files (all under GAN_HOME)."""

    home: Path

    def log(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def pid(self, name: str) -> Path:
        return self.home / "run" / f"{name}.pid"

    def make(self) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("logs", "run", "s3", "mlflow", "prefect"):
            (self.home / sub).mkdir(exist_ok=True)


# --------------------------------------------------------------------------- specs


def plan(settings: Settings, keys: tuple[str, str] | None = None) -> list[Service]:
    """The services of the stack, in start order, from one Settings.

    `keys` (S3 key id, secret) go into MLflow's environment; None when only planning for
    `status`/`down`. To add a service (e.g. issue 6's `gan serve` deployment server), write a
    builder returning a `Service` (argv, env, ports, health URL or None, `needs=("prefect",)`)
    and append it here: `up`, `down` and `status` handle it with no other change.
    """
    home = settings.gan_home.resolve()
    state = _read_json(settings.state_file)
    s3 = _s3_service(settings, home)
    services = [
        s3,
        _mlflow_service(settings, home, s3.url, keys, state.get("mlflow_uri")),
        _prefect_service(settings, home, state.get("prefect_api_url")),
    ]
    if not services[2].external:  # a shared Prefect server gets its deployments elsewhere
        services.append(_serve_service(settings, home, services, keys))
    services.append(_ray_service(settings, state.get("ray_address")))
    return services


def _s3_service(settings: Settings, home: Path) -> Service:
    if settings.s3_external:
        assert settings.s3_endpoint_url
        # Reachable is all we can ask of any S3 endpoint; `up` also checks keys and bucket.
        url = settings.s3_endpoint_url
        return Service("s3", "S3 (external)", url, url)
    p = settings.s3_port
    if p + GRPC_OFFSET + len(WEED_ROLES) - 1 > 65535:
        raise StackError(
            f"GAN_S3_PORT={p} is too high: SeaweedFS also binds GAN_S3_PORT+{GRPC_OFFSET}.."
            f"+{GRPC_OFFSET + 4}; use at most {65535 - GRPC_OFFSET - 4}"
        )
    how = f"SeaweedFS binds GAN_S3_PORT+0..4 and +{GRPC_OFFSET}..{GRPC_OFFSET + 4}"
    ports = tuple(Port(p + i, f"SeaweedFS {r}", "GAN_S3_PORT", how if i else "")
                  for i, r in enumerate(WEED_ROLES))
    ports += tuple(Port(x.number + GRPC_OFFSET, f"{x.what} gRPC", x.env_var, how) for x in ports)
    flags = {
        "dir": home / "s3", "ip": "127.0.0.1", "ip.bind": "127.0.0.1",
        "s3.port": p, "master.port": p + 1, "volume.port": p + 2, "filer.port": p + 3,
        "admin.port": p + 4,  # without it weed opens fixed admin ports (23646, 33646)
        "webdav": "false", "admin.ui": "false", "s3.port.iceberg": 0, "s3.port.lance": 0,
        "master.telemetry": "false", "s3.config": home / "s3-identities.json",
        "bucket": settings.s3_bucket,
    }
    argv = (_tool("weed"), "mini", *(f"-{k}={v}" for k, v in flags.items()))
    url = f"http://127.0.0.1:{p}"
    return Service("s3", "SeaweedFS S3", url, f"{url}/healthz", argv, ports=ports)


def _mlflow_service(
    settings: Settings, home: Path, s3_url: str, keys: tuple[str, str] | None, recorded: Any
) -> Service:
    local = f"http://127.0.0.1:{settings.mlflow_port}"
    uri = settings.mlflow_tracking_uri
    if _is_external(uri, local, recorded):
        assert uri
        health = f"{uri}/health" if uri.startswith("http") else None
        return Service("mlflow", "MLflow (external)", uri, health)
    env = {
        # Artifacts are proxied: only this process talks to S3, so clients need no keys.
        "MLFLOW_S3_ENDPOINT_URL": s3_url,
        "AWS_DEFAULT_REGION": settings.aws_default_region,
        # The job runner (8 extra processes, ~700 MB) serves GenAI jobs this project never uses.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # The basic-auth app's config (admin identity, user database, READ by default): a 0600
        # file written by `up` (gan.stack.auth), so no secret is in argv.
        "MLFLOW_AUTH_CONFIG_PATH": str(mlflow_auth_ini(home)),
    }
    if (flask_key := mlflow_flask_key(home)).is_file():  # signs the auth app's CSRF tokens
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = flask_key.read_text().strip()
    if keys:
        env |= {"AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1]}
    argv = (
        _tool("mlflow"), "server",
        "--app-name", "basic-auth",
        "--backend-store-uri", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{settings.s3_bucket}/mlflow", "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(settings.mlflow_port),
        "--workers", str(settings.mlflow_workers),
    )
    ports = (Port(settings.mlflow_port, "MLflow", "GAN_MLFLOW_PORT"),)
    return Service("mlflow", "MLflow tracking server", local, f"{local}/health", argv, env, ports)


def _prefect_service(settings: Settings, home: Path, recorded: Any) -> Service:
    local = f"http://127.0.0.1:{settings.prefect_port}/api"
    uri = settings.prefect_api_url
    if _is_external(uri, local, recorded):
        assert uri
        return Service("prefect", "Prefect (external)", uri, f"{uri}/health")
    db = home / "prefect" / "prefect.db"
    env = {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{db}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(settings.prefect_port),
        "DO_NOT_TRACK": "1",
    }
    if (auth_string := read_prefect_auth(settings)) is not None:  # `up` writes it first
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
    argv = (
        _tool("prefect"), "server", "start", "--host", "127.0.0.1",
        "--port", str(settings.prefect_port), "--analytics-off",
    )
    ports = (Port(settings.prefect_port, "Prefect", "GAN_PREFECT_PORT"),)
    return Service("prefect", "Prefect server", local, f"{local}/health", argv, env, ports)


def _serve_service(settings: Settings, home: Path, services: list[Service],
                   keys: tuple[str, str] | None) -> Service:
    """`gan serve`: the retrain deployment with its nightly schedule (see `flows.deploy`).

    Healthy once the deployment exists in this stack's Prefect server. Its flow runs read
    Settings from GAN_HOME like any command; the URLs are passed explicitly because
    `procs.child_env` scrubs them (and the S3 keys, needed here only for an external store).
    """

    _, mlflow, prefect = services
    env = {"GAN_HOME": str(home), "PREFECT_HOME": str(home / "prefect"),
           "PREFECT_API_URL": prefect.url, "MLFLOW_TRACKING_URI": mlflow.url}
    if settings.s3_external and keys:
        env |= {"AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1]}
    ui = prefect.url.removesuffix("/api")
    auth_string = read_prefect_auth(settings)
    headers = ({"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}
               if auth_string else {})
    return Service("serve", f"deployment retrain/{DEPLOYMENT_NAME}",
                   f"{ui}/deployments", deployment_health_url(prefect.url),
                   (_tool("gan"), "serve", *_schedule_args(settings.serve_cron)), env,
                   needs=("s3", "mlflow", "prefect"), health_headers=headers)


def _ray_service(settings: Settings, recorded: Any) -> Service:
    """A warm Ray head on 127.0.0.1:GAN_RAY_PORT that every training run joins (a run no
    longer starts and stops a Ray of its own, ~10-20 s each).

    Token authentication on (the token in GAN_HOME/ray-token, 0600, never in argv or env),
    no dashboard, every Ray server bound to loopback (Ray's cluster mode off: see
    `gan.train.ray.cluster._loopback_node_ip`), GAN_RAY_CPUS CPUs (default: all), workers at
    nice 0 like a local Ray started by training. Healthy once its GCS port accepts connections.
    With RAY_ADDRESS set to another cluster, that cluster is shown instead and none is started.
    """
    local = f"127.0.0.1:{settings.ray_port}"
    address = settings.ray_address
    if address and not settings.ray_from_stack and address not in (local, recorded):
        return Service("ray", "Ray cluster (RAY_ADDRESS)", address, None)
    cpus = settings.ray_cpus or os.cpu_count() or 1
    env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(settings.ray_token_file.resolve()),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # one node, servers on 127.0.0.1
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    argv = (
        _tool("ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={settings.ray_port}", f"--num-cpus={cpus}", "--include-dashboard=false",
        "--disable-usage-stats",
        # Ray's socket paths must fit 107 bytes: a short session dir, one per port.
        f"--temp-dir={Path(tempfile.gettempdir()) / f'gan-ray-{settings.ray_port}'}",
        "--system-config=" + json.dumps({"worker_niceness": 0}),
    )
    ports = (Port(settings.ray_port, "Ray GCS", "GAN_RAY_PORT"),)
    return Service("ray", f"Ray head ({cpus} CPU)", local, f"tcp://{local}", argv, env, ports)


def _schedule_args(cron: str) -> tuple[str, ...]:
    """`gan serve` flags for GAN_SERVE_CRON: "off" → no schedule, else that cron."""
    return ("--no-schedule",) if cron.strip().lower() in {"off", "none", ""} else ("--cron", cron)


def _is_external(uri: str | None, local: str, recorded: Any) -> bool:
    """Set by the user to something other than this stack's own URL (now or as last recorded)."""
    return bool(uri) and uri not in (local, recorded)


def _tool(name: str) -> str:
    """The executable installed beside this Python (the venv), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else which(name)
    if not found:
        raise StackError(f"`{name}` is not installed next to {sys.executable} nor on PATH; "
                         "run `make install`")
    return found


# --------------------------------------------------------------------------- credentials


def ensure_credentials(path: Path) -> tuple[str, str]:
    """The local S3 keys: read from `path`, or generated (python `secrets`) and written 0600."""
    if path.exists():
        os.chmod(path, 0o600)  # tighten a copy restored with looser bits
        data = _read_json(path)
        try:
            return str(data["access_key_id"]), str(data["secret_access_key"])
        except KeyError as e:
            raise StackError(f"{path} lacks {e}; restore it, or delete it and GAN_HOME/s3 "
                             "to start afresh") from None
    keys = (secrets.token_hex(10).upper(), secrets.token_urlsafe(30))
    write_json(path, {"access_key_id": keys[0], "secret_access_key": keys[1]}, private=True)
    return keys


def mlflow_auth_ini(home: Path) -> Path:
    """MLflow's basic-auth config (MLFLOW_AUTH_CONFIG_PATH), rewritten by every `up`."""
    return home / "mlflow" / "auth.ini"


def mlflow_flask_key(home: Path) -> Path:
    """The auth app's Flask secret key (MLFLOW_FLASK_SERVER_SECRET_KEY), 0600."""
    return home / "mlflow" / "flask-secret-key"


def mlflow_auth_db(home: Path) -> Path:
    """MLflow's user database (users, passwords' hashes, permissions)."""
    return home / "mlflow" / "auth.db"


def ensure_auth_files(settings: Settings) -> None:
    """The local MLflow's admin and consumer identities, its auth ini, and the Prefect auth
    string: kept when present, else generated 0600 (gan.stack.auth)."""
    home = settings.gan_home.resolve()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    admin = auth.ensure_identity(settings.mlflow_admin_file, auth.ADMIN_USER)
    auth.ensure_identity(settings.mlflow_consumer_file, auth.CONSUMER_USER)
    auth.write_mlflow_auth_ini(mlflow_auth_ini(home), db=mlflow_auth_db(home), admin=admin)
    auth.ensure_token(mlflow_flask_key(home))
    auth.ensure_prefect_auth(settings.prefect_auth_file)


def read_prefect_auth(settings: Settings) -> str | None:
    """The local Prefect server's auth string, None before the first `up`."""
    path = settings.prefect_auth_file
    return path.read_text().strip() if path.is_file() else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path, default={})
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise StackError(f"{path} is not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}



def s3_keys(settings: Settings) -> tuple[str, str]:
    """The S3 keys the stack uses: the environment's for an external store, else the local ones."""
    if settings.s3_external:
        _, key, secret = settings.require_s3()
        return key, secret
    return ensure_credentials(settings.credentials_file)


def weed_identities(keys: tuple[str, str]) -> dict[str, Any]:
    """SeaweedFS's identities file (s3-identities.json) granting `keys` full access."""
    creds = [{"accessKey": keys[0], "secretKey": keys[1]}]
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    return {"identities": [{"name": "gan", "credentials": creds, "actions": actions}]}
