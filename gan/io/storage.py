"""Object storage: the boto3 client and the pyarrow S3 filesystem, built from one `Settings`.

What this module is: constructors for both clients from the same values (so Ray, which takes
a pyarrow filesystem, and the rest of the code, which uses boto3, can never disagree), and a
few byte-level helpers (`put_bytes`, `get_bytes`, `exists`, `list_keys`) that every stage uses
to read and write `s3://` URIs. Errors name the endpoint and the URI.

What it is not: no business logic, no knowledge of datasets, checkpoints or models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import boto3
import botocore.config
import botocore.exceptions
from pyarrow import fs as pafs

from gan.core.settings import Settings


class StorageError(RuntimeError):
    """Object storage unreachable, refused the credentials, or lacks an object."""


class ObjectMissing(StorageError, LookupError):
    """The store answered: no such object. A user error (wrong URI, data not uploaded), not an
    outage, so the flow's storage retries skip it."""


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` → (`bucket`, `a/b`). Raises ValueError for anything else, and for a
    key built to leave its prefix: an absolute key (`s3://b//etc`), or a `.` / `..` segment,
    also percent-encoded (`%2e%2e`): some stores normalise them, so `datasets/x/../../mlflow`
    could land elsewhere than its prefix says. No key this pipeline writes has one."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri!r}")
    if key.startswith("/") or any(unquote(part) in (".", "..") for part in key.split("/")):
        raise ValueError(f"s3 URI {uri!r} has an absolute key or a '.'/'..' segment that would "
                         "leave its prefix: refused")
    return bucket, key


@dataclass(frozen=True)
class Storage:
    """A boto3 client plus the settings it came from. Cheap to pass by value."""

    settings: Settings
    client: Any  # botocore S3 client

    @classmethod
    def from_settings(cls, settings: Settings, *, retries: int = 3,
                      timeout_s: float = 10.0) -> Storage:
        client = s3_client(settings, retries=retries, timeout_s=timeout_s)
        return cls(settings=settings, client=client)

    @property
    def endpoint(self) -> str:
        return self.settings.s3_endpoint_url or "(unset)"

    # ---- bytes

    def put_bytes(self, uri: str, data: bytes,
                  content_type: str = "application/octet-stream") -> None:
        bucket, key = split_uri(uri)
        with self._errors(uri):
            self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def get_bytes(self, uri: str) -> bytes:
        bucket, key = split_uri(uri)
        with self._errors(uri):
            return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def put_json(self, uri: str, obj: Any) -> None:
        self.put_bytes(uri, json.dumps(obj, indent=2, sort_keys=True).encode(), "application/json")

    def get_json(self, uri: str) -> Any:
        return json.loads(self.get_bytes(uri))

    def put_file(self, uri: str, path: str) -> None:
        """Upload a local file (multipart for large ones, via boto3's transfer manager)."""
        bucket, key = split_uri(uri)
        with self._errors(uri):
            self.client.upload_file(path, bucket, key)

    def get_file(self, uri: str, path: str) -> None:
        bucket, key = split_uri(uri)
        with self._errors(uri):
            self.client.download_file(bucket, key, path)

    def exists(self, uri: str) -> bool:
        bucket, key = split_uri(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._wrap(e, uri) from e
        except botocore.exceptions.BotoCoreError as e:
            raise self._wrap(e, uri) from e

    def list_keys(self, prefix_uri: str) -> list[str]:
        """Every key under a prefix, as full `s3://` URIs, sorted."""
        bucket, prefix = split_uri(prefix_uri)
        out: list[str] = []
        with self._errors(prefix_uri):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        return sorted(out)

    def delete_prefix(self, prefix_uri: str) -> int:
        keys = self.list_keys(prefix_uri)
        for uri in keys:
            bucket, key = split_uri(uri)
            with self._errors(uri):
                self.client.delete_object(Bucket=bucket, Key=key)
        return len(keys)

    def ensure_bucket(self) -> None:
        """Create the configured bucket if it is missing (idempotent)."""
        bucket = self.settings.s3_bucket
        try:
            self.client.head_bucket(Bucket=bucket)
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise self._wrap(e, f"s3://{bucket}") from e
            with self._errors(f"s3://{bucket}"):
                self.client.create_bucket(Bucket=bucket)
        except botocore.exceptions.BotoCoreError as e:
            raise self._wrap(e, f"s3://{bucket}") from e

    # ---- errors

    def _errors(self, uri: str) -> _ErrorContext:
        return _ErrorContext(self, uri)

    def _wrap(self, e: Exception, uri: str) -> StorageError:
        if isinstance(e, botocore.exceptions.ClientError):
            code = e.response.get("Error", {}).get("Code", "?")
            if code in ("NoSuchKey", "404"):
                return ObjectMissing(f"{uri} does not exist (S3 endpoint {self.endpoint})")
            if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403"):
                return StorageError(
                    f"S3 endpoint {self.endpoint} refused the credentials for {uri} ({code}); "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                )
            return StorageError(f"S3 error {code} for {uri} at {self.endpoint}: {e}")
        return StorageError(f"S3 endpoint {self.endpoint} unreachable while accessing {uri}: {e}")


class _ErrorContext:
    """Turns botocore errors into a `StorageError` naming the endpoint and URI."""

    def __init__(self, storage: Storage, uri: str) -> None:
        self.storage, self.uri = storage, uri

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type | None, e: BaseException | None, tb: Any) -> bool:
        if isinstance(e, (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)):
            raise self.storage._wrap(e, self.uri) from e
        return False


def s3_client(settings: Settings, *, retries: int = 3, timeout_s: float = 10.0) -> Any:
    """A boto3 S3 client for the configured endpoint; path-style addressing (SeaweedFS, MinIO)."""
    endpoint, key, secret = settings.require_s3()
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=settings.aws_default_region,
        config=botocore.config.Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": retries, "mode": "standard"},
            connect_timeout=timeout_s,
            read_timeout=max(timeout_s, 60.0),
            signature_version="s3v4",
        ),
    )


def arrow_fs(settings: Settings) -> pafs.S3FileSystem:
    """The pyarrow S3 filesystem Ray Train writes checkpoints through; same values as boto3."""
    endpoint, key, secret = settings.require_s3()
    scheme, _, host = endpoint.partition("://")
    return pafs.S3FileSystem(
        access_key=key,
        secret_key=secret,
        region=settings.aws_default_region,
        endpoint_override=host,
        scheme=scheme,
        force_virtual_addressing=False,
        # Never fall back to anonymous access: wrong keys must fail, not read public data.
        anonymous=False,
    )


def arrow_path(uri: str) -> str:
    """`s3://bucket/key` → `bucket/key`, the form pyarrow filesystems take."""
    bucket, key = split_uri(uri)
    return f"{bucket}/{key}".rstrip("/")
