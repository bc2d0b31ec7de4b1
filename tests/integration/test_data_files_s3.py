"""The file sources against the real local SeaweedFS: an image folder under an s3:// prefix
(labelled and flat), a Parquet table in S3, the CIFAR-10 binary format made here, and a bad
file in S3 named in the error; each prepared once, stored as shards, read back bit-identical."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gan.core.config import DataConfig
from gan.data.fingerprint import source_fingerprint
from gan.data.prepare import load_prepared, prepare, prepare_arrays
from gan.data.shapes import CLASSES, write_shapes
from gan.data.validate import DataError
from gan.io.storage import Storage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]



def _upload_tree(storage: Storage, root: Path, prefix: str) -> None:
    for p in sorted(root.rglob("*.png")):
        storage.put_bytes(f"{prefix}/{p.relative_to(root).as_posix()}", p.read_bytes())


def _same(a, b) -> None:
    for f in ("x_train", "y_train", "x_holdout", "y_holdout"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert (a.version, a.num_classes, a.class_names, a.labelled) == (
        b.version, b.num_classes, b.class_names, b.labelled)


def test_images_from_an_s3_prefix_labelled_and_flat(storage: Storage, name: str,
                                                    tmp_path: Path) -> None:
    write_shapes(tmp_path / "shapes", n_per_class=10)
    prefix = storage.settings.s3_uri("tests", name, "shapes")
    _upload_tree(storage, tmp_path / "shapes", prefix)
    cfg = DataConfig(source="images", uri=prefix + "/", name=name, image_size=32)
    ref = prepare(cfg, storage)
    assert (ref.n_train, ref.n_holdout, ref.num_classes, ref.channels) == (35, 5, 4, 3)
    assert ref.class_names == list(CLASSES) and ref.labelled and ref.n_skipped == 0
    got = load_prepared(storage, ref)
    _same(got, prepare_arrays(DataConfig(source="images", uri=str(tmp_path / "shapes"),
                                         name=name, image_size=32)))
    fp = source_fingerprint(cfg, storage)
    storage.put_bytes(f"{prefix}/circle/extra.png",
                      (tmp_path / "shapes" / "circle" / "circle-00000.png").read_bytes())
    assert source_fingerprint(cfg, storage) != fp  # a new file changes the cache key

    write_shapes(tmp_path / "flat", n_per_class=5, flat=True)
    flat = storage.settings.s3_uri("tests", name, "flat")
    _upload_tree(storage, tmp_path / "flat", flat)
    fref = prepare(DataConfig(source="images", uri=flat, name=name, image_size=16), storage)
    assert not fref.labelled and fref.num_classes == 1 and fref.class_names == []
    assert load_prepared(storage, fref).x_train.shape == (13, 3, 16, 16)


def test_bad_file_in_s3_is_named_and_nothing_is_written(storage: Storage, name: str,
                                                        tmp_path: Path) -> None:
    write_shapes(tmp_path / "s", n_per_class=5)
    prefix = storage.settings.s3_uri("tests", name, "s")
    _upload_tree(storage, tmp_path / "s", prefix)
    storage.put_bytes(f"{prefix}/square/broken.png", b"\x89PNG\r\n\x1a\n truncated")
    cfg = DataConfig(source="images", uri=prefix, name=name, image_size=32)
    with pytest.raises(DataError, match=f"{prefix}/square/broken.png: (truncated|not a PNG)"):
        prepare(cfg, storage)
    assert storage.list_keys(storage.settings.s3_uri("datasets", name) + "/") == []
    ref = prepare(cfg.model_copy(update={"max_bad_fraction": 0.1}), storage)
    assert ref.n_skipped == 1 and ref.n_train + ref.n_holdout == 20
    manifest = storage.get_json(ref.uri + "manifest.json")
    assert manifest["skipped"][0]["file"].endswith("square/broken.png")


def test_parquet_from_s3(storage: Storage, name: str, tmp_path: Path) -> None:
    write_shapes(tmp_path / "p", n_per_class=6)
    files = sorted((tmp_path / "p").rglob("*.png"))
    table = pa.table({"image": [p.read_bytes() for p in files],
                      "label": [p.parent.name for p in files]})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    uri = storage.settings.s3_uri("tests", name, "shapes.parquet")
    storage.put_bytes(uri, buf.getvalue().to_pybytes())
    ref = prepare(DataConfig(source="parquet", uri=uri, name=name, image_size=32), storage)
    assert ref.class_names == list(CLASSES) and ref.num_classes == 4 and ref.channels == 3
    # 24 images split by pixel hash: 3 held out (pinned)
    assert load_prepared(storage, ref).x_holdout.shape == (3, 3, 32, 32)


def test_cifar10_binary_archive_from_s3(storage: Storage, name: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 3, 32, 32), dtype=np.uint8)
    y = (np.arange(50) % 10).astype(np.uint8)
    records = np.concatenate([y[:, None], x.reshape(50, -1)], axis=1).tobytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = len(records)
        tf.addfile(info, io.BytesIO(records))
    uri = storage.settings.s3_uri("tests", name, "cifar-10-binary.tar.gz")
    storage.put_bytes(uri, buf.getvalue())
    ref = prepare(DataConfig(source="cifar10", uri=uri, name=name, image_size=32), storage)
    assert (ref.num_classes, ref.channels, ref.n_train) == (10, 3, 46)
    assert ref.class_names[0] == "airplane"
    got = load_prepared(storage, ref)
    both = torch.cat([got.x_train, got.x_holdout])
    want = torch.from_numpy(x).float() / 127.5 - 1
    assert all(any(torch.equal(g, w) for w in want) for g in both[:5])
