"""The stored form of a prepared dataset split: Parquet shards a worker can stream.

What this module is: `encode_shards(x, y, split)` cuts (N, C, S, S) uint8 images and (N,)
int64 labels into Parquet files of at most `SHARD_BYTES` of pixels each, named
`<split>-00000.parquet`, ... with two columns:

    image   fixed_size_binary(C*S*S): one image's raw uint8 pixels, C-major (reshape (C, S, S))
    label   int64

(the shape is also in each file's schema metadata, `gan.image_shape`), and returns the bytes
and the manifest's entry for each (`file`, `rows`, `sha256`); `decode_shard` reads one back,
`decode_table` any table of its rows (a batch Ray Data streamed from shards).
Any Parquet reader (pyarrow, Ray Data's `read_parquet`) streams them one file, or one row
group, at a time.

What it is not: no S3 and no manifest (`gan.data.prepare` writes both).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gan.data.validate import DataError

SHARD_BYTES = 64 << 20  # pixels per shard file (uncompressed)
ROW_GROUP_ROWS = 1024  # rows per Parquet row group: a streaming reader's unit
SHAPE_KEY = b"gan.image_shape"


@dataclass(frozen=True)
class Shard:
    file: str  # "train-00000.parquet"
    data: bytes
    rows: int

    def entry(self) -> dict[str, Any]:
        """The manifest's record of this shard."""
        return {"file": self.file, "rows": self.rows,
                "sha256": hashlib.sha256(self.data).hexdigest()}


def encode_shards(x: np.ndarray, y: np.ndarray, split: str) -> list[Shard]:
    """(N, C, S, S) uint8 and (N,) int64 → Parquet shards (at least one, possibly empty)."""
    n, *shape = x.shape
    per_image = int(np.prod(shape))
    rows = max(1, SHARD_BYTES // per_image)
    schema = pa.schema([("image", pa.binary(per_image)), ("label", pa.int64())],
                       metadata={SHAPE_KEY: json.dumps(shape).encode()})
    shards = []
    for k, start in enumerate(range(0, max(n, 1), rows)):
        xs = np.ascontiguousarray(x[start : start + rows])
        images = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(per_image), len(xs), [None, pa.py_buffer(xs.tobytes())])
        table = pa.Table.from_arrays(
            [images, pa.array(y[start : start + rows], pa.int64())], schema=schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, compression="zstd")
        shards.append(Shard(file=f"{split}-{k:05d}.parquet", data=sink.getvalue().to_pybytes(),
                            rows=len(xs)))
    return shards


def decode_shard(data: bytes, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """One shard's bytes → (rows, C, S, S) uint8 images and (rows,) int64 labels."""
    try:
        table = pq.read_table(pa.BufferReader(data))
        shape = json.loads(table.schema.metadata[SHAPE_KEY])
    except (pa.ArrowInvalid, OSError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{origin}: not a dataset shard ({e})") from e
    return decode_table(table, tuple(shape))


def decode_table(table: pa.Table, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a shard's table (a whole shard, or a batch Ray Data cut from shards) →
    (rows, C, S, S) uint8 images and (rows,) int64 labels; `shape` is (C, S, S)."""
    per_image = int(np.prod(shape))
    images = table.column("image").combine_chunks()
    if images.type != pa.binary(per_image):
        raise DataError(f"shard column 'image' is {images.type}, expected "
                        f"fixed_size_binary[{per_image}] for images of shape {tuple(shape)}")
    if len(images) == 0:
        return np.empty((0, *shape), np.uint8), np.empty((0,), np.int64)
    pixels = np.frombuffer(images.buffers()[1], dtype=np.uint8, count=len(images) * per_image,
                           offset=images.offset * per_image)
    x = pixels.reshape(len(images), *shape).copy()
    y = table.column("label").to_numpy().astype(np.int64, copy=True)
    return x, y
