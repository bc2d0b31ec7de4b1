"""Hostile input, each refused with a message naming the problem and nothing written outside
its place: symlinks leaving an image folder, zip and tar.gz bombs, a PNG declaring
100,000 × 100,000 pixels (Pillow's real limit, not a lowered one), a Parquet file of the wrong
schema, a dataset name, an s3:// key or a model's MLmodel built to leave its prefix."""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pydantic import ValidationError

from gan.core.config import DataConfig
from gan.core.settings import Settings
from gan.data import archive
from gan.data.sources import load_source
from gan.data.validate import DataError
from gan.io.storage import Storage, split_uri
from gan.io.uri import UriError, listing_meta, read_bytes, uri_meta
from gan.registry import model_format as mm
from gan.registry.load import download_model


def _png(h: int = 8, w: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _cfg(uri: Path | str, **kw: object) -> DataConfig:
    return DataConfig(source="images", uri=str(uri), image_size=8, **kw)


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (root / c / "1.png").write_bytes(_png())
    return root


# --------------------------------------------------------------------------- symlinks


def test_symlinked_file_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    (tmp_path / "secret.png").write_bytes(_png())
    (root / "a" / "2.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(DataError, match=r"2.png: a symbolic link to .*secret.png, outside"):
        load_source(_cfg(root))


def test_symlinked_folder_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (root / "c").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(DataError, match="outside the folder"):
        load_source(_cfg(root))


def test_symlink_inside_the_folder_is_followed(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    (root / "b" / "2.png").symlink_to(root / "a" / "1.png")
    assert len(load_source(_cfg(root)).x) == 3


# --------------------------------------------------------------------------- bombs


def test_zip_bomb_is_refused_before_decompression(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("a/1.png", "w") as f:
        chunk = bytes(1 << 20)
        for _ in range(80):  # 80 MiB of zeros → ~80 KB compressed
            f.write(chunk)
    (tmp_path / "bomb.zip").write_bytes(buf.getvalue())
    assert len(buf.getvalue()) < 1 << 20
    with pytest.raises(DataError, match=r"bomb.zip: archive of \d+ bytes expands to 83886080 "
                                        r"bytes, over 100x its size \(a zip bomb"):
        load_source(_cfg(tmp_path / "bomb.zip"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]  # nothing extracted


def test_tar_gz_bomb_is_refused(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "bomb.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("a/1.png")
        info.size = 80 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(DataError, match="over 100x its size"):
        load_source(_cfg(tmp_path / "bomb.tar.gz"))


def test_archive_over_the_total_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", 1000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/1.png", bytes(range(256)) * 8)  # 2048 bytes
    with pytest.raises(DataError, match="over the 1000-byte limit"):
        archive.archive_members(buf.getvalue(), "x.zip")


def _png_declaring(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_png_declaring_100000_squared_pixels_is_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    (root / "a" / "huge.png").write_bytes(_png_declaring(100_000, 100_000))  # 120 bytes
    with pytest.raises(DataError, match=r"huge.png: decompression-bomb guard.*10000000000 pixels"):
        load_source(_cfg(root, max_bad_fraction=0.9))  # never skipped as a "bad file"


# --------------------------------------------------------------------------- parquet


def test_parquet_of_the_wrong_schema_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"image": pa.array([1, 2], pa.int64()), "label": [0, 1]}),
                   tmp_path / "w.parquet")
    cfg = DataConfig(source="parquet", uri=str(tmp_path / "w.parquet"), image_size=8)
    with pytest.raises(DataError, match="w.parquet: column 'image' has type int64, expected"):
        load_source(cfg)
    pq.write_table(pa.table({"pixels": [b"x"]}), tmp_path / "n.parquet")
    cfg = DataConfig(source="parquet", uri=str(tmp_path / "n.parquet"), image_size=8)
    with pytest.raises(DataError, match="no image column 'image' .*pixels"):
        load_source(cfg)


# --------------------------------------------------------------------------- prefixes


@pytest.mark.parametrize("name", ["../x", "a/b", "%2e%2e", "/abs", ".hidden", "A" * 3])
def test_dataset_name_that_could_leave_its_prefix_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        DataConfig(name=name)


def test_dataset_name_from_a_file_stem_is_sanitised() -> None:
    cfg = DataConfig(source="npz", uri="/tmp/../%2e%2e..npz")
    assert "/" not in cfg.dataset_name and ".." not in cfg.dataset_name


@pytest.mark.parametrize("uri", ["s3://gan/datasets/x/../../mlflow/m", "s3://gan/a/%2e%2e/b",
                                 "s3://gan/a/%2E%2e", "s3://gan//etc/passwd", "s3://gan/./a",
                                 "s3://gan/.."])
def test_s3_key_that_leaves_its_prefix_is_refused(uri: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="would leave its prefix"):
        split_uri(uri)
    storage = Storage(settings=Settings(), client=None)  # never reached: refused before a request
    with pytest.raises(DataError, match="would leave its prefix"):
        read_bytes(uri, storage, error=DataError)
    with pytest.raises(UriError, match="would leave its prefix"):
        uri_meta(uri, storage)
    with pytest.raises(UriError, match="would leave its prefix"):
        listing_meta(uri, storage)


@pytest.mark.parametrize("uri", ["s3://gan", "s3://gan/", "s3://gan/a/b/", "s3://gan/a..b/c.d",
                                 "s3://gan/v1.2/x"])
def test_ordinary_s3_keys_pass(uri: str) -> None:
    assert split_uri(uri)[0] == "gan"


def test_model_whose_mlmodel_points_outside_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text(
        "flavors:\n  python_function:\n"
        f"    loader_module: {mm.LOADER_MODULE}\n    data: ../../outside\n")
    with pytest.raises(mm.BundleError, match="outside the model directory"):
        download_model(str(model), tmp_path / "dst")


# --------------------------------------------------------------------------- unreadable zips


def _zip_patched(name: str, *, flag_bits: int = 0, method: int | None = None) -> bytes:
    """A real zip of two PNGs whose member `name` is then marked in both of its headers (local
    and central directory) as zipfile would find it in an archive made by another tool:
    `flag_bits` OR-ed in (0x1 = encrypted, what `zip -e` writes) and/or its compression
    `method` replaced (9 = Deflate64, what Windows Explorer writes for large files). zipfile
    writes neither, so the bytes are patched; the offsets are the zip format's (APPNOTE 4.3.7,
    4.3.12)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/1.png", _png())
        zf.writestr(name, _png(9, 9))
    data = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        local, central = zf.getinfo(name).header_offset, zf.start_dir
    while bytes(data[central + 46:central + 46 + len(name)]) != name.encode():
        sizes = struct.unpack_from("<HHH", data, central + 28)  # name, extra, comment lengths
        central += 46 + sum(sizes)  # the next central directory entry
    for off_flags, off_method in ((local + 6, local + 8), (central + 8, central + 10)):
        flags = struct.unpack_from("<H", data, off_flags)[0] | flag_bits
        struct.pack_into("<H", data, off_flags, flags)
        if method is not None:
            struct.pack_into("<H", data, off_method, method)
    return bytes(data)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"flag_bits": 0x1}, r"enc.zip: archive member 'b/2.png' is encrypted"),
        ({"method": 9}, r"enc.zip: archive member 'b/2.png' uses compression method 9 "
                        r"\(Deflate64\)"),
    ],
    ids=["encrypted", "deflate64"],
)
def test_zip_python_cannot_read_is_a_data_error_naming_the_member(
        tmp_path: Path, patch: dict, message: str) -> None:
    """Encrypted and Deflate64 members raised zipfile's RuntimeError / NotImplementedError,
    which named neither the archive nor the way out."""
    data = _zip_patched("b/2.png", **patch)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # the crafted archive is what zipfile refuses
        with pytest.raises((RuntimeError, NotImplementedError)):
            zf.read("b/2.png")
        assert zf.read("a/1.png") == _png()
    (tmp_path / "enc.zip").write_bytes(data)
    with pytest.raises(DataError, match=message) as err:
        load_source(_cfg(tmp_path / "enc.zip"))
    assert "re-create" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc.zip"]  # nothing written
