"""Our MLflow identities are stored with a cheap hash (gan.stack.auth.FAST_HASH)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from gan.stack.auth import FAST_HASH, fast_password_hashes


def test_our_identities_get_the_fast_hash_and_still_log_in(tmp_path: Path) -> None:
    db = tmp_path / "auth.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE users (username TEXT, password_hash TEXT)")
        for user in ("gan-admin", "gan-consumer", "someone"):
            con.execute("INSERT INTO users VALUES (?, ?)",
                        (user, generate_password_hash(f"pw-{user}")))  # werkzeug's scrypt
    n = fast_password_hashes(db, [("gan-admin", "pw-gan-admin"), ("gan-consumer", "new")])
    assert n == 2
    with sqlite3.connect(db) as con:
        rows = dict(con.execute("SELECT username, password_hash FROM users"))
    assert rows["gan-admin"].startswith(FAST_HASH + "$")
    assert check_password_hash(rows["gan-admin"], "pw-gan-admin")
    assert check_password_hash(rows["gan-consumer"], "new")
    assert not check_password_hash(rows["gan-consumer"], "pw-gan-consumer")
    assert rows["someone"].startswith("scrypt:")  # not ours: untouched


def test_no_database_changes_nothing(tmp_path: Path) -> None:
    assert fast_password_hashes(tmp_path / "missing.db", [("gan-admin", "x")]) == 0
    assert not (tmp_path / "missing.db").exists()
