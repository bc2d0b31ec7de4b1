"""Keys built to leave their prefix, against the real local S3 (SeaweedFS): refused by
`gan.io.storage` before any request, so nothing is written anywhere in the bucket, and an
`images` source on such a prefix fails naming it."""

from __future__ import annotations

import uuid

import pytest

from gan.core.config import DataConfig
from gan.core.settings import Settings
from gan.data.sources import load_source
from gan.data.validate import DataError
from gan.io.storage import Storage

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("middle", ["../..", "%2e%2e/%2E%2E", "./../.."])
def test_escaping_keys_write_nothing(stack: Settings, storage: Storage, middle: str) -> None:
    tag = f"escape-{uuid.uuid4().hex[:8]}"
    uri = stack.s3_uri("datasets", "x", middle, tag)
    with pytest.raises(ValueError, match="would leave its prefix"):
        storage.put_bytes(uri, b"evil")
    with pytest.raises(ValueError, match="would leave its prefix"):
        storage.put_json(uri, {"evil": True})
    assert not [k for k in storage.list_keys(stack.s3_uri() + "/") if tag in k]


def test_images_source_on_an_escaping_prefix_is_refused(stack: Settings,
                                                        storage: Storage) -> None:
    cfg = DataConfig(source="images", uri=stack.s3_uri("raw", "..", "mlflow") + "/",
                     image_size=8)
    with pytest.raises(DataError, match="would leave its prefix"):
        load_source(cfg, storage)
