"""The stack's MLflow and Prefect secrets without a service: 0600 files generated once and kept,
never in argv or status output, picked up by `Settings` for the local stack's URLs only, masked
by `public_dict`, exported by the MLflow client setup and `use_api`."""

from __future__ import annotations

import base64
import configparser
import http.server
import json
import os
import stat
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from flows import prefect_setup
from gan.core.settings import SettingsError
from gan.registry import auth as registry_auth
from gan.registry import connect
from gan.stack import auth, procs, services
from gan.stack import supervisor as stack


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _secrets_of(home: Path) -> list[str]:
    admin = json.loads((home / "mlflow-admin.json").read_text())["password"]
    consumer = json.loads((home / "mlflow-consumer.json").read_text())["password"]
    prefect = (home / "prefect-auth").read_text().strip().split(":", 1)[1]
    return [admin, consumer, prefect]


def test_auth_files_generated_private_kept_across_ups(settings_env):
    s = settings_env.load()
    services.ensure_auth_files(s)
    home = s.gan_home
    files = [home / "mlflow-admin.json", home / "mlflow-consumer.json", home / "prefect-auth",
             home.resolve() / "mlflow" / "auth.ini"]
    for f in files:
        assert _mode(f) == 0o600, f
    first = _secrets_of(home)
    assert len(set(first)) == 3 and all(len(x) >= 24 for x in first)
    os.chmod(home / "prefect-auth", 0o644)  # e.g. a copy restored with looser bits
    services.ensure_auth_files(s)
    assert _secrets_of(home) == first  # a second `up` keeps them
    assert _mode(home / "prefect-auth") == 0o600
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(home.resolve() / "mlflow" / "auth.ini")
    m = ini["mlflow"]
    assert m["default_permission"] == "READ"
    assert m["admin_username"] == auth.ADMIN_USER and m["admin_password"] == first[0]
    assert m["database_uri"] == f"sqlite:///{home.resolve() / 'mlflow' / 'auth.db'}"


def test_secrets_travel_in_env_or_files_never_argv_nor_status(settings_env):
    s = settings_env.load()
    services.ensure_auth_files(s)
    admin, consumer, prefect = _secrets_of(s.gan_home)
    svc = {x.name: x for x in services.plan(s, ("KEYID", "SECRETVALUE"))}
    ml, pf, serve = svc["mlflow"], svc["prefect"], svc["serve"]
    assert ml.argv[ml.argv.index("--app-name") + 1] == "basic-auth"
    assert ml.env["MLFLOW_AUTH_CONFIG_PATH"] == str(s.gan_home.resolve() / "mlflow" / "auth.ini")
    assert pf.env["PREFECT_SERVER_API_AUTH_STRING"].endswith(":" + prefect)
    assert serve.health_headers["Authorization"].startswith("Basic ")
    for x in svc.values():
        blob = " ".join(x.argv) + repr(x)  # repr: what a traceback or log line would show
        assert not any(secret in blob for secret in (admin, consumer, prefect)), x.name
    st = json.dumps(stack.status(s))
    assert not any(secret in st for secret in (admin, consumer, prefect))
    assert json.loads(st)["mlflow_consumer_file"] == str(s.gan_home.resolve()
                                                         / "mlflow-consumer.json")


def test_settings_take_stack_secrets_for_local_urls_only(settings_env):
    settings_env.set(GAN_MLFLOW_PORT="21000", GAN_PREFECT_PORT="21001")
    services.ensure_auth_files(settings_env.load())
    admin, _, prefect = _secrets_of(settings_env.gan_home)
    # No stack.json yet (the first `up` writes it last), URLs of this stack's ports.
    settings_env.set(MLFLOW_TRACKING_URI="http://127.0.0.1:21000",
                     PREFECT_API_URL="http://127.0.0.1:21001/api")
    s = settings_env.load()
    assert s.mlflow_tracking_username == auth.ADMIN_USER
    assert s.mlflow_tracking_password.get_secret_value() == admin
    assert s.prefect_api_auth_string.get_secret_value().endswith(":" + prefect)
    public = json.dumps(s.public_dict())
    assert admin not in public and prefect not in public
    assert s.public_dict()["mlflow_tracking_password"] == "***"
    # An external server never gets the stack's secrets...
    settings_env.set(MLFLOW_TRACKING_URI="http://mlflow.example:5000",
                     PREFECT_API_URL="http://prefect.example/api")
    s = settings_env.load()
    assert s.mlflow_tracking_password is None and s.prefect_api_auth_string is None
    # ... it takes the standard variables, which also win for the local stack.
    settings_env.set(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD="pw-alice",
                     PREFECT_API_AUTH_STRING="bob:pw-bob")
    s = settings_env.load()
    assert (s.mlflow_tracking_username, s.mlflow_tracking_password.get_secret_value(),
            s.prefect_api_auth_string.get_secret_value()) == ("alice", "pw-alice", "bob:pw-bob")


def test_broken_identity_file_is_named(settings_env):
    settings_env.gan_home.mkdir(parents=True)
    (settings_env.gan_home / "mlflow-admin.json").write_text("{not json")
    settings_env.set(MLFLOW_TRACKING_URI="http://127.0.0.1:5000")
    with pytest.raises(SettingsError, match="mlflow-admin.json"):
        settings_env.load()
    with pytest.raises(auth.SecretFileError, match="mlflow-admin.json"):
        auth.ensure_identity(settings_env.gan_home / "mlflow-admin.json", auth.ADMIN_USER)
    (settings_env.gan_home / "prefect-auth").write_text("nocolon")
    with pytest.raises(auth.SecretFileError, match="prefect-auth"):
        auth.ensure_prefect_auth(settings_env.gan_home / "prefect-auth")


def test_clients_export_the_identity(settings_env, monkeypatch: pytest.MonkeyPatch):
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING"):
        monkeypatch.delenv(k, raising=False)
    settings_env.set(MLFLOW_TRACKING_URI="http://127.0.0.1:21000", GAN_MLFLOW_PORT="21000",
                     PREFECT_API_URL="http://127.0.0.1:21001/api", GAN_PREFECT_PORT="21001")
    services.ensure_auth_files(settings_env.load())
    s = settings_env.load()
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING",
              "PREFECT_API_URL"):
        monkeypatch.setenv(k, "placeholder")  # restored by monkeypatch after the test
    connect.use_credentials(s)  # what connect.client and load_generator do first
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == auth.ADMIN_USER
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == s.mlflow_tracking_password.get_secret_value()
    # No refresh of an already imported Prefect's global settings: they outlive this test.
    monkeypatch.setattr(prefect_setup, "sys", SimpleNamespace(modules={}))
    prefect_setup.use_api(s)
    assert os.environ["PREFECT_API_AUTH_STRING"] == s.prefect_api_auth_string.get_secret_value()


class _FakeAuthServer(http.server.BaseHTTPRequestHandler):
    """MLflow's user endpoints, enough for `ensure_user`: users {name: password}, one admin."""

    users: dict[str, str] = {}
    admin = "root"
    calls: list[str] = []

    def _who(self) -> str | None:
        h = self.headers.get("Authorization", "")
        if not h.startswith("Basic "):
            return None
        user, _, pw = base64.b64decode(h[6:]).decode().partition(":")
        return user if self.users.get(user) == pw else None

    def _answer(self, code: int, body: dict | None = None) -> None:
        raw = json.dumps(body or {}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self) -> None:
        self.calls.append(f"{self.command} {self.path.split('?')[0]}")
        who = self._who()
        if who is None:
            return self._answer(401)
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else {}
        path = self.path.split("?")[0]
        if path.endswith("/users/current"):
            return self._answer(200, {"user": {"username": who}})
        if who != self.admin:
            return self._answer(403)
        if path.endswith("/users/get"):
            name = self.path.split("username=")[1]
            return self._answer(200 if name in self.users else 404)
        if path.endswith("/users/create"):
            self.users[body["username"]] = body["password"]
            return self._answer(200)
        if path.endswith("/users/update-password"):
            if body["username"] == who and body.get("current_password") != self.users[who]:
                return self._answer(400, {"message": "Current password is required"})
            self.users[body["username"]] = body["password"]
            return self._answer(200)
        return self._answer(404)

    do_GET = do_POST = do_PATCH = _handle

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def fake_mlflow():
    _FakeAuthServer.users = {"root": "rootpw"}
    _FakeAuthServer.admin = "root"
    _FakeAuthServer.calls = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeAuthServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", _FakeAuthServer
    server.shutdown()


def test_consumer_user_created_then_kept_then_updated(fake_mlflow):
    uri, srv = fake_mlflow
    admin = ("root", "rootpw")
    assert registry_auth.ensure_user(uri, admin, ("reader", "pw1")) == "created"
    assert srv.users["reader"] == "pw1"
    assert registry_auth.ensure_user(uri, admin, ("reader", "pw1")) == "kept"  # a second `up`
    assert registry_auth.ensure_user(uri, admin, ("reader", "pw2")) == "updated"  # new file
    assert srv.users["reader"] == "pw2"
    with pytest.raises(registry_auth.RegistryError, match="admin identity 'root'") as e:
        registry_auth.ensure_user(uri, ("root", "wrong"), ("reader", "pw3"))
    assert "wrong" not in str(e.value) and "pw3" not in str(e.value)
    registry_auth.change_password(uri, admin, "root", "rootpw2")
    assert registry_auth.logs_in(uri, ("root", "rootpw2"))
    assert not registry_auth.logs_in(uri, admin)


def test_rotate_mlflow_admin_changes_server_then_file(settings_env, fake_mlflow):
    uri, srv = fake_mlflow
    s = settings_env.load()
    services.ensure_auth_files(s)
    old = json.loads(s.mlflow_admin_file.read_text())
    srv.users = {old["username"]: old["password"]}
    srv.admin = old["username"]
    # A live process recorded as the stack's MLflow, at the fake server's URL.
    layout = services.Layout(s.gan_home.resolve())
    rec = procs.spawn(["sleep", "60"], {}, cwd=layout.home, log=layout.log("mlflow"),
                      pid_file=layout.pid("mlflow"), url=uri)
    try:
        stack.rotate_mlflow_admin(s, echo=lambda m: None)
    finally:
        procs.terminate_trees([p for p in [procs.owned(rec)] if p], grace_s=1)
    new = json.loads(s.mlflow_admin_file.read_text())
    assert new["username"] == old["username"] and new["password"] != old["password"]
    assert srv.users[old["username"]] == new["password"]  # the server has the file's password
    assert _mode(s.mlflow_admin_file) == 0o600
    assert not s.mlflow_admin_file.with_name("mlflow-admin.json.new").exists()
    assert new["password"] in (layout.home / "mlflow" / "auth.ini").read_text()
    with pytest.raises(stack.StackError, match="needs this stack's MLflow running"):
        stack.rotate_mlflow_admin(s, echo=lambda m: None)  # the process is gone now
