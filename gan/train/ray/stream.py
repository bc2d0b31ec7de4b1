"""The streaming data path of Ray Train: a dataset version's train shards read by Ray Data.

What this module is:
  * driver side, `train_dataset(settings, ref, seed)`: checks the version's manifest (Parquet
    shards, format 2) and every train shard's sha256 against it (one pass in 8 MiB chunks,
    constant memory: what the workers will read is exactly the version the run records),
    then `ray.data.read_parquet` of exactly the shards the manifest lists, from S3 through
    the project's pyarrow filesystem (`gan.io.storage.arrow_fs`), its files in an order
    randomized per execution (i.e. per epoch) from the run's seed. The TorchTrainer gets it as
    `datasets={"train": ...}` and Ray Train V2 splits it over the workers (`streaming_split`,
    equal rows per worker).
  * worker side, `shard_batches(...)`: `ray.train.get_dataset_shard("train")` iterated once per
    epoch in Arrow batches of batch_size // world rows, through a local shuffle buffer seeded
    from (seed, epoch, rank), then turned into tensors by `gan.train.stream.table_batches`.

Epochs: each worker gets floor(N / W) rows per epoch and cuts whole batches of B / W from
them when the split holds a global batch (drop_last, as the in-memory `sharded_batches`), so
W workers see floor(N / B) batches of B per epoch either way. Shuffling is not a global
permutation: the order of the shard files changes every epoch and rows are drawn at random from a
buffer of `gan.train.stream.shuffle_buffer_rows` rows (the price of not holding the data).

What it is not: no decision of which path to take (`gan.train.stream.choose_data_path`), no
tensor conversion (`gan.train.stream`), no Trainer (`gan.train.ray.driver`).
Every Ray call is marked `# RAY`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pyarrow as pa
import ray.data  # RAY
import ray.train  # RAY
from pyarrow import fs as pafs

from gan.core.records import DatasetRef
from gan.core.settings import Settings
from gan.data.prepare import MANIFEST_FILE
from gan.data.validate import DataError
from gan.io.jsonio import read_json_fs
from gan.io.storage import arrow_fs, arrow_path
from gan.train.loop import Batches, epoch_seed
from gan.train.stream import table_batches

DATASET_KEY = "train"  # the TorchTrainer's datasets key the workers ask for
HASH_CHUNK = 8 << 20  # bytes read at a time while checking a shard's sha256


def train_shard_paths(fs: pafs.FileSystem, ref: DatasetRef) -> list[str]:
    """The filesystem paths of the version's train shards, each checked against its manifest
    sha256; raises DataError for a version that cannot stream or whose files differ."""
    root = arrow_path(ref.uri)
    m = read_json_fs(fs, f"{root}/{MANIFEST_FILE}")
    if m is None:
        raise DataError(f"{ref.uri}: no {MANIFEST_FILE}: not a (complete) prepared dataset")
    if m.get("version") != ref.version:
        raise DataError(f"{ref.uri}: the manifest is of version {m.get('version')}, the run "
                        f"expects {ref.version}")
    if "shards" not in m:
        raise DataError(f"{ref.uri}: dataset format {m.get('format', 1)} has no Parquet shards "
                        "to stream: prepare the data again (format 2), or train with "
                        "train.stream=never")
    paths = []
    for entry in m["shards"]["train"]:
        path = f"{root}/{entry['file']}"
        if _sha256(fs, path) != entry["sha256"]:
            raise DataError(f"{ref.uri}{entry['file']}: sha256 differs from the manifest "
                            "(corrupt)")
        paths.append(path)
    return paths


def _sha256(fs: pafs.FileSystem, path: str) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def train_dataset(settings: Settings, ref: DatasetRef, *, seed: int) -> ray.data.Dataset:
    """The version's train shards as a lazy Ray Dataset (columns image, label)."""
    fs = arrow_fs(settings)
    paths = train_shard_paths(fs, ref)
    # The shard files in a new order every execution (= every epoch), reproducible from the
    # run's seed. Not randomize_block_order: an all-to-all step, it waits until every block
    # is read before the first batch of each epoch.
    return ray.data.read_parquet(  # RAY
        paths, filesystem=fs, columns=["image", "label"],
        shuffle=ray.data.FileShuffleConfig(seed=seed, reseed_after_execution=True))


def shard_batches(*, batch_size: int, drop_last: bool, shuffle_rows: int, seed: int, rank: int,
                  shape: tuple[int, int, int]) -> Batches:
    """This worker's batches of its `get_dataset_shard` (see the module docstring)."""
    shard = ray.train.get_dataset_shard(DATASET_KEY)  # RAY
    if shard is None:
        raise RuntimeError(f"no Ray dataset {DATASET_KEY!r} was given to this worker")

    def tables(epoch: int) -> Iterable[pa.Table]:
        return shard.iter_batches(  # RAY
            batch_size=batch_size, batch_format="pyarrow", drop_last=drop_last,
            local_shuffle_buffer_size=shuffle_rows,
            local_shuffle_seed=epoch_seed(seed, epoch, f"stream:{rank}"))

    return table_batches(tables, shape)
