"""Users of an MLflow server running the basic-auth app: make sure an identity exists and works.

What this module is: `ensure_user(uri, admin, user)`, idempotent: when `user` already logs
in, nothing happens; else, as `admin`, the user is created or (it exists with another
password: the file was rotated) given the file's password. The stack calls it after its MLflow
is healthy to keep the read-only consumer identity in step with `mlflow-consumer.json`;
`change_password` rotates a password (the admin's own included).

Hand-written REST (a few urllib calls on MLflow's documented auth endpoints) rather than
`mlflow.server.auth.client.AuthServiceClient`: that client takes its credentials only from the
process environment (MLFLOW_TRACKING_USERNAME/PASSWORD), and here two identities are in play in
one process.

What it is not: no permission grants (the server's `default_permission = READ` makes every
non-admin user read-only, see `gan.stack.auth`), no secret in any message.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from gan.registry.connect import RegistryError

Identity = tuple[str, str]  # (username, password)


def _call(uri: str, ident: Identity | None, method: str, path: str,
          body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of one request to the auth API; loopback skips any proxy."""
    headers = {"Content-Type": "application/json"}
    if ident:
        token = base64.b64encode(f"{ident[0]}:{ident[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{uri.rstrip('/')}{path}", data=data, headers=headers,
                                 method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            return e.code, {}
    except (urllib.error.URLError, OSError) as e:
        raise RegistryError(f"MLflow at {uri} unreachable: {getattr(e, 'reason', e)}") from e


def logs_in(uri: str, ident: Identity) -> bool:
    """True when `ident` authenticates at the server (GET users/current)."""
    status, _ = _call(uri, ident, "GET", "/api/2.0/mlflow/users/current")
    if status == 404:  # no auth app: a server started before authentication was switched on
        raise RegistryError(f"MLflow at {uri} runs without authentication; restart it with "
                            "`gan stack down && gan stack up`")
    return status == 200


def ensure_user(uri: str, admin: Identity, user: Identity) -> str:
    """Make `user` log in at `uri` with its password; returns "kept", "created" or "updated"."""
    if logs_in(uri, user):
        return "kept"
    if not logs_in(uri, admin):
        raise RegistryError(f"MLflow at {uri} refuses the stack's admin identity {admin[0]!r}: "
                            "is its file from another stack? (see README, rotating secrets)")
    q = urllib.parse.urlencode({"username": user[0]})
    status, _ = _call(uri, admin, "GET", f"/api/2.0/mlflow/users/get?{q}")
    if status == 200:
        change_password(uri, admin, user[0], user[1])
        return "updated"
    status, body = _call(uri, admin, "POST", "/api/2.0/mlflow/users/create",
                         {"username": user[0], "password": user[1]})
    if status != 200:
        raise RegistryError(f"MLflow at {uri}: creating user {user[0]!r} failed (HTTP {status}: "
                            f"{body.get('message', '')})")
    return "created"


def change_password(uri: str, admin: Identity, username: str, password: str) -> None:
    """Set `username`'s password as `admin` (an admin may change any user's, its own too)."""
    body: dict[str, Any] = {"username": username, "password": password}
    if username == admin[0]:  # MLflow asks for the current password to change one's own
        body["current_password"] = admin[1]
    status, answer = _call(uri, admin, "PATCH", "/api/2.0/mlflow/users/update-password", body)
    if status != 200:
        raise RegistryError(f"MLflow at {uri}: changing the password of {username!r} failed "
                            f"(HTTP {status}: {answer.get('message', '')})")
