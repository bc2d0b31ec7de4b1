"""The local stack's MLflow and Prefect secrets: generated once, kept in 0600 files, never printed.

What this module is:
  * `ensure_identity(path, username)`: an MLflow identity file `{"username", "password"}`
    (`mlflow-admin.json` for the pipeline, `mlflow-consumer.json` for read-only consumers),
    kept when present, else generated (python `secrets`) and written 0600;
  * `write_mlflow_auth_ini(...)`: the basic-auth app's config (MLFLOW_AUTH_CONFIG_PATH, 0600,
    rewritten on every `up` from the admin file): its user database under GAN_HOME/mlflow,
    the admin identity, and `default_permission = READ`, so every non-admin user (the
    consumer) may read experiments and registered models but change nothing of them;
  * `identity_env(path)`: an identity file as MLflow's client environment variables;
  * `fast_password_hashes(db, identities)`: our identities' hashes in MLflow's user database
    made cheap to check (see FAST_HASH);
  * `ensure_prefect_auth(path)`: the Prefect server's API auth string `user:secret` (0600);
  * `ensure_token(path)`: a random token, 0600 (the Ray head's, the auth app's Flask secret
    key).

What it is not: no process, no HTTP (the consumer user is created in the running server by
`gan.registry.auth`), and no secret goes into argv, logs or status: callers pass them to a
service through its environment or a file.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import os
import secrets
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from werkzeug.security import generate_password_hash

from gan.io.jsonio import read_json, write_json

ADMIN_USER = "gan-admin"
CONSUMER_USER = "gan-consumer"
PREFECT_USER = "gan"
IDENTITY_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# MLflow's auth app stores werkzeug's default hash (scrypt, ~100 ms of CPU per check) and checks
# it on every request: 16 consumers on 2 cores spent the machine on hashing (load p50 59 s vs
# 3 s without auth). Our identities are random 192-bit tokens, for which a memory-hard KDF adds
# nothing (it protects guessable human passwords); salted PBKDF2-SHA256 at 1000 rounds: ~1 ms.
FAST_HASH = "pbkdf2:sha256:1000"


class SecretFileError(RuntimeError):
    """A secret file that exists but cannot be used; the message names it."""


def ensure_identity(path: Path, username: str) -> tuple[str, str]:
    """(username, password) from `path`, or a new one generated and written 0600."""
    if path.exists():
        os.chmod(path, 0o600)  # tighten a copy restored with looser bits
        try:
            data = read_json(path)
            return str(data["username"]), str(data["password"])
        except (KeyError, TypeError, ValueError) as e:
            raise SecretFileError(f"{path} is unreadable ({e}); restore it from a backup, or "
                                  "see README (rotating secrets)") from None
    ident = (username, secrets.token_urlsafe(24))
    write_json(path, {"username": ident[0], "password": ident[1]}, private=True)
    return ident


def identity_env(path: Path) -> dict[str, str]:
    """MLFLOW_TRACKING_USERNAME/PASSWORD of the identity file at `path` (e.g. the consumer's),
    for a child process that talks to the stack's MLflow as that identity; {} without a file."""
    if not path.exists():
        return {}
    user, password = ensure_identity(path, "")
    return dict(zip(IDENTITY_VARS, (user, password), strict=True))


def fast_password_hashes(db: Path, identities: Iterable[tuple[str, str]]) -> int:
    """Store each (username, password) of ours in MLflow's user database `db` with FAST_HASH
    (werkzeug's `check_password_hash` reads the method from the stored value); returns the
    rows changed (0 without a database: a server not started by this stack). Only for the
    stack's generated secrets, never a person's password."""
    if not db.is_file():
        return 0
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
        return sum(con.execute("UPDATE users SET password_hash = ? WHERE username = ?",
                               (generate_password_hash(pw, method=FAST_HASH), user)).rowcount
                   for user, pw in identities)


def ensure_prefect_auth(path: Path) -> str:
    """The Prefect API auth string `gan:<secret>` from `path`, or a new one written 0600."""
    if path.exists():
        os.chmod(path, 0o600)
        value = path.read_text().strip()
        if ":" not in value:
            raise SecretFileError(f"{path} does not hold `user:secret`; delete it and run "
                                  "`gan stack down && gan stack up` for a new one")
        return value
    value = f"{PREFECT_USER}:{secrets.token_urlsafe(24)}"
    _write_private(path, value + "\n")
    return value


def ensure_token(path: Path) -> str:
    """A random token (256 bits, 64 hex digits) from `path`, or a new one written 0600 (the
    Ray head's token, read by Ray through RAY_AUTH_TOKEN_PATH as the file's exact text, so no
    newline; the key that signs the MLflow auth app's CSRF tokens)."""
    if path.exists():
        os.chmod(path, 0o600)  # tighten a copy restored with looser bits
        return path.read_text().strip()
    value = secrets.token_hex(32)
    _write_private(path, value)
    return value


def write_mlflow_auth_ini(path: Path, *, db: Path, admin: tuple[str, str]) -> Path:
    """The basic-auth app's ini at `path` (0600): user database `db`, admin identity, READ."""
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": "READ",
        "database_uri": f"sqlite:///{db}",
        "admin_username": admin[0],
        "admin_password": admin[1],  # only used to create the admin in a new user database
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
    }
    buf = io.StringIO()
    config.write(buf)
    _write_private(path, buf.getvalue())
    return path


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
