"""gan.data's file sources (images, parquet, cifar10), decoding policy, archives and shards, on
real PNG/JPEG/Parquet/CIFAR files written here; every bad-file case with its message."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from gan.core.config import DataConfig
from gan.data import cifar, decode, shards
from gan.data.fingerprint import source_fingerprint
from gan.data.prepare import prepare_arrays
from gan.data.shapes import CLASSES, render_shapes, write_shapes
from gan.data.sources import load_source
from gan.data.validate import DataError

torch.set_num_threads(1)


def png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def solid(rgb: tuple[int, int, int], h: int = 32, w: int = 32) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


def images_cfg(uri: Path | str, **kw: object) -> DataConfig:
    return DataConfig(source="images", uri=str(uri), image_size=32, **kw)


@pytest.fixture
def shapes_dir(tmp_path: Path) -> Path:
    write_shapes(tmp_path / "shapes", n_per_class=5)
    return tmp_path / "shapes"


# --------------------------------------------------------------------------- images


def test_class_folders_are_labels_and_rgb_is_kept(shapes_dir: Path) -> None:
    d = prepare_arrays(images_cfg(shapes_dir, holdout_fraction=0.2))
    assert d.x_train.shape[1:] == (3, 32, 32) and len(d.x_train) + len(d.x_holdout) == 20
    assert d.class_names == CLASSES and d.num_classes == 4 and d.labelled
    hist = np.add(d.class_hist("train"), d.class_hist("holdout"))
    assert hist.tolist() == [5, 5, 5, 5] and d.name == "shapes"
    # The pixels are the PNGs' pixels (no resize at 32): compare with the renderer's output.
    x, _ = render_shapes(5)
    real = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
    got = torch.cat([d.x_train, d.x_holdout])
    assert all(any(torch.equal(g, r) for r in real) for g in got[:3])


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    write_shapes(tmp_path / "flat", n_per_class=3, flat=True)
    d = prepare_arrays(images_cfg(tmp_path / "flat"))
    assert not d.labelled and d.num_classes == 1 and d.class_names == ()
    assert set(d.y_train.tolist()) == {0} and d.x_train.shape[1] == 3


def test_one_class_only_is_unlabelled(tmp_path: Path) -> None:
    for i in range(6):
        (tmp_path / "cats").mkdir(exist_ok=True)
        (tmp_path / "cats" / f"{i}.png").write_bytes(png(solid((i * 40, 0, 0))))
    src = load_source(images_cfg(tmp_path))
    assert not src.labelled and src.class_names == ("cats",) and src.y.tolist() == [0] * 6


def test_empty_folder_and_non_image_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no image files .* found"):
        load_source(images_cfg(tmp_path / "empty"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.txt").write_text("hello")
    with pytest.raises(DataError, match="no image files .*; 1 other files ignored"):
        load_source(images_cfg(tmp_path / "docs"))
    with pytest.raises(DataError, match="missing: does not exist"):
        load_source(images_cfg(tmp_path / "missing"))


def _folder_with(tmp_path: Path, bad_name: str, bad: bytes, n_good: int = 9) -> Path:
    root = tmp_path / "mix"
    for k in range(n_good):
        cls = root / ("a" if k % 2 else "b")
        cls.mkdir(parents=True, exist_ok=True)
        (cls / f"{k}.png").write_bytes(png(solid((k * 20, 50, 90))))
    (root / "a" / bad_name).write_bytes(bad)
    return root


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("truncated.png", png(np.random.default_rng(0).integers(0, 256, (32, 32, 3),
                                                                   dtype=np.uint8))[:300],
         "truncated.png: truncated or corrupt image"),
        ("notes.png", b"this is a text file, not a picture\n",
         "notes.png: not a PNG, JPEG or WebP"),
        ("zero.png", b"", "zero.png: file is empty \\(0 bytes\\)"),
        ("photo.jpg", png(solid((1, 2, 3)), fmt="GIF"), "photo.jpg: not a PNG, JPEG or WebP"),
    ],
    ids=["truncated-png", "text-named-png", "zero-bytes", "gif-named-jpg"],
)
def test_bad_file_is_refused_naming_it_or_skipped_and_counted(
        tmp_path: Path, name: str, content: bytes, message: str) -> None:
    root = _folder_with(tmp_path, name, content)
    with pytest.raises(DataError, match=message) as err:
        load_source(images_cfg(root))
    assert "max_bad_fraction" in str(err.value) and str(root) in str(err.value)
    src = load_source(images_cfg(root, max_bad_fraction=0.1))  # 1 of 10 files
    assert len(src.x) == 9 and len(src.skipped) == 1 and src.skipped[0][0].endswith(name)
    with pytest.raises(DataError, match="1 of 10 is over data.max_bad_fraction = 0.05"):
        load_source(images_cfg(root, max_bad_fraction=0.05))


def test_mixed_sizes_are_centre_cropped_and_resized(tmp_path: Path) -> None:
    wide = np.zeros((32, 96, 3), np.uint8)
    wide[:, 32:64] = 255  # white centre square, black sides: the crop keeps only white
    (tmp_path / "wide.png").write_bytes(png(wide))
    (tmp_path / "big.png").write_bytes(png(solid((200, 200, 200), 100, 100)))
    (tmp_path / "small.png").write_bytes(png(solid((50, 50, 50), 10, 10)))
    src = load_source(images_cfg(tmp_path))
    assert src.x.shape == (3, 1, 32, 32)  # all grey → one channel
    by_value = sorted(int(v) for v in src.x[:, 0, 16, 16])
    assert by_value == [50, 200, 255] and int(src.x.max()) == 255
    assert int(src.x[[i for i in range(3) if src.x[i].min() == 255][0]].min()) == 255


def test_grey_and_colour_mix_becomes_rgb_or_luma(tmp_path: Path) -> None:
    (tmp_path / "grey.png").write_bytes(png(np.full((32, 32), 77, np.uint8)))
    (tmp_path / "red.jpg").write_bytes(png(solid((255, 0, 0)), fmt="JPEG"))
    (tmp_path / "alpha.png").write_bytes(png(np.dstack([solid((0, 0, 255)),
                                                        np.full((32, 32), 0, np.uint8)])))
    (tmp_path / "deep.png").write_bytes(png(np.full((32, 32), 0x8000, np.uint16)))
    (tmp_path / "web.webp").write_bytes(png(solid((0, 255, 0)), fmt="WEBP"))
    src = load_source(images_cfg(tmp_path))
    assert src.channels == 3 and src.x.shape == (5, 3, 32, 32)
    px = {tuple(int(v) for v in src.x[i, :, 5, 5]) for i in range(5)}
    assert (0, 0, 0) in px  # fully transparent blue → composited onto black
    assert (77, 77, 77) in px and (128, 128, 128) in px  # grey repeated; 16-bit scaled >> 8
    grey = load_source(images_cfg(tmp_path, channels=1))
    assert grey.x.shape == (5, 1, 32, 32)
    assert 76 in {int(v) for v in grey.x[:, 0, 5, 5]}  # red → luma 0.299 * 255


def test_decompression_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.png").write_bytes(png(solid((1, 2, 3), 64, 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="a.png: decompression-bomb guard.*MAX_IMAGE_PIXELS"):
        load_source(images_cfg(tmp_path, max_bad_fraction=0.5))  # never skipped


def _zip(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def test_zip_and_tar_archives_with_a_top_folder(tmp_path: Path) -> None:
    members = {f"set/{c}/{i}.png": png(solid((i * 30, 10 * k, 0))) for k, c in
               enumerate(("dog", "cat")) for i in range(4)}
    (tmp_path / "set.zip").write_bytes(_zip({**members, "__MACOSX/set/._x.png": b"junk"}))
    z = load_source(images_cfg(tmp_path / "set.zip"))
    assert z.class_names == ("cat", "dog") and z.labelled and len(z.x) == 8
    with tarfile.open(tmp_path / "set.tar.gz", "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    t = load_source(images_cfg(tmp_path / "set.tar.gz"))
    assert np.array_equal(t.x, z.x) and np.array_equal(t.y, z.y)


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (_zip({"a/1.png": b"x", "../evil.png": b"x"}), "'../evil.png' points outside"),
        (_zip({"/etc/evil.png": b"x"}), "'/etc/evil.png' points outside"),
        (_zip({"a/1.png": b"x"}, symlink="a/link.png"), "'a/link.png' is a link"),
        (b"PK\x03\x04 not really a zip", "not a readable zip or tar archive"),
    ],
    ids=["dot-dot", "absolute", "symlink", "corrupt"],
)
def test_unsafe_archive_is_refused(tmp_path: Path, archive: bytes, message: str) -> None:
    (tmp_path / "x.zip").write_bytes(archive)
    with pytest.raises(DataError, match=message):
        load_source(images_cfg(tmp_path / "x.zip"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zip"]  # nothing written


def test_tar_link_member_is_refused(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "x.tar", "w") as tf:
        info = tarfile.TarInfo("a/link.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(DataError, match="'a/link.png' is a link"):
        load_source(images_cfg(tmp_path / "x.tar"))


def test_folder_fingerprint_follows_its_files(shapes_dir: Path) -> None:
    cfg = images_cfg(shapes_dir)
    fp = source_fingerprint(cfg)
    assert source_fingerprint(cfg) == fp
    target = next((shapes_dir / "circle").iterdir())
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert source_fingerprint(cfg) != fp


# --------------------------------------------------------------------------- parquet


def _table(labels: list[object] | None, n: int = 8, struct: bool = False) -> pa.Table:
    imgs = [png(solid((i * 25, 0, 100))) for i in range(n)]
    col = (pa.array([{"bytes": b, "path": None} for b in imgs]) if struct
           else pa.array(imgs, pa.binary()))
    cols = {"img": col}
    if labels is not None:
        cols["label"] = pa.array(labels)
    return pa.table(cols)


def test_parquet_string_int_and_missing_labels(tmp_path: Path) -> None:
    pq.write_table(_table(["b", "a"] * 4), tmp_path / "s.parquet")
    s = load_source(DataConfig(source="parquet", uri=str(tmp_path / "s.parquet"),
                               image_column="img", image_size=16))
    assert s.class_names == ("a", "b") and s.y.tolist() == [1, 0] * 4
    assert s.x.shape[1:] == (3, 16, 16)
    pq.write_table(_table([0, 1, 2, 3] * 2, struct=True), tmp_path / "i.parquet")
    i = load_source(DataConfig(source="parquet", uri=str(tmp_path / "i.parquet"),
                               image_column="img"))
    assert i.class_names == () and i.y.tolist() == [0, 1, 2, 3] * 2 and i.labelled
    pq.write_table(_table(None), tmp_path / "u.parquet")
    u = load_source(DataConfig(source="parquet", uri=str(tmp_path / "u.parquet"),
                               image_column="img"))
    assert not u.labelled and u.y.tolist() == [0] * 8
    with pytest.raises(DataError, match="s.parquet: no image column 'image' .*img, label"):
        load_source(DataConfig(source="parquet", uri=str(tmp_path / "s.parquet")))


def test_parquet_folder_and_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    pq.write_table(_table([0, 1] * 4), tmp_path / "parts" / "p0.parquet")
    bad = pa.table({"img": pa.array([b"not an image", png(solid((9, 9, 9)))], pa.binary()),
                    "label": pa.array([0, 1])})
    pq.write_table(bad, tmp_path / "parts" / "p1.parquet")
    cfg = DataConfig(source="parquet", uri=str(tmp_path / "parts"), image_column="img")
    with pytest.raises(DataError, match="p1.parquet#row0: not a PNG, JPEG or WebP"):
        load_source(cfg)
    src = load_source(cfg.model_copy(update={"max_bad_fraction": 0.2}))
    assert len(src.x) == 9 and src.y.tolist() == [0, 1] * 4 + [1]
    (tmp_path / "parts" / "p2.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match="p2.parquet: not a readable Parquet file"):
        load_source(cfg)


# --------------------------------------------------------------------------- cifar10


def cifar_records(n: int, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = np.arange(n) % 10
    rec = np.concatenate([y[:, None].astype(np.uint8), x.reshape(n, -1)], axis=1)
    return rec.tobytes(), x, y


def test_cifar10_bin_folder_and_binary_archive(tmp_path: Path) -> None:
    (tmp_path / "bins").mkdir()
    b1, x1, y1 = cifar_records(20, 1)
    b2, x2, y2 = cifar_records(10, 2)
    (tmp_path / "bins" / "data_batch_1.bin").write_bytes(b1)
    (tmp_path / "bins" / "test_batch.bin").write_bytes(b2)
    src = load_source(DataConfig(source="cifar10", uri=str(tmp_path / "bins")))
    assert np.array_equal(src.x, np.concatenate([x1, x2])) and src.class_names == cifar.CLASS_NAMES
    assert src.y.tolist() == y1.tolist() + y2.tolist()
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as tf:
        for name, data in (("data_batch_1.bin", b1), ("test_batch.bin", b2),
                           ("batches.meta.txt", "\n".join("abcdefghij").encode())):
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    a = load_source(DataConfig(source="cifar10", uri=str(tmp_path / "cifar-10-binary.tar.gz")))
    assert np.array_equal(a.x, src.x) and a.class_names == tuple("abcdefghij")


def test_cifar10_refuses_pickles_truncation_and_bad_md5(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with tarfile.open(tmp_path / "release.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        data = b"\x80\x04K\x01."  # pickle.dumps(1): never loaded
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="data_batch_1: the Python release .* never loads"):
        load_source(DataConfig(source="cifar10", uri=str(tmp_path / "release.tar.gz")))
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz"):
        load_source(DataConfig(source="cifar10", uri=str(tmp_path / "cifar-10-python.tar.gz")))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "data_batch_1.bin").write_bytes(cifar_records(3)[0][:-5])
    with pytest.raises(DataError, match="data_batch_1.bin: truncated: 9214 bytes"):
        load_source(DataConfig(source="cifar10", uri=str(tmp_path / "t")))
    blob = cifar_records(3)[0]
    (tmp_path / "c").mkdir()
    with tarfile.open(tmp_path / "c" / "cifar-10-binary.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = len(blob)
        tf.addfile(info, io.BytesIO(blob))
    size = (tmp_path / "c" / "cifar-10-binary.tar.gz").stat().st_size
    monkeypatch.setattr(cifar, "CANONICAL", (size, "0" * 32))  # pretend canonical size
    with pytest.raises(DataError, match="canonical cifar-10-binary.tar.gz name and size but MD5"):
        load_source(DataConfig(source="cifar10", uri=str(tmp_path / "c" /
                                                         "cifar-10-binary.tar.gz")))


# --------------------------------------------------------------------------- npz, shards


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_npz_rgb_in_either_layout(tmp_path: Path, layout: str) -> None:
    x = np.random.default_rng(0).integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    stored = x if layout == "nchw" else x.transpose(0, 2, 3, 1)
    np.savez(tmp_path / "rgb.npz", x=stored, y=np.arange(20) % 2)
    d = prepare_arrays(DataConfig(source="npz", uri=str(tmp_path / "rgb.npz"), image_size=8))
    got = torch.cat([d.x_train, d.x_holdout])
    assert got.shape == (20, 3, 8, 8)
    want = {hashlib.sha256(((img.astype(np.float32) / 127.5) - 1).tobytes()).hexdigest()
            for img in x}
    assert {hashlib.sha256(g.numpy().tobytes()).hexdigest() for g in got} == want


def test_shards_round_trip_and_split_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)
    y = np.arange(10, dtype=np.int64)
    monkeypatch.setattr(shards, "SHARD_BYTES", 4 * 48)  # four images per shard
    parts = shards.encode_shards(x, y, "train")
    assert [p.file for p in parts] == [f"train-0000{i}.parquet" for i in range(3)]
    assert [p.rows for p in parts] == [4, 4, 2]
    back = [shards.decode_shard(p.data, p.file) for p in parts]
    assert np.array_equal(np.concatenate([b[0] for b in back]), x)
    assert np.array_equal(np.concatenate([b[1] for b in back]), y)
    table = pq.read_table(pa.BufferReader(parts[0].data))  # any Parquet reader can stream it
    assert table.column_names == ["image", "label"] and table.num_rows == 4
    with pytest.raises(DataError, match="f: not a dataset shard"):
        shards.decode_shard(b"nope", "f")


def test_decode_is_refused_for_nothing() -> None:
    with pytest.raises(DataError, match="no images to decode"):
        decode.decode_images([], size=8, channels=None)


# --------------------------------------------------------------------------- stray files


class _PrefixStorage:
    """Just what the `images` source asks of object storage for an s3:// prefix: a listing and
    the objects' bytes (a dict of key → bytes standing in for a bucket)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def list_keys(self, prefix_uri: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix_uri))

    def get_bytes(self, uri: str) -> bytes:
        return self.objects[uri]


def _class_tree(n_classes: int = 10, per_class: int = 3) -> dict[str, bytes]:
    """Ten class folders of small PNGs plus one `cover.png` at the root (a stray file)."""
    files = {f"{c}/{i}.png": png(solid((c * 20, i * 40, 7), 8, 8))
             for c in range(n_classes) for i in range(per_class)}
    return {**files, "cover.png": png(solid((255, 255, 255), 8, 8))}


STRAY_MESSAGE = (r"1 image file lies at the root beside 10 class folders \(cover.png\).*"
                 r"--ignore-stray-files")


def test_stray_file_beside_class_folders_is_refused_or_ignored_on_request(
        tmp_path: Path) -> None:
    """One cover.png beside ten class folders turned a labelled set into 'no labels', silently
    (the run then switched model and judge)."""
    for rel, data in _class_tree().items():
        (tmp_path / "set" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "set" / rel).write_bytes(data)
    with pytest.raises(DataError, match=STRAY_MESSAGE) as err:
        load_source(images_cfg(tmp_path / "set"))
    assert "data.ignore_stray_files" in str(err.value)
    src = load_source(images_cfg(tmp_path / "set", ignore_stray_files=True))
    assert src.labelled and len(src.x) == 30 and src.class_names == tuple(map(str, range(10)))
    assert src.y.tolist() == [c for c in range(10) for _ in range(3)]


def test_stray_files_in_an_archive_and_an_s3_prefix_are_refused(tmp_path: Path) -> None:
    tree = {f"set/{k}": v for k, v in _class_tree().items()}  # one wrapping top folder
    tree.update({f"set/extra{i}.jpg": png(solid((i, 0, 0), 8, 8), "JPEG") for i in range(6)})
    (tmp_path / "set.zip").write_bytes(_zip(tree))
    with pytest.raises(DataError, match=r"set.zip: 7 image files lie at the root beside 10 "
                                        r"class folders \(cover.png, extra0.jpg, extra1.jpg, "
                                        r"extra2.jpg, extra3.jpg, and 2 more\)"):
        load_source(images_cfg(tmp_path / "set.zip"))
    assert load_source(images_cfg(tmp_path / "set.zip", ignore_stray_files=True)).labelled
    bucket = _PrefixStorage({f"s3://b/data/{k}": v for k, v in _class_tree().items()})
    with pytest.raises(DataError, match=STRAY_MESSAGE):
        load_source(images_cfg("s3://b/data"), bucket)  # type: ignore[arg-type]
    src = load_source(images_cfg("s3://b/data", ignore_stray_files=True),
                      bucket)  # type: ignore[arg-type]
    assert src.labelled and len(src.x) == 30


def test_flat_and_one_folder_layouts_keep_their_meaning(tmp_path: Path) -> None:
    """No class folders to lose: all files at the root (flat) or one folder plus root files
    stay unlabelled, with or without the flag."""
    for i in range(4):
        (tmp_path / "one" / "cats").mkdir(parents=True, exist_ok=True)
        (tmp_path / "one" / "cats" / f"{i}.png").write_bytes(png(solid((i * 40, 0, 0))))
    (tmp_path / "one" / "cover.png").write_bytes(png(solid((9, 9, 9))))
    src = load_source(images_cfg(tmp_path / "one"))
    assert not src.labelled and len(src.x) == 5
