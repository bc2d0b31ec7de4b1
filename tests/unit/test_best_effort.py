"""flows.best_effort and the progress callback on it: a server that hangs or fails costs the
training loop nothing; calls are dropped and counted, and close() is bounded in time."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from flows import retrain
from flows.best_effort import BestEffort


def test_a_hanging_call_never_blocks_the_submitter_and_drops_are_counted() -> None:
    release = threading.Event()
    calls = BestEffort("t", max_pending=2)
    t0 = time.monotonic()
    accepted = [calls.submit(release.wait) for _ in range(20)]
    assert time.monotonic() - t0 < 0.5  # never waited for the hanging server
    assert accepted.count(True) <= 3  # one running, two queued
    assert calls.counts.dropped == 20 - accepted.count(True)
    t0 = time.monotonic()
    counts = calls.close(timeout_s=0.3)
    assert time.monotonic() - t0 < 1.0  # bounded, though the call still hangs
    assert counts.submitted == 20 and counts.done == 0
    release.set()


def test_failures_are_counted_and_stale_calls_skipped() -> None:
    calls = BestEffort("t", max_age_s=0.5)
    gate = threading.Event()
    calls.submit(gate.wait)  # runs at once (not stale yet), then blocks the thread
    time.sleep(0.05)
    calls.submit(lambda: None)  # will be stale by the time the thread is free
    time.sleep(1.0)
    gate.set()
    counts = calls.close(timeout_s=2)
    assert counts.done == 1 and counts.dropped == 1
    fails = BestEffort("t")
    for _ in range(3):
        fails.submit(lambda: 1 / 0)
    assert fails.close(timeout_s=2).failed == 3


def test_calls_run_in_the_submitters_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("run", default="none")
    seen: list[str] = []
    calls = BestEffort("t")
    var.set("task-run-1")  # as Prefect's TaskRunContext is, in the task's thread
    calls.submit(lambda: seen.append(var.get()))
    calls.close(timeout_s=2)
    assert seen == ["task-run-1"]


def test_epoch_progress_goes_on_while_prefect_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    class Log:
        lines: list[str] = []
        def info(self, m: str) -> None: self.lines.append(m)
        def warning(self, m: str, *a: object) -> None: self.lines.append(m % a)

    hang = threading.Event()
    monkeypatch.setattr(retrain, "get_run_logger", Log)
    monkeypatch.setattr(retrain, "create_progress_artifact", lambda **kw: hang.wait())
    monkeypatch.setattr(retrain, "update_progress_artifact", lambda *a, **kw: hang.wait())
    progress = retrain.EpochProgress("r1", total_epochs=50)
    t0 = time.monotonic()
    for epoch in range(1, 51):
        progress({"epoch": epoch, "step": epoch, "loss_d": 1.0, "loss_g": 1.0})
    assert time.monotonic() - t0 < 1.0  # 50 epochs, not 50 blocked client calls
    progress.close(timeout_s=0.2)
    assert len(Log.lines) == 51 and "not updated to the end" in Log.lines[-1]
    hang.set()


def test_epoch_progress_ends_on_the_last_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[float] = []
    monkeypatch.setattr(retrain, "get_run_logger", lambda: type(
        "L", (), {"info": lambda *a: None, "warning": lambda *a: shown.append(-1.0)})())
    monkeypatch.setattr(retrain, "create_progress_artifact",
                        lambda progress, description: shown.append(progress) or "id")

    def slow_update(artifact_id: str, progress: float, description: str) -> None:
        time.sleep(0.05)  # a slow server: most epochs are folded into a later update
        shown.append(progress)

    monkeypatch.setattr(retrain, "update_progress_artifact", slow_update)
    progress = retrain.EpochProgress("r1", total_epochs=40)
    for epoch in range(1, 41):
        progress({"epoch": epoch, "step": epoch, "loss_d": 1.0, "loss_g": 1.0})
    progress.close(timeout_s=5)
    assert shown[-1] == 100.0 and -1.0 not in shown and len(shown) < 40


def test_a_hanging_mlflow_does_not_hold_the_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(retrain, "get_run_logger", lambda: type(
        "L", (), {"info": lambda *a: None,
                  "warning": lambda self, m, *a: warnings.append(m % a)})())
    monkeypatch.setattr(retrain, "create_progress_artifact", lambda **kw: "id")
    monkeypatch.setattr(retrain, "update_progress_artifact", lambda *a, **kw: None)
    hang = threading.Event()

    class Live:  # an MLflow server that never answers
        def log_epoch(self, metrics: dict) -> None:
            hang.wait()

    progress = retrain.EpochProgress("r1", total_epochs=30, live=Live())  # type: ignore[arg-type]
    t0 = time.monotonic()
    for epoch in range(1, 31):
        progress({"epoch": epoch, "step": epoch, "loss_d": 1.0, "loss_g": 1.0})
    assert time.monotonic() - t0 < 1.0
    progress.close(timeout_s=0.3)
    assert any("MLflow live run: 30 of 30 epochs not logged" in w for w in warnings), warnings
    hang.set()
