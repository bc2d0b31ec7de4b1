"""The stack's plan, credentials and process plumbing, without starting any service.

The process tests use `sleep` under `bash` (a parent with a child), not a service.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import psutil
import pytest

from gan.core.settings import MLFLOW_WORKERS_DEFAULT, MLFLOW_WORKERS_MAX, SettingsError
from gan.io.jsonio import write_json
from gan.stack import auth, procs, services
from gan.stack import supervisor as stack
from gan.stack.services import StackError


def _by_name(services):
    return {s.name: s for s in services}


def test_plan_binds_loopback_and_derives_weed_ports(settings_env):
    settings_env.set(GAN_S3_PORT="20000", GAN_MLFLOW_PORT="21000", GAN_PREFECT_PORT="21001")
    s = settings_env.load()
    svc = _by_name(services.plan(s, ("KEYID", "SECRETVALUE")))
    assert list(svc) == ["s3", "mlflow", "prefect", "serve", "ray"]  # serve: with local Prefect
    weed = svc["s3"]
    assert sorted(p.number for p in weed.ports) == [*range(20000, 20005), *range(30000, 30005)]
    assert weed.url == "http://127.0.0.1:20000"
    for flag in ("-ip.bind=127.0.0.1", "-ip=127.0.0.1", "-admin.port=20004", "-webdav=false",
                 "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                 "-master.telemetry=false", "-bucket=gan", f"-dir={s.gan_home.resolve() / 's3'}"):
        assert flag in weed.argv
    ml = svc["mlflow"]
    assert ml.argv[ml.argv.index("--host") + 1] == "127.0.0.1"
    assert ml.argv[ml.argv.index("--workers") + 1] == str(MLFLOW_WORKERS_DEFAULT)
    assert ml.argv[ml.argv.index("--artifacts-destination") + 1] == "s3://gan/mlflow"
    assert ml.env["AWS_SECRET_ACCESS_KEY"] == "SECRETVALUE"
    assert ml.env["MLFLOW_S3_ENDPOINT_URL"] == weed.url
    pf = svc["prefect"]
    assert pf.url == "http://127.0.0.1:21001/api"
    assert pf.env["PREFECT_HOME"].startswith(str(s.gan_home.resolve()))
    assert str(s.gan_home.resolve()) in pf.env["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert pf.env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    # Secrets only in MLflow's env: never in an argv (visible in `ps`), nor in other envs.
    for service in svc.values():
        assert not any("SECRETVALUE" in a for a in service.argv)
    assert "AWS_SECRET_ACCESS_KEY" not in weed.env and "AWS_SECRET_ACCESS_KEY" not in pf.env


def test_mlflow_workers_follow_the_setting(settings_env):
    """GAN_MLFLOW_WORKERS is the `--workers` of the stack's `mlflow server`; unset: the default
    picked from `gan bench --load`; out of range: an error naming the variable."""
    ml = _by_name(services.plan(settings_env.load()))["mlflow"]
    assert ml.argv[ml.argv.index("--workers") + 1] == str(MLFLOW_WORKERS_DEFAULT)
    for n in ("1", "3", str(MLFLOW_WORKERS_MAX)):
        settings_env.set(GAN_MLFLOW_WORKERS=n)
        ml = _by_name(services.plan(settings_env.load()))["mlflow"]
        assert ml.argv[ml.argv.index("--workers") + 1] == n
        assert ml.argv.count("--workers") == 1
    for bad in ("0", "-2", str(MLFLOW_WORKERS_MAX + 1), "two"):
        settings_env.set(GAN_MLFLOW_WORKERS=bad)
        with pytest.raises(SettingsError, match="GAN_MLFLOW_WORKERS"):
            settings_env.load()


def test_external_services_are_not_started(settings_env):
    settings_env.set(GAN_S3_ENDPOINT_URL="https://minio.example:9000",
                     MLFLOW_TRACKING_URI="http://mlflow.example:5000",
                     PREFECT_API_URL="http://prefect.example:4200/api",
                     RAY_ADDRESS="ray-head.example:6379")
    svc = _by_name(services.plan(settings_env.load()))
    assert all(s.external and not s.argv and not s.ports for s in svc.values())
    assert svc["ray"].url == "ray-head.example:6379"
    assert svc["s3"].url == "https://minio.example:9000"


def test_urls_of_this_stack_are_not_external(settings_env):
    """The test session exports MLFLOW_TRACKING_URI of its own stack: a 2nd `up` must not
    mistake it for a user's server; nor the URL recorded by an earlier `up` on other ports."""
    home = settings_env.gan_home
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({"prefect_api_url": "http://127.0.0.1:4999/api"}))
    settings_env.set(GAN_MLFLOW_PORT="21000", MLFLOW_TRACKING_URI="http://127.0.0.1:21000",
                     GAN_PREFECT_PORT="21001")
    svc = _by_name(services.plan(settings_env.load()))
    assert not svc["mlflow"].external and not svc["prefect"].external
    assert svc["prefect"].url == "http://127.0.0.1:21001/api"


def test_ray_head_on_loopback_with_token_file_and_capped_cpus(settings_env):
    settings_env.set(GAN_RAY_PORT="21002", GAN_RAY_CPUS="2")
    s = settings_env.load()
    ray = _by_name(services.plan(s))["ray"]
    assert not ray.external and ray.url == "127.0.0.1:21002"
    assert ray.health_url == "tcp://127.0.0.1:21002"
    assert [p.number for p in ray.ports] == [21002] and ray.ports[0].env_var == "GAN_RAY_PORT"
    for flag in ("start", "--head", "--block", "--node-ip-address=127.0.0.1", "--port=21002",
                 "--num-cpus=2", "--include-dashboard=false"):
        assert flag in ray.argv
    # Token auth from a file in GAN_HOME: the path in the env, never the token itself.
    assert ray.env["RAY_AUTH_MODE"] == "token"
    assert ray.env["RAY_AUTH_TOKEN_PATH"] == str(s.ray_token_file.resolve())
    assert ray.env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # Ray's loopback switch


def test_ray_address_from_stack_state_is_marked(settings_env):
    home = settings_env.gan_home
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({"ray_address": "127.0.0.1:21002"}))
    s = settings_env.load()
    assert s.ray_address == "127.0.0.1:21002" and s.ray_from_stack
    settings_env.set(RAY_ADDRESS="head.example:6379")  # the environment wins, not a fallback
    s = settings_env.load()
    assert s.ray_address == "head.example:6379" and not s.ray_from_stack
    assert _by_name(services.plan(s))["ray"].external


def test_ray_token_generated_once_private(tmp_path: Path):
    path = tmp_path / "ray-token"
    auth.ensure_token(path)
    token = path.read_text()
    assert len(token) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    auth.ensure_token(path)
    assert path.read_text() == token and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_tcp_health_probe():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert procs.http_ok(f"tcp://127.0.0.1:{port}", local=True)
    assert not procs.http_ok(f"tcp://127.0.0.1:{port}", local=True)


def test_s3_port_too_high_is_named(settings_env):
    settings_env.set(GAN_S3_PORT="60000")
    with pytest.raises(StackError, match="GAN_S3_PORT=60000.*at most 55531"):
        services.plan(settings_env.load())


def test_port_clash_between_services_is_named(settings_env):
    settings_env.set(GAN_S3_PORT="20000", GAN_MLFLOW_PORT="20001")
    with pytest.raises(StackError, match=r"port 20001 .*GAN_S3_PORT.*GAN_MLFLOW_PORT"):
        stack._check_port_plan(services.plan(settings_env.load()))


def test_busy_messages_name_port_and_variable():
    assert services.Port(5000, "MLflow", "GAN_MLFLOW_PORT").busy_message() == (
        "port 5000 (MLflow) is in use; set GAN_MLFLOW_PORT to a free port")

def test_busy_derived_weed_port_explains_the_scheme(settings_env):
    settings_env.set(GAN_S3_PORT="20000")
    weed = services.plan(settings_env.load())[0]
    msgs = {p.number: p.busy_message() for p in weed.ports}
    assert msgs[20000] == "port 20000 (SeaweedFS S3) is in use; set GAN_S3_PORT to a free port"
    assert msgs[30001] == (
        "port 30001 (SeaweedFS master gRPC) is in use; set GAN_S3_PORT to a free port "
        "(SeaweedFS binds GAN_S3_PORT+0..4 and +10000..10004)")


def test_credentials_generated_once_private_and_reused(tmp_path: Path):
    path = tmp_path / "credentials.json"
    keys = services.ensure_credentials(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(keys[0]) == 20 and len(keys[1]) >= 40 and keys[0] != keys[1]
    assert json.loads(path.read_text()) == {"access_key_id": keys[0], "secret_access_key": keys[1]}
    assert services.ensure_credentials(path) == keys
    other = services.ensure_credentials(tmp_path / "other.json")
    assert other != keys  # random, no well-known default
    path.chmod(0o644)
    services.ensure_credentials(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_broken_credentials_file_is_named(tmp_path: Path):
    path = tmp_path / "credentials.json"
    path.write_text('{"access_key_id": "x"}')
    with pytest.raises(StackError, match="credentials.json lacks 'secret_access_key'"):
        services.ensure_credentials(path)
    path.write_text("{oops")
    with pytest.raises(StackError, match="credentials.json is not valid JSON"):
        services.ensure_credentials(path)


# --------------------------------------------------------------------------- processes


def test_port_free_sees_a_listener():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not procs.port_free(port)
    assert procs.port_free(port)


def test_child_env_scrubs_keys(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "callers-secret")
    monkeypatch.setenv("PATH_MARKER_FOR_TEST", "kept")
    env = procs.child_env({"MLFLOW_S3_ENDPOINT_URL": "http://x"})
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["PATH_MARKER_FOR_TEST"] == "kept" and env["MLFLOW_S3_ENDPOINT_URL"] == "http://x"


def _spawn_tree(tmp_path: Path) -> procs.ProcRecord:
    # A parent whose child is in the same group: like `mlflow server` and its uvicorn.
    return procs.spawn(["bash", "-c", "sleep 60 & wait"], {}, cwd=tmp_path,
                       log=tmp_path / "t.log", pid_file=tmp_path / "t.pid", url="http://x")


def _wait_children(rec: procs.ProcRecord) -> list[int]:
    for _ in range(100):
        pids = procs.tree_pids(rec)
        if len(pids) >= 2:
            return pids
        time.sleep(0.05)
    raise AssertionError("child did not start")


def test_spawn_detaches_records_and_stops_the_tree(tmp_path: Path):
    rec = _spawn_tree(tmp_path)
    try:
        assert procs.read_record(tmp_path / "t.pid") == rec
        p = procs.owned(rec)
        assert p is not None and p.cmdline() == ["bash", "-c", "sleep 60 & wait"]
        assert psutil.Process(rec.pid).pid == p.pid
        assert os.getsid(rec.pid) == rec.pid  # own session: outlives the starting command
        pids = _wait_children(rec)
        procs.terminate_trees([p], grace_s=5)
        assert not any(psutil.pid_exists(x) and psutil.Process(x).status() != "zombie"
                       for x in pids)
    finally:
        if (q := procs.owned(rec)) is not None:
            q.kill()


def test_root_only_lets_the_root_stop_its_children_and_kills_leftovers(tmp_path: Path):
    """`ray start --block` stops its node itself: only it gets SIGTERM; a child it leaves
    behind (here: one that ignores SIGTERM and is not stopped by its parent) is SIGKILLed."""
    script = ('trap "" TERM; sleep 60 & trap - TERM; '  # the child ignores SIGTERM
              'trap "echo parent-got-term; exit 0" TERM; wait')
    rec = procs.spawn(["bash", "-c", script], {}, cwd=tmp_path, log=tmp_path / "t.log",
                      pid_file=tmp_path / "t.pid", url="http://x")
    pids = _wait_children(rec)
    p = procs.owned(rec)
    assert p is not None
    t0 = time.monotonic()
    procs.terminate_trees([p], grace_s=1, root_only=[p])
    assert time.monotonic() - t0 < 8
    assert not any(psutil.pid_exists(x) and psutil.Process(x).status() != "zombie"
                   for x in pids)
    assert "parent-got-term" in (tmp_path / "t.log").read_text()


def test_a_stepped_wall_clock_does_not_disown_a_live_service(tmp_path: Path):
    """CI saw every service look stale after the wall clock moved: psutil's create_time is
    ticks since boot + the boot time the kernel reports now, which a clock step shifts."""
    rec = _spawn_tree(tmp_path)
    try:
        stepped = replace(rec, create_time=rec.create_time + 37.0)
        assert procs.owned(stepped) is not None
        assert procs.read_record(tmp_path / "t.pid") == rec  # boot_start_s round-trips
    finally:
        p = procs.owned(rec)
        assert p is not None
        procs.terminate_trees([p], grace_s=5)


def test_a_reused_pid_is_never_ours(tmp_path: Path):
    rec = _spawn_tree(tmp_path)
    try:
        assert rec.boot_start_s is not None  # Linux: the clock-proof start is recorded
        older = replace(rec, create_time=rec.create_time - 100,
                        boot_start_s=rec.boot_start_s - 100)
        other_cmd = replace(rec, cmdline=["weed", "mini"])
        legacy_older = replace(older, boot_start_s=None)  # a record from before boot_start_s
        assert procs.owned(older) is None and procs.owned(other_cmd) is None
        assert procs.owned(legacy_older) is None
        assert procs.owned(replace(rec, boot_start_s=None)) is not None
        assert procs.tree_pids(older) == []
        assert procs.read_record(tmp_path / "missing.pid") is None
        (tmp_path / "bad.pid").write_text("{}")
        assert procs.read_record(tmp_path / "bad.pid") is None
    finally:
        p = procs.owned(rec)
        assert p is not None  # untouched by the checks above
        procs.terminate_trees([p], grace_s=5)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        self.send_response(200 if self.path == "/ok" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_http_ok_local_needs_200_external_needs_an_answer():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert procs.http_ok(f"{base}/ok", local=True)
        assert not procs.http_ok(f"{base}/missing", local=True)
        assert procs.http_ok(f"{base}/missing", local=False)
    finally:
        server.shutdown()
        server.server_close()
    assert not procs.http_ok(f"{base}/ok", local=True)


def _fake_service(home: Path, name: str) -> procs.ProcRecord:
    """A `sleep` recorded as if `up` had started service `name` in `home`."""
    return procs.spawn(["sleep", "60"], {}, cwd=home, log=home / "logs" / f"{name}.log",
                       pid_file=home / "run" / f"{name}.pid", url="http://127.0.0.1:1")


def test_down_stops_ours_and_never_a_stranger(settings_env):
    home = settings_env.gan_home
    ours = _fake_service(home, "mlflow")
    stranger = _fake_service(home, "prefect")
    # As if the pid had been reused by another program since `up` wrote the file.
    write_json(home / "run" / "prefect.pid",
               {**asdict(stranger), "create_time": stranger.create_time - 50,
                "boot_start_s": stranger.boot_start_s - 50})
    try:
        out: list[str] = []
        assert stack.down(settings_env.load(), grace_s=5, echo=out.append) == ["mlflow"]
        assert out == [f"stopped mlflow (pid {ours.pid})"]
        assert procs.owned(ours) is None
        assert procs.owned(stranger) is not None  # untouched
        assert list((home / "run").glob("*.pid")) == []
        out.clear()
        stack.down(settings_env.load(), echo=out.append)
        assert out == [f"nothing was running from {home.resolve()}"]
    finally:
        for rec in (ours, stranger):
            if (p := procs.owned(rec)) is not None:
                procs.terminate_trees([p], grace_s=5)


def test_up_refuses_new_keys_for_a_running_seaweedfs(settings_env):
    home = settings_env.gan_home
    fake = _fake_service(home, "s3")
    try:
        with pytest.raises(StackError, match="credentials.json vanished while SeaweedFS runs"):
            stack.up(settings_env.load(), echo=lambda _: None)
        assert not (home / "credentials.json").exists()
        assert procs.owned(fake) is not None
    finally:
        if (p := procs.owned(fake)) is not None:
            procs.terminate_trees([p], grace_s=5)
