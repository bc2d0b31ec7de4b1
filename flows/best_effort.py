"""Best-effort calls to the orchestrator made during training: off the caller's thread,
bounded, dropped and counted when the server is away.

What this module is: `BestEffort`, one daemon thread fed by a small bounded queue. `submit(fn)`
never blocks: a call that finds the queue full is dropped (counted); a call that waited in the
queue longer than `max_age_s` is dropped unrun (stale: a newer update follows); a call that
raises is counted as failed and logged once. `close(timeout_s)` waits at most that long for
what is queued, then leaves the thread behind (a daemon: it never holds the process). The
training loop's progress artifacts go through it (`flows.retrain.EpochProgress`), so a Prefect
server that is down or slow (each call blocking on the client's retries) costs training nothing.

What it is not: no retries of its own (the client's are enough; then the call is dropped), no
Prefect import (it runs any callable), and nothing whose loss would matter: use it only for
telemetry, never for results, registration or state the run depends on.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)
_Item = tuple[float, contextvars.Context, Callable[[], Any]]


@dataclass
class Counts:
    submitted: int = 0
    done: int = 0
    dropped: int = 0  # queue full, stale, or left queued at close
    failed: int = 0  # raised


class BestEffort:
    """Run callables one at a time on a daemon thread; never block the submitter."""

    def __init__(self, name: str, *, max_pending: int = 4, max_age_s: float = 30.0) -> None:
        self.name, self.max_age_s = name, max_age_s
        self.counts = Counts()
        self._q: queue.Queue[_Item | None] = queue.Queue(max_pending)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"best-effort-{name}",
                                        daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> bool:
        """Queue `fn`; False (and counted as dropped) when the queue is full. `fn` runs in a copy
        of the submitter's context (Prefect finds its flow and task run there)."""
        with self._lock:
            self.counts.submitted += 1
        try:
            self._q.put_nowait((time.monotonic(), contextvars.copy_context(), fn))
            return True
        except queue.Full:
            self._count("dropped")
            return False

    def pending(self) -> int:
        """Calls queued and not yet started."""
        return self._q.qsize()

    def close(self, timeout_s: float = 5.0) -> Counts:
        """Wait up to `timeout_s` for queued calls; what is left is dropped. Returns the counts."""
        deadline = time.monotonic() + timeout_s
        try:
            self._q.put(None, timeout=max(0.0, timeout_s))
            sentinel = 1
        except queue.Full:
            sentinel = 0
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():  # stuck in a call: whatever is queued will not run
            self._count("dropped", max(0, self._q.qsize() - sentinel))
        if self.counts.dropped or self.counts.failed:
            log.warning("%s: %d of %d best-effort calls dropped, %d failed (server away?)",
                        self.name, self.counts.dropped, self.counts.submitted, self.counts.failed)
        return self.counts

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.counts, what, getattr(self.counts, what) + n)

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            queued_at, ctx, fn = item
            if time.monotonic() - queued_at > self.max_age_s:
                self._count("dropped")
                continue
            try:
                ctx.run(fn)
                self._count("done")
            except Exception as e:  # telemetry only: never raised into training
                self._count("failed")
                if self.counts.failed == 1:
                    log.warning("%s: a best-effort call failed (%s: %s); further failures are "
                                "counted, not logged", self.name, type(e).__name__, e)
