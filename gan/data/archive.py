"""Reading the files inside a `.zip` or `.tar` (plain, gzip, bz2, xz) archive, in memory.

What this module is: `is_archive(name)` and `archive_members(data, origin)`, which returns
`(relative posix path, bytes)` for every regular file of an archive. Nothing is extracted to
disk, and an archive is refused as a whole (DataError naming the member) when a member's path
is absolute or climbs out with `..`, when a member is a link or a device, when a zip member
is encrypted or compressed in a way Python cannot read (Deflate64, ...), or when the
uncompressed total exceeds `MAX_ARCHIVE_BYTES` or `MAX_EXPANSION` times the archive's size
(a zip bomb; checked from the declared sizes before anything is decompressed). Directories
are skipped, and so are macOS's `__MACOSX/` and dot-files (`.DS_Store`, `._x.png`), which
are never images.

What it is not: no decoding of what the members hold (`gan.data.decode`), no listing of
folders or S3 prefixes (`gan.data.images`).
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import PurePosixPath

from gan.data.validate import DataError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MAX_ARCHIVE_BYTES = 8 << 30  # uncompressed total; more is refused as a likely zip bomb
# Images (PNG/JPEG/WebP) are compressed already: an archive expanding over this many times its
# own size, beyond MIN_BOMB_BYTES, is a zip bomb, refused before anything is decompressed.
MAX_EXPANSION = 100
MIN_BOMB_BYTES = 64 << 20
# Zip compression methods by number (APPNOTE 4.4.5) that appear in archives zipfile cannot read.
ZIP_METHODS = {9: "Deflate64", 10: "PKWARE implode", 18: "IBM TERSE", 19: "IBM LZ77",
               95: "XZ", 96: "JPEG", 97: "WavPack", 98: "PPMd", 99: "AES-encrypted"}


def is_archive(name: str) -> bool:
    """True when the name ends like an archive this module reads."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_path(name: str, origin: str) -> str | None:
    """The member's relative posix path; None for entries to skip; DataError when unsafe."""
    norm = name.replace("\\", "/")
    parts = PurePosixPath(norm).parts
    if norm.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts:
        raise DataError(f"{origin}: archive member {name!r} points outside the archive "
                        "(absolute path or '..'): the archive is refused")
    parts = tuple(p for p in parts if p not in ("", "."))
    if not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
        return None
    return "/".join(parts)


def _check_total(total: int, packed: int, origin: str) -> None:
    """DataError when `total` uncompressed bytes from `packed` archive bytes look like a bomb."""
    if total > MAX_ARCHIVE_BYTES:
        raise DataError(f"{origin}: archive expands to {total} bytes, over the "
                        f"{MAX_ARCHIVE_BYTES}-byte limit (a zip bomb?): refused")
    if total > MIN_BOMB_BYTES and total > MAX_EXPANSION * packed:
        raise DataError(f"{origin}: archive of {packed} bytes expands to {total} bytes, over "
                        f"{MAX_EXPANSION}x its size (a zip bomb; images barely compress): "
                        "refused")


def _zip_members(data: bytes, origin: str) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        _check_total(sum(i.file_size for i in infos), len(data), origin)
        out = []
        for info in infos:
            path = _safe_path(info.filename, origin)
            ftype = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records none
            if ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise DataError(f"{origin}: archive member {info.filename!r} is a link or "
                                "special file, not a regular file: the archive is refused")
            if path is not None:
                out.append((path, _zip_read(zf, info, origin)))
    return out


def _zip_read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, origin: str) -> bytes:
    """A member's bytes; DataError naming the archive and member for what zipfile cannot read
    (it raises RuntimeError for an encrypted member, NotImplementedError for a compression
    method it lacks, such as Deflate64, which Windows Explorer writes for large files)."""
    if info.flag_bits & 0x1:
        raise DataError(f"{origin}: archive member {info.filename!r} is encrypted (password-"
                        "protected zips are not read): re-create the archive without a "
                        "password, or as a .tar.gz")
    try:
        return zf.read(info)
    except NotImplementedError as e:
        method = ZIP_METHODS.get(info.compress_type, "unknown")
        raise DataError(f"{origin}: archive member {info.filename!r} uses compression method "
                        f"{info.compress_type} ({method}), which Python's zipfile cannot read "
                        f"({e}): re-create the archive with the usual Deflate (`zip -r`) or "
                        "as a .tar.gz") from e
    except RuntimeError as e:  # other encryption schemes zipfile detects while reading
        raise DataError(f"{origin}: archive member {info.filename!r} cannot be read ({e}): "
                        "re-create the archive without a password, or as a .tar.gz") from e


def _tar_members(data: bytes, origin: str) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
        members = [m for m in tf.getmembers() if not m.isdir()]
        _check_total(sum(m.size for m in members), len(data), origin)
        out = []
        for m in members:
            path = _safe_path(m.name, origin)
            if not m.isfile():
                raise DataError(f"{origin}: archive member {m.name!r} is a link or special "
                                "file, not a regular file: the archive is refused")
            f = tf.extractfile(m)
            if path is not None and f is not None:
                out.append((path, f.read()))
    return out


def archive_members(data: bytes, origin: str) -> list[tuple[str, bytes]]:
    """Every regular file of a zip or tar archive as (relative path, bytes), sorted by path."""
    if not data:
        raise DataError(f"{origin}: file is empty (0 bytes)")
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            members = _zip_members(data, origin)
        else:
            members = _tar_members(data, origin)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{origin}: not a readable zip or tar archive "
                        f"({type(e).__name__}: {e})") from e
    return sorted(members)
