"""The local stack supervisor: SeaweedFS (S3), the MLflow tracking server, the Prefect server
and, with that server, `gan serve` (the retrain deployment and its schedule).

What this module is: a small list of service specs (`plan`) and three verbs on it: `up` starts
what is not running (detached, loopback only, logs and pid files in GAN_HOME) and waits for
health; `down` stops exactly the processes `up` started; `status` reports URLs and health.
State under GAN_HOME:

    credentials.json (0600)  S3 keys, generated on first start     stack.json  URLs, no secrets
    s3-identities.json (0600) SeaweedFS's copy of those keys       logs/<service>.log
    s3/  mlflow/  prefect/   each service's data (kept by `down`)  run/<service>.pid

What it is not: no pipeline logic, no cluster deployment (see infra/), and it never prints a
secret: status shows the credentials FILE, never its values.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from shutil import which
from typing import Any

import psutil
from pydantic import SecretStr

from gan.core.deployment import DEPLOYMENT_NAME, deployment_health_url
from gan.core.settings import Settings
from gan.io.jsonio import read_json, write_json
from gan.io.storage import Storage, StorageError
from gan.stack import procs

Echo = Callable[[str], None]
RAY_LOCAL = "local (started by training)"
# SeaweedFS's parts, at GAN_S3_PORT + index; each also opens gRPC at +10000.
WEED_ROLES = ("S3", "master", "volume", "filer", "admin")
GRPC_OFFSET = 10_000


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
    env: Mapping[str, str] = field(default_factory=dict)  # added to the child's env only
    ports: tuple[Port, ...] = ()
    needs: tuple[str, ...] = ()  # services that must be healthy before this one starts

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
    }
    if keys:
        env |= {"AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1]}
    argv = (
        _tool("mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{settings.s3_bucket}/mlflow", "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(settings.mlflow_port), "--workers", "1",
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
    return Service("serve", f"deployment retrain/{DEPLOYMENT_NAME}",
                   f"{ui}/deployments", deployment_health_url(prefect.url),
                   (_tool("gan"), "serve", *_schedule_args(settings.serve_cron)), env,
                   needs=("s3", "mlflow", "prefect"))


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path, default={})
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise StackError(f"{path} is not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------- up / down


def up(settings: Settings, *, timeout_s: float = 180.0, echo: Echo = print) -> dict[str, Any]:
    """Start what is not running, wait until all is healthy, ensure the bucket; return status.

    Idempotent: services already running (ours, healthy) are left alone. On failure the
    processes this call started are stopped again and the error names the service and log.
    """
    layout = Layout(settings.gan_home.resolve())
    layout.make()
    keys, services, running = _preflight(settings, layout)
    to_start = [s for s in services if not s.external and s.name not in running]
    deadline = time.monotonic() + timeout_s
    started: list[Service] = []
    try:
        for s in services:
            for dep in s.needs:
                _wait_healthy(layout, _by_name(services, dep), deadline, timeout_s)
            if s in to_start:
                rec = procs.spawn(s.argv, s.env, cwd=layout.home, log=layout.log(s.name),
                                  pid_file=layout.pid(s.name), url=s.url)
                started.append(s)
                echo(f"started {s.title} (pid {rec.pid}), log {layout.log(s.name)}")
            elif s.name in running:
                echo(f"{s.title} already running (pid {running[s.name].pid})")
        for s in services:
            _wait_healthy(layout, s, deadline, timeout_s)
        _ensure_bucket(settings, services[0].url, keys)
    except BaseException:
        _stop(layout, [s.name for s in started], grace_s=10.0)
        raise
    _write_state(settings, services)
    return status(settings)


def _preflight(
    settings: Settings, layout: Layout
) -> tuple[tuple[str, str], list[Service], dict[str, procs.ProcRecord]]:
    """Keys, plan and what already runs; every port check before anything starts."""
    if not settings.s3_external and not settings.credentials_file.exists():
        rec = procs.read_record(layout.pid("s3"))
        if rec and procs.owned(rec):  # new keys would not match the running SeaweedFS
            raise StackError(f"{settings.credentials_file} vanished while SeaweedFS runs with "
                             "the old keys; run `gan stack down` then `gan stack up`")
    keys = _s3_keys(settings)
    services = plan(settings, keys)
    _check_port_plan(services)
    running = {s.name: r for s in services if not s.external and (r := _running(layout, s))}
    for s in services:
        if s.name in running and running[s.name].url != s.url:
            raise StackError(f"{s.title} already runs at {running[s.name].url}, not {s.url}; "
                             "run `gan stack down` first to change its port")
        if s.name not in running:
            for port in s.ports:
                if not procs.port_free(port.number):
                    raise StackError(port.busy_message())
    if "s3" not in running and not settings.s3_external:
        write_json(layout.home / "s3-identities.json", _weed_identities(keys), private=True)
    return keys, services, running


def down(settings: Settings, *, grace_s: float = 15.0, echo: Echo = print) -> list[str]:
    """Stop the processes `up` started (pid files), SIGTERM then SIGKILL; data stays."""
    layout = Layout(settings.gan_home.resolve())
    run_dir = layout.home / "run"
    # Every pid file, not only today's plan: a service dropped from the plan still gets stopped.
    names = sorted(p.stem for p in run_dir.glob("*.pid")) if run_dir.exists() else []
    stopped = _stop(layout, names, grace_s=grace_s)
    for name, pid in stopped.items():
        echo(f"stopped {name} (pid {pid})")
    if not stopped:
        echo(f"nothing was running from {layout.home}")
    return list(stopped)


def _stop(layout: Layout, names: list[str], *, grace_s: float) -> dict[str, int]:
    """Stop the named services that are still ours (all at once); remove their pid files."""
    found: dict[str, psutil.Process] = {}
    for name in names:
        rec = procs.read_record(layout.pid(name))
        if rec and (proc := procs.owned(rec)):
            found[name] = proc
    procs.terminate_trees(list(found.values()), grace_s=grace_s)
    for name in names:
        layout.pid(name).unlink(missing_ok=True)
    return {name: p.pid for name, p in found.items()}


def _s3_keys(settings: Settings) -> tuple[str, str]:
    if settings.s3_external:
        _, key, secret = settings.require_s3()
        return key, secret
    return ensure_credentials(settings.credentials_file)


def _weed_identities(keys: tuple[str, str]) -> dict[str, Any]:
    creds = [{"accessKey": keys[0], "secretKey": keys[1]}]
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    return {"identities": [{"name": "gan", "credentials": creds, "actions": actions}]}


def _check_port_plan(services: list[Service]) -> None:
    seen: dict[int, Port] = {}
    for port in (p for s in services for p in s.ports):
        if port.number in seen:
            other = seen[port.number]
            raise StackError(f"port {port.number} is wanted by both {other.what} "
                             f"({other.env_var}) and {port.what} ({port.env_var}); change one")
        seen[port.number] = port


def _running(layout: Layout, s: Service) -> procs.ProcRecord | None:
    """The live record of our process for `s`; a stale pid file is removed."""
    rec = procs.read_record(layout.pid(s.name))
    if rec and procs.owned(rec):
        return rec
    layout.pid(s.name).unlink(missing_ok=True)
    return None


def _by_name(services: list[Service], name: str) -> Service:
    for s in services:
        if s.name == name:
            return s
    raise StackError(f"unknown service {name!r} in `needs`")


def _wait_healthy(layout: Layout, s: Service, deadline: float, timeout_s: float) -> None:
    while True:
        if not s.external:
            rec = procs.read_record(layout.pid(s.name))
            if not (rec and procs.owned(rec)):
                raise StackError(f"{s.title} exited while starting; see {layout.log(s.name)}")
            if s.health_url is None:
                return
        if s.health_url is None or procs.http_ok(s.health_url, local=not s.external):
            return
        if time.monotonic() > deadline:
            where = f"see its log {layout.log(s.name)}" if not s.external else "is the URL right?"
            raise StackError(f"{s.title} at {s.url} not healthy after {timeout_s:.0f}s; {where}")
        time.sleep(0.3)


def _ensure_bucket(settings: Settings, endpoint: str, keys: tuple[str, str]) -> None:
    """Create the bucket (weed's -bucket does it locally; this also covers external stores)."""
    s = settings.model_copy(update={
        "s3_endpoint_url": endpoint,
        "aws_access_key_id": SecretStr(keys[0]),
        "aws_secret_access_key": SecretStr(keys[1]),
    })
    try:
        Storage.from_settings(s).ensure_bucket()
    except StorageError as e:
        raise StackError(f"bucket {settings.s3_bucket!r}: {e}") from None


def _write_state(settings: Settings, services: list[Service]) -> None:
    """stack.json: the URLs of the services this stack runs (no secrets) for Settings.load()."""
    keys = {"s3": "s3_endpoint", "mlflow": "mlflow_uri", "prefect": "prefect_api_url"}
    state = {keys[s.name]: s.url for s in services if s.name in keys and not s.external}
    write_json(settings.state_file, state)


# --------------------------------------------------------------------------- status


def status(settings: Settings) -> dict[str, Any]:
    """URLs, health and pids of every service; JSON-serialisable, never a secret."""
    layout = Layout(settings.gan_home.resolve())
    services: dict[str, Any] = {}
    for s in plan(settings):
        rec = None if s.external else procs.read_record(layout.pid(s.name))
        live = rec if rec and procs.owned(rec) else None
        url = live.url if live else s.url
        if s.external:
            healthy = s.health_url is None or procs.http_ok(s.health_url, local=False)
        elif live is None:
            healthy = False
        else:
            health = s.health_url.replace(s.url, url, 1) if s.health_url else None
            healthy = health is None or procs.http_ok(health, local=True)
        services[s.name] = {
            "title": s.title, "url": url, "healthy": healthy, "external": s.external,
            "pid": live.pid if live else None,
            "log_file": None if s.external else str(layout.log(s.name)),
        }
    return {
        "gan_home": str(layout.home),
        "s3_endpoint": services["s3"]["url"],
        "bucket": settings.s3_bucket,
        "credentials_file": None if settings.s3_external else str(layout.home / "credentials.json"),
        "mlflow_uri": services["mlflow"]["url"],
        "prefect_api_url": services["prefect"]["url"],
        "prefect_ui_url": services["prefect"]["url"].removesuffix("/api"),
        "ray": settings.ray_address or RAY_LOCAL,
        "healthy": all(v["healthy"] for v in services.values()),
        "services": services,
    }
