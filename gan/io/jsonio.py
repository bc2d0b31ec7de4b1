"""JSON files: local ones (atomic replace, optionally private) and ones on a pyarrow filesystem.

What this module is:
  * `write_json(path, obj, private=)` / `read_json(path, default=)`: a local file, replaced
    atomically (readers never see half a file); `private` makes it mode 0600 from creation on;
  * `write_json_fs(fs, path, obj)` / `read_json_fs(fs, path)`: a file on a pyarrow filesystem
    (the run folder Ray Train shares between driver and workers, local or S3).

What it is not: no schema (callers validate what they read); S3 objects through boto3 are
`gan.io.storage.Storage.put_json` / `get_json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyarrow import fs as pafs

_MISSING: Any = object()


def write_json(path: Path, obj: object, *, private: bool = False) -> None:
    """Replace `path` atomically (readers never see half a file). `private`: mode 0600 from
    creation on, so a secret is never readable by others, not even for a moment."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: Path, default: Any = _MISSING) -> Any:
    """The JSON in `path`; `default` when the file does not exist (without one,
    FileNotFoundError). Text that is not JSON raises ValueError (JSONDecodeError,
    UnicodeDecodeError)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if default is _MISSING:
            raise
        return default
    return json.loads(text)


def read_json_fs(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    """The JSON object at `path` on `fs`, or None when there is none."""
    from pyarrow import fs as pafs  # lazy: only Ray's run files need pyarrow

    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def write_json_fs(fs: pafs.FileSystem, path: str, obj: Any) -> None:
    """Write `obj` as JSON at `path` on `fs` (NaN allowed: Python's json reads it back)."""
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True).encode())
