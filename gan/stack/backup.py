"""Backup and restore of the local stack: `gan stack backup DEST`, `gan stack restore SRC`.

What this module is:
  * `backup(settings, dest)`: a consistent copy of a stack, taken while it runs, into a local
    folder or an `s3://bucket/prefix` of another store. In this order: the MLflow and Prefect
    SQLite databases through SQLite's online backup API (`sqlite3.Connection.backup`, a
    transactionally consistent snapshot even while the servers write), then every object of
    the bucket (boto3), then the S3 key files needed to read the bucket back, and last
    `manifest.json` (size and sha256 of every file). Databases first: an object written after
    their snapshot is at worst an orphan, never a dangling reference. A backup without its
    manifest is incomplete and restore refuses it.
  * `restore(settings, src)`: into an absent or empty GAN_HOME only (so no service of it
    runs): every file is checked against the manifest before it is used, the databases and
    key files go to their places, the objects are uploaded into the bucket (the local
    SeaweedFS is started alone for that, then stopped; an external store must hold no object
    in the bucket). On any failure GAN_HOME is emptied again: nothing half-restored.
    `gan stack up` then serves the same runs, versions, aliases, datasets and flow runs.

Backup layout: `manifest.json`, `mlflow.db`, `prefect.db`, `mlflow-auth.db` (MLflow's users),
`credentials.json`, `s3-identities.json`, `mlflow-admin.json`, `mlflow-consumer.json`,
`prefect-auth` (these five hold the stack's secrets: keep a backup as private as GAN_HOME),
`objects/<key>` for each object of the bucket.

What it is not: no scheduling or retention of backups, no incremental copies, no backup of an
external MLflow or Prefect server (their databases are not ours: the manifest says so).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from pydantic import SecretStr

from gan.core.settings import Settings
from gan.io.jsonio import read_json, write_json
from gan.io.storage import Storage, StorageError, split_uri
from gan.stack import procs, supervisor
from gan.stack.services import Layout, StackError, plan

Echo = Callable[[str], None]
FORMAT = 1
MANIFEST = "manifest.json"
OBJECTS = "objects"
# (backup name, path under GAN_HOME, service whose database it is / None for key files)
DATABASES = (("mlflow.db", "mlflow/mlflow.db", "mlflow"), ("prefect.db", "prefect/prefect.db",
                                                              "prefect"),
             ("mlflow-auth.db", "mlflow/auth.db", "mlflow"))
# Databases a stack made before authentication does not have (copied when present).
OPTIONAL_DATABASES = {"mlflow-auth.db"}
KEY_FILES = (("credentials.json", "credentials.json"), ("s3-identities.json",
                                                         "s3-identities.json"),
             ("mlflow-admin.json", "mlflow-admin.json"),
             ("mlflow-consumer.json", "mlflow-consumer.json"), ("prefect-auth", "prefect-auth"))
PRIVATE = {name for name, _ in KEY_FILES}


class BackupError(StackError):
    """A backup or restore that cannot be done; the message names the file, key or folder."""


# --------------------------------------------------------------------------- places


class Place(Protocol):
    """Where a backup lives: a local folder or an s3:// prefix."""

    where: str

    def put(self, rel: str, path: Path) -> None: ...
    def fetch(self, rel: str, scratch: Path) -> Path: ...  # a local path holding `rel`
    def has(self, rel: str) -> bool: ...
    def is_empty(self) -> bool: ...


class FolderPlace:
    def __init__(self, root: Path) -> None:
        self.root, self.where = root, str(root)

    def put(self, rel: str, path: Path) -> None:
        target = self.root / rel
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.move(path, target)
        if PurePosixPath(rel).name in PRIVATE:
            os.chmod(target, 0o600)

    def fetch(self, rel: str, scratch: Path) -> Path:
        path = self.root / rel
        if path.is_symlink() or not path.is_file():
            raise BackupError(f"{path}: missing from the backup (or not a regular file)")
        return path

    def has(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def is_empty(self) -> bool:
        return not self.root.exists() or not any(self.root.iterdir())


class S3Place:
    def __init__(self, storage: Storage, uri: str) -> None:
        split_uri(uri)  # ValueError for a malformed one
        self.storage, self.prefix, self.where = storage, uri.rstrip("/"), uri

    def put(self, rel: str, path: Path) -> None:
        self.storage.put_file(f"{self.prefix}/{rel}", str(path))
        path.unlink()

    def fetch(self, rel: str, scratch: Path) -> Path:
        local = scratch / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.storage.get_file(f"{self.prefix}/{rel}", str(local))
        except StorageError as e:
            raise BackupError(f"{self.prefix}/{rel}: cannot read the backup: {e}") from e
        return local

    def has(self, rel: str) -> bool:
        return self.storage.exists(f"{self.prefix}/{rel}")

    def is_empty(self) -> bool:
        return not self.storage.list_keys(self.prefix + "/")


def place_for(settings: Settings, where: str) -> Place:
    """A local folder, or an s3:// prefix of the store named by GAN_BACKUP_S3_ENDPOINT_URL and
    GAN_BACKUP_AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY (never the stack's own keys)."""
    if not where.startswith("s3://"):
        if "://" in where:
            raise BackupError(f"{where}: a backup goes to a local folder or an s3:// prefix")
        return FolderPlace(Path(where).expanduser().resolve())
    endpoint = settings.backup_s3_endpoint_url
    key, secret = settings.backup_aws_access_key_id, settings.backup_aws_secret_access_key
    if not (endpoint and key and secret):
        raise BackupError(f"{where}: an s3:// backup needs GAN_BACKUP_S3_ENDPOINT_URL, "
                          "GAN_BACKUP_AWS_ACCESS_KEY_ID and GAN_BACKUP_AWS_SECRET_ACCESS_KEY "
                          "(the store that keeps the backup, not the stack's own)")
    other = settings.model_copy(update={"s3_endpoint_url": endpoint, "aws_access_key_id": key,
                                        "aws_secret_access_key": secret})
    return S3Place(Storage.from_settings(other), where)


# --------------------------------------------------------------------------- backup


def backup(settings: Settings, dest: str, *, echo: Echo = print) -> dict[str, Any]:
    """Copy the stack (running or not) to `dest`; returns the manifest (written last)."""
    place = place_for(settings, dest)
    storage = Storage.from_settings(settings)
    bucket_uri = settings.s3_uri()
    if (isinstance(place, S3Place) and place.storage.endpoint == storage.endpoint
            and (place.where + "/").startswith(bucket_uri + "/")):
        raise BackupError(f"{dest}: a backup cannot go into the bucket it copies ({bucket_uri} "
                          f"at {storage.endpoint})")
    if not place.is_empty():
        raise BackupError(f"{place.where} is not empty: back up into a new folder or prefix")
    home = settings.gan_home.resolve()
    services = {s.name: s for s in plan(settings)}
    files: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="gan-backup-") as tmp:
        scratch = Path(tmp)
        for name, rel, service in DATABASES:
            if services[service].external:
                skipped[name] = f"{services[service].title} at {services[service].url}"
                continue
            db = home / rel
            if name in OPTIONAL_DATABASES and not db.is_file():
                continue
            if not db.is_file():
                raise BackupError(f"{db} does not exist: is GAN_HOME={home} a stack?")
            _sqlite_copy(db, scratch / name)
            files[name] = _store(place, name, scratch / name)
            echo(f"database {name}: {files[name]['size']} bytes")
        keys = storage.list_keys(bucket_uri + "/")
        for uri in keys:
            _, key = split_uri(uri)
            rel = f"{OBJECTS}/{_safe_rel(key, uri)}"
            local = scratch / "object"
            storage.get_file(uri, str(local))
            files[rel] = _store(place, rel, local)
        echo(f"{len(keys)} objects of {bucket_uri}")
        for name, rel in KEY_FILES:
            if (home / rel).is_file():
                shutil.copyfile(home / rel, scratch / name)
                files[name] = _store(place, name, scratch / name)
        manifest = {"format": FORMAT, "created_unix": time.time(), "bucket": settings.s3_bucket,
                    "not_included": skipped, "files": files}
        write_json(scratch / MANIFEST, manifest)
        place.put(MANIFEST, scratch / MANIFEST)
    echo(f"backup of {home} written to {place.where} ({len(files)} files)")
    return manifest


def _sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent snapshot of a live SQLite database (WAL included) with the backup API."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
    except sqlite3.Error as e:
        raise BackupError(f"{src}: SQLite backup failed: {e}") from e
    finally:
        target.close()
        source.close()


def _store(place: Place, rel: str, path: Path) -> dict[str, Any]:
    entry = {"size": path.stat().st_size, "sha256": _sha256(path)}
    place.put(rel, path)
    return entry


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _safe_rel(rel: str, what: str) -> str:
    """`rel` when it is a plain relative path; BackupError for `..`, absolute or empty parts."""
    if "\\" in rel or any(p in ("", ".", "..") for p in rel.split("/")):
        raise BackupError(f"{what}: path {rel!r} would leave its folder; refused")
    return rel


# --------------------------------------------------------------------------- restore


def restore(settings: Settings, src: str, *, echo: Echo = print,
            timeout_s: float = 180.0) -> dict[str, Any]:
    """Restore the backup at `src` into this (absent or empty) GAN_HOME; returns its manifest."""
    place = place_for(settings, src)
    home = settings.gan_home.resolve()
    _check_empty_home(home)
    if not place.has(MANIFEST):
        raise BackupError(f"{place.where} has no {MANIFEST}: not a backup, or an unfinished one")
    with tempfile.TemporaryDirectory(prefix="gan-restore-") as tmp, _all_or_nothing(home):
        scratch = Path(tmp)
        manifest = _read_manifest(place.fetch(MANIFEST, scratch), place.where)
        if manifest["bucket"] != settings.s3_bucket:
            raise BackupError(f"the backup holds bucket {manifest['bucket']!r} but "
                              f"GAN_S3_BUCKET is {settings.s3_bucket!r}; set it to match")
        Layout(home).make()
        files: dict[str, dict[str, Any]] = manifest["files"]
        for name, rel, _ in DATABASES:
            if name in files:
                shutil.copyfile(_verified(place, name, files[name], scratch), home / rel)
        for name, rel in KEY_FILES:
            if name in files:
                shutil.copyfile(_verified(place, name, files[name], scratch), home / rel)
                os.chmod(home / rel, 0o600)
        objects = sorted(r for r in files if r.startswith(OBJECTS + "/"))
        fresh = settings.model_copy(update=_stack_keys(home, settings))
        with _s3_only(fresh, timeout_s=timeout_s, echo=echo) as storage:
            if storage.list_keys(settings.s3_uri() + "/"):
                raise BackupError(f"{settings.s3_uri()} already holds objects: restore needs "
                                  "an empty bucket")
            for rel in objects:
                path = _verified(place, rel, files[rel], scratch)
                storage.put_file(settings.s3_uri(rel[len(OBJECTS) + 1:]), str(path))
                if path.is_relative_to(scratch):
                    path.unlink()
        echo(f"restored {len(objects)} objects and {len(files) - len(objects)} files from "
             f"{place.where} into {home}; run `gan stack up`")
    return manifest


def _check_empty_home(home: Path) -> None:
    if not home.exists():
        return
    if not home.is_dir():
        raise BackupError(f"GAN_HOME={home} is not a folder")
    run = home / "run"
    live = [p.stem for p in run.glob("*.pid")
            if (rec := procs.read_record(p)) and procs.owned(rec)] if run.is_dir() else []
    if live:
        raise BackupError(f"services of GAN_HOME={home} are running ({', '.join(live)}): "
                          "restore only into an empty GAN_HOME with no stack running")
    if any(home.iterdir()):
        raise BackupError(f"GAN_HOME={home} is not empty: restore only into an empty or absent "
                          "one (point GAN_HOME at a new folder)")


def _read_manifest(path: Path, where: str) -> dict[str, Any]:
    try:
        manifest = read_json(path)
    except ValueError as e:
        raise BackupError(f"{where}/{MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{where}/{MANIFEST}: not a format-{FORMAT} backup manifest")
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("bucket"), str):
        raise BackupError(f"{where}/{MANIFEST}: no files or bucket listed")
    for rel, entry in files.items():
        _safe_rel(rel, f"{where}/{MANIFEST}")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("size"), int)):
            raise BackupError(f"{where}/{MANIFEST}: entry {rel!r} lacks size or sha256")
    return manifest


def _verified(place: Place, rel: str, entry: dict[str, Any], scratch: Path) -> Path:
    path = place.fetch(rel, scratch)
    size, digest = path.stat().st_size, _sha256(path)
    if size != entry["size"] or digest != entry["sha256"]:
        raise BackupError(f"{place.where}/{rel}: does not match the manifest (size {size} vs "
                          f"{entry['size']}, or sha256 differs): the backup is damaged")
    return path


def _stack_keys(home: Path, settings: Settings) -> dict[str, Any]:
    """The restored stack's S3 keys (its credentials.json) for a local store."""
    if settings.s3_external:
        return {}
    try:
        creds = read_json(home / "credentials.json")
        return {"aws_access_key_id": SecretStr(creds["access_key_id"]),
                "aws_secret_access_key": SecretStr(creds["secret_access_key"])}
    except (FileNotFoundError, KeyError, ValueError, TypeError) as e:
        raise BackupError(f"the backup's credentials.json is missing or unreadable ({e})") from e


@contextmanager
def _s3_only(settings: Settings, *, timeout_s: float, echo: Echo) -> Iterator[Storage]:
    """Storage on the bucket: an external store as it is, else the local SeaweedFS started
    alone for the restore and stopped after it."""
    if settings.s3_external:
        yield Storage.from_settings(settings)
        return
    st = supervisor.up(settings, timeout_s=timeout_s, echo=echo, only=("s3",))
    try:
        yield Storage.from_settings(settings.model_copy(
            update={"s3_endpoint_url": st["s3_endpoint"]}))
    finally:
        supervisor.down(settings, echo=echo)


@contextmanager
def _all_or_nothing(home: Path) -> Iterator[None]:
    """On failure, empty GAN_HOME again (it was empty or absent: nothing of the user's is lost)."""
    existed = home.exists()
    try:
        yield
    except BaseException:
        if home.exists():
            for child in home.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
            if not existed:
                home.rmdir()
        raise
