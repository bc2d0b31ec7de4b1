"""gan.data.prepare against the real local SeaweedFS: write once, reuse, round trip, s3:// sources,
nothing written for a failing dataset, a half-written version never taken as complete."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
import torch

from gan.core.config import DataConfig
from gan.data.prepare import load_prepared, prepare, prepare_arrays
from gan.data.validate import DataError
from gan.io.storage import Storage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]



def _objects(storage: Storage, prefix: str) -> dict[str, tuple[str, object]]:
    """key → (ETag, LastModified) of every object under prefix."""
    out = {}
    for uri in storage.list_keys(prefix):
        bucket, _, key = uri[5:].partition("/")
        head = storage.client.head_object(Bucket=bucket, Key=key)
        out[uri] = (head["ETag"], head["LastModified"])
    return out


def _assert_same(a, b) -> None:
    for field in ("x_train", "y_train", "x_holdout", "y_holdout"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert (a.num_classes, a.name, a.version) == (b.num_classes, b.name, b.version)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _idx_gz(arr: np.ndarray) -> bytes:
    header = (0x0800 | arr.ndim).to_bytes(4, "big") + b"".join(
        d.to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def test_prepare_writes_once_then_reuses_and_round_trips(storage: Storage, name: str) -> None:
    cfg = DataConfig(name=name, limit=200)  # bundled digits
    prefix = storage.settings.s3_uri("datasets", name) + "/"
    ref = prepare(cfg, storage)
    assert not ref.reused and ref.uri == f"{prefix}{ref.version}/"
    # 200 digits split by pixel hash (gan.data.split): 167 + 33, pinned
    assert (ref.n_train, ref.n_holdout, ref.num_classes, ref.image_size) == (167, 33, 10, 28)
    assert sum(ref.class_hist_train) == 167 and ref.source.startswith("digits")
    before = _objects(storage, prefix)
    assert sorted(before) == [ref.uri + f for f in ("holdout-00000.parquet", "manifest.json",
                                                    "train-00000.parquet")]
    # Compact: 167 uint8 images of 28×28 plus labels, not float32.
    bucket, _, key = (ref.uri + "train-00000.parquet")[5:].partition("/")
    assert storage.client.head_object(Bucket=bucket, Key=key)["ContentLength"] < 167 * 784 + 8192

    again = prepare(cfg, storage)
    assert again.reused and again == ref.model_copy(update={"reused": True})
    assert _objects(storage, prefix) == before  # no new or rewritten object

    expected = prepare_arrays(cfg)
    _assert_same(load_prepared(storage, ref), expected)
    _assert_same(load_prepared(storage, ref.uri.rstrip("/")), expected)
    manifest = storage.get_json(ref.uri + "manifest.json")
    assert manifest["version"] == ref.version and manifest["content_sha256"].startswith(ref.version)
    assert manifest["n_holdout"] == 33 and sum(manifest["class_hist_holdout"]) == 33
    assert manifest["n_duplicates_dropped"] == 0 and manifest["format"] == 3


def test_npz_source_from_s3(storage: Storage, name: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
    src = storage.settings.s3_uri("tests", name, "faces.npz")
    storage.put_bytes(src, _npz_bytes(x=x, y=np.arange(40) % 4))
    cfg = DataConfig(source="npz", uri=src, name=name, image_size=16)
    ref = prepare(cfg, storage)
    assert ref.source == f"npz:{src}" and ref.num_classes == 4 and ref.n_train == 34
    got = load_prepared(storage, ref)
    assert got.x_train.shape == (34, 1, 16, 16)
    _assert_same(got, prepare_arrays(cfg, storage))


def test_mnist_idx_files_from_an_s3_prefix(storage: Storage, name: str) -> None:
    rng = np.random.default_rng(1)
    base = storage.settings.s3_uri("tests", name, "mnist")
    for split, n in (("train", 40), ("t10k", 20)):
        storage.put_bytes(f"{base}/{split}-images-idx3-ubyte.gz",
                          _idx_gz(rng.integers(0, 256, size=(n, 28, 28))))
        storage.put_bytes(f"{base}/{split}-labels-idx1-ubyte.gz", _idx_gz(np.arange(n) % 10))
    ref = prepare(DataConfig(source="mnist", uri=base, name=name), storage)
    assert ref.n_train + ref.n_holdout == 60 and ref.num_classes == 10


def test_failing_dataset_writes_nothing(storage: Storage, name: str) -> None:
    bad = np.full((40, 8, 8), 0.5, dtype=np.float32)
    bad[3, 2, 2] = np.nan
    src = storage.settings.s3_uri("tests", name, "bad.npz")
    storage.put_bytes(src, _npz_bytes(x=bad, y=np.arange(40) % 4))
    with pytest.raises(DataError, match="bad.npz: 1 NaN/inf"):
        prepare(DataConfig(source="npz", uri=src, name=name, image_size=8), storage)
    base = storage.settings.s3_uri("tests", name, "trunc")
    storage.put_bytes(f"{base}/train-images-idx3-ubyte.gz",
                      _idx_gz(np.zeros((40, 28, 28)))[:-30])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: truncated or corrupt gzip"):
        prepare(DataConfig(source="mnist", uri=base, name=name), storage)
    # a missing object is a user error: named, with how to put it there (and never retried)
    with pytest.raises(DataError, match=r"bad\.npz\.missing does not exist .*gan data upload"):
        prepare(DataConfig(source="npz", uri=src + ".missing", name=name), storage)
    assert storage.list_keys(storage.settings.s3_uri("datasets", name) + "/") == []


def test_half_written_version_is_not_taken_as_complete(storage: Storage, name: str) -> None:
    cfg = DataConfig(name=name, limit=100)
    version = prepare_arrays(cfg).version
    uri = storage.settings.s3_uri("datasets", name, version) + "/"
    storage.put_bytes(uri + "train-00000.parquet", b"partial upload")  # a crash before manifest
    with pytest.raises(DataError, match="no manifest.json: not a \\(complete\\) prepared"):
        load_prepared(storage, uri)
    ref = prepare(cfg, storage)
    assert not ref.reused and ref.uri == uri
    _assert_same(load_prepared(storage, ref), prepare_arrays(cfg))
