"""gan.stack.backup without services: the SQLite snapshot, the manifest's guards, and restore's
refusals (non-empty GAN_HOME, no manifest, a damaged or hostile backup), each leaving GAN_HOME
as it was."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gan.stack import backup as bk


def _manifest(folder: Path, files: dict, bucket: str = "gan") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(
        {"format": bk.FORMAT, "bucket": bucket, "files": files}))


def test_sqlite_copy_is_a_consistent_snapshot_of_a_live_wal_database(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    writer.commit()
    writer.execute("INSERT INTO t VALUES (999)")  # open transaction: not in the snapshot
    bk._sqlite_copy(db, tmp_path / "copy.db")
    writer.rollback()
    writer.close()
    rows = sqlite3.connect(tmp_path / "copy.db").execute("SELECT count(*), max(x) FROM t")
    assert rows.fetchone() == (100, 99)


@pytest.mark.parametrize("rel", ["../escape", "/etc/passwd", "objects/../../x", "a//b", "",
                                 "objects/./x", "a\\..\\b"])
def test_manifest_paths_that_leave_the_backup_are_refused(tmp_path: Path, rel: str) -> None:
    _manifest(tmp_path, {rel: {"size": 1, "sha256": "0" * 64}})
    with pytest.raises(bk.BackupError, match="would leave its folder"):
        bk._read_manifest(tmp_path / "manifest.json", str(tmp_path))


def test_manifest_of_another_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 99, "files": {}}))
    with pytest.raises(bk.BackupError, match="not a format-1 backup manifest"):
        bk._read_manifest(tmp_path / "manifest.json", str(tmp_path))


def test_restore_refuses_a_non_empty_gan_home(settings_env, tmp_path: Path) -> None:
    _manifest(tmp_path / "b", {})
    settings_env.gan_home.mkdir()
    (settings_env.gan_home / "mine.txt").write_text("keep")
    with pytest.raises(bk.BackupError, match="is not empty"):
        bk.restore(settings_env.load(), str(tmp_path / "b"), echo=lambda m: None)
    assert (settings_env.gan_home / "mine.txt").read_text() == "keep"


def test_restore_refuses_a_backup_without_manifest(settings_env, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mlflow.db").write_bytes(b"x")
    with pytest.raises(bk.BackupError, match="no manifest.json"):
        bk.restore(settings_env.load(), str(tmp_path / "b"), echo=lambda m: None)
    assert not settings_env.gan_home.exists()


def test_restore_of_a_damaged_file_leaves_nothing(settings_env, tmp_path: Path) -> None:
    src = tmp_path / "b"
    _manifest(src, {"mlflow.db": {"size": 3, "sha256": "0" * 64}})
    (src / "mlflow.db").write_bytes(b"abc")
    with pytest.raises(bk.BackupError, match="does not match the manifest"):
        bk.restore(settings_env.load(), str(src), echo=lambda m: None)
    assert not settings_env.gan_home.exists()  # created for the restore, removed again


def test_restore_refuses_another_bucket(settings_env, tmp_path: Path) -> None:
    _manifest(tmp_path / "b", {}, bucket="other")
    with pytest.raises(bk.BackupError, match="GAN_S3_BUCKET"):
        bk.restore(settings_env.load(), str(tmp_path / "b"), echo=lambda m: None)


def test_backup_refuses_a_non_empty_folder_and_unnamed_stores(settings_env, tmp_path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old").write_text("x")
    settings_env.set(GAN_S3_ENDPOINT_URL="http://127.0.0.1:1", AWS_ACCESS_KEY_ID="k",
                     AWS_SECRET_ACCESS_KEY="s")
    with pytest.raises(bk.BackupError, match="is not empty"):
        bk.backup(settings_env.load(), str(tmp_path / "b"), echo=lambda m: None)
    with pytest.raises(bk.BackupError, match="GAN_BACKUP_S3_ENDPOINT_URL"):
        bk.backup(settings_env.load(), "s3://elsewhere/backups", echo=lambda m: None)
    with pytest.raises(bk.BackupError, match="local folder or an s3:// prefix"):
        bk.backup(settings_env.load(), "https://example.com/x", echo=lambda m: None)
