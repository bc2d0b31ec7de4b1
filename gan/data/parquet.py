"""The `parquet` source: a table of encoded images (and optional labels), read with pyarrow.

What this module is: `load_parquet(cfg, storage)` reads one `.parquet` file or every `.parquet`
file under a folder or `s3://` prefix (sorted by path, concatenated), takes the image bytes
from column `data.image_column` (binary, or a struct with a `bytes` field as Hugging Face
`datasets` writes its Image feature) and labels from `data.label_column` when the table has
it: integers or strings, mapped to classes 0..K−1 in their natural order and recorded as
`class_names` (`gan.data.labels`; integers already 0..K−1 stay as they are). A table without
the label column is unlabelled. Images are decoded by `gan.data.decode` (bad rows named
`<file>#row<i>`).

What it is not: no decoding policy (`gan.data.decode`), no split or storage (`gan.data.prepare`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gan.core.config import DataConfig
from gan.data.decode import decode_images
from gan.data.images import read_tree
from gan.data.labels import encode_labels
from gan.data.validate import DataError, SourceData, check_labels
from gan.io.uri import read_bytes, redact_url

if TYPE_CHECKING:  # boto3 loads only when an s3:// source is actually read
    from gan.io.storage import Storage

_LABEL_MESSAGES = {
    "labels_shape": "{origin}: labels must be (N,) = ({n},), got shape {shape}",
    "labels_dtype": "{origin}: labels must be integers or strings, got dtype {dtype}",
}


def _is_parquet(name: str) -> bool:
    return name.lower().endswith(".parquet")


def _tables(cfg: DataConfig, storage: Storage | None) -> list[tuple[str, pa.Table]]:
    assert cfg.uri is not None  # DataConfig requires it for this source
    origin = redact_url(cfg.uri)
    if _is_parquet(cfg.uri):
        blobs = [(origin, read_bytes(cfg.uri, storage, error=DataError))]
    else:
        try:
            blobs = [(f"{origin.rstrip('/')}/{p}", b)
                     for p, b in read_tree(cfg.uri, storage, keep=_is_parquet)]
        except DataError as e:
            raise DataError(str(e).replace("image files (.png, .jpg, .jpeg, .webp)",
                                           ".parquet files")) from e
    out = []
    for name, data in blobs:
        if not data:
            raise DataError(f"{name}: file is empty (0 bytes)")
        try:
            out.append((name, pq.read_table(pa.BufferReader(data))))
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{name}: not a readable Parquet file ({e})") from e
    return out


def _image_bytes(table: pa.Table, column: str, name: str) -> list[bytes | None]:
    if column not in table.column_names:
        raise DataError(f"{name}: no image column {column!r} (columns: "
                        f"{', '.join(table.column_names)}); set data.image_column")
    col = table.column(column)
    if pa.types.is_struct(col.type) and col.type.get_field_index("bytes") >= 0:
        col = pc.struct_field(col, "bytes")
    if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
        raise DataError(f"{name}: column {column!r} has type {col.type}, expected encoded "
                        "image bytes (binary, or a struct with a 'bytes' field)")
    return col.to_pylist()


def _labels(values: list[object], name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Raw label values → (N,) int64 classes 0..K−1 and their names (`gan.data.labels`)."""
    if any(v is None for v in values):
        first = next(i for i, v in enumerate(values) if v is None)
        raise DataError(f"{name}#row{first}: label is missing (null)")
    if not values or not all(isinstance(v, str) for v in values):
        check_labels(np.asarray(values), len(values), origin=name, error=DataError,
                     messages=_LABEL_MESSAGES)  # integers (any numbering) or strings
    return encode_labels(values, name)


def load_parquet(cfg: DataConfig, storage: Storage | None) -> SourceData:
    """The `parquet` source → SourceData, images (N, C, image_size, image_size) uint8."""
    files: list[tuple[str, bytes]] = []
    raw_labels: list[object] = []
    has_labels: set[bool] = set()
    for name, table in _tables(cfg, storage):
        images = _image_bytes(table, cfg.image_column, name)
        files += [(f"{name}#row{i}", b or b"") for i, b in enumerate(images)]
        labelled = bool(cfg.label_column) and cfg.label_column in table.column_names
        has_labels.add(labelled)
        if labelled:
            raw_labels += table.column(cfg.label_column).to_pylist()
    origin = redact_url(cfg.uri or "")
    if has_labels == {True, False}:
        raise DataError(f"{origin}: some files have the label column {cfg.label_column!r} "
                        "and some do not")
    if True in has_labels:
        y, names = _labels(raw_labels, origin)
    else:
        y, names = np.zeros(len(files), dtype=np.int64), ()
    if not files:
        raise DataError(f"{origin}: the table has no rows")
    dec = decode_images(files, size=cfg.image_size, channels=cfg.channels,
                        max_bad_fraction=cfg.max_bad_fraction)
    return SourceData(x=dec.x, y=y[dec.kept], labelled=True in has_labels, class_names=names,
                      skipped=dec.skipped)
