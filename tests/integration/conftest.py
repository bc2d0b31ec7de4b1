"""Fixtures shared by the integration tests (the stack itself: tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from gan.io.storage import Storage


@pytest.fixture
def name(storage: Storage) -> Iterator[str]:
    """A fresh dataset name; everything under datasets/<name>/ and tests/<name>/ is removed."""
    storage.ensure_bucket()
    n = f"it-{uuid.uuid4().hex[:10]}"
    yield n
    for prefix in ("datasets", "tests"):
        storage.delete_prefix(storage.settings.s3_uri(prefix, n) + "/")
