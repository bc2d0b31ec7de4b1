"""The local stack supervisor: SeaweedFS (S3), the MLflow tracking server, the Prefect server
and, with that server, `gan serve` (the retrain deployment and its schedule), and a warm Ray
head that training joins.

What this module is: three verbs on the plan of `gan.stack.services`: `up` starts
what is not running (detached, loopback only, logs and pid files in GAN_HOME) and waits for
health; `down` stops exactly the processes `up` started; `status` reports URLs and health.
State under GAN_HOME:

    credentials.json (0600)  S3 keys, generated on first start     stack.json  URLs, no secrets
    mlflow-admin.json, mlflow-consumer.json (0600)  MLflow identities: pipeline, read-only
    prefect-auth (0600)      Prefect's API auth string   mlflow/auth.ini, auth.db  MLflow's users
    ray-token (0600)         the Ray head's token (its session files: $TMPDIR/gan-ray-<port>)
    s3-identities.json (0600) SeaweedFS's copy of those keys       logs/<service>.log
    s3/  mlflow/  prefect/   each service's data (kept by `down`)  run/<service>.pid

What it is not: no pipeline logic, no cluster deployment (see infra/), and it never prints a
secret: status shows the credentials FILE, never its values.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import psutil
from pydantic import SecretStr

from gan.core.settings import Settings
from gan.io.jsonio import write_json
from gan.io.storage import Storage, StorageError
from gan.stack import procs
from gan.stack.auth import (
    ADMIN_USER,
    CONSUMER_USER,
    ensure_identity,
    ensure_token,
    fast_password_hashes,
)
from gan.stack.services import (
    STOPS_ITS_CHILDREN,
    Layout,
    Port,
    Service,
    StackError,
    ensure_auth_files,
    mlflow_auth_db,
    plan,
    s3_keys,
    weed_identities,
)

Echo = Callable[[str], None]
RAY_LOCAL = "local (started by training)"  # no head in the stack (shown by older stacks)


# --------------------------------------------------------------------------- up / down


def up(settings: Settings, *, timeout_s: float = 180.0, echo: Echo = print,
       only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Start what is not running, wait until all is healthy, ensure the bucket; return status.

    `only`: start just these services (restore starts SeaweedFS alone to upload the bucket).

    Idempotent: services already running (ours, healthy) are left alone. On failure the
    processes this call started are stopped again and the error names the service and log.
    """
    layout = Layout(settings.gan_home.resolve())
    layout.make()
    keys, services, running = _preflight(settings, layout)
    if only:
        services = [s for s in services if s.name in only]
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
        for s in services:
            if s.name == "mlflow":  # not when `only` leaves it out (restore: SeaweedFS alone)
                _ensure_consumer(settings, s)
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
    keys = s3_keys(settings)
    ensure_auth_files(settings)  # before planning: the services' env names them
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
        write_json(layout.home / "s3-identities.json", weed_identities(keys), private=True)
    if any(s.name == "ray" and not s.external for s in services):
        ensure_token(settings.ray_token_file)
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
    procs.terminate_trees(list(found.values()), grace_s=grace_s,
                          root_only=[p for n, p in found.items() if n in STOPS_ITS_CHILDREN])
    for name in names:
        layout.pid(name).unlink(missing_ok=True)
    return {name: p.pid for name, p in found.items()}


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
        if s.health_url is None or procs.http_ok(s.health_url, local=not s.external,
                                                 headers=s.health_headers):
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


def _ensure_consumer(settings: Settings, mlflow: Service) -> None:
    """The local MLflow's read-only consumer user matches `mlflow-consumer.json` (idempotent)."""
    if mlflow.external:
        return
    from gan.registry import auth as mlflow_auth  # lazy: gan.registry imports MLflow (≈2 s)

    admin = ensure_identity(settings.mlflow_admin_file, ADMIN_USER)
    consumer = ensure_identity(settings.mlflow_consumer_file, CONSUMER_USER)
    try:
        mlflow_auth.ensure_user(mlflow.url, admin, consumer)
    except mlflow_auth.RegistryError as e:
        raise StackError(f"{mlflow.title}: {e}") from None
    fast_password_hashes(mlflow_auth_db(settings.gan_home.resolve()), (admin, consumer))


def rotate_mlflow_admin(settings: Settings, *, echo: Echo = print) -> None:
    """A new password for the local MLflow's admin: set in the running server, then in
    `mlflow-admin.json` and the auth ini. The new file is written aside first, so a failure
    at any step leaves a password that works in one of the two files (the message names it)."""
    mlflow = _by_name(plan(settings), "mlflow")
    rec = None if mlflow.external else procs.read_record(Layout(settings.gan_home.resolve())
                                                         .pid("mlflow"))
    if not (rec and procs.owned(rec)):
        raise StackError("rotate-mlflow-admin needs this stack's MLflow running (`gan stack up`)")
    from gan.registry import auth as mlflow_auth  # lazy: gan.registry imports MLflow (≈2 s)

    path = settings.mlflow_admin_file
    admin = ensure_identity(path, ADMIN_USER)
    pending = path.with_name(path.name + ".new")
    write_json(pending, {"username": admin[0], "password": secrets.token_urlsafe(24)},
               private=True)
    new = ensure_identity(pending, ADMIN_USER)
    try:
        mlflow_auth.change_password(rec.url, admin, admin[0], new[1])
    except mlflow_auth.RegistryError as e:
        pending.unlink(missing_ok=True)
        raise StackError(f"{mlflow.title}: {e}; the old password in {path} still holds") from None
    os.replace(pending, path)
    ensure_auth_files(settings)  # the ini names the new password
    fast_password_hashes(mlflow_auth_db(settings.gan_home.resolve()), (new,))
    echo(f"new MLflow admin password set in the server and in {path}")


def _write_state(settings: Settings, services: list[Service]) -> None:
    """stack.json: the URLs of the services this stack runs (no secrets) for Settings.load()."""
    keys = {"s3": "s3_endpoint", "mlflow": "mlflow_uri", "prefect": "prefect_api_url",
            "ray": "ray_address"}
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
            healthy = health is None or procs.http_ok(health, local=True,
                                                      headers=s.health_headers)
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
        # The read-only MLflow identity for consumers (user name and password; 0600).
        "mlflow_consumer_file": (None if services["mlflow"]["external"]
                                 else str(settings.mlflow_consumer_file.resolve())),
        "mlflow_uri": services["mlflow"]["url"],
        "prefect_api_url": services["prefect"]["url"],
        "prefect_ui_url": services["prefect"]["url"].removesuffix("/api"),
        "ray": services["ray"]["url"] if "ray" in services else RAY_LOCAL,
        "healthy": all(v["healthy"] for v in services.values()),
        "services": services,
    }
