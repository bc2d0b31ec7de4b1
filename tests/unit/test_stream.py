"""The streaming data path without Ray: which path a dataset takes for which size and setting,
and the batches `gan.train.stream.table_batches` makes from Parquet shard rows (the tables a
worker's `get_dataset_shard` yields; Ray itself runs in tests/integration/test_stream_s3.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pyarrow import fs as pafs

from gan.core.config import DataConfig, RetrainParams, TrainConfig
from gan.core.images import from_uint8
from gan.core.records import DatasetRef
from gan.data.prepare import prepare_arrays
from gan.data.shards import decode_table, encode_shards
from gan.data.validate import DataError
from gan.train.checkpoint import resume_conflicts
from gan.train.stream import (
    choose_data_path,
    in_memory_mb,
    shuffle_buffer_rows,
    table_batches,
)

# --------------------------------------------------------------------------- the decision


def test_in_memory_size_is_float32_images() -> None:
    # 1,797 digits at 28 px grey: 1797 * 784 * 4 B = 5.4 MiB; 50k RGB 64 px: 2.3 GiB
    assert in_memory_mb(1797, 1, 28) == pytest.approx(1797 * 784 * 4 / 2**20)
    assert in_memory_mb(50_000, 3, 64) == pytest.approx(2343.75)


@pytest.mark.parametrize(("stream", "cap", "n", "c", "s", "want"), [
    ("auto", 2048, 1797, 1, 28, "memory"),  # the digits: far below the default cap
    ("auto", 2048, 50_000, 3, 64, "stream"),  # 2344 MiB > 2048
    ("auto", 5, 1797, 1, 28, "stream"),  # 5.4 MiB > 5
    ("auto", 6, 1797, 1, 28, "memory"),  # 5.4 MiB <= 6
    ("never", 1, 50_000, 3, 64, "memory"),  # never streams, whatever the size
    ("always", 2048, 10, 1, 8, "stream"),  # always streams, however small
])
def test_which_path_for_which_size_and_setting(stream: str, cap: int, n: int, c: int, s: int,
                                               want: str) -> None:
    assert choose_data_path(stream, cap, n_images=n, channels=c, image_size=s) == want


def test_unknown_stream_setting_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="train.stream"):
        choose_data_path("sometimes", 1, n_images=1, channels=1, image_size=8)
    with pytest.raises(ValueError, match="stream"):
        TrainConfig(stream="sometimes")
    with pytest.raises(ValueError, match="max_in_memory_mb"):
        TrainConfig(max_in_memory_mb=0)


def test_default_keeps_the_in_memory_path_for_small_data() -> None:
    tc = TrainConfig()
    assert (tc.stream, tc.max_in_memory_mb) == ("auto", 2048)
    assert choose_data_path(tc.stream, tc.max_in_memory_mb, n_images=60_000, channels=1,
                            image_size=28) == "memory"  # MNIST's train set: 179 MiB


def test_retrain_params_pass_the_setting_to_train_and_a_resume_may_change_it() -> None:
    _, _, train, _ = RetrainParams(preset="smoke", stream="always", max_in_memory_mb=8).resolve()
    assert (train.stream, train.max_in_memory_mb) == ("always", 8)
    _, _, default, _ = RetrainParams(preset="smoke").resolve()
    assert default.stream == "auto"
    # how the workers read the data is not what the run learns: a stopped run may switch
    assert resume_conflicts(default.model_dump(mode="json"), train) == {}


def test_shuffle_buffer_is_a_quarter_of_the_cap_within_a_batch_and_the_split() -> None:
    # 1 MiB cap / 4 / 784 B per 28 px grey image = 334 rows
    assert shuffle_buffer_rows(1, n_train=1000, channels=1, image_size=28, batch_size=32) == 334
    assert shuffle_buffer_rows(1, n_train=100, channels=1, image_size=28, batch_size=32) == 100
    assert shuffle_buffer_rows(1, n_train=9999, channels=3, image_size=128,
                               batch_size=64) == 64  # 5 rows fit: one batch at least


# --------------------------------------------------------------------------- the batches


def _shard_tables(x: np.ndarray, y: np.ndarray, rows: int) -> list[pa.Table]:
    """The prepared shards as Arrow tables, cut into `rows`-row batches (as Ray Data yields)."""
    out = []
    for shard in encode_shards(x, y, "train"):
        table = pq.read_table(pa.BufferReader(shard.data))
        out += [table.slice(i, rows) for i in range(0, table.num_rows, rows)]
    return out


def test_streamed_batches_equal_the_in_memory_tensors() -> None:
    data = prepare_arrays(DataConfig(limit=200, image_size=16))  # (167, 1, 16, 16) train
    u8 = ((data.x_train + 1) * 127.5).round().to(torch.uint8).numpy()
    tables = _shard_tables(u8, data.y_train.numpy(), rows=32)
    seen_epochs: list[int] = []

    def per_epoch(epoch: int) -> list[pa.Table]:
        seen_epochs.append(epoch)
        return tables

    batches = list(table_batches(per_epoch, (1, 16, 16))(3))
    assert seen_epochs == [3]
    assert [tuple(x.shape) for x, _ in batches] == [(32, 1, 16, 16)] * 5 + [(7, 1, 16, 16)]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert -1.0 <= float(x.min()) < 0 < float(x.max()) <= 1.0
    assert torch.equal(x, data.x_train) and torch.equal(y, data.y_train)  # bit-identical


def test_rgb_rows_keep_channel_order_and_labels() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (10, 3, 8, 8), dtype=np.uint8)
    y = np.arange(10, dtype=np.int64) % 3
    (xb, yb), = list(table_batches(lambda _e: _shard_tables(x, y, rows=10), (3, 8, 8))(1))
    assert tuple(xb.shape) == (10, 3, 8, 8)
    assert torch.equal(xb, from_uint8(torch.from_numpy(x))) and yb.tolist() == y.tolist()


def test_a_table_of_other_images_is_refused_naming_the_shapes() -> None:
    x = np.zeros((4, 1, 8, 8), np.uint8)
    table = _shard_tables(x, np.zeros(4, np.int64), rows=4)[0]
    with pytest.raises(DataError, match=r"fixed_size_binary\[192\].*\(3, 8, 8\)"):
        decode_table(table, (3, 8, 8))
    empty_x, empty_y = decode_table(table.slice(0, 0), (1, 8, 8))
    assert empty_x.shape == (0, 1, 8, 8) and empty_y.shape == (0,)


# --------------------------------------------------------------------------- the shard check


def _stored_version(root: Path, *, version: str = "v1") -> tuple[pafs.FileSystem, DatasetRef]:
    """A format-2 version laid out as in S3, on a local folder standing in for the bucket."""
    x = np.zeros((40, 1, 8, 8), np.uint8)
    folder = root / "gan" / "datasets" / "d" / version
    folder.mkdir(parents=True)
    shards = encode_shards(x, np.zeros(40, np.int64), "train")
    for shard in shards:
        (folder / shard.file).write_bytes(shard.data)
    (folder / "manifest.json").write_text(json.dumps(
        {"format": 2, "version": version, "shards": {"train": [s.entry() for s in shards],
                                                     "holdout": []}}))
    ref = DatasetRef(name="d", version=version, uri=f"s3://gan/datasets/d/{version}/",
                     source="test", n_train=40, n_holdout=0, num_classes=1, image_size=8)
    return pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem()), ref


def test_streamed_shards_are_the_manifests_and_checked(tmp_path: Path) -> None:
    from gan.train.ray.stream import train_shard_paths  # noqa: PLC0415  (lazy: imports Ray)

    fs, ref = _stored_version(tmp_path)
    assert train_shard_paths(fs, ref) == ["gan/datasets/d/v1/train-00000.parquet"]
    with pytest.raises(DataError, match="manifest is of version v1, the run expects v2"):
        train_shard_paths(fs, ref.model_copy(update={"version": "v2"}))
    (tmp_path / "gan/datasets/d/v1/train-00000.parquet").write_bytes(b"changed")
    with pytest.raises(DataError, match=r"train-00000.parquet: sha256 differs"):
        train_shard_paths(fs, ref)
    (tmp_path / "gan/datasets/d/v1/manifest.json").write_text(json.dumps(
        {"format": 1, "version": "v1", "tensors_file": "tensors.safetensors"}))
    with pytest.raises(DataError, match="format 1 has no Parquet shards.*train.stream=never"):
        train_shard_paths(fs, ref)
    with pytest.raises(DataError, match="no manifest.json"):
        train_shard_paths(fs, ref.model_copy(update={"uri": "s3://gan/datasets/d/none/"}))
