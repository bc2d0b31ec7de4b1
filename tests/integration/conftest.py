"""Fixtures shared by the integration tests (the stack itself: tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from gan.core.settings import Settings
from gan.io.storage import Storage

# The gate's class-balance and recall rules off: a one-epoch smoke model must still publish.
RELAXED_GATE = ("--max-class-kl", "100", "--min-recall-ratio", "0")


@pytest.fixture
def name(storage: Storage) -> Iterator[str]:
    """A fresh dataset name; everything under datasets/<name>/ and tests/<name>/ is removed."""
    storage.ensure_bucket()
    n = f"it-{uuid.uuid4().hex[:10]}"
    yield n
    for prefix in ("datasets", "tests"):
        storage.delete_prefix(storage.settings.s3_uri(prefix, n) + "/")


@pytest.fixture
def gan_retrain(stack: Settings) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`gan_retrain(*args, relaxed_gate=True)`: `gan retrain ARGS` in a fresh process on the
    session stack (prints its wall time); RELAXED_GATE appended unless relaxed_gate=False."""

    def run(*args: str, relaxed_gate: bool = True) -> subprocess.CompletedProcess[str]:
        t0 = time.monotonic()
        argv = [sys.executable, "-m", "gan.cli", "retrain", *args,
                *(RELAXED_GATE if relaxed_gate else ())]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=500,
                           stdin=subprocess.DEVNULL, env=dict(os.environ))
        print(f"gan retrain {' '.join(args[:5])}...: {time.monotonic() - t0:.0f} s")
        return r

    return run
