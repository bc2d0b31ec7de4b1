"""Which way a training worker reads a dataset version, and batches from streamed shard rows.

What this module is, without Ray (so unit tests run it on plain pyarrow tables):
  * `in_memory_mb` / `choose_data_path`: the in-memory path holds a version's images whole as
    float32 (train + holdout, as `gan.data.prepare.load_prepared` returns them); `train.stream`
    "never" keeps that path, "always" streams, "auto" streams only when that size exceeds
    `train.max_in_memory_mb`;
  * `shuffle_buffer_rows`: the rows of the local shuffle buffer a streaming worker keeps (a
    quarter of the memory cap as uint8 rows, at least one batch, at most the train split);
  * `table_batches`: a `gan.train.loop.Batches` source over an epoch's Arrow tables (each a
    batch of shard rows, `gan.data.shards`): (B, C, S, S) float32 in [-1, 1] and (B,) int64,
    the same values the in-memory path gives (`gan.core.images.from_uint8`).

What it is not: no Ray and no S3 (`gan.train.ray.stream` builds the Ray Dataset and asks each
worker's `get_dataset_shard` for the tables); no shard format (`gan.data.shards`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal

import pyarrow as pa
import torch
from torch import Tensor

from gan.core.images import from_uint8
from gan.data.shards import decode_table
from gan.train.loop import Batches

DataPath = Literal["memory", "stream"]
FLOAT_BYTES = 4  # the in-memory path holds float32 images


def in_memory_mb(n_images: int, channels: int, image_size: int) -> float:
    """MiB the in-memory path holds for `n_images` float32 images of (channels, S, S)."""
    return n_images * channels * image_size * image_size * FLOAT_BYTES / 2**20


def choose_data_path(stream: str, max_in_memory_mb: int, *, n_images: int, channels: int,
                     image_size: int) -> DataPath:
    """"memory" or "stream" for `train.stream` ("auto", "always", "never") and a dataset of
    `n_images` (train + holdout) images of (channels, image_size, image_size)."""
    if stream == "always":
        return "stream"
    if stream == "never":
        return "memory"
    if stream != "auto":
        raise ValueError(f"train.stream must be auto, always or never, got {stream!r}")
    size = in_memory_mb(n_images, channels, image_size)
    return "stream" if size > max_in_memory_mb else "memory"


def shuffle_buffer_rows(max_in_memory_mb: int, *, n_train: int, channels: int, image_size: int,
                        batch_size: int) -> int:
    """Rows a streaming worker shuffles among: a quarter of the memory cap as uint8 rows,
    at least one batch, at most the train split."""
    fits = int(max_in_memory_mb * 2**20 / 4 / (channels * image_size * image_size))
    return max(batch_size, min(fits, n_train))


def table_batches(tables: Callable[[int], Iterable[pa.Table]],
                  shape: tuple[int, int, int]) -> Batches:
    """`batches(epoch)` over `tables(epoch)` (Arrow batches of shard rows; `shape` = (C, S, S)):
    (x (B, C, S, S) float32 in [-1, 1], y (B,) int64) per table."""

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for table in tables(epoch):
            x, y = decode_table(table, shape)  # (B, C, S, S) uint8, (B,) int64
            yield from_uint8(torch.from_numpy(x)), torch.from_numpy(y)

    return batches
