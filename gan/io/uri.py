"""URIs the pipeline reads: a local path, `file://`, `s3://` or `http(s)://`.

What this module is:
  * `read_bytes(uri, storage)`: the bytes behind a URI; failures raise the caller's error type
    (`error=`) with a message naming the URI;
  * `uri_meta(uri, storage)`: cheap content metadata without a download (size and mtime of a
    file, ETag and size of an S3 object, ETag / Last-Modified / Content-Length of a URL), the
    stuff of cache keys; `UriError` when it cannot be read;
  * `listing_meta(folder_or_prefix, storage)`: the same for every file under a local folder
    or `s3://` prefix, from one listing (one line per file: relative path and metadata);
  * `redact_url(text)`: a URL safe to log, store or show (no user:password, no signatures);
  * `storage_for(settings, *uris)`: a `Storage` only when some URI is `s3://`.

What it is not: no writing (see `gan.io.storage`), no parsing of what the bytes hold.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from gan.core.settings import Settings

if TYPE_CHECKING:  # boto3/pyarrow load only when an s3:// URI is actually read
    from gan.io.storage import Storage

# Query parameters of a URL that carry a credential (presigned S3 URLs, tokens).
SECRET_QUERY_RE = re.compile(r"signature|token|credential|key|password|secret", re.IGNORECASE)
HTTP = ("http://", "https://")


class UriError(ValueError):
    """A URI that cannot be read; the message names it."""


def redact_url(text: str) -> str:
    """`https://user:pw@host/p?X-Amz-Signature=..` → `https://***@host/p?X-Amz-Signature=***`."""
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{k}=***" if SECRET_QUERY_RE.search(k) else f"{k}={v}" if sep else k
        for k, sep, v in (q.partition("=") for q in parts.query.split("&") if q)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def storage_for(settings: Settings | None, *uris: str) -> Storage | None:
    """A Storage when some URI is s3:// (local files need no object storage), else None;
    `settings` None: read them (`Settings.load()`)."""
    if not any(u.startswith("s3://") for u in uris):
        return None
    from gan.io.storage import Storage  # lazy: boto3 loads only for s3:// URIs

    return Storage.from_settings(settings or Settings.load())


def read_bytes(uri: str, storage: Storage | None = None, *, error: type[Exception] = UriError,
               what: str = "source", http: bool = True, missing_hint: str = "") -> bytes:
    """Bytes of a local path, an `s3://` URI or (with `http`) an http(s) URL; `error(message)`
    when unreadable. `what` names the URI's role in the message (`an s3:// input needs ...`);
    `missing_hint` is appended when an S3 object does not exist (a user error, not an outage:
    the cause stays `ObjectMissing`, which the flow does not retry)."""
    if uri.startswith("s3://"):
        if storage is None:
            raise error(f"{uri}: an s3:// {what} needs object storage (no Storage given)")
        from gan.io.storage import ObjectMissing, StorageError  # lazy: boto3 only for s3://

        try:
            return storage.get_bytes(uri)
        except ValueError as e:  # split_uri: a key built to leave its prefix
            raise error(f"{uri}: {e}") from e
        except StorageError as e:
            if missing_hint and isinstance(e, ObjectMissing):
                raise error(f"{e}; {missing_hint}") from e
            raise error(f"{uri}: cannot read from object storage: {e}") from e
    if http and uri.startswith(HTTP):
        try:
            with urllib.request.urlopen(uri, timeout=60) as resp:  # noqa: S310 (http(s) only)
                return resp.read()
        except (urllib.error.URLError, OSError) as e:
            raise error(f"{redact_url(uri)}: download failed: {e}") from e
    path = Path(uri.removeprefix("file://"))
    try:
        return path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from e


def uri_meta(uri: str, storage: Storage | None = None) -> str:
    """Metadata that changes when the content does, read without a download; UriError when
    it cannot be read (or, for a URL, when only the size is known)."""
    if uri.startswith("s3://"):
        if storage is None:
            raise UriError(f"{uri}: an s3:// URI needs object storage (no Storage given)")
        from gan.io.storage import split_uri  # lazy: boto3 loads only for s3:// URIs

        try:
            bucket, key = split_uri(uri)
        except ValueError as e:
            raise UriError(str(e)) from e
        try:
            head = storage.client.head_object(Bucket=bucket, Key=key)
        except Exception as e:  # botocore ClientError / EndpointConnectionError
            raise UriError(f"{uri}: no metadata: {e}") from e
        return f"etag={head.get('ETag')} size={head.get('ContentLength')}"
    if uri.startswith(HTTP):
        req = urllib.request.Request(uri, method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=15) as r:  # noqa: S310 (http(s) only)
                fields = [r.headers.get(h) for h in ("ETag", "Last-Modified", "Content-Length")]
        except (urllib.error.URLError, OSError) as e:
            raise UriError(f"{redact_url(uri)}: no metadata: {e}") from e
        if not any(fields[:2]):  # size alone does not identify content
            raise UriError(f"{redact_url(uri)}: no ETag or Last-Modified")
        return "etag={} modified={} size={}".format(*fields)
    try:
        st = Path(uri.removeprefix("file://")).stat()
    except OSError as e:
        raise UriError(f"{uri}: no metadata: {e.strerror or e}") from e
    return f"size={st.st_size} mtime_ns={st.st_mtime_ns}"


def listing_meta(uri: str, storage: Storage | None = None) -> list[str]:
    """`<relative path> <metadata>` for every file under a local folder (size, mtime) or an
    `s3://` prefix (ETag, size; one paginated listing, no per-object request), sorted;
    UriError when it cannot be listed or holds no file."""
    if uri.startswith("s3://"):
        if storage is None:
            raise UriError(f"{uri}: an s3:// URI needs object storage (no Storage given)")
        from gan.io.storage import split_uri  # lazy: boto3 loads only for s3:// URIs

        try:
            bucket, prefix = split_uri(uri.rstrip("/") + "/")
        except ValueError as e:
            raise UriError(str(e)) from e
        lines = []
        try:
            pages = storage.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix)
            for page in pages:
                lines += [f"{o['Key'][len(prefix):]} etag={o.get('ETag')} size={o.get('Size')}"
                          for o in page.get("Contents", [])]
        except Exception as e:  # botocore's errors, of several kinds: no listing, no cache key
            raise UriError(f"{uri}: cannot list: {e}") from e
    else:
        root = Path(uri.removeprefix("file://"))
        try:
            lines = [f"{p.relative_to(root).as_posix()} size={st.st_size} "
                     f"mtime_ns={st.st_mtime_ns}"
                     for p in root.rglob("*") if p.is_file() and (st := p.stat())]
        except OSError as e:
            raise UriError(f"{uri}: cannot list: {e.strerror or e}") from e
    if not lines:
        raise UriError(f"{uri}: no files to fingerprint")
    return sorted(lines)
